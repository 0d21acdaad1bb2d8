//! Pushes through the real hooks.

use crate::util::*;

#[test]
fn demo_acts_hold() {
    let env = Env::new(&["api"]);
    let api = env.sb.clone_for("api", "alice").unwrap();
    git(&api, "alice")
        .run(&["switch", "-q", "-c", "fix-login"])
        .unwrap();
    commit(&api, "alice", "a.txt", "a\n", "fix").unwrap();
    let p = push(&api, "alice", &["fix-login"]).unwrap();
    assert!(!p.accepted);
    assert!(
        p.remote
            .iter()
            .any(|l| l.contains("[branch-names-a-task] branch `fix-login` names no task")),
        "{:?}",
        p.remote
    );
    assert_eq!(env.rev("api", "refs/heads/fix-login"), None);
}
