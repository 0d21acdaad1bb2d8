//! Crash tests: the worker (`lockstep deliver`) is killed with SIGKILL at the worst moments,
//! then `lockstep recover` or another `lockstep deliver` takes over. Whatever happens, every
//! upstream has advanced or none has, what was deployed is rolled back, and no delivery is
//! lost or run twice.

use std::os::unix::process::ExitStatusExt as _;

use crate::util::*;

const REPOS: [&str; 3] = ["api", "web", "db"];

/// Puts `task` In Progress, pushes a branch for it in every repository, and moves it to For
/// Delivery.
fn ready(env: &Env, task: &str) {
    env.set_status(&[(task, "In Progress")]);
    for repo in REPOS {
        env.task_branch(
            repo,
            &format!("feature/{task}-work"),
            &format!("{task}.txt"),
            &format!("{task} in {repo}\n"),
        );
    }
    env.set_status(&[(task, "For Delivery")]);
}

fn has_file(env: &Env, repo: &str, file: &str) -> bool {
    git(&env.bare(repo), "admin")
        .succeeds(&["cat-file", "-e", &format!("refs/heads/master:{file}")])
        .unwrap()
}

/// All or nothing: every upstream has `task`, or none has.
fn assert_all_or_nothing(env: &Env, task: &str) -> bool {
    let file = format!("{task}.txt");
    let landed: Vec<bool> = REPOS.iter().map(|r| has_file(env, r, &file)).collect();
    assert!(
        landed.iter().all(|l| *l) || landed.iter().all(|l| !*l),
        "{task} landed in some upstreams only: {:?}",
        REPOS.iter().zip(&landed).collect::<Vec<_>>()
    );
    landed[0]
}

/// The ids of the deliveries of a task, across the whole queue.
fn deliveries_of(env: &Env, task: &str) -> Vec<i64> {
    let q = env.queue();
    let mut ids: Vec<i64> = ["running", "queued", "recent"]
        .iter()
        .flat_map(|k| q[*k].as_array().unwrap().clone())
        .filter(|d| d["task"] == task)
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    ids
}

/// Kills a spawned `lockstep` with SIGKILL and reaps it.
fn kill(child: &mut std::process::Child) {
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
}

fn assert_no_step_survives(env: &Env) {
    wait_for("the killed worker's steps to be stopped", || {
        env.step_processes().is_empty().then_some(())
    });
}

#[test]
pub(crate) fn crash_during_test_resumes_and_delivers_once() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1");
    ready(&env, "TASK-3");
    let before = env.masters();
    env.hold("api", "test");
    let mut worker = env.spawn("worker", &["deliver", "TASK-1"]);
    env.wait_at_gate("api", "test");
    // Another delivery waits behind the one in flight.
    let o = env.lockstep(&["deliver", "TASK-3", "--no-wait"]);
    assert!(stdout(&o).contains("#2 TASK-3: queued"), "{}", stdout(&o));

    kill(&mut worker);
    assert_eq!(env.state(1), "running");
    env.unhold("api", "test");
    let o = env.lockstep(&["recover"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("#1 TASK-1: was interrupted in test; queued again to resume it"),
        "{}",
        stdout(&o)
    );
    // The step the dead worker left running does not run on beside the resumed one.
    assert_no_step_survives(&env);
    assert_eq!(env.masters(), before, "recovery alone merges nothing");
    let q = env.queue();
    let queued: Vec<i64> = q["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        queued,
        [1, 2],
        "the interrupted delivery keeps its place: {q}"
    );

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("#1 TASK-1: already queued; following it"));
    assert!(assert_all_or_nothing(&env, "TASK-1"));
    // Resumed at test: the builds were not run again, the tests were.
    assert_eq!(runs_of_step(&env, 1, "api", "build"), 1);
    assert_eq!(runs_of_step(&env, 1, "api", "test"), 2);
    assert!(
        env.show(1)["journal"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["event"] == "resumed")
    );
    // The one queued behind is run by the worker `deliver` leaves behind.
    let state = wait_for("#2 to finish", || {
        let s = env.state(2);
        (s != "queued" && s != "running").then_some(s)
    });
    assert_eq!(state, "delivered");
    assert!(assert_all_or_nothing(&env, "TASK-3"));
    assert_eq!(deliveries_of(&env, "TASK-1"), [1]);
    assert_eq!(deliveries_of(&env, "TASK-3"), [2]);
    assert_eq!(runs_of_step(&env, 1, "api", "deploy"), 1, "deployed once");
    assert!(env.rollbacks().is_empty());
    assert_eq!(env.task("TASK-1").0, "Closed");
}

#[test]
fn crash_during_test_with_the_checkouts_gone_starts_over() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1");
    env.hold("db", "test");
    let mut worker = env.spawn("worker", &["deliver", "TASK-1"]);
    env.wait_at_gate("db", "test");
    kill(&mut worker);
    env.unhold("db", "test");
    // The machine restarted and its scratch space was wiped: nothing to resume from.
    std::fs::remove_dir_all(env.state_dir().join("work")).unwrap();
    // Upstream moved meanwhile: what gets deployed is not what was built before the crash.
    env.advance_master("web", "urgent.txt", "urgent\n");

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(assert_all_or_nothing(&env, "TASK-1"));
    assert!(has_file(&env, "web", "urgent.txt"));
    // Rebased again, so built again: nothing is deployed that was not built and tested.
    for repo in REPOS {
        assert_eq!(runs_of_step(&env, 1, repo, "build"), 2, "{repo}");
        let built =
            std::fs::read_to_string(env.root().join("out").join(format!("{repo}.build"))).unwrap();
        assert_eq!(
            built.trim(),
            env.master(repo),
            "{repo}: deployed what was not built"
        );
    }
}

#[test]
fn crash_during_build_resumes_the_build_on_the_same_rebase() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1");
    env.hold("web", "build");
    let mut worker = env.spawn("worker", &["deliver", "TASK-1"]);
    let pid = env.wait_at_gate("web", "build");
    // The worker records a step's pid (its supervisor's) just after starting it; killed
    // before that, it would leave a step recovery cannot find.
    let pid = parent_of(pid).expect("the held build is alive");
    wait_for("web's build to be recorded with its pid", || {
        let steps = env.show(1)["steps"].clone();
        steps
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["repo"] == "web" && s["step"] == "build" && s["pid"] == pid)
            .then_some(())
    });
    kill(&mut worker);
    env.unhold("web", "build");

    let o = env.lockstep(&["recover"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("#1 TASK-1: was interrupted in build; queued again to resume it"),
        "{}",
        stdout(&o)
    );
    assert_no_step_survives(&env);
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(assert_all_or_nothing(&env, "TASK-1"));
    // Not rebased again; the build ran again on the same commits, and the tests once.
    let journal = env.show(1)["journal"].clone();
    let events = |phase: &str, event: &str| {
        journal
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["phase"] == phase && j["event"] == event)
            .count()
    };
    assert_eq!(events("rebase", "rebased"), REPOS.len(), "{journal}");
    assert_eq!(events("build", "resumed"), 1, "{journal}");
    assert_eq!(runs_of_step(&env, 1, "web", "build"), 2);
    for repo in REPOS {
        assert_eq!(runs_of_step(&env, 1, repo, "test"), 1, "{repo}");
        let built =
            std::fs::read_to_string(env.root().join("out").join(format!("{repo}.build"))).unwrap();
        assert_eq!(
            built.trim(),
            env.master(repo),
            "{repo}: landed what was not built"
        );
    }
    assert_eq!(deliveries_of(&env, "TASK-1"), [1]);
    assert_eq!(env.task("TASK-1").0, "Closed");
}

#[test]
pub(crate) fn crash_after_the_first_deploy_rolls_back_and_keeps_the_queue() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1");
    ready(&env, "TASK-3");
    let before = env.masters();
    env.hold("web", "deploy");
    let mut worker = env.spawn("worker", &["deliver", "TASK-1"]);
    env.wait_at_gate("web", "deploy");
    assert!(env.deployed("api").is_some(), "api is deployed first");
    let o = env.lockstep(&["deliver", "TASK-3", "--no-wait"]);
    assert!(stdout(&o).contains("#2 TASK-3: queued"), "{}", stdout(&o));

    kill(&mut worker);
    env.unhold("web", "deploy");
    let o = env.lockstep(&["recover"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("#1 TASK-1: delivery failed in deploy"),
        "{}",
        stdout(&o)
    );
    // The deploy cut short is rolled back too (it may have done half its work), last first,
    // and it is stopped before its rollback runs.
    assert_no_step_survives(&env);
    assert_eq!(env.rollbacks(), ["web 1", "api 1"]);
    assert_eq!(env.deployed("api"), None);
    assert_eq!(env.deployed("web"), None);
    assert_eq!(env.deployed("db"), None);
    assert_eq!(env.masters(), before);
    assert_eq!(env.state(1), "failed");
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    assert!(notes.last().unwrap().contains("nothing was merged"));
    // The queue is intact: #2 waits, and runs next.
    assert_eq!(env.queue()["queued"][0]["id"], 2);
    let o = env.lockstep(&["deliver", "TASK-3"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(assert_all_or_nothing(&env, "TASK-3"));
    assert!(!assert_all_or_nothing(&env, "TASK-1"));
    assert_eq!(deliveries_of(&env, "TASK-1"), [1]);
    assert_eq!(deliveries_of(&env, "TASK-3"), [2]);
    assert_eq!(env.rollbacks().len(), 2, "#2 rolled nothing back");
}

/// Replaces `post-receive` of a bare repository with one that kills the worker (its pid is in
/// `worker.pid`, written by [`crash_after_merging_api`]) the first time `master` is pushed,
/// then does what lockstep's hook does.
fn kill_worker_after_push_to_master(env: &Env, repo: &str) {
    let hook = env.bare(repo).join("hooks").join("post-receive");
    let marker = env.dir.path().join(format!("killed-in-{repo}"));
    let quote = |p: &std::path::Path| format!("'{}'", p.display());
    let exports: String = env
        .store_env()
        .iter()
        .map(|(k, v)| format!("{k}='{v}'; export {k}\n"))
        .collect();
    let script = format!(
        "#!/bin/sh\n\
         {exports}\
         input=$(cat)\n\
         case \"$input\" in *' refs/heads/master'*)\n\
         \x20 if [ ! -e {marker} ]; then : > {marker}; kill -9 \"$(cat {pid})\"; fi ;;\n\
         esac\n\
         printf '%s\\n' \"$input\" | exec {bin} hook post-receive\n",
        marker = quote(&marker),
        pid = quote(&worker_pid_file(env)),
        bin = quote(&bin()),
    );
    std::fs::write(&hook, script).unwrap();
}

fn worker_pid_file(env: &Env) -> std::path::PathBuf {
    env.dir.path().join("worker.pid")
}

/// Delivers TASK-1 with a worker that is killed right after it pushed api's master; returns
/// the masters from before.
fn crash_after_merging_api(env: &Env) -> Vec<String> {
    ready(env, "TASK-1");
    let before = env.masters();
    kill_worker_after_push_to_master(env, "api");
    let mut worker = env.spawn("worker", &["deliver", "TASK-1"]);
    // Written long before the merge: the build and the tests run first.
    std::fs::write(worker_pid_file(env), worker.id().to_string()).unwrap();
    let status = worker.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "{:?}",
        env.spawned_output("worker")
    );
    before
}

#[test]
pub(crate) fn crash_between_merge_pushes_completes_every_upstream() {
    let env = Env::new(&REPOS);
    let before = crash_after_merging_api(&env);
    // The moment of the crash: api advanced, web and db not yet.
    let now = env.masters();
    assert_ne!(now[0], before[0]);
    assert_eq!(now[1..], before[1..]);

    let o = env.lockstep(&["recover"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("every upstream now has it: delivered"),
        "{}",
        stdout(&o)
    );
    assert!(assert_all_or_nothing(&env, "TASK-1"));
    assert_eq!(env.masters()[0], now[0], "api was not pushed twice");
    assert_eq!(env.state(1), "delivered");
    assert!(env.rollbacks().is_empty());
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "Closed");
    let note = notes.last().unwrap();
    let after = env.masters();
    for (i, repo) in REPOS.iter().enumerate() {
        assert!(
            note.contains(&format!("{repo} {}", &after[i][..10])),
            "{note}"
        );
    }
    assert_eq!(deliveries_of(&env, "TASK-1"), [1]);
}

#[test]
fn crash_between_merge_pushes_then_a_moved_upstream_puts_every_upstream_back() {
    let env = Env::new(&REPOS);
    let before = crash_after_merging_api(&env);
    // While the bot is down, a maintainer moves web's master: the delivery cannot finish.
    let lead = env.advance_master("web", "urgent.txt", "urgent\n");

    let o = env.lockstep(&["recover"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("#1 TASK-1: delivery failed in merge"),
        "{}",
        stdout(&o)
    );
    assert!(!assert_all_or_nothing(&env, "TASK-1"));
    assert_eq!(env.masters(), [before[0].clone(), lead, before[2].clone()]);
    assert_eq!(env.state(1), "failed");
    assert_eq!(env.rollbacks(), ["db 1", "web 1", "api 1"]);
    assert_eq!(env.task("TASK-1").0, "In Progress");
}

#[test]
fn crash_while_rolling_back_a_refused_merge_does_not_merge_it() {
    let env = Env::new(&REPOS);
    env.add_policy("90-freeze.toml", MERGE_FREEZE);
    ready(&env, "TASK-1");
    let before = env.masters();
    env.hold("db", "rollback");
    let mut worker = env.spawn("worker", &["deliver", "TASK-1"]);
    env.wait_at_gate("db", "rollback");
    kill(&mut worker);
    env.unhold("db", "rollback");

    let o = env.lockstep(&["recover"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_no_step_survives(&env);
    assert_eq!(
        env.masters(),
        before,
        "a merge the policies refused was pushed"
    );
    assert_eq!(env.state(1), "failed");
    let show = env.show(1);
    assert!(
        show["delivery"]["error"]
            .as_str()
            .unwrap()
            .contains("[release-freeze] merges are frozen"),
        "{show}"
    );
    assert_eq!(env.rollbacks(), ["db 1", "web 1", "api 1"]);
    assert_eq!(env.task("TASK-1").0, "In Progress");
}

/// The updates of `master` of a bare repository since reflogs were turned on, newest first.
fn master_moves(env: &Env, repo: &str) -> Vec<String> {
    env.git_in(repo, &["reflog", "--format=%H", "refs/heads/master"])
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn crash_while_rolling_back_a_refused_push_does_not_push_again() {
    let env = Env::new(&REPOS);
    env.add_policy(
        "90-freeze.toml",
        r#"
[[rule]]
name = "db-frozen"
on = ["push"]
when = 'repo == "db" && branch == "master"'
require = 'false'
message = "`db` is frozen for the release"
"#,
    );
    ready(&env, "TASK-1");
    let before = env.masters();
    for repo in REPOS {
        env.git_in(repo, &["config", "core.logAllRefUpdates", "always"]);
    }
    // api and web are merged, db refuses, api and web are put back; then the rollbacks run,
    // db's first, and the worker dies during api's.
    env.hold("api", "rollback");
    let mut worker = env.spawn("worker", &["deliver", "TASK-1"]);
    env.wait_at_gate("api", "rollback");
    kill(&mut worker);
    env.unhold("api", "rollback");
    let moves: Vec<Vec<String>> = REPOS.iter().map(|r| master_moves(&env, r)).collect();
    assert_eq!(
        moves[0].len(),
        2,
        "api: pushed, then put back: {:?}",
        moves[0]
    );

    let o = env.lockstep(&["recover"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("#1 TASK-1: was interrupted while rolling back"),
        "{}",
        stdout(&o)
    );
    assert_eq!(env.masters(), before);
    for (i, repo) in REPOS.iter().enumerate() {
        assert_eq!(
            master_moves(&env, repo),
            moves[i],
            "{repo}: recovery pushed a delivery that had failed"
        );
    }
    assert_eq!(env.rollbacks(), ["db 1", "web 1", "api 1"]);
    assert_eq!(env.state(1), "failed");
    assert!(
        env.show(1)["delivery"]["error"]
            .as_str()
            .unwrap()
            .contains("[db-frozen]")
    );
    assert_eq!(env.task("TASK-1").0, "In Progress");
}
