//! `lockstep serve`: GitHub commands against a fake GitHub, tracker-driven deliveries, the
//! queue page in a real browser, shutdown. Each test runs the real executable on loopback
//! against real bare repositories.

use std::time::Duration;

use crate::util::fake_github::FakeGitHub;
use crate::util::serve::*;
use crate::util::webhooks::{self, SECRET};
use crate::util::*;

const TASKS_READY: &str = r#"[TASK-1]
status = "For Delivery"
title = "Log in with single sign-on"
assignee = "alice"

[TASK-2]
status = "For Delivery"
title = "Search the catalogue"
assignee = "alice"

[TASK-3]
status = "In Progress"
title = "Dark mode"
assignee = "alice"
"#;

const LONG: Duration = Duration::from_secs(60);

fn task_status(env: &Env, key: &str) -> String {
    let text = std::fs::read_to_string(env.sb.meta.join("tasks.toml")).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    v[key]["status"].as_str().unwrap().to_string()
}

fn deliveries(env: &Env) -> Vec<serde_json::Value> {
    let out = env.lockstep(&["queue", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    ["running", "queued", "recent"]
        .iter()
        .flat_map(|k| v[k].as_array().cloned().unwrap_or_default())
        .collect()
}

/// A sandbox whose TASK-1 has branches in api and web, a fake GitHub with pull request
/// acme/api#7 for it (two approvals), and `lockstep serve` running.
fn github_env() -> (Env, FakeGitHub, Vec<String>) {
    let env = Env::new(&["api", "web"]);
    let heads = push_task_branch(&env, "feature/TASK-1-login", &["api", "web"], &[]);
    env.set_tasks(TASKS_READY);
    let gh = FakeGitHub::start(TOKEN);
    configure(
        &env,
        "0s",
        &format!(
            "[server]\npublic_url = \"http://lockstep.test/\"\nbody_limit = 65536\n\n{}",
            github_section(gh.url())
        ),
    );
    gh.add_pull("acme/api", 7, "alice", "feature/TASK-1-login", &heads[0]);
    gh.review("acme/api", 7, "bob", "CHANGES_REQUESTED");
    gh.review("acme/api", 7, "bob", "APPROVED");
    gh.review("acme/api", 7, "carol", "APPROVED");
    gh.review("acme/api", 7, "alice", "APPROVED");
    // The task's branch in web has its own pull request: every branch is reviewed.
    gh.add_pull("acme/web", 3, "alice", "feature/TASK-1-login", &heads[1]);
    gh.review("acme/web", 3, "bob", "APPROVED");
    gh.review("acme/web", 3, "dave", "APPROVED");
    gh.permit("acme/api", "alice", "write");
    gh.permit("acme/api", "mallory", "read");
    (env, gh, heads)
}

#[test]
fn deliver_comment_delivers_across_repositories() {
    let (env, gh, heads) = github_env();
    let api_before = env.rev("api", "refs/heads/master").unwrap();
    let serve = ServeProc::start(&env);

    let body = webhooks::comment(
        "acme/api",
        7,
        "alice",
        "Reviewed and ready.\r\n\r\n/deliver priority=2\r\n",
    );
    let r = webhooks::post(&serve.url, "issue_comment", "d-1", &body, Some(SECRET));
    assert_eq!(r.status, 200, "{}", r.body);

    wait_until("the outcome comment", LONG, Some(&serve.log), || {
        gh.comments("acme/api", 7).len() >= 2
    });
    let comments = gh.comments("acme/api", 7);
    assert!(
        comments[0].starts_with("@alice queued the delivery of `TASK-1` as [#1](http://lockstep.test/deliveries/1) (position 1"),
        "{}",
        comments[0]
    );
    assert!(
        comments[1].contains("✅ delivered `TASK-1` ([#1](http://lockstep.test/deliveries/1))"),
        "{}",
        comments[1]
    );
    assert!(
        comments[1].contains("| `web` | `feature/TASK-1-login` |"),
        "{}",
        comments[1]
    );

    // Both upstreams advanced to the delivered branches, together.
    for (repo, head) in ["api", "web"].iter().zip(&heads) {
        let master = env.rev(repo, "refs/heads/master").unwrap();
        let contains = git(&env.bare(repo), "admin")
            .try_run(&["merge-base", "--is-ancestor", head, &master])
            .unwrap()
            .0;
        assert!(
            contains,
            "{repo}: master does not contain the task's commit"
        );
    }
    assert_ne!(env.rev("api", "refs/heads/master").unwrap(), api_before);
    assert_eq!(task_status(&env, "TASK-1"), "Closed");

    // The `lockstep` status followed the delivery on the PR head: pending, then success.
    let on_head: Vec<_> = gh
        .statuses()
        .into_iter()
        .filter(|s| s.repo == "acme/api" && s.sha == heads[0])
        .collect();
    assert!(on_head.iter().all(|s| s.context == "lockstep"));
    assert_eq!(on_head.first().unwrap().state, "pending");
    let last = on_head.last().unwrap();
    assert_eq!(last.state, "success", "{on_head:?}");
    assert_eq!(last.target_url, "http://lockstep.test/deliveries/1");
    // web has no pull request, but its delivered commit gets the status too.
    assert!(
        gh.statuses()
            .iter()
            .any(|s| s.repo == "acme/web" && s.sha == heads[1] && s.state == "success")
    );
    // Every call carried the token.
    let auth: Vec<String> = gh.requests().into_iter().map(|r| r.auth).collect();
    assert!(
        auth.iter().all(|a| a == &format!("Bearer {TOKEN}")),
        "{auth:?}"
    );

    let d = &deliveries(&env)[0];
    assert_eq!(d["source"], "github");
    assert_eq!(d["requester"], "alice");
    assert_eq!(d["origin"], "acme/api#7");
    assert_eq!(d["priority"], 2);

    let metrics = serve.get("/metrics").body;
    assert!(
        metrics.contains("lockstep_deliveries_total{outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("lockstep_webhook_requests_total{source=\"github\",result=\"accepted\"} 1")
    );
    assert!(metrics.contains("lockstep_phase_duration_seconds_count{phase=\"test\"} 1"));
    // The pushes went through the hooks, which counted their decisions.
    assert!(
        metrics.contains(
            "lockstep_hook_decisions_total{rule=\"protected-branch-writers\",outcome=\"pass\"}"
        ),
        "{metrics}"
    );
    let status = serve.stop(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

#[test]
fn refusals_and_ignored_events() {
    let (env, gh, _) = github_env();
    // TASK-2: one approval only (the author's own does not count).
    gh.add_pull(
        "acme/api",
        8,
        "alice",
        "feature/TASK-2-search",
        &"2".repeat(40),
    );
    gh.review("acme/api", 8, "alice", "APPROVED");
    gh.review("acme/api", 8, "bob", "APPROVED");
    gh.review("acme/api", 8, "carol", "APPROVED");
    gh.review("acme/api", 8, "carol", "DISMISSED");
    // TASK-3: approved, but still In Progress.
    gh.add_pull(
        "acme/api",
        9,
        "alice",
        "feature/TASK-3-dark",
        &"3".repeat(40),
    );
    gh.review("acme/api", 9, "bob", "APPROVED");
    gh.review("acme/api", 9, "carol", "APPROVED");
    let serve = ServeProc::start(&env);
    let post = |event: &str, id: &str, body: &[u8], secret: Option<&str>| {
        webhooks::post(&serve.url, event, id, body, secret)
    };
    let deliver = webhooks::comment("acme/api", 7, "alice", "/deliver");

    // Bad or missing signature: 401, and nothing acted on.
    assert_eq!(
        post("issue_comment", "r-1", &deliver, Some("wrong-secret")).status,
        401
    );
    let r = post("issue_comment", "r-2", &deliver, None);
    assert_eq!(r.status, 401);
    assert!(r.body.contains("X-Hub-Signature-256"), "{}", r.body);
    let mut tampered = deliver.clone();
    let sig = lockstep::sign(SECRET, &deliver);
    *tampered.last_mut().unwrap() = b' ';
    let r = crate::util::http::request(
        &serve.url,
        "POST",
        "/webhooks/github",
        &[
            ("X-GitHub-Event", "issue_comment"),
            ("X-GitHub-Delivery", "r-3"),
            ("X-Hub-Signature-256", &sig),
        ],
        &tampered,
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert!(gh.requests().is_empty(), "{:?}", gh.requests());

    // No write permission: told so, nothing queued.
    let r = post(
        "issue_comment",
        "r-4",
        &webhooks::comment("acme/api", 7, "mallory", "/deliver"),
        Some(SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let c = gh.comments("acme/api", 7);
    assert_eq!(c.len(), 1);
    assert!(
        c[0].starts_with("@mallory only people with write access to `acme/api`"),
        "{}",
        c[0]
    );
    // Not a collaborator at all (GitHub answers 404): the same.
    post(
        "issue_comment",
        "r-5",
        &webhooks::comment("acme/api", 7, "eve", "/status"),
        Some(SECRET),
    );
    assert!(gh.comments("acme/api", 7)[1].starts_with("@eve only people with write access"));

    // One approval by someone else than the author.
    let r = post(
        "issue_comment",
        "r-6",
        &webhooks::comment("acme/api", 8, "alice", "/deliver"),
        Some(SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let c = gh.comments("acme/api", 8);
    assert!(
        c[0].contains("the delivery of `TASK-2` was refused:\n\n- [two-approvals] acme/api#8 has 1 approval(s) by people other than its author; every branch needs a pull request with 2"),
        "{}",
        c[0]
    );

    // The task is In Progress.
    post(
        "issue_comment",
        "r-7",
        &webhooks::comment("acme/api", 9, "alice", "/deliver"),
        Some(SECRET),
    );
    let c = gh.comments("acme/api", 9);
    assert!(
        c[0].contains(
            "- [task-for-delivery] task `TASK-3` is In Progress; move it to For Delivery first"
        ),
        "{}",
        c[0]
    );
    assert!(!c[0].contains("two-approvals"), "{}", c[0]);

    // A replayed delivery id is answered and ignored.
    let r = post(
        "issue_comment",
        "r-7",
        &webhooks::comment("acme/api", 9, "alice", "/deliver"),
        Some(SECRET),
    );
    assert_eq!(r.status, 200);
    assert!(r.body.contains("already handled"), "{}", r.body);
    assert_eq!(gh.comments("acme/api", 9).len(), 1);

    // An unknown command: the help and a guess.
    post(
        "issue_comment",
        "r-8",
        &webhooks::comment("acme/api", 9, "alice", "/delivr"),
        Some(SECRET),
    );
    let c = gh.comments("acme/api", 9);
    assert!(
        c[1].starts_with("@alice unknown command `/delivr` (did you mean `deliver`?)"),
        "{}",
        c[1]
    );
    assert!(c[1].contains("- `/rollback`: "), "{}", c[1]);

    // Commands in code blocks and quotes are not commands.
    let quoted = "To ship it:\n```\n/deliver\n```\n> /deliver\n    /deliver\n";
    let r = post(
        "issue_comment",
        "r-9",
        &webhooks::comment("acme/api", 7, "alice", quoted),
        Some(SECRET),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(gh.comments("acme/api", 7).len(), 2);

    // Malformed JSON, events lockstep ignores, comments on issues, other repositories.
    let r = post("issue_comment", "r-10", b"{\"action\": ", Some(SECRET));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("not JSON"), "{}", r.body);
    let r = post(
        "issue_comment",
        "r-11",
        b"{\"action\": \"created\"}",
        Some(SECRET),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("malformed `issue_comment` payload"),
        "{}",
        r.body
    );
    let huge = webhooks::comment("acme/api", 7, "alice", &"/status\n".repeat(20_000));
    assert_eq!(
        post("issue_comment", "r-16", &huge, Some(SECRET)).status,
        413
    );
    let push_event = serde_json::to_vec(&webhooks::sample("push.json")).unwrap();
    assert_eq!(post("push", "r-12", &push_event, Some(SECRET)).status, 202);
    let on_issue = webhooks::issue_comment("acme/api", 3, "alice", "/deliver");
    assert_eq!(
        post("issue_comment", "r-13", &on_issue, Some(SECRET)).status,
        202
    );
    let elsewhere = webhooks::comment("acme/unrelated", 1, "alice", "/deliver");
    assert_eq!(
        post("issue_comment", "r-14", &elsewhere, Some(SECRET)).status,
        202
    );
    let bot_own = webhooks::comment("acme/api", 7, "lockstep-bot", "/deliver");
    assert_eq!(
        post("issue_comment", "r-15", &bot_own, Some(SECRET)).status,
        202
    );

    assert!(deliveries(&env).is_empty(), "{:?}", deliveries(&env));
    let metrics = serve.get("/metrics").body;
    for line in [
        "lockstep_webhook_requests_total{source=\"github\",result=\"unauthorized\"} 3",
        "lockstep_webhook_requests_total{source=\"github\",result=\"replayed\"} 1",
        "lockstep_webhook_requests_total{source=\"github\",result=\"bad_request\"} 2",
        "lockstep_webhook_requests_total{source=\"github\",result=\"ignored\"} 5",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line}\n{metrics}"
        );
    }
}

#[test]
fn tracker_for_delivery_is_delivered_once() {
    let env = Env::new(&["api", "web"]);
    push_task_branch(&env, "feature/TASK-1-login", &["api", "web"], &[]);
    configure(
        &env,
        "200ms",
        &format!("[server]\ntracker_secret_env = \"{TRACKER_VAR}\"\n"),
    );
    let before = env.rev("web", "refs/heads/master").unwrap();
    let serve = ServeProc::start(&env);

    // Nothing is ready yet; the tracker webhook wants its token.
    let poke = |token: &str| {
        crate::util::http::request(
            &serve.url,
            "POST",
            "/webhooks/tracker",
            &[("X-Lockstep-Token", token)],
            b"{}",
        )
        .unwrap()
    };
    assert_eq!(poke("wrong").status, 401);
    let r = poke(TRACKER_SECRET);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("nothing new"), "{}", r.body);

    // The task's owner moves it to For Delivery in the tracker.
    env.set_tasks(TASKS_READY);
    wait_until("TASK-1 delivered", LONG, Some(&serve.log), || {
        task_status(&env, "TASK-1") == "Closed"
    });
    // TASK-2 is For Delivery too, but has no branch: its delivery fails and goes back.
    wait_until("TASK-2 returned", LONG, Some(&serve.log), || {
        task_status(&env, "TASK-2") == "In Progress"
    });
    // A few more polls and a poke later, still one delivery each.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(poke(TRACKER_SECRET).status, 200);
    let all = deliveries(&env);
    let of = |task: &str| all.iter().filter(|d| d["task"] == task).count();
    assert_eq!(
        (of("TASK-1"), of("TASK-2"), of("TASK-3")),
        (1, 1, 0),
        "{all:#?}"
    );
    let d1 = all.iter().find(|d| d["task"] == "TASK-1").unwrap();
    assert_eq!(d1["state"], "delivered");
    assert_eq!(d1["source"], "tracker");
    assert_eq!(d1["requester"], "lockstep-bot");
    assert_ne!(env.rev("web", "refs/heads/master").unwrap(), before);

    // Entering For Delivery again is a new request: delivered again (nothing new to merge).
    env.set_tasks(&TASKS_READY.replace(
        "[TASK-2]\nstatus = \"For Delivery\"",
        "[TASK-2]\nstatus = \"To Do\"",
    ));
    wait_until("TASK-1 delivered again", LONG, Some(&serve.log), || {
        deliveries(&env)
            .iter()
            .filter(|d| d["task"] == "TASK-1")
            .count()
            == 2
            && task_status(&env, "TASK-1") == "Closed"
    });
    assert!(serve.stop(Duration::from_secs(10)).success());
}

/// Where Debian's chromium is, if installed.
fn chromium() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    })
}

/// Loads a page in headless chromium; `--dump-dom` gives the DOM after load.
fn browse(chromium: &std::path::Path, env: &Env, url: &str, extra: &[&str]) -> String {
    let profile = env.dir.path().join("chromium-profile");
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium failed: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn queue_page_shows_the_delivery_in_flight() {
    let env = Env::new(&["api", "web"]);
    // The test step of both repositories sleeps: the page is looked at meanwhile.
    push_task_branch(
        &env,
        "feature/TASK-1-<b>login</b>",
        &["api", "web"],
        &[("SLOW-TEST", "6\n")],
    );
    env.set_tasks(TASKS_READY);
    configure(&env, "0s", "[server]\nrefresh = \"2s\"\n");
    let serve = ServeProc::start(&env);
    // Queued from the command line: serve holds the queue and picks it up.
    let out = env.lockstep(&["deliver", "TASK-1", "--no-wait"]);
    assert!(out.status.success(), "{}", stderr(&out));

    wait_until("the test step running", LONG, Some(&serve.log), || {
        let q: serde_json::Value = serde_json::from_str(&serve.get("/api/queue").body).unwrap();
        q["running"][0]["current"]
            .as_array()
            .is_some_and(|c| c.iter().any(|s| s["step"] == "test"))
    });
    let html = serve.get("/").body;
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
    assert!(
        html.contains("feature/TASK-1-&lt;b&gt;login&lt;/b&gt;"),
        "{html}"
    );
    assert!(!html.contains("<b>login</b>"));

    match chromium() {
        Some(chromium) => {
            let dom = browse(&chromium, &env, &serve.url, &["--dump-dom"]);
            assert!(dom.contains("delivering TASK-1"), "{dom}");
            assert!(dom.contains("id=\"in-flight\""), "{dom}");
            for phase in ["rebase", "build"] {
                assert!(
                    dom.contains(&format!("data-phase=\"{phase}\" data-state=\"passed\"")),
                    "{phase}: {dom}"
                );
            }
            assert!(
                dom.contains("data-phase=\"test\" data-state=\"running\""),
                "{dom}"
            );
            assert!(dom.contains("data-phase=\"merge\" data-state=\"pending\""));
            assert!(dom.contains("now: <b>test</b>"), "{dom}");
            // The branch name is shown as text, not markup.
            assert!(
                dom.contains("feature/TASK-1-&lt;b&gt;login&lt;/b&gt;"),
                "{dom}"
            );
            let shot = env.dir.path().join("queue.png");
            browse(
                &chromium,
                &env,
                &serve.url,
                &[
                    &format!("--screenshot={}", shot.display()),
                    "--window-size=1280,900",
                ],
            );
            let png = std::fs::read(&shot).unwrap();
            assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
            if let Some(dir) = std::env::var_os("LOCKSTEP_SCREENSHOT_DIR") {
                std::fs::copy(&shot, std::path::Path::new(&dir).join("queue.png")).unwrap();
            }
        }
        None if std::env::var_os("CI").is_some() => {
            panic!("chromium is missing; CI installs it (`apt-get install -y chromium`)")
        }
        None => {
            eprintln!("skipped: the browser part of the queue page test (no `chromium` on PATH)")
        }
    }

    wait_until("the delivery", LONG, Some(&serve.log), || {
        task_status(&env, "TASK-1") == "Closed"
    });
    let page = serve.get("/deliveries/1");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("testing api"), "{}", page.body);
    assert!(page.header("content-security-policy").is_some());
    let api: serde_json::Value =
        serde_json::from_str(&serve.get("/api/deliveries/1").body).unwrap();
    assert_eq!(api["delivery"]["state"], "delivered");
    assert_eq!(
        api["grid"][0]["cells"][2],
        serde_json::json!(["test", "passed"])
    );
    let home = serve.get("/").body;
    assert!(home.contains("Nothing is being delivered right now."));
    assert!(
        home.contains("<span class=\"pill delivered\">delivered</span>"),
        "{home}"
    );
    assert_eq!(serve.get("/deliveries/99").status, 404);
    assert_eq!(
        serve.get("/healthz").body,
        "ok\nrole: leader\nstore: sqlite\n"
    );
    assert_eq!(
        crate::util::http::request(&serve.url, "POST", "/webhooks/github", &[], b"{}")
            .unwrap()
            .status,
        404
    );
    assert!(serve.stop(Duration::from_secs(10)).success());
}

#[test]
fn shutdown_mid_delivery_is_recovered_at_the_next_start() {
    let env = Env::new(&["api"]);
    push_task_branch(
        &env,
        "feature/TASK-1-login",
        &["api"],
        &[("SLOW-TEST", "3\n")],
    );
    env.set_tasks(TASKS_READY);
    configure(&env, "0s", "[server]\nshutdown_grace = \"200ms\"\n");
    let serve = ServeProc::start(&env);
    assert!(
        env.lockstep(&["deliver", "TASK-1", "--no-wait"])
            .status
            .success()
    );
    wait_until("the test step running", LONG, Some(&serve.log), || {
        serve.get("/api/queue").body.contains("\"step\":\"test\"")
    });
    let log = serve.log.clone();
    let started = std::time::Instant::now();
    let status = serve.stop(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("recovered at the next start"), "{text}");
    let d = &deliveries(&env)[0];
    assert_eq!(
        (d["state"].as_str(), d["phase"].as_str()),
        (Some("running"), Some("test"))
    );

    // The next start resumes it in the test phase, in the same checkout.
    let serve = ServeProc::start(&env);
    wait_until("the resumed delivery", LONG, Some(&serve.log), || {
        task_status(&env, "TASK-1") != "For Delivery"
    });
    let d = &deliveries(&env)[0];
    let journal = env.lockstep(&["show", "1"]);
    let shown = stdout(&journal);
    assert!(shown.contains("requeued"), "{shown}");
    assert!(shown.contains("resumed"), "{shown}");
    assert_eq!(d["state"], "delivered", "{shown}");
    assert!(serve.stop(Duration::from_secs(10)).success());
}

#[test]
fn github_app_installation_tokens() {
    let (env, gh, _) = github_env();
    let key =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/github-app-test-key.pem");
    env.edit_config(|text| {
        text.replace(
            &format!("token_env = \"{TOKEN_VAR}\"\n"),
            &format!(
                "app_id = 77\nprivate_key_path = {}\n",
                toml::Value::from(key.to_string_lossy().as_ref())
            ),
        )
    });
    let serve = ServeProc::start(&env);
    let body = webhooks::comment("acme/api", 7, "alice", "/status");
    let r = webhooks::post(&serve.url, "issue_comment", "app-1", &body, Some(SECRET));
    assert_eq!(r.status, 200, "{}\n{}", r.body, serve.log_text());
    let c = gh.comments("acme/api", 7);
    assert_eq!(
        c,
        ["@alice `TASK-1` is `For Delivery` in the tracker; it has never been delivered."]
    );
    let requests = gh.requests();
    // The installation named in the webhook is used; its token is minted with the App's JWT.
    let mint = requests
        .iter()
        .position(|r| r.line == "POST /app/installations/7777777/access_tokens")
        .unwrap_or_else(|| panic!("{requests:?}"));
    let jwt = requests[mint].auth.strip_prefix("Bearer ").unwrap();
    assert_eq!(jwt.split('.').count(), 3, "{jwt}");
    for r in &requests {
        if r.line.starts_with("POST /repos/") || r.line.contains("/permission") {
            assert_eq!(r.auth, "Bearer ghs_installation_token", "{}", r.line);
        }
    }
}

#[test]
fn failed_delivery_is_reported_then_retried_and_rolled_back() {
    let env = Env::new(&["api"]);
    env.set_tasks(&TASKS_READY.replace(
        "[TASK-2]\nstatus = \"For Delivery\"",
        "[TASK-2]\nstatus = \"In Progress\"",
    ));
    let heads = push_task_branch(
        &env,
        "feature/TASK-2-search",
        &["api"],
        &[("FAIL-TEST", "search returns nothing\n")],
    );
    env.set_tasks(TASKS_READY);
    let gh = FakeGitHub::start(TOKEN);
    configure(&env, "0s", &github_section(gh.url()));
    gh.add_pull("acme/api", 8, "alice", "feature/TASK-2-search", &heads[0]);
    gh.review("acme/api", 8, "bob", "APPROVED");
    gh.review("acme/api", 8, "carol", "APPROVED");
    gh.permit("acme/api", "alice", "admin");
    let serve = ServeProc::start(&env);
    let say = |id: &str, text: &str| {
        let body = webhooks::comment("acme/api", 8, "alice", text);
        let r = webhooks::post(&serve.url, "issue_comment", id, &body, Some(SECRET));
        assert_eq!(r.status, 200, "{}", r.body);
    };
    let comments = || gh.comments("acme/api", 8);

    say("f-1", "/deliver");
    wait_until("the failure", LONG, Some(&serve.log), || {
        comments().len() >= 2
    });
    let failure = &comments()[1];
    assert!(
        failure.contains("❌ the delivery of `TASK-2` ([#1](")
            && failure.contains("failed in the **test** phase of `api`"),
        "{failure}"
    );
    assert!(
        failure.contains("assertion failed: search returns nothing"),
        "{failure}"
    );
    assert!(failure.contains("comment `/retry`"), "{failure}");
    assert_eq!(
        gh.last_status(&heads[0]),
        ("failure".into(), "#1 failed in test".into())
    );
    assert_eq!(task_status(&env, "TASK-2"), "In Progress");

    say("f-2", "/status\n/cancel");
    let reply = &comments()[2];
    assert!(
        reply.contains("`TASK-2` is `In Progress` in the tracker; [#1]("),
        "{reply}"
    );
    assert!(
        reply.contains("failed: delivery failed in test (api)"),
        "{reply}"
    );
    assert!(
        reply.contains("has no queued or running delivery; nothing to cancel"),
        "{reply}"
    );

    // alice fixes the test and asks again: the task goes back to For Delivery, delivered.
    let dir = env.sb.root.join("clones/alice/api");
    git(&dir, "alice").run(&["rm", "-q", "FAIL-TEST"]).unwrap();
    git(&dir, "alice")
        .run(&["commit", "-qm", "TASK-2 fix the search test"])
        .unwrap();
    assert!(
        lockstep::sandbox::push(&dir, "alice", &["feature/TASK-2-search"])
            .unwrap()
            .accepted
    );
    say("f-3", "/retry");
    assert!(
        comments()[3].contains("retrying after [#1]("),
        "{}",
        comments()[3]
    );
    wait_until("the retried delivery", LONG, Some(&serve.log), || {
        comments().len() >= 5
    });
    assert!(
        comments()[4].contains("✅ delivered `TASK-2` ([#2]("),
        "{}",
        comments()[4]
    );
    assert_eq!(task_status(&env, "TASK-2"), "Closed");

    say("f-4", "/rollback");
    assert!(
        comments()[5].contains("rolling back [#2]("),
        "{}",
        comments()[5]
    );
    wait_until("the rollback", LONG, Some(&serve.log), || {
        comments().len() >= 7
    });
    assert!(
        comments()[6].starts_with("@alice rolled back [#2]("),
        "{}",
        comments()[6]
    );
    assert_eq!(task_status(&env, "TASK-2"), "In Progress");
    let rollbacks = std::fs::read_to_string(env.sb.root.join("rollbacks.log")).unwrap();
    assert!(rollbacks.contains("api 2"), "{rollbacks}");
    assert!(serve.stop(Duration::from_secs(10)).success());
}

/// A sandbox whose TASK-1 is For Delivery with branches in api and web, a fake GitHub in
/// `[github]`, and acme/api#7 approved by two people; web's branch has no pull request yet.
fn two_branches_one_reviewed() -> (Env, FakeGitHub, Vec<String>) {
    let env = Env::new(&["api", "web"]);
    let heads = push_task_branch(&env, "feature/TASK-1-login", &["api", "web"], &[]);
    env.set_tasks(TASKS_READY);
    let gh = FakeGitHub::start(TOKEN);
    configure(&env, "0s", &github_section(gh.url()));
    gh.add_pull("acme/api", 7, "alice", "feature/TASK-1-login", &heads[0]);
    gh.review("acme/api", 7, "bob", "APPROVED");
    gh.review("acme/api", 7, "carol", "APPROVED");
    (env, gh, heads)
}

#[test]
fn deliveries_asked_outside_github_still_need_every_branch_reviewed() {
    let (env, gh, heads) = two_branches_one_reviewed();
    let before = [
        env.rev("api", "refs/heads/master"),
        env.rev("web", "refs/heads/master"),
    ];
    let deliver = |token: bool| {
        let mut cmd = env.command(&["deliver", "TASK-1"]);
        if token {
            cmd.env(TOKEN_VAR, TOKEN);
        }
        cmd.output().unwrap()
    };

    // Without GitHub's token the reviews cannot be read: nothing is queued (fail closed).
    let o = deliver(false);
    assert_ne!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stderr(&o).contains("cannot read the branches and approvals of `TASK-1`"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("github.token_env"), "{}", stderr(&o));
    assert!(deliveries(&env).is_empty());

    // The command line is no way around review: web's branch has no pull request.
    let o = deliver(true);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(
            "[two-approvals] `feature/TASK-1-login` of acme/web has no open pull request; every \
             branch needs a pull request with 2"
        ),
        "{}",
        stderr(&o)
    );
    // A pull request from a fork, for a branch of the same name, is not web's branch.
    gh.add_pull(
        "acme/web",
        2,
        "mallory",
        "feature/TASK-1-login",
        &"f".repeat(40),
    );
    gh.update("acme/web", 2, |i| {
        i.pull.as_mut().unwrap().head_repo = Some("mallory/web".into())
    });
    gh.review("acme/web", 2, "bob", "APPROVED");
    gh.review("acme/web", 2, "carol", "APPROVED");
    let o = deliver(true);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("of acme/web has no open pull request"),
        "{}",
        stderr(&o)
    );

    // One approval besides the author's own is not two.
    gh.add_pull("acme/web", 3, "alice", "feature/TASK-1-login", &heads[1]);
    gh.review("acme/web", 3, "alice", "APPROVED");
    gh.review("acme/web", 3, "bob", "APPROVED");
    let o = deliver(true);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(
            "[two-approvals] acme/web#3 has 1 approval(s) by people other than its author"
        ),
        "{}",
        stderr(&o)
    );
    assert!(deliveries(&env).is_empty());

    gh.review("acme/web", 3, "dave", "APPROVED");
    let o = deliver(true);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let after = [
        env.rev("api", "refs/heads/master"),
        env.rev("web", "refs/heads/master"),
    ];
    assert_ne!(after[0], before[0]);
    assert_ne!(after[1], before[1]);
}

#[test]
fn a_deliver_push_option_needs_every_branch_reviewed_too() {
    let (env, _gh, _) = two_branches_one_reviewed();
    env.set_tasks(&TASKS_READY.replacen("For Delivery", "In Progress", 1));
    // alice's clone of api, still on the task's branch.
    let dir = env.sb.root.join("clones").join("alice").join("api");
    commit(&dir, "alice", "more.txt", "more\n", "TASK-1 more").unwrap();
    let p = push_env(
        &dir,
        &[("GL_USER", "alice"), (TOKEN_VAR, TOKEN)],
        &["-o", "deliver", "feature/TASK-1-login"],
    );
    assert!(p.accepted, "{}", p.stderr);
    assert!(
        p.remote_text().contains(
            "delivery of `TASK-1` refused: [two-approvals] `feature/TASK-1-login` of acme/web \
             has no open pull request; every branch needs a pull request with 2 (task moved \
             back to In Progress)"
        ),
        "{}",
        p.stderr
    );
    assert_eq!(task_status(&env, "TASK-1"), "In Progress");
    assert!(deliveries(&env).is_empty());
}

/// A `GET /metrics` that fails inside the server (a counts file the hooks did not write)
/// answers 500 with an id, not the error's chain: the request is not authenticated, and the
/// chain names files and SQL. The log has the chain under that id.
#[test]
fn issue9_internal_errors_answer_an_id_not_the_chain() {
    let env = Env::new(&["api"]);
    configure(&env, "0s", "");
    let serve = ServeProc::start(&env);
    std::fs::write(env.state_dir().join("hook-decisions.json"), "not json").unwrap();
    let r = serve.get("/metrics");
    assert_eq!(r.status, 500, "{}", r.body);
    let state = env.state_dir().display().to_string();
    assert!(!r.body.contains(&state), "{}", r.body);
    assert!(!r.body.contains("not valid"), "{}", r.body);
    let id = r
        .body
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no error id in {:?}", r.body))
        .to_string();
    let log = serve.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(&id) && l.contains(&state) && l.contains("not valid")),
        "{log}"
    );
    assert!(serve.stop(Duration::from_secs(10)).success());
}

/// A step log that cannot be read yet (a FIFO with no writer stands for a stalled disk)
/// holds the requests for it, not the server: `/healthz` still answers.
#[test]
fn issue9_a_log_read_that_hangs_does_not_stall_the_server() {
    let env = Env::new(&["api"]);
    push_task_branch(&env, "feature/TASK-1-login", &["api"], &[]);
    env.set_tasks(TASKS_READY);
    configure(&env, "0s", "");
    let out = env.lockstep(&["deliver", "TASK-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let serve = ServeProc::start(&env);
    let api: serde_json::Value =
        serde_json::from_str(&serve.get("/api/deliveries/1").body).unwrap();
    let step = &api["steps"][0];
    let log = step["log_path"].as_str().unwrap();
    std::fs::remove_file(log).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(log)
        .status()
        .unwrap();
    assert!(made.success());

    // More stalled reads than the server has threads for async work.
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get()) + 2;
    let path = format!("/deliveries/1/steps/{}/log", step["id"]);
    let stalled: Vec<_> = (0..threads)
        .map(|_| {
            let (url, path) = (serve.url.clone(), path.clone());
            std::thread::spawn(move || {
                let _ = crate::util::http::request(&url, "GET", &path, &[], b"");
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let (tx, rx) = std::sync::mpsc::channel();
    let url = serve.url.clone();
    std::thread::spawn(move || {
        let _ = tx.send(crate::util::http::get(&url, "/healthz"));
    });
    let health = rx.recv_timeout(Duration::from_secs(10));
    // The stalled reads never end: stop the server the hard way, which lets them go.
    drop(serve);
    for t in stalled {
        let _ = t.join();
    }
    let health = health.expect("`/healthz` did not answer while step logs were being read");
    assert!(health.body.starts_with("ok\n"), "{}", health.body);
}

/// A review that breaks the delivery rules of a queued delivery cancels it, and the comment
/// says who changed the reviews (the event's sender).
#[test]
fn issue9_a_review_that_cancels_a_delivery_names_its_sender() {
    let (env, gh, _) = github_env();
    // Another worker holds the queue: the delivery waits while the reviews change.
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(env.worker_lock())
        .unwrap();
    lock.lock().unwrap();
    let serve = ServeProc::start(&env);
    let deliver = webhooks::comment("acme/api", 7, "alice", "/deliver");
    let r = webhooks::post(&serve.url, "issue_comment", "v-1", &deliver, Some(SECRET));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(deliveries(&env)[0]["state"], "queued");

    // carol's approval is dismissed: one approval by someone other than the author is left.
    gh.review("acme/api", 7, "carol", "DISMISSED");
    let review = webhooks::review("acme/api", 7, "feature/TASK-1-login", "alice", "dismissed");
    let mut review: serde_json::Value = serde_json::from_slice(&review).unwrap();
    review["sender"]["login"] = "carol".into();
    let review = serde_json::to_vec(&review).unwrap();
    let r = webhooks::post(
        &serve.url,
        "pull_request_review",
        "v-2",
        &review,
        Some(SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("`carol` dismissed a review"), "{}", r.body);
    let c = gh.comments("acme/api", 7);
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(
        c[1].starts_with(
            "`carol` dismissed a review and the delivery rules no longer hold, so the queued \
             delivery [#1](http://lockstep.test/deliveries/1) of `TASK-1` was cancelled:"
        ),
        "{}",
        c[1]
    );
    assert_eq!(deliveries(&env)[0]["state"], "cancelled");
    drop(lock);
    assert!(serve.stop(Duration::from_secs(10)).success());
}

#[test]
fn issue10_a_signed_comment_replayed_under_new_delivery_ids_runs_once() {
    let (env, gh, _) = github_env();
    let serve = ServeProc::start(&env);
    let status = webhooks::comment("acme/api", 7, "alice", "/status");
    for id in ["replay-1", "replay-2", "replay-3"] {
        let r = webhooks::post(&serve.url, "issue_comment", id, &status, Some(SECRET));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(
        gh.comments("acme/api", 7).len(),
        1,
        "{:?}",
        gh.comments("acme/api", 7)
    );
    // Refused across restarts too.
    assert!(serve.stop(Duration::from_secs(10)).success());
    let serve = ServeProc::start(&env);
    let r = webhooks::post(
        &serve.url,
        "issue_comment",
        "replay-4",
        &status,
        Some(SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("already handled"), "{}", r.body);
    assert_eq!(gh.comments("acme/api", 7).len(), 1);
    // Another comment with the same text is another command.
    let mut again: serde_json::Value = serde_json::from_slice(&status).unwrap();
    again["comment"]["id"] = (again["comment"]["id"].as_u64().unwrap() + 1).into();
    let again = serde_json::to_vec(&again).unwrap();
    let r = webhooks::post(
        &serve.url,
        "issue_comment",
        "replay-5",
        &again,
        Some(SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(gh.comments("acme/api", 7).len(), 2);
}

#[test]
fn issue10_a_git_maintainer_name_is_no_github_login() {
    let (env, gh, _) = github_env();
    // `mallory` is a maintainer on the git server; on GitHub, that login may only read.
    env.edit_config(|t| {
        t.replace(
            "maintainers = [\"release-lead\"]",
            "maintainers = [\"release-lead\", \"mallory\"]",
        )
    });
    let serve = ServeProc::start(&env);
    let r = webhooks::post(
        &serve.url,
        "issue_comment",
        "m-1",
        &webhooks::comment("acme/api", 7, "mallory", "/status"),
        Some(SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let c = gh.comments("acme/api", 7);
    assert!(
        c[0].starts_with("@mallory only people with write access to `acme/api`"),
        "{}",
        c[0]
    );
    assert!(serve.stop(Duration::from_secs(10)).success());

    // Named as a GitHub login, explicitly: mallory may command the bot.
    env.edit_config(|t| {
        t.replace(
            "maintainers = [\"release-lead\", \"mallory\"]",
            "maintainers = [\"release-lead\"]\ngithub_maintainers = [\"mallory\"]",
        )
    });
    let serve = ServeProc::start(&env);
    let r = webhooks::post(
        &serve.url,
        "issue_comment",
        "m-2",
        &webhooks::comment("acme/api", 7, "mallory", "/status"),
        Some(SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let c = gh.comments("acme/api", 7);
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(!c[1].contains("only people with write access"), "{}", c[1]);
}

#[test]
fn issue10_the_poller_leaves_a_task_with_a_delivery_in_flight_alone() {
    let env = Env::new(&["api"]);
    push_task_branch(&env, "feature/TASK-1-login", &["api"], &[]);
    configure(
        &env,
        "0s",
        &format!("[server]\ntracker_secret_env = \"{TRACKER_VAR}\"\n"),
    );
    // The bot may not ask for deliveries itself.
    env.add_policy(
        "60-people-only.toml",
        "[[rule]]\nname = \"people-only\"\non = [\"deliver\"]\nrequire = 'requester != bot'\nmessage = \"only people ask for deliveries\"\n",
    );
    env.set_tasks(TASKS_READY);
    // A person's delivery, held in its build.
    env.hold("api", "build");
    let mut deliver = env.spawn("deliver", &["deliver", "TASK-1"]);
    env.wait_at_gate("api", "build");
    let serve = ServeProc::start(&env);
    let r = crate::util::http::request(
        &serve.url,
        "POST",
        "/webhooks/tracker",
        &[("X-Lockstep-Token", TRACKER_SECRET)],
        b"{}",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .contains("TASK-1 is For Delivery: already running as #1"),
        "{}",
        r.body
    );
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "For Delivery");
    assert!(
        !notes.iter().any(|n| n.contains("did not deliver")),
        "{notes:?}"
    );
    env.open_gate("api", "build");
    assert!(
        deliver.wait().unwrap().success(),
        "{:?}",
        env.spawned_output("deliver")
    );
    assert_eq!(task_status(&env, "TASK-1"), "Closed");
    assert!(serve.stop(Duration::from_secs(10)).success());
}
