//! The server's tracker cache (`[tracker] cache`), seen from a fake Jira: `lockstep serve`
//! answers a burst of questions about a task with one request, and a move it makes is seen at
//! once however long the cache lasts.

use std::time::Duration;

use super::{push_branch, sandbox_with};
use crate::util::fake_github::FakeGitHub;
use crate::util::fake_jira::{FakeJira, Flavor};
use crate::util::serve::*;
use crate::util::webhooks::{self, SECRET};

/// The Jira token: the server's test environment already holds this variable.
const TOKEN_ENV: &str = TRACKER_VAR;

/// Reads of the task itself (not of its transitions).
const READS: &str = "GET /rest/api/2/issue/SHOP-1?";

#[test]
fn serve_asks_the_tracker_once_per_task_until_it_moves_it() {
    let jira = FakeJira::start(Flavor::Server, &format!("Bearer {TRACKER_SECRET}"));
    jira.add("SHOP-1", "In Progress", "Log in", None);
    // An hour of cache: every read below falls within it.
    let (env, clone) = sandbox_with(&format!(
        "[tracker]\nkind = \"jira\"\nurl = \"{}\"\ntoken_env = \"{TOKEN_ENV}\"\n\
         poll = \"200ms\"\ncache = \"1h\"\n\n[tasks]\ndelivered = \"Done\"\n",
        jira.url()
    ));
    let pushed = push_branch(
        &clone,
        "feature/SHOP-1-login",
        &[(TOKEN_ENV, TRACKER_SECRET)],
    );
    assert!(pushed.accepted, "{}", pushed.remote_text());
    let head = env.rev("api", "refs/heads/feature/SHOP-1-login").unwrap();
    let gh = FakeGitHub::start(TOKEN);
    configure(&env, "200ms", &github_section(gh.url()));
    gh.add_pull("acme/api", 7, "alice", "feature/SHOP-1-login", &head);
    gh.review("acme/api", 7, "bob", "APPROVED");
    gh.review("acme/api", 7, "carol", "APPROVED");
    gh.permit("acme/api", "alice", "write");

    let before = jira.count(READS);
    let serve = ServeProc::start(&env);
    let status = |n: u32| {
        let body = webhooks::comment("acme/api", 7, "alice", "/status");
        let r = webhooks::post(
            &serve.url,
            "issue_comment",
            &format!("st-{n}"),
            &body,
            Some(SECRET),
        );
        assert_eq!(r.status, 200, "{}\n{}", r.body, serve.log_text());
        gh.comments("acme/api", 7).pop().unwrap()
    };
    let in_progress =
        "@alice `SHOP-1` is `In Progress` in the tracker; it has never been delivered.";
    assert_eq!(status(1), in_progress);
    assert_eq!(status(2), in_progress);
    assert_eq!(jira.count(READS) - before, 1, "two questions, one read");

    // Its owner moves it to For Delivery: the poller lists it, queues it (the listing answers
    // the delivery rules' read) and delivers it, which moves it to Done.
    jira.set_status("SHOP-1", "For Delivery");
    wait_until(
        "SHOP-1 delivered",
        Duration::from_secs(60),
        Some(&serve.log),
        || jira.issue("SHOP-1").status == "Done",
    );
    assert_eq!(
        jira.count(READS) - before,
        1,
        "the listing answered the request"
    );
    // lockstep's own move is seen at once, although the cache lasts an hour.
    let done = status(3);
    assert!(
        done.starts_with("@alice `SHOP-1` is `Done` in the tracker; "),
        "{done}"
    );
    assert_eq!(jira.count(READS) - before, 2);

    let log_path = serve.log.clone();
    assert!(serve.stop(Duration::from_secs(10)).success());
    // The secrets the server held appear nowhere in its log.
    let log = std::fs::read_to_string(log_path).unwrap();
    for secret in [TRACKER_SECRET, TOKEN, SECRET] {
        assert!(!log.contains(secret), "{secret} in\n{log}");
    }
}
