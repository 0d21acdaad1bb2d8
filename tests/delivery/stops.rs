//! What stops a delivery: a cancel, a refused merge, a line that cannot go on; each leaves
//! nothing merged and the task returned.

use super::*;

#[test]
fn cancel_of_a_queued_delivery() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1", &REPOS, &[]);
    ready(&env, "TASK-3", &REPOS, &[]);
    env.hold("api", "build");
    let mut first = env.spawn("first", &["deliver", "TASK-1"]);
    env.wait_at_gate("api", "build");

    let o = env.lockstep(&["deliver", "TASK-3", "--no-wait"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("#2 TASK-3: queued (position 1)"),
        "{}",
        stdout(&o)
    );
    let q = env.queue();
    assert_eq!(q["running"][0]["id"], 1, "{q}");
    assert_eq!(q["queued"][0]["id"], 2, "{q}");

    let o = env.lockstep(&["cancel", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("#2: cancelled"), "{}", stdout(&o));
    let o = env.lockstep(&["cancel", "2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("#2: already cancelled; nothing to cancel"));

    env.open_gate("api", "build");
    assert!(
        first.wait().unwrap().success(),
        "{:?}",
        env.spawned_output("first")
    );
    assert_eq!(env.state(1), "delivered");
    assert_eq!(env.state(2), "cancelled");
    for repo in REPOS {
        assert!(on_master(&env, repo, "TASK-1.txt"));
        assert!(
            !on_master(&env, repo, "TASK-3.txt"),
            "{repo}: cancelled, yet merged"
        );
    }
    let q = env.queue();
    assert!(q["queued"].as_array().unwrap().is_empty(), "{q}");
    // The cancelled task goes back to the team, like a delivery stopped on its way.
    let (status, notes) = env.task("TASK-3");
    assert_eq!(status, "In Progress");
    assert_eq!(
        notes.last().unwrap(),
        "delivery cancelled by `release-lead` before it started (lockstep #2)"
    );
}

/// Delivers TASK-1 (#1) with `step` of `repo` held at its gate, cancels the delivery while
/// the step waits, then lets the step run: the worker ends the delivery cancelled.
fn cancel_while_held(env: &Env, repo: &str, step: &str) {
    env.hold(repo, step);
    let mut worker = env.spawn("worker", &["deliver", "TASK-1"]);
    env.wait_at_gate(repo, step);

    let o = env.lockstep(&["cancel", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("#1: stops"), "{}", stdout(&o));
    env.open_gate(repo, step);
    let status = worker.wait().unwrap();
    let (out, err) = env.spawned_output("worker");
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains("#1 TASK-1: cancelled"), "{err}");
    assert_eq!(env.state(1), "cancelled");
}

#[test]
fn cancel_of_a_running_delivery_stops_before_the_next_deploy() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1", &REPOS, &[]);
    let before = env.masters();
    cancel_while_held(&env, "web", "deploy");
    // The deploy under way finishes; no other starts; both are rolled back.
    assert_eq!(env.rollbacks(), ["web 1", "api 1"]);
    assert_eq!(env.deployed("db"), None);
    let steps = env.show(1)["steps"].clone();
    assert!(
        !steps
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["repo"] == "db" && s["step"] == "deploy"),
        "db was deployed after the cancel: {steps}"
    );
    assert_eq!(env.masters(), before);
    assert_eq!(env.task("TASK-1").0, "In Progress");
}

/// Where the line of a delivery stopped, from its journal, as `(phase, repo, detail)` (the
/// delivery's end, journaled in phase `done`, left out).
fn failures(env: &Env, id: i64) -> Vec<(String, String, String)> {
    env.show(id)["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["event"] == "failed" && j["phase"] != "done")
        .map(|j| {
            let field = |k: &str| j[k].as_str().unwrap().to_string();
            (field("phase"), field("repo"), field("detail"))
        })
        .collect()
}

#[test]
fn cancel_during_build_stops_before_the_tests() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1", &REPOS, &[]);
    let before = env.masters();
    cancel_while_held(&env, "api", "build");
    // The build under way finishes; the line stops before the tests and deploys nothing.
    let steps = env.show(1)["steps"].clone();
    let ran: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(ran.iter().all(|s| *s == "build"), "{steps}");
    assert_eq!(
        failures(&env, 1),
        [("test".into(), String::new(), "cancelled on request".into())]
    );
    assert!(env.rollbacks().is_empty(), "nothing was deployed");
    assert_eq!(env.masters(), before);
    assert_eq!(env.task("TASK-1").0, "In Progress");
}

/// Delivers TASK-1, which fails; returns what `deliver` said on stderr.
fn deliver_failing(env: &Env) -> String {
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    stderr(&o)
}

/// TASK-1 is back In Progress, and its note says nothing was merged.
fn assert_returned_with_nothing_merged(env: &Env) {
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    assert!(
        notes.last().unwrap().contains("nothing was merged"),
        "{notes:?}"
    );
}

#[test]
fn a_merge_refused_by_policy_merges_nothing_and_rolls_back_every_deploy() {
    let env = Env::new(&REPOS);
    env.add_policy("90-freeze.toml", MERGE_FREEZE);
    ready(&env, "TASK-1", &REPOS, &[]);
    let before = env.masters();

    let err = deliver_failing(&env);
    assert!(
        err.contains(
            "#1 TASK-1: failed: delivery failed in merge: merge refused by policy: \
             [release-freeze] merges are frozen until the release is out"
        ),
        "{err}"
    );
    assert_eq!(env.masters(), before);
    assert_eq!(env.rollbacks(), ["db 1", "web 1", "api 1"]);
    let show = env.show(1);
    assert_eq!(show["delivery"]["state"], "failed");
    for r in show["repos"].as_array().unwrap() {
        assert_eq!(r["merged"], false, "{r}");
        assert_eq!(r["rolled_back"], true, "{r}");
    }
    // Refused before the merge phase began: a crash now could never finish it forward.
    let journal = show["journal"].as_array().unwrap();
    assert!(
        !journal
            .iter()
            .any(|j| j["phase"] == "merge" && j["event"] == "push"),
        "{show}"
    );
    assert_returned_with_nothing_merged(&env);
}

#[test]
fn a_line_that_cannot_go_on_fails_in_its_phase_and_returns_the_task() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1", &REPOS, &[]);
    let before = env.masters();
    // The steps' logs cannot be written: lockstep itself cannot run the build.
    std::fs::create_dir_all(env.state_dir()).unwrap();
    std::fs::write(env.state_dir().join("logs"), "not a folder\n").unwrap();

    let err = deliver_failing(&env);
    assert!(
        err.contains("#1 TASK-1: failed: delivery failed in build: cannot create `"),
        "{err}"
    );
    let failed = failures(&env, 1);
    assert_eq!(failed.len(), 1, "{failed:?}");
    let (phase, repo, detail) = &failed[0];
    assert_eq!((phase.as_str(), repo.as_str()), ("build", ""));
    assert!(
        detail.starts_with("cannot create `") && detail.contains("logs"),
        "{detail}"
    );
    assert_eq!(env.state(1), "failed");
    assert_eq!(env.masters(), before);
    assert!(env.rollbacks().is_empty());
    assert_returned_with_nothing_merged(&env);
}
