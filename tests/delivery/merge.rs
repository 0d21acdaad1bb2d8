//! The merge phase: every push upstream goes through the hooks, and a refusal or a moved
//! master puts back what was pushed.

use super::*;

/// A push that `alice` makes to `master` of a repository; returns what the server said.
fn alice_pushes_master(env: &Env, repo: &str) -> lockstep::sandbox::Pushed {
    let dir = env.clone_of(repo, "alice");
    let g = git(&dir, "alice");
    g.run(&["switch", "--quiet", "-C", "master", "origin/master"])
        .unwrap();
    commit(&dir, "alice", "quick.txt", "quick\n", "TASK-1 quick fix").unwrap();
    push(&dir, "alice", &["master"]).unwrap()
}

#[test]
fn merge_pushes_go_through_the_hooks_and_a_refusal_puts_every_upstream_back() {
    let env = Env::new(&REPOS);
    env.add_policy("90-freeze.toml", DB_FROZEN);
    ready(&env, "TASK-1", &REPOS, &[]);
    let before = env.masters();

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("delivery failed in merge (db): the bot could not push `master` of `db`"),
        "{err}"
    );
    assert!(
        err.contains("[db-frozen] `db` is frozen for the release"),
        "{err}"
    );
    assert!(err.contains("put back web, api"), "{err}");
    assert_eq!(env.masters(), before, "an upstream was left advanced");
    assert_eq!(env.rollbacks(), ["db 1", "web 1", "api 1"]);
    let show = env.show(1);
    for r in show["repos"].as_array().unwrap() {
        assert_eq!(r["merged"], false, "{r}");
    }
    assert_eq!(env.task("TASK-1").0, "In Progress");
}

#[test]
fn master_moving_before_the_merge_puts_back_what_was_pushed() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1", &REPOS, &[]);
    let before = env.masters();
    env.hold("web", "deploy");
    let mut child = env.spawn("deliver", &["deliver", "TASK-1"]);
    env.wait_at_gate("web", "deploy");

    // While the bot delivers, a developer still cannot push to master...
    let p = alice_pushes_master(&env, "web");
    assert!(!p.accepted);
    assert!(
        p.remote.iter().any(|l| l.contains(
            "[protected-branch-writers] only `lockstep-bot` and the maintainers may update `master`"
        )),
        "{:?}",
        p.remote
    );
    // ...but a maintainer can, and the bot's compare-and-swap push then fails.
    let lead = env.advance_master("web", "urgent.txt", "urgent\n");
    env.open_gate("web", "deploy");
    let status = child.wait().unwrap();
    let (out, err) = env.spawned_output("deliver");
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("delivery failed in merge (web): the bot could not push `master` of `web`"),
        "{err}"
    );
    assert!(err.contains("put back api"), "{err}");
    assert_eq!(env.masters(), [before[0].clone(), lead, before[2].clone()]);
    assert_eq!(env.rollbacks(), ["db 1", "web 1", "api 1"]);
    assert_eq!(env.task("TASK-1").0, "In Progress");
}
