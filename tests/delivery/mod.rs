//! Deliveries: the real `lockstep deliver` against three bare repositories guarded by the real
//! hooks, with real step scripts that build, test and deploy by writing files.

use crate::util::*;

mod merge;
mod rollback;
mod signals;
mod stops;

/// A policy that the bot's pushes to `db` fall foul of: the hooks judge the bot too.
const DB_FROZEN: &str = r#"
[[rule]]
name = "db-frozen"
on = ["push"]
when = 'repo == "db" && branch == "master"'
require = 'false'
message = "`db` is frozen for the release; ask the release lead"
"#;

const REPOS: [&str; 3] = ["api", "web", "db"];

/// Puts `task` In Progress, pushes a branch for it in each of `repos` (one commit writing
/// `<task>.txt` plus `extra` files for the repository named with them), then moves the task to
/// For Delivery. Returns the branch heads.
fn ready(env: &Env, task: &str, repos: &[&str], extra: &[(&str, &str, &str)]) -> Vec<String> {
    env.set_status(&[(task, "In Progress")]);
    let heads = repos
        .iter()
        .map(|repo| {
            let mut files = vec![(format!("{task}.txt"), format!("{task} in {repo}\n"))];
            for (r, file, text) in extra {
                if r == repo {
                    files.push((file.to_string(), text.to_string()));
                }
            }
            let files: Vec<(&str, &str)> = files
                .iter()
                .map(|(f, t)| (f.as_str(), t.as_str()))
                .collect();
            env.task_branch_with(repo, &format!("feature/{task}-work"), &files, &[])
        })
        .collect();
    env.set_status(&[(task, "For Delivery")]);
    heads
}

/// Whether `file` is in the tree of `master` of `repo`.
fn on_master(env: &Env, repo: &str, file: &str) -> bool {
    git(&env.bare(repo), "admin")
        .succeeds(&["cat-file", "-e", &format!("refs/heads/master:{file}")])
        .unwrap()
}

fn parents(env: &Env, repo: &str, rev: &str) -> Vec<String> {
    env.git_in(repo, &["rev-list", "--parents", "-n", "1", rev])
        .split_whitespace()
        .skip(1)
        .map(String::from)
        .collect()
}

fn tree(env: &Env, repo: &str, rev: &str) -> String {
    env.git_in(repo, &["rev-parse", &format!("{rev}^{{tree}}")])
        .trim()
        .to_string()
}

fn short(sha: &str) -> &str {
    &sha[..10]
}

#[test]
fn good_delivery_advances_every_upstream_and_closes_the_task() {
    let env = Env::new(&REPOS);
    let heads = ready(&env, "TASK-1", &REPOS, &[]);
    // Upstream moves on after the branch was cut: the delivery has to rebase.
    env.advance_master("api", "hotfix.txt", "hotfix\n");
    let before = env.masters();

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("#1 TASK-1: delivered"),
        "{}",
        stdout(&o)
    );

    let after = env.masters();
    for (i, repo) in REPOS.iter().enumerate() {
        assert_ne!(after[i], before[i], "{repo} did not advance");
        assert!(on_master(&env, repo, "TASK-1.txt"), "{repo}");
        assert!(
            git(&env.bare(repo), "admin")
                .is_ancestor(&before[i], &after[i])
                .unwrap(),
            "{repo}: the new master does not contain the old one"
        );
        // What was deployed is what landed.
        assert_eq!(env.deployed(repo).as_deref(), Some(after[i].as_str()));
    }
    // The branch that could fast-forward landed as is; the one behind was rebased.
    assert_eq!(after[1], heads[1]);
    assert_ne!(after[0], heads[0]);
    assert!(on_master(&env, "api", "hotfix.txt"));
    assert!(env.rollbacks().is_empty());

    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "Closed");
    let note = notes.last().unwrap();
    for (i, repo) in REPOS.iter().enumerate() {
        assert!(
            note.contains(&format!("{repo} {}", short(&after[i]))),
            "{note}"
        );
    }
    let show = env.show(1);
    assert_eq!(show["delivery"]["state"], "delivered");
    for r in show["repos"].as_array().unwrap() {
        assert_eq!(r["merged"], true, "{r}");
        assert_eq!(r["deployed"], true, "{r}");
    }
    let logs = stdout(&env.lockstep(&["logs", "1", "--repo", "db", "--step", "deploy"]));
    assert!(logs.contains("deployed db"), "{logs}");
}

#[test]
fn failing_test_in_one_repo_advances_none_and_deploys_nothing() {
    let env = Env::new(&REPOS);
    ready(
        &env,
        "TASK-1",
        &REPOS,
        &[("db", "FAIL-TEST", "rows mismatch")],
    );
    let before = env.masters();

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("#1 TASK-1: failed: delivery failed in test (db): `test` exited with 1"),
        "{err}"
    );
    assert!(err.contains("lockstep logs 1"), "{err}");
    assert_eq!(env.masters(), before);
    for repo in REPOS {
        assert_eq!(env.deployed(repo), None, "{repo} was deployed");
    }
    assert!(
        env.rollbacks().is_empty(),
        "nothing was deployed to roll back"
    );

    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    let note = notes.last().unwrap();
    assert!(note.contains("nothing was merged"), "{note}");
    assert!(note.contains("assertion failed: rows mismatch"), "{note}");
    let logs = stdout(&env.lockstep(&["logs", "1", "--repo", "db", "--step", "test"]));
    assert!(logs.contains("==> db test (failed, exit 1) <=="), "{logs}");
    assert!(logs.contains("assertion failed: rows mismatch"), "{logs}");
}

#[test]
fn failing_verify_rolls_back_what_was_deployed_in_reverse_order() {
    let env = Env::new(&REPOS);
    ready(
        &env,
        "TASK-1",
        &REPOS,
        &[("web", "FAIL-VERIFY", "500 on /login")],
    );
    let before = env.masters();

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("delivery failed in verify (web): `verify` exited with 1"),
        "{}",
        stderr(&o)
    );
    assert_eq!(env.masters(), before);
    // Every repository was deployed before verify began; the last deployed goes first.
    assert_eq!(env.rollbacks(), ["db 1", "web 1", "api 1"]);
    for repo in REPOS {
        assert_eq!(env.deployed(repo), None, "{repo} is still deployed");
    }
    let show = env.show(1);
    for r in show["repos"].as_array().unwrap() {
        assert_eq!(r["rolled_back"], true, "{r}");
        assert_eq!(r["merged"], false, "{r}");
    }
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    assert!(
        notes
            .last()
            .unwrap()
            .contains("smoke test failed: 500 on /login")
    );
}

#[test]
pub(crate) fn a_failed_rollback_is_reported_and_can_be_run_again() {
    let env = Env::new(&REPOS);
    ready(
        &env,
        "TASK-1",
        &REPOS,
        &[("web", "FAIL-VERIFY", "500 on /login")],
    );
    env.fail_step("api", "rollback", true);

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("the rollback of `api` failed: it is still deployed"),
        "{err}"
    );
    assert_eq!(env.rollbacks(), ["db 1", "web 1"]);
    assert!(env.deployed("api").is_some());
    let note = env.task("TASK-1").1.pop().unwrap();
    assert!(note.contains("the rollback of `api` failed"), "{note}");

    // Still failing: `lockstep rollback` says so.
    let o = env.lockstep(&["rollback", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("the rollback of `api` failed"),
        "{}",
        stderr(&o)
    );
    // Fixed: only what is left is rolled back.
    env.fail_step("api", "rollback", false);
    let o = env.lockstep(&["rollback", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(env.rollbacks(), ["db 1", "web 1", "api 1"]);
    assert_eq!(env.deployed("api"), None);
}

#[test]
fn rebase_conflict_names_the_conflicting_files() {
    let env = Env::new(&REPOS);
    ready(
        &env,
        "TASK-1",
        &REPOS,
        &[
            ("web", "README", "web, by alice\n"),
            ("web", "app.css", "a\n"),
        ],
    );
    env.advance_master("web", "README", "web, by the release lead\n");
    env.advance_master("web", "app.css", "b\n");
    let before = env.masters();

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(
            "delivery failed in rebase (web): `feature/TASK-1-work` does not rebase onto \
             `master`: conflicts in README, app.css; rebase it by hand and push again"
        ),
        "{err}"
    );
    assert_eq!(env.masters(), before);
    assert!(env.rollbacks().is_empty());
    assert_eq!(env.deployed("api"), None);
    assert_eq!(env.task("TASK-1").0, "In Progress");
}

#[test]
fn two_deliveries_started_at_once_land_one_after_the_other() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1", &REPOS, &[]);
    ready(&env, "TASK-3", &REPOS, &[]);

    let mut a = env.spawn("a", &["deliver", "TASK-1"]);
    let mut b = env.spawn("b", &["deliver", "TASK-3"]);
    let (sa, sb) = (a.wait().unwrap(), b.wait().unwrap());
    assert!(sa.success(), "{:?}", env.spawned_output("a"));
    assert!(sb.success(), "{:?}", env.spawned_output("b"));

    for repo in REPOS {
        assert!(on_master(&env, repo, "TASK-1.txt"), "{repo}");
        assert!(on_master(&env, repo, "TASK-3.txt"), "{repo}");
    }
    let (one, two) = (env.show(1), env.show(2));
    assert_eq!(one["delivery"]["state"], "delivered");
    assert_eq!(two["delivery"]["state"], "delivered");
    // One after the other: the second started once the first had finished.
    let finished = one["delivery"]["finished_at"].as_i64().unwrap();
    let started = two["delivery"]["started_at"].as_i64().unwrap();
    assert!(
        started >= finished,
        "#2 started at {started}, #1 finished at {finished}"
    );
    assert_eq!(env.task("TASK-1").0, "Closed");
    assert_eq!(env.task("TASK-3").0, "Closed");
}

#[test]
fn a_failing_test_stops_the_other_repositories_tests() {
    let env = Env::new(&REPOS);
    env.set_delivery("parallel", "3");
    ready(
        &env,
        "TASK-1",
        &REPOS,
        &[
            ("db", "FAIL-TEST", "rows mismatch"),
            ("web", "SLOW-TEST", "600"),
        ],
    );
    let before = env.masters();

    // Without the stop, the line would wait for web's ten-minute test until the sandbox's
    // 60 s step timeout killed it, and report web's timeout.
    let started = std::time::Instant::now();
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the line waited for web's slow test"
    );
    let err = stderr(&o);
    assert!(
        err.contains(
            "delivery failed in test (db): `test` exited with 1: assertion failed: rows mismatch"
        ),
        "{err}"
    );
    wait_for("the stopped step's processes to end", || {
        env.step_processes().is_empty().then_some(())
    });
    let steps = env.show(1)["steps"].clone();
    let web_test = steps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["repo"] == "web" && s["step"] == "test")
        .unwrap();
    assert_eq!(web_test["outcome"], "stopped", "{web_test}");
    assert_eq!(env.masters(), before);
    for repo in REPOS {
        assert_eq!(env.deployed(repo), None, "{repo} was deployed");
    }
    assert_eq!(env.task("TASK-1").0, "In Progress");
}

#[test]
fn step_timeout_kills_the_process_group_and_fails() {
    let env = Env::new(&REPOS);
    // Long enough for every other step on a loaded machine, far shorter than the slow test.
    env.set_delivery("step_timeout", "\"4s\"");
    ready(&env, "TASK-1", &REPOS, &[("web", "SLOW-TEST", "600")]);
    let before = env.masters();

    let started = std::time::Instant::now();
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the slow test was not cut short"
    );
    assert!(
        stderr(&o).contains("delivery failed in test (web): `test` ran past 4s and was killed"),
        "{}",
        stderr(&o)
    );
    // The step's `sleep` (a child of the step's shell) went with it.
    wait_for("the timed-out step's processes to end", || {
        env.step_processes().is_empty().then_some(())
    });
    assert_eq!(env.masters(), before);
    let steps = env.show(1)["steps"].clone();
    let web_test = steps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["repo"] == "web" && s["step"] == "test")
        .unwrap();
    assert_eq!(web_test["outcome"], "timed out");
}

#[test]
fn task_in_two_of_three_repos_leaves_the_third_alone() {
    let env = Env::new(&REPOS);
    env.set_delivery("delete_branches", "true");
    ready(&env, "TASK-1", &["api", "db"], &[]);
    let before = env.masters();

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let after = env.masters();
    assert_ne!(after[0], before[0]);
    assert_eq!(after[1], before[1], "web has no branch for the task");
    assert_ne!(after[2], before[2]);
    assert_eq!(env.deployed("web"), None);
    assert!(env.deployed("api").is_some() && env.deployed("db").is_some());
    // `delete_branches`: the delivered branches are gone (through the hooks, as the bot).
    assert_eq!(env.rev("api", "refs/heads/feature/TASK-1-work"), None);
    assert_eq!(env.rev("db", "refs/heads/feature/TASK-1-work"), None);
    let show = env.show(1);
    let repos: Vec<&str> = show["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["repo"].as_str().unwrap())
        .collect();
    assert_eq!(repos, ["api", "db"]);
    assert!(
        show["journal"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["event"] == "left alone" && j["detail"] == "web")
    );
    let note = env.task("TASK-1").1.pop().unwrap();
    assert!(note.contains("api ") && note.contains("db "), "{note}");
    assert!(!note.contains("web"), "{note}");
}

#[test]
fn task_with_no_branch_fails_with_a_clear_message() {
    let env = Env::new(&REPOS);
    env.set_status(&[("TASK-1", "For Delivery")]);
    let before = env.masters();
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(
            "delivery failed in rebase: task `TASK-1` has no branch in any repository \
             (looked in api, web, db)"
        ),
        "{}",
        stderr(&o)
    );
    assert_eq!(env.masters(), before);
}

#[test]
fn two_branches_for_one_task_in_one_repo_is_an_error_naming_both() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1", &REPOS, &[]);
    env.set_status(&[("TASK-1", "In Progress")]);
    env.task_branch("web", "feature/TASK-1-again", "again.txt", "again\n");
    env.set_status(&[("TASK-1", "For Delivery")]);
    let before = env.masters();

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(
            "`web` has 2 branches for `TASK-1`: `feature/TASK-1-again`, `feature/TASK-1-work`; \
             delete all but one"
        ),
        "{}",
        stderr(&o)
    );
    assert_eq!(env.masters(), before);
}

#[test]
fn deliver_is_refused_unless_the_task_is_for_delivery() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1", &REPOS, &[]);
    env.set_status(&[("TASK-1", "In Progress")]);
    let before = env.masters();

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("lockstep: delivery of `TASK-1` refused"),
        "{err}"
    );
    assert!(
        err.contains(
            "[task-for-delivery] task `TASK-1` is In Progress; move it to For Delivery first"
        ),
        "{err}"
    );
    let o = env.lockstep(&["deliver", "TASK-404"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("the task does not exist in the tasks file"),
        "{}",
        stderr(&o)
    );
    assert_eq!(env.masters(), before);
    let q = env.queue();
    assert!(q["queued"].as_array().unwrap().is_empty(), "{q}");
    assert!(q["recent"].as_array().unwrap().is_empty(), "{q}");
}

#[test]
pub(crate) fn push_with_deliver_option_queues_and_a_background_worker_delivers() {
    let env = Env::new(&REPOS);
    env.set_status(&[("TASK-1", "In Progress")]);
    env.task_branch("api", "feature/TASK-1-work", "TASK-1.txt", "api\n");
    env.task_branch("web", "feature/TASK-1-work", "TASK-1.txt", "web\n");
    let before = env.masters();

    // The last branch goes up with `-o deliver`: the push declares the task ready.
    let dir = env.clone_of("db", "alice");
    let g = git(&dir, "alice");
    g.run(&[
        "switch",
        "--quiet",
        "-c",
        "feature/TASK-1-work",
        "origin/master",
    ])
    .unwrap();
    commit(&dir, "alice", "TASK-1.txt", "db\n", "TASK-1 schema").unwrap();
    let p = push(&dir, "alice", &["-o", "deliver", "feature/TASK-1-work"]).unwrap();
    assert!(p.accepted, "{:?}", p.remote);
    assert!(
        p.remote
            .iter()
            .any(|l| l.contains("delivery #1 of `TASK-1` queued (position 1)")),
        "{:?}",
        p.remote
    );

    let state = wait_for("the background worker to deliver #1", || {
        let s = env.state(1);
        (s != "queued" && s != "running").then_some(s)
    });
    assert_eq!(state, "delivered", "{}", env.show(1));
    let after = env.masters();
    for i in 0..3 {
        assert_ne!(after[i], before[i], "{} did not advance", REPOS[i]);
    }
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "Closed");
    assert!(
        notes[0].contains("ready for delivery: alice pushed with `-o deliver`"),
        "{notes:?}"
    );
    assert_eq!(env.show(1)["delivery"]["source"], "push");
    assert_eq!(env.show(1)["delivery"]["requester"], "alice");
}

#[test]
fn a_refused_deliver_option_leaves_the_task_where_the_push_found_it() {
    let env = Env::new(&REPOS);
    env.add_policy(
        "90-release-lead-delivers.toml",
        r#"
[[rule]]
name = "release-lead-delivers"
on = ["deliver"]
require = 'requester == "release-lead"'
message = "only the release lead asks for deliveries this week"
"#,
    );
    env.set_status(&[("TASK-1", "In Progress")]);
    let dir = env.clone_on_branch("api", "alice", "feature/TASK-1-work", "TASK-1 work");
    let before = env.masters();
    let p = push(&dir, "alice", &["-o", "deliver", "feature/TASK-1-work"]).unwrap();
    // The push itself is in: post-receive cannot undo it, only decline to deliver.
    assert!(p.accepted, "{:?}", p.remote);
    assert!(
        p.remote.iter().any(|l| l.contains(
            "delivery of `TASK-1` refused: [release-lead-delivers] only the release lead asks \
             for deliveries this week (task moved back to In Progress)"
        )),
        "{:?}",
        p.remote
    );
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("ready for delivery: alice pushed with `-o deliver`")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("not delivered: [release-lead-delivers]")
                && n.ends_with("back to In Progress")),
        "{notes:?}"
    );
    let q = env.queue();
    assert!(q["queued"].as_array().unwrap().is_empty(), "{q}");
    assert_eq!(env.masters(), before);
}
