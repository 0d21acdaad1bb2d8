//! A showroom follows its task's life: asked for by hand, it goes when its task is sent back
//! to In Progress from elsewhere, closed, or its delivery fails, and a note on the task says
//! why; it stays while the task stays where it was. `/showroom` on a pull request says in a
//! second comment how the deploy ended.

use std::time::Duration;

use super::{branches, lines, sandbox, showroom, showrooms, state_of};
use crate::util::fake_github::FakeGitHub;
use crate::util::serve::{ServeProc, TOKEN, configure, github_section, wait_until};
use crate::util::webhooks;
use crate::util::*;

const LONG: Duration = Duration::from_secs(60);

/// The status recorded with a task's showroom, from `lockstep showrooms --json`.
fn recorded(env: &Env, task: &str) -> Option<String> {
    showrooms(env)
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == task)
        .and_then(|r| r["task_status"].as_str().map(String::from))
}

/// The teardowns that ran for a showroom label, from `teardowns.log`.
fn teardowns_of(env: &Env, label: &str) -> usize {
    lines(env, "teardowns.log")
        .iter()
        .filter(|l| l.ends_with(&format!("|{label}")))
        .count()
}

fn up_by_hand(env: &Env, task: &str) {
    let o = showroom(env, &[task]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn a_hand_asked_showroom_goes_when_its_task_is_sent_back_or_closed_under_serve() {
    let env = sandbox("");
    branches(&env, "TASK-1");
    branches(&env, "TASK-3");
    up_by_hand(&env, "TASK-1");
    up_by_hand(&env, "TASK-3");
    // Each remembers where its task was when it came up.
    assert_eq!(recorded(&env, "TASK-1").as_deref(), Some("In Progress"));
    assert_eq!(recorded(&env, "TASK-3").as_deref(), Some("In Progress"));
    configure(&env, "200ms", "");
    let serve = ServeProc::start(&env);

    // Their tasks stay In Progress (`[tasks] returned`, yet not a move): they stay, poll after
    // poll.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(lines(&env, "teardowns.log").is_empty());
    assert_eq!(state_of(&env, "TASK-1").as_deref(), Some("up"));
    assert_eq!(state_of(&env, "TASK-3").as_deref(), Some("up"));

    // TASK-1 goes to QA: remembered, still up.
    env.set_status(&[("TASK-1", "In QA")]);
    wait_until("In QA remembered", LONG, Some(&serve.log), || {
        recorded(&env, "TASK-1").as_deref() == Some("In QA")
    });
    assert_eq!(state_of(&env, "TASK-1").as_deref(), Some("up"));
    assert!(lines(&env, "teardowns.log").is_empty());

    // Back to In Progress: torn down (each repository's teardown, the last first), and the
    // note says why.
    let url1 = "https://task-1.show.example.com";
    env.set_status(&[("TASK-1", "In Progress")]);
    wait_until("TASK-1's showroom down", LONG, Some(&serve.log), || {
        state_of(&env, "TASK-1").is_none()
            && env
                .task("TASK-1")
                .1
                .iter()
                .any(|n| n.contains("taken down"))
    });
    assert_eq!(
        lines(&env, "teardowns.log"),
        [
            format!("showroom|web|{url1}|task-1"),
            format!("showroom|api|{url1}|task-1"),
        ]
    );
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    assert_eq!(
        notes.last().unwrap(),
        &format!("showroom {url1} taken down: the task moved from `In QA` to `In Progress`"),
        "{notes:?}"
    );
    // TASK-3, still where it was, kept its showroom.
    assert_eq!(state_of(&env, "TASK-3").as_deref(), Some("up"));
    assert_eq!(teardowns_of(&env, "task-3"), 0);

    // Closed by hand (`[tasks] delivered`): torn down too.
    env.set_status(&[("TASK-3", "Closed")]);
    wait_until("TASK-3's showroom down", LONG, Some(&serve.log), || {
        state_of(&env, "TASK-3").is_none()
            && env
                .task("TASK-3")
                .1
                .iter()
                .any(|n| n.contains("taken down"))
    });
    assert_eq!(teardowns_of(&env, "task-3"), 2);
    let (status, notes) = env.task("TASK-3");
    assert_eq!(status, "Closed");
    assert_eq!(
        notes.last().unwrap(),
        "showroom https://task-3.show.example.com taken down: the task moved from \
         `In Progress` to `Closed`",
        "{notes:?}"
    );
    // Once each: the poller does not take them down again.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(lines(&env, "teardowns.log").len(), 4);
    assert_eq!(env.task("TASK-1").1.len(), 1);
    serve.stop(Duration::from_secs(30));
}

/// A delivery of TASK-1 whose test fails, on a line of `window` deliveries: its showroom is
/// torn down at once by the worker, and the note says why.
fn a_failed_delivery_tears_down(window: &str) {
    let env = sandbox("");
    env.set_delivery("window", window);
    branches(&env, "TASK-1");
    up_by_hand(&env, "TASK-1");
    env.set_status(&[("TASK-1", "For Delivery")]);
    env.fail_step("api", "test", true);
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert!(!o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let url = "https://task-1.show.example.com";
    assert_eq!(
        lines(&env, "teardowns.log"),
        [
            format!("showroom|web|{url}|task-1"),
            format!("showroom|api|{url}|task-1"),
        ]
    );
    assert_eq!(state_of(&env, "TASK-1"), None);
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    assert_eq!(
        notes.last().unwrap(),
        &format!(
            "showroom {url} taken down: its delivery #1 failed; the task went back to \
             `In Progress`"
        ),
        "{notes:?}"
    );
}

#[test]
fn a_failed_delivery_tears_its_tasks_showroom_down() {
    a_failed_delivery_tears_down("1");
}

#[test]
fn a_failed_delivery_in_the_pipeline_tears_its_tasks_showroom_down() {
    a_failed_delivery_tears_down("2");
}

#[test]
fn a_showroom_comment_is_followed_by_one_with_its_url_then_its_teardown() {
    let env = sandbox("");
    let heads = branches(&env, "TASK-1");
    let gh = FakeGitHub::start(TOKEN);
    configure(
        &env,
        "0s",
        &format!(
            "[server]\npublic_url = \"http://lockstep.test/\"\n\n{}",
            github_section(gh.url())
        ),
    );
    gh.add_pull("acme/api", 7, "alice", "feature/TASK-1-work", &heads[0]);
    gh.permit("acme/api", "alice", "write");
    let serve = ServeProc::start(&env);
    let url = "https://task-1.show.example.com";

    let comment = webhooks::comment("acme/api", 7, "alice", "/showroom");
    let r = webhooks::post(
        &serve.url,
        "issue_comment",
        "c-1",
        &comment,
        Some(webhooks::SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let replies = wait_until_comments(&gh, &serve, 2);
    assert!(
        replies[0].starts_with("@alice deploying the showroom of `TASK-1`")
            && replies[0].contains(url),
        "{replies:?}"
    );
    assert_eq!(
        replies[1],
        format!("@alice the showroom of `TASK-1` is up: {url}")
    );
    assert_eq!(state_of(&env, "TASK-1").as_deref(), Some("up"));
    assert_eq!(lines(&env, "deploys.log").len(), 2);

    let comment = webhooks::comment("acme/api", 7, "alice", "/showroom down");
    let r = webhooks::post(
        &serve.url,
        "issue_comment",
        "c-2",
        &comment,
        Some(webhooks::SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let replies = wait_until_comments(&gh, &serve, 4);
    assert_eq!(
        replies[2],
        format!("@alice tearing down the showroom of `TASK-1` ({url}).")
    );
    assert_eq!(replies[3], "@alice the showroom of `TASK-1` is down.");
    assert_eq!(lines(&env, "teardowns.log").len(), 2);
    assert_eq!(state_of(&env, "TASK-1"), None);
    serve.stop(Duration::from_secs(30));
}

/// The comments on acme/api#7, once there are `n`.
fn wait_until_comments(gh: &FakeGitHub, serve: &ServeProc, n: usize) -> Vec<String> {
    wait_until("the comments", LONG, Some(&serve.log), || {
        gh.comments("acme/api", 7).len() >= n
    });
    gh.comments("acme/api", 7)
}
