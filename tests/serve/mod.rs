//! `lockstep serve`: GitHub commands against a fake GitHub, tracker-driven deliveries, the
//! queue page in a real browser, shutdown. Each test runs the real executable on loopback
//! against real bare repositories.

use std::time::Duration;

use crate::util::fake_github::FakeGitHub;
use crate::util::serve::*;
use crate::util::webhooks::{self, SECRET};
use crate::util::*;

mod hardening;
mod page;
mod read_token;
mod reviews;
mod shutdown;
mod slow_clients;

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
        c[0].contains("the delivery of `TASK-2` was refused:\n\n```text\n[two-approvals] acme/api#8 has 1 approval(s) by people other than its author; every branch needs a pull request with 2"),
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
            "\n[task-for-delivery] task `TASK-3` is In Progress; move it to For Delivery first\n"
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

/// `TASK-2` on `api` with a test that fails printing `fails_with`, pull request 8 approved
/// twice and opened by alice, an admin; `lockstep serve` running over the fake GitHub. Also
/// the pull request's head.
pub fn failing_pull_request(fails_with: &str) -> (Env, FakeGitHub, ServeProc, String) {
    let env = Env::new(&["api"]);
    env.set_tasks(&TASKS_READY.replace(
        "[TASK-2]\nstatus = \"For Delivery\"",
        "[TASK-2]\nstatus = \"In Progress\"",
    ));
    let heads = push_task_branch(
        &env,
        "feature/TASK-2-search",
        &["api"],
        &[("FAIL-TEST", fails_with)],
    );
    env.set_tasks(TASKS_READY);
    let gh = FakeGitHub::start(TOKEN);
    configure(&env, "0s", &github_section(gh.url()));
    gh.add_pull("acme/api", 8, "alice", "feature/TASK-2-search", &heads[0]);
    gh.review("acme/api", 8, "bob", "APPROVED");
    gh.review("acme/api", 8, "carol", "APPROVED");
    gh.permit("acme/api", "alice", "admin");
    let serve = ServeProc::start(&env);
    let head = heads[0].clone();
    (env, gh, serve, head)
}

/// alice's comment `text` on pull request 8, as webhook `id`; the bot must take it.
pub fn alice_says(serve: &ServeProc, id: &str, text: &str) {
    let body = webhooks::comment("acme/api", 8, "alice", text);
    let r = webhooks::post(&serve.url, "issue_comment", id, &body, Some(SECRET));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn failed_delivery_is_reported_then_retried_and_rolled_back() {
    let (env, gh, serve, head) = failing_pull_request("search returns nothing\n");
    let say = |id: &str, text: &str| alice_says(&serve, id, text);
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
        gh.last_status(&head),
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
        reply.contains("failed: ``delivery failed in test (api)"),
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
