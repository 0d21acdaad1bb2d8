//! Issue 22: the page, step logs, `/api/*` and `/metrics` are served on the port GitHub's
//! webhooks reach; `[server] read_token_env` puts them behind a token.

use base64::Engine as _;

use super::*;
use crate::util::http;

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn get_with(serve: &ServeProc, path: &str, authorization: &str) -> http::Resp {
    http::request(
        &serve.url,
        "GET",
        path,
        &[("authorization", authorization)],
        b"",
    )
    .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

const WARNING: &str = "the queue page, step logs, /api/* and /metrics are public";

#[test]
fn issue22_the_read_token_guards_every_read_route_not_the_webhooks() {
    let (env, gh, _) = github_env();
    env.edit_config(|text| {
        text.replacen(
            "[server]\n",
            &format!(
                "[server]\nread_token_env = \"{READ_TOKEN_VAR}\"\ntracker_secret_env = \"{TRACKER_VAR}\"\n"
            ),
            1,
        )
    });
    let serve = ServeProc::start(&env);

    // The webhooks need no read token: a `/deliver` comment is taken and delivered.
    let body = webhooks::comment("acme/api", 7, "alice", "/deliver\r\n");
    let r = webhooks::post(&serve.url, "issue_comment", "d-1", &body, Some(SECRET));
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until("the outcome comment", LONG, Some(&serve.log), || {
        gh.comments("acme/api", 7).len() >= 2
    });
    let r = http::request(
        &serve.url,
        "POST",
        "/webhooks/tracker",
        &[("x-lockstep-token", TRACKER_SECRET)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = serve.get("/healthz");
    assert_eq!(r.status, 200, "{}", r.body);

    let bearer = format!("Bearer {READ_TOKEN}");
    let d = get_with(&serve, "/api/deliveries/1", &bearer);
    assert_eq!(d.status, 200, "{}", d.body);
    let v: serde_json::Value = serde_json::from_str(&d.body).unwrap();
    let step = v["steps"][0]["id"].as_i64().unwrap();
    let log = format!("/deliveries/1/steps/{step}/log");
    let routes = [
        "/",
        "/deliveries/1",
        &log,
        "/api/queue",
        "/api/deliveries/1",
        "/metrics",
    ];
    let wrong = [
        "Bearer nope".to_string(),
        format!("Bearer {READ_TOKEN}x"),
        basic("alice", "nope"),
        // The token as the user name, not the password.
        basic(READ_TOKEN, ""),
        format!("Token {READ_TOKEN}"),
    ];
    let right = [
        bearer.clone(),
        basic("anyone", READ_TOKEN),
        basic("", READ_TOKEN),
    ];
    for path in routes {
        let r = serve.get(path);
        assert_eq!(r.status, 401, "{path} without a token: {}", r.body);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"lockstep\""),
            "{path}"
        );
        assert_eq!(
            r.body,
            "lockstep: this server asks for its read token: send `Authorization: Bearer \
             <token>`, or sign in with any user name and the token as password\n",
            "{path}"
        );
        for w in &wrong {
            let r = get_with(&serve, path, w);
            assert_eq!(r.status, 401, "{path} with {w}: {}", r.body);
        }
        for w in &right {
            let r = get_with(&serve, path, w);
            assert_eq!(r.status, 200, "{path} with {w}: {}", r.body);
        }
    }
    let r = get_with(&serve, "/metrics", &bearer);
    assert!(r.body.contains("lockstep_deliveries_total"), "{}", r.body);

    let path = serve.log.clone();
    assert!(serve.stop(Duration::from_secs(10)).success());
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        !text.contains(READ_TOKEN),
        "the token is in the log:\n{text}"
    );
    assert!(!text.contains(WARNING), "{text}");
}

#[test]
fn issue22_a_missing_read_token_stops_the_start_naming_the_variable() {
    let env = Env::new(&["api"]);
    configure(
        &env,
        "0s",
        "[server]\nread_token_env = \"LOCKSTEP_TEST_NO_SUCH_TOKEN\"\n",
    );
    let o = env.lockstep(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("the read token is missing (`server.read_token_env`)")
            && err.contains("`LOCKSTEP_TEST_NO_SUCH_TOKEN` is not set"),
        "{err}"
    );
}

#[test]
fn issue22_without_a_read_token_the_start_warns_once_that_all_is_public() {
    let env = Env::new(&["api"]);
    configure(&env, "0s", "");
    let serve = ServeProc::start(&env);
    assert_eq!(serve.get("/api/queue").status, 200);
    assert_eq!(serve.get("/metrics").status, 200);
    let path = serve.log.clone();
    assert!(serve.stop(Duration::from_secs(10)).success());
    let text = std::fs::read_to_string(path).unwrap();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains(WARNING)).collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(
        warnings[0].contains("WARN")
            && warnings[0].contains(
                "anyone who reaches this port reads them; set `server.read_token_env` to ask \
                 for a token"
            ),
        "{}",
        warnings[0]
    );
}
