//! The pipelined queue (`[delivery] window` > 1): real repositories, real step processes. The
//! head deploys while the deliveries behind it are built and tested on top of it; what lands
//! is what was tested and deployed, in queue order, all or nothing.

use std::os::unix::process::ExitStatusExt as _;
use std::time::Duration;

use crate::util::pipeline::*;
use crate::util::*;

const QUICK: Durations = Durations {
    build: Duration::from_millis(100),
    test: Duration::from_millis(300),
    deploy: Duration::from_millis(20),
    verify: Duration::from_millis(20),
};

/// The eight tasks under `window`: what became of each, and which landed.
fn eight_tasks(window: usize) -> (Env, Vec<i64>, Vec<i64>) {
    let env = sandbox(window, QUICK);
    let before = masters(&env);
    let ids = queue_all(&env, &EIGHT, Some(FAILING));
    work(&env);
    let delivered = assert_landed_as_tested(&env, &ids, &before);
    (env, ids, delivered)
}

#[test]
fn eight_tasks_land_the_same_in_queue_order_under_window_1_and_window_4() {
    let (serial, ids, serial_landed) = eight_tasks(1);
    let (piped, piped_ids, piped_landed) = eight_tasks(4);
    assert_eq!(ids, piped_ids);
    let failing = ids[EIGHT.iter().position(|(t, _)| *t == FAILING).unwrap()];
    let others: Vec<i64> = ids.iter().copied().filter(|id| *id != failing).collect();
    assert_eq!(serial_landed, others);
    assert_eq!(piped_landed, others);
    for env in [&serial, &piped] {
        let states = states(env, &ids);
        assert_eq!(states[&failing], "failed", "{states:?}");
        let error = env.show(failing)["delivery"]["error"].clone();
        assert_eq!(
            error,
            "delivery failed in test (web): `test` exited with 1: assertion failed: TASK-5 breaks web",
        );
        // Only the failing task went back to the team.
        for (task, _) in EIGHT {
            let expected = if task == FAILING {
                "In Progress"
            } else {
                "Closed"
            };
            assert_eq!(env.task(task).0, expected, "{task}");
        }
    }
    // Nothing of the serial line changed: no candidate, nothing discarded.
    for id in &ids {
        let d = serial.show(*id)["delivery"].clone();
        assert_eq!(
            (d["discards"].as_i64(), d["built_on"].as_str()),
            (Some(0), Some(""))
        );
    }
    // In the pipeline, deliveries were built on those ahead of them (`lockstep show`).
    let eighth = piped.show(ids[7]);
    let journal = eighth["journal"].as_array().unwrap();
    assert!(
        journal
            .iter()
            .any(|j| j["event"] == "built on" && j["detail"].as_str().unwrap().starts_with('#')),
        "{journal:?}"
    );
    let o = piped.lockstep(&["show", &ids[7].to_string()]);
    assert!(stdout(&o).contains("  built on #"), "{}", stdout(&o));
}

#[test]
fn a_candidate_built_on_a_failing_delivery_is_not_blamed_and_lands() {
    let env = sandbox(3, QUICK);
    // TASK-1 breaks web's test; TASK-2 changes web behind it; TASK-3 changes api only.
    let tasks: [(&str, &[&str]); 3] = [
        ("TASK-1", &["web"]),
        ("TASK-2", &["web"]),
        ("TASK-3", &["api"]),
    ];
    let before = masters(&env);
    let ids = queue_all(&env, &tasks, Some("TASK-1"));
    // Both web tests wait at the gate, so that TASK-2 is tested on top of TASK-1.
    env.hold("web", "test");
    let worker = env.spawn("worker", &["work"]);
    wait_for("both web tests at the gate", || {
        ids[..2].iter().all(|id| testing(&env, *id)).then_some(())
    });
    assert_eq!(env.show(ids[1])["delivery"]["built_on"], "#1");
    env.open_gate("web", "test");
    worker_succeeds(&env, worker);

    assert_eq!(env.state(ids[0]), "failed");
    assert_eq!(env.task("TASK-1").0, "In Progress");
    // TASK-2 was discarded when TASK-1 failed, prepared again on web's master, and landed;
    // its failure while built on TASK-1 was never reported.
    let two = env.show(ids[1]);
    assert_eq!(two["delivery"]["state"], "delivered", "{two:#}");
    assert_eq!(two["delivery"]["discards"], 1);
    assert_eq!(two["delivery"]["built_on"], "");
    let journal = two["journal"].as_array().unwrap();
    assert_eq!(
        discards(&env, ids[1]),
        ["ahead_changed: base changed (#1, which it was built on in `web`, left the line)"]
    );
    assert!(
        !journal.iter().any(|j| j["event"] == "failed"),
        "{journal:?}"
    );
    assert_eq!(env.task("TASK-2").0, "Closed");
    // TASK-3 shares no repository with TASK-1: it kept its result, tested once.
    let runs = step_runs(&env);
    let tests_of = |id: i64| {
        runs.iter()
            .filter(|r| r.delivery == id && r.step == "test")
            .count()
    };
    assert_eq!(tests_of(ids[2]), 1, "{runs:?}");
    assert_eq!(env.show(ids[2])["delivery"]["discards"], 0);
    assert_eq!(
        assert_landed_as_tested(&env, &ids, &before),
        [ids[1], ids[2]]
    );
}

#[test]
fn a_maintainer_push_during_the_pipeline_prepares_the_candidates_again() {
    let env = sandbox(4, QUICK);
    let tasks: [(&str, &[&str]); 3] = [
        ("TASK-1", &["api"]),
        ("TASK-2", &["api"]),
        ("TASK-3", &["web"]),
    ];
    let before = masters(&env);
    let ids = queue_all(&env, &tasks, None);
    // The head's deploy waits while the candidates are built and tested.
    env.hold("api", "deploy");
    let worker = env.spawn("worker", &["work"]);
    env.wait_at_gate("api", "deploy");
    wait_for("TASK-3 tested", || {
        step_runs(&env)
            .iter()
            .any(|r| r.delivery == ids[2] && r.step == "test" && r.passed)
            .then_some(())
    });
    let hotfix = env.advance_master("web", "hotfix.txt", "fix\n");
    wait_for("TASK-3 discarded", || {
        (env.show(ids[2])["delivery"]["discards"].as_i64() == Some(1)).then_some(())
    });
    env.open_gate("api", "deploy");
    worker_succeeds(&env, worker);
    let mut before = before;
    before.insert("web".into(), hotfix.clone());
    assert_eq!(assert_landed_as_tested(&env, &ids, &before), ids);
    let discarded = discards(&env, ids[2]);
    assert!(
        discarded[0].starts_with("upstream_moved: base changed (the upstream of `web` moved to "),
        "{discarded:?}"
    );
    // TASK-3 landed on top of the maintainer's commit.
    let landed_web = env.show(ids[2])["repos"][0]["base_sha"].clone();
    assert_eq!(landed_web, hotfix.as_str());
}

#[test]
fn a_high_priority_delivery_overtakes_waiting_candidates_never_the_head() {
    let env = sandbox(3, QUICK);
    let tasks: [(&str, &[&str]); 4] = [
        ("TASK-1", &["api"]),
        ("TASK-2", &["api"]),
        ("TASK-3", &["api"]),
        ("TASK-4", &["api"]),
    ];
    let before = masters(&env);
    let ids = queue_all(&env, &tasks[..3], None);
    env.hold("api", "deploy");
    let worker = env.spawn("worker", &["work"]);
    env.wait_at_gate("api", "deploy");
    // TASK-4 is asked for with a higher priority while TASK-2 and TASK-3 are prepared.
    env.set_status(&[("TASK-4", "In Progress")]);
    env.task_branch(
        "api",
        "feature/TASK-4-work",
        "TASK-4.txt",
        "TASK-4 in api\n",
    );
    env.set_status(&[("TASK-4", "For Delivery")]);
    let urgent = queue(&env, "TASK-4", 5);
    wait_for("TASK-4 in the pipeline", || {
        (env.state(urgent) == "running").then_some(())
    });
    env.open_gate("api", "deploy");
    worker_succeeds(&env, worker);
    // The queue's order: the head first (never overtaken), then TASK-4, then the others.
    let all = [ids[0], urgent, ids[1], ids[2]];
    assert_eq!(assert_landed_as_tested(&env, &all, &before).len(), 4);
    let order: Vec<i64> = landed(&env, "api", &before["api"])
        .iter()
        .map(|sha| {
            *all.iter()
                .find(|id| env.show(**id)["repos"][0]["rebased_sha"] == sha.as_str())
                .unwrap()
        })
        .collect();
    assert_eq!(order, [ids[0], urgent, ids[1], ids[2]]);
    // TASK-3, last of the window, went back to the queue to make room.
    let discarded = discards(&env, ids[2]);
    assert!(
        discarded.iter().any(|d| d.starts_with("overtaken: ")),
        "{discarded:?}"
    );
}

#[test]
fn sigkill_with_candidates_in_flight_then_recovery_lands_each_once() {
    let env = sandbox(3, QUICK);
    let tasks: [(&str, &[&str]); 3] = [
        ("TASK-1", &["api", "web"]),
        ("TASK-2", &["api"]),
        ("TASK-3", &["web"]),
    ];
    let before = masters(&env);
    let ids = queue_all(&env, &tasks, None);
    env.hold("api", "test");
    env.hold("web", "test");
    let mut worker = env.spawn("worker", &["work"]);
    // Every delivery has a test step running (held at its gate): the head and two candidates.
    wait_for("three deliveries testing", || {
        ids.iter().all(|id| testing(&env, *id)).then_some(())
    });
    let q = env.lockstep(&["queue"]);
    let text = stdout(&q);
    assert!(text.contains("head"), "{text}");
    assert!(text.contains("on #1"), "{text}");
    // The same for scripts: every delivery in flight, which are candidates, what each is
    // built on and its phase.
    let q = env.lockstep(&["queue", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&q)).unwrap();
    let running: Vec<(i64, bool, String, String)> = json["running"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_i64().unwrap(),
                d["candidate"].as_bool().unwrap(),
                d["built_on"].as_str().unwrap().to_string(),
                d["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        running,
        [
            (ids[0], false, String::new(), "test".into()),
            (ids[1], true, "#1".into(), "test".into()),
            (ids[2], true, "#1".into(), "test".into()),
        ],
        "{json:#}"
    );
    worker.kill().unwrap();
    assert_eq!(worker.wait().unwrap().signal(), Some(9));

    let o = env.lockstep(&["recover"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("#1 TASK-1: was interrupted in test; queued again to resume it"),
        "{out}"
    );
    assert!(
        out.contains("#2 TASK-2: was a candidate in test; queued again, from its rebase"),
        "{out}"
    );
    assert!(
        out.contains("#3 TASK-3: was a candidate in test; queued again, from its rebase"),
        "{out}"
    );
    wait_for("the killed worker's steps to be stopped", || {
        env.step_processes().is_empty().then_some(())
    });
    let q = env.queue();
    let queued: Vec<(i64, String)> = q["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_i64().unwrap(),
                d["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        queued,
        [(1, "test".into()), (2, String::new()), (3, String::new())]
    );

    env.unhold("api", "test");
    env.unhold("web", "test");
    env.open_gate("api", "test");
    env.open_gate("web", "test");
    work(&env);
    assert_eq!(assert_landed_as_tested(&env, &ids, &before), ids);
    // Each landed once: one push per repository it touches.
    for (id, (_, repos)) in ids.iter().zip(tasks) {
        let pushes = env.show(*id)["journal"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["event"] == "pushed")
            .count();
        assert_eq!(pushes, repos.len(), "#{id}");
    }
    for repo in ["api", "web"] {
        assert_eq!(landed(&env, repo, &before[repo]).len(), 2, "{repo}");
    }
}

/// A candidate cancelled while it is tested: its steps are stopped (their process groups
/// killed), it ends cancelled and its task goes back; the candidate built on it is discarded,
/// prepared again without it, and lands. The head is not disturbed.
#[test]
fn cancel_of_a_candidate_stops_its_steps_and_prepares_those_behind_again() {
    let env = sandbox(3, QUICK);
    let tasks: [(&str, &[&str]); 3] = [
        ("TASK-1", &["api"]),
        ("TASK-2", &["web"]),
        ("TASK-3", &["web"]),
    ];
    let before = masters(&env);
    let ids = queue_all(&env, &tasks, None);
    env.hold("api", "deploy");
    env.hold("web", "test");
    let worker = env.spawn("worker", &["work"]);
    env.wait_at_gate("api", "deploy");
    wait_for("both web tests at the gate", || {
        (testing(&env, ids[1]) && testing(&env, ids[2])).then_some(())
    });
    assert_eq!(env.show(ids[2])["delivery"]["built_on"], "#2");

    let o = env.lockstep(&["cancel", &ids[1].to_string()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    wait_for("TASK-2 cancelled", || {
        (env.state(ids[1]) == "cancelled").then_some(())
    });
    // Its test was stopped at the gate, not let run: the gate is still closed.
    let two = env.show(ids[1]);
    let test = two["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "test")
        .unwrap()
        .clone();
    assert_eq!(test["outcome"], "stopped", "{two:#}");
    assert_eq!(env.task("TASK-2").0, "In Progress");
    wait_for("TASK-3 discarded", || {
        (env.show(ids[2])["delivery"]["discards"].as_i64() == Some(1)).then_some(())
    });

    env.open_gate("web", "test");
    env.open_gate("api", "deploy");
    worker_succeeds(&env, worker);
    let three = env.show(ids[2]);
    assert_eq!(
        discards(&env, ids[2]),
        ["ahead_changed: base changed (#2, which it was built on in `web`, left the line)"]
    );
    assert_eq!(three["delivery"]["built_on"], "", "{three:#}");
    assert_eq!(
        assert_landed_as_tested(&env, &ids, &before),
        [ids[0], ids[2]]
    );
    // TASK-2's test never ran: the only step runs recorded for it are its build's.
    let runs = step_runs(&env);
    assert!(
        runs.iter()
            .filter(|r| r.delivery == ids[1])
            .all(|r| r.step == "build"),
        "{runs:?}"
    );
    let web = env.git_in("web", &["ls-tree", "--name-only", "master"]);
    assert!(!web.lines().any(|f| f == "TASK-2.txt"), "{web}");
}
