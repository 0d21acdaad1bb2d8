//! Reviews on a plain git server: approvals pushed as `refs/approvals/<TASK>/<name>` through
//! the real hooks, and the shipped `two-approvals` rule reading them at delivery. No GitHub
//! anywhere.

use crate::util::*;

const BRANCH: &str = "feature/TASK-1-login";

/// A sandbox of `api` with the shipped policies whole (two-approvals included), and alice's
/// TASK-1 branch pushed; returns the env and the branch's head.
fn reviewed_env() -> (Env, String) {
    let env = Env::new(&["api"]);
    env.require_approvals();
    let head = env.task_branch("api", BRANCH, "login.txt", "log in\n");
    (env, head)
}

fn approval(env: &Env, who: &str) -> Option<String> {
    env.rev("api", &format!("refs/approvals/TASK-1/{who}"))
}

fn deliver(env: &Env) -> std::process::Output {
    env.set_status(&[("TASK-1", "For Delivery")]);
    env.lockstep(&["deliver", "TASK-1"])
}

#[test]
fn an_author_cannot_approve_their_own_branch() {
    let (env, head) = reviewed_env();
    let p = env.approve("api", "alice", BRANCH);
    assert!(!p.accepted, "{}", p.stderr);
    assert_eq!(
        p.remote(),
        [
            "lockstep: push rejected".to_string(),
            format!(
                "  refs/approvals/TASK-1/alice: [approvals] `alice` wrote commit {} `TASK-1 \
                 {BRANCH} in api` of `{BRANCH}`, and authors do not approve their own work; \
                 ask someone else to review it",
                &head[..10]
            ),
        ]
    );
    assert_eq!(approval(&env, "alice"), None);
}

/// Issue 22: the author line is whatever the committer wrote. dave commits as `erin` and
/// pushes it himself: the decision log says he pushed it, so his approval is refused, and one
/// planted behind the hooks' back does not count at delivery; bob and carol, who pushed none
/// of it, approve, and their two approvals let the delivery through.
#[test]
fn issue22_who_pushed_a_commit_does_not_approve_it_whatever_its_author_line() {
    let (env, _) = reviewed_env();
    let dave = env.clone_of("api", "dave");
    let g = git(&dave, "dave");
    g.run(&["switch", "--quiet", BRANCH]).unwrap();
    std::fs::write(dave.join("logout.txt"), "log out\n").unwrap();
    g.run(&["add", "logout.txt"]).unwrap();
    g.run(&[
        "commit",
        "--quiet",
        "--author=Erin <erin@example.org>",
        "-m",
        "TASK-1 log out",
    ])
    .unwrap();
    let p = push_as(&dave, "dave", &[BRANCH]);
    assert!(p.accepted, "{}", p.stderr);
    let forged = head(&dave, "HEAD");

    let p = env.approve("api", "dave", BRANCH);
    assert!(!p.accepted, "{}", p.stderr);
    assert_eq!(
        p.remote(),
        [
            "lockstep: push rejected".to_string(),
            format!(
                "  refs/approvals/TASK-1/dave: [approvals] `dave` pushed commit {} `TASK-1 log \
                 out` of `TASK-1` (the decision log says so, whoever its author line names), \
                 and those who push a branch's commits do not approve it; ask someone else to \
                 review it",
                &forged[..10]
            ),
        ]
    );
    assert_eq!(approval(&env, "dave"), None);

    // Written behind the hooks' back, dave's approval does not count at delivery either.
    env.git_in(
        "api",
        &["update-ref", "refs/approvals/TASK-1/dave", &forged],
    );
    let before = env.master("api");
    assert!(env.approve("api", "bob", BRANCH).accepted);
    assert_eq!(approval(&env, "bob"), Some(forged));
    let o = deliver(&env);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "`{BRANCH}` of api has 1 approval(s) of its current head"
        )),
        "{}",
        stderr(&o)
    );
    assert!(env.approve("api", "carol", BRANCH).accepted);
    let o = deliver(&env);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_ne!(env.master("api"), before);
}

#[test]
fn nobody_approves_in_someone_elses_name() {
    let (env, _) = reviewed_env();
    let dir = env.clone_of("api", "bob");
    let p = push_as(
        &dir,
        "bob",
        &[&format!("origin/{BRANCH}:refs/approvals/TASK-1/carol")],
    );
    assert!(!p.accepted);
    assert!(
        p.remote_text().contains(
            "[approvals] `bob` cannot approve in the name of `carol`; approve the head of a task \
             branch with `git push origin origin/<branch>:refs/approvals/TASK-1/bob`"
        ),
        "{}",
        p.stderr
    );
    assert_eq!(approval(&env, "carol"), None);
}

#[test]
fn only_a_task_branch_head_is_approved_and_only_as_approvals_are_named() {
    let (env, _) = reviewed_env();
    let dir = env.clone_of("api", "bob");
    // master is no head of a TASK-1 branch.
    let p = push_as(&dir, "bob", &["origin/master:refs/approvals/TASK-1/bob"]);
    assert!(!p.accepted);
    assert!(
        p.remote_text().contains(&format!(
            "is not the head of a branch of `TASK-1` (the branches of `TASK-1` are `{BRANCH}`)"
        )),
        "{}",
        p.stderr
    );
    // Anything else under refs/approvals/ says how to do it right.
    let p = push_as(
        &dir,
        "bob",
        &[&format!("origin/{BRANCH}:refs/approvals/bob")],
    );
    assert!(!p.accepted);
    assert!(
        p.remote_text().contains(
            "[approvals] `refs/approvals/bob` is not an approval: approvals are \
             `refs/approvals/<TASK>/<name>`; approve the head of a task branch with \
             `git push origin origin/<branch>:refs/approvals/<TASK>/bob`"
        ),
        "{}",
        p.stderr
    );
    // Without an identity, nobody can approve.
    let p = push_env(
        &dir,
        &[],
        &[&format!("origin/{BRANCH}:refs/approvals/TASK-1/bob")],
    );
    assert!(!p.accepted);
    assert!(
        p.remote_text().contains("lockstep cannot tell who pushes"),
        "{}",
        p.stderr
    );
    assert_eq!(approval(&env, "bob"), None);
}

#[test]
fn a_reviewer_withdraws_their_own_approval_and_only_theirs() {
    let (env, head) = reviewed_env();
    assert!(env.approve("api", "bob", BRANCH).accepted);
    assert_eq!(approval(&env, "bob"), Some(head));
    let carol = env.clone_of("api", "carol");
    let p = push_as(&carol, "carol", &[":refs/approvals/TASK-1/bob"]);
    assert!(!p.accepted);
    assert!(
        p.remote_text()
            .contains("[approvals] only `bob` withdraws `bob`'s approval of `TASK-1`"),
        "{}",
        p.stderr
    );
    let bob = env.clone_of("api", "bob");
    let p = push_as(&bob, "bob", &[":refs/approvals/TASK-1/bob"]);
    assert!(p.accepted, "{}", p.stderr);
    assert_eq!(approval(&env, "bob"), None);
}

#[test]
fn two_approvals_let_a_delivery_through_where_one_does_not() {
    let (env, _) = reviewed_env();
    let before = env.master("api");
    assert!(env.approve("api", "bob", BRANCH).accepted);
    let o = deliver(&env);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "lockstep: delivery of `TASK-1` refused\n  [two-approvals] `{BRANCH}` of api has 1 \
             approval(s) of its current head; reviewers approve it with `git push origin \
             origin/{BRANCH}:refs/approvals/TASK-1/<name>`; every branch needs 2\n"
        )
    );
    assert_eq!(env.master("api"), before);

    assert!(env.approve("api", "carol", BRANCH).accepted);
    let o = deliver(&env);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_ne!(env.master("api"), before);
    // The approvals went with the delivery: none is left behind.
    assert_eq!(approval(&env, "bob"), None);
    assert_eq!(approval(&env, "carol"), None);
    assert_eq!(env.git_in("api", &["for-each-ref", "refs/approvals/"]), "");
}

#[test]
fn a_stale_approval_does_not_count() {
    let (env, first) = reviewed_env();
    assert!(env.approve("api", "bob", BRANCH).accepted);
    assert!(env.approve("api", "carol", BRANCH).accepted);
    // alice pushes again: both approvals now point at a head the branch has left.
    let alice = env.clone_of("api", "alice");
    commit(&alice, "alice", "logout.txt", "log out\n", "TASK-1 log out").unwrap();
    assert!(push_as(&alice, "alice", &[BRANCH]).accepted);
    let second = head(&alice, "HEAD");
    assert_ne!(first, second);
    assert_eq!(approval(&env, "bob"), Some(first));
    let o = deliver(&env);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "`{BRANCH}` of api has 0 approval(s) of its current head"
        )),
        "{}",
        stderr(&o)
    );
    // Approving the new head counts again (an approval moves forward like any ref).
    let bob = env.clone_of("api", "bob");
    let p = push_as(
        &bob,
        "bob",
        &[&format!("+origin/{BRANCH}:refs/approvals/TASK-1/bob")],
    );
    assert!(p.accepted, "{}", p.stderr);
    let o = deliver(&env);
    assert!(
        stderr(&o).contains(&format!(
            "`{BRANCH}` of api has 1 approval(s) of its current head"
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_change_under_db_needs_the_dba_teams_approval() {
    let env = Env::new(&["api"]);
    env.require_approvals();
    env.add_policy(
        "60-db-needs-dba.toml",
        include_str!("../examples/policies/db-needs-dba.toml"),
    );
    env.edit_config(|t| format!("[teams]\ndba = [\"dana\", \"dmitri\"]\n\n{t}"));
    std::fs::create_dir_all(env.clone_of("api", "alice").join("db")).unwrap();
    env.task_branch_with(
        "api",
        BRANCH,
        &[("db/schema.sql", "create table t;\n"), ("login.txt", "x\n")],
        &[],
    );
    assert!(env.approve("api", "bob", BRANCH).accepted);
    assert!(env.approve("api", "carol", BRANCH).accepted);
    let o = deliver(&env);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "lockstep: delivery of `TASK-1` refused\n  [db-needs-dba] `{BRANCH}` of api changes \
             db/schema.sql without an approval from the dba team; ask dana or dmitri to review \
             it\n"
        )
    );
    assert!(env.approve("api", "dana", BRANCH).accepted);
    let o = deliver(&env);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn a_path_rule_lets_other_paths_through_on_two_approvals() {
    let env = Env::new(&["api"]);
    env.require_approvals();
    env.add_policy(
        "60-db-needs-dba.toml",
        include_str!("../examples/policies/db-needs-dba.toml"),
    );
    env.task_branch("api", BRANCH, "login.txt", "log in\n");
    assert!(env.approve("api", "bob", BRANCH).accepted);
    assert!(env.approve("api", "carol", BRANCH).accepted);
    let o = deliver(&env);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

/// The README's one-line alias approves the fetched head under the reviewer's name.
#[test]
fn the_readmes_git_alias_approves() {
    let (env, head) = reviewed_env();
    let readme = include_str!("../README.md");
    let line = readme
        .lines()
        .find(|l| l.contains("alias.approve"))
        .expect("the README gives a `git approve` alias");
    let command = line.trim().trim_start_matches("$ ");
    let bob = env.clone_of("api", "bob");
    let mut setup = std::process::Command::new("sh");
    scrub(&mut setup);
    setup
        .current_dir(&bob)
        .env("HOME", env.home())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["-c", command]);
    let out = run(setup);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut approve = std::process::Command::new("git");
    scrub(&mut approve);
    approve
        .current_dir(&bob)
        .env("HOME", env.home())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("USER", "bob")
        .env("GL_USER", "bob")
        .args(["approve", BRANCH]);
    let out = run(approve);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(approval(&env, "bob"), Some(head));
}

/// Waits for delivery `id`, queued by a push, to end; returns its state.
fn ended(env: &Env, id: i64) -> String {
    wait_for("the delivery queued by the push to end", || {
        let state = env.state(id);
        (!["queued", "running"].contains(&state.as_str())).then_some(state)
    })
}

#[test]
fn a_push_to_refs_deliver_delivers_an_approved_branch_and_leaves_no_ref() {
    let (env, head) = reviewed_env();
    assert!(env.approve("api", "bob", BRANCH).accepted);
    assert!(env.approve("api", "carol", BRANCH).accepted);
    // The branch is pushed and approved: pushing it again updates nothing, so alice asks by
    // pushing its head to a delivery ref.
    let dir = env.clone_of("api", "alice");
    let p = push_as(
        &dir,
        "alice",
        &[&format!("origin/{BRANCH}:refs/deliver/TASK-1")],
    );
    assert!(p.accepted, "{}", p.stderr);
    assert!(
        p.remote_text().contains(
            "lockstep: delivery #1 of `TASK-1` queued (position 1); follow it with \
             `lockstep show 1`"
        ),
        "{}",
        p.stderr
    );
    assert_eq!(env.rev("api", "refs/deliver/TASK-1"), None);
    assert_eq!(ended(&env, 1), "delivered");
    assert_eq!(
        env.git_in("api", &["merge-base", "--is-ancestor", &head, "master"]),
        ""
    );
    let notes = env.task("TASK-1").1;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("ready for delivery: alice pushed")),
        "{notes:?}"
    );
}

#[test]
fn a_delivery_asked_by_push_short_of_approvals_is_refused_with_the_rules_reason() {
    let (env, _) = reviewed_env();
    assert!(env.approve("api", "bob", BRANCH).accepted);
    let dir = env.clone_of("api", "alice");
    let p = push_as(
        &dir,
        "alice",
        &[&format!("origin/{BRANCH}:refs/deliver/TASK-1")],
    );
    assert_eq!(
        p.remote(),
        [format!(
            "lockstep: delivery of `TASK-1` refused: [two-approvals] `{BRANCH}` of api has 1 \
             approval(s) of its current head; reviewers approve it with `git push origin \
             origin/{BRANCH}:refs/approvals/TASK-1/<name>`; every branch needs 2 (task moved \
             back to In Progress)"
        )],
        "{}",
        p.stderr
    );
    assert_eq!(env.rev("api", "refs/deliver/TASK-1"), None);
    assert_eq!(env.task("TASK-1").0, "In Progress");
    // `-o deliver` on an approval that does not complete the rule: the same reason.
    let carol = env.clone_of("api", "carol");
    let p = push_as(
        &carol,
        "carol",
        &[
            "-o",
            "deliver",
            &format!("origin/{BRANCH}:refs/approvals/TASK-1/carol"),
        ],
    );
    assert!(p.accepted, "{}", p.stderr);
    assert!(
        p.remote_text()
            .contains("lockstep: delivery #1 of `TASK-1` queued"),
        "the second approval completes the rule: {}",
        p.stderr
    );
}

#[test]
fn only_a_task_branch_head_is_pushed_to_refs_deliver_and_only_as_they_are_named() {
    let (env, _) = reviewed_env();
    let dir = env.clone_of("api", "alice");
    let p = push_as(&dir, "alice", &["origin/master:refs/deliver/TASK-1"]);
    assert!(!p.accepted);
    assert!(
        p.remote_text().contains(&format!(
            "[deliver-ref] {} is not the head of a branch of `TASK-1` (the branches of \
             `TASK-1` are `{BRANCH}`); push the branch first, then ask for a delivery with \
             `git push origin <branch>:refs/deliver/TASK-1`",
            &env.master("api")[..10]
        )),
        "{}",
        p.stderr
    );
    for odd in ["refs/deliver/TASK-1/more", "refs/deliver/nothing"] {
        let p = push_as(&dir, "alice", &[&format!("origin/{BRANCH}:{odd}")]);
        assert!(!p.accepted, "{odd}");
        assert!(
            p.remote_text().contains(&format!(
                "  {odd}: [deliver-ref] `{odd}` is not a delivery request: they are \
                 `refs/deliver/<TASK>`, and lockstep deletes them once queued"
            )),
            "{}",
            p.stderr
        );
    }
    assert_eq!(env.git_in("api", &["for-each-ref", "refs/deliver/"]), "");
}
