//! Every branch of a delivery needs its reviews, however the delivery was asked for.

use super::*;

/// A sandbox whose TASK-1 is For Delivery with branches in api and web, a fake GitHub in
/// `[github]`, and acme/api#7 approved by two people; web's branch has no pull request yet.
fn two_branches_one_reviewed() -> (Env, FakeGitHub, Vec<String>) {
    let env = Env::new(&["api", "web"]);
    let heads = push_task_branch(&env, "feature/TASK-1-login", &["api", "web"], &[]);
    env.set_tasks(TASKS_READY);
    let gh = FakeGitHub::start(TOKEN);
    configure(&env, "0s", &github_section(gh.url()));
    gh.add_pull("acme/api", 7, "alice", "feature/TASK-1-login", &heads[0]);
    gh.review("acme/api", 7, "bob", "APPROVED");
    gh.review("acme/api", 7, "carol", "APPROVED");
    (env, gh, heads)
}

#[test]
fn deliveries_asked_outside_github_still_need_every_branch_reviewed() {
    let (env, gh, heads) = two_branches_one_reviewed();
    let before = [
        env.rev("api", "refs/heads/master"),
        env.rev("web", "refs/heads/master"),
    ];
    let deliver = |token: bool| {
        let mut cmd = env.command(&["deliver", "TASK-1"]);
        if token {
            cmd.env(TOKEN_VAR, TOKEN);
        }
        cmd.output().unwrap()
    };

    // Without GitHub's token the reviews cannot be read: nothing is queued (fail closed).
    let o = deliver(false);
    assert_ne!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stderr(&o).contains("cannot read the branches and approvals of `TASK-1`"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("github.token_env"), "{}", stderr(&o));
    assert!(deliveries(&env).is_empty());

    // The command line is no way around review: web's branch has no pull request.
    let o = deliver(true);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(
            "[two-approvals] `feature/TASK-1-login` of acme/web has no open pull request; every \
             branch needs a pull request with 2"
        ),
        "{}",
        stderr(&o)
    );
    // A pull request from a fork, for a branch of the same name, is not web's branch.
    gh.add_pull(
        "acme/web",
        2,
        "mallory",
        "feature/TASK-1-login",
        &"f".repeat(40),
    );
    gh.update("acme/web", 2, |i| {
        i.pull.as_mut().unwrap().head_repo = Some("mallory/web".into())
    });
    gh.review("acme/web", 2, "bob", "APPROVED");
    gh.review("acme/web", 2, "carol", "APPROVED");
    let o = deliver(true);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("of acme/web has no open pull request"),
        "{}",
        stderr(&o)
    );

    // One approval besides the author's own is not two.
    gh.add_pull("acme/web", 3, "alice", "feature/TASK-1-login", &heads[1]);
    gh.review("acme/web", 3, "alice", "APPROVED");
    gh.review("acme/web", 3, "bob", "APPROVED");
    let o = deliver(true);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(
            "[two-approvals] acme/web#3 has 1 approval(s) by people other than its author"
        ),
        "{}",
        stderr(&o)
    );
    assert!(deliveries(&env).is_empty());

    gh.review("acme/web", 3, "dave", "APPROVED");
    let o = deliver(true);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let after = [
        env.rev("api", "refs/heads/master"),
        env.rev("web", "refs/heads/master"),
    ];
    assert_ne!(after[0], before[0]);
    assert_ne!(after[1], before[1]);
}

#[test]
fn a_deliver_push_option_needs_every_branch_reviewed_too() {
    let (env, _gh, _) = two_branches_one_reviewed();
    env.set_tasks(&TASKS_READY.replacen("For Delivery", "In Progress", 1));
    // alice's clone of api, still on the task's branch.
    let dir = env.sb.root.join("clones").join("alice").join("api");
    commit(&dir, "alice", "more.txt", "more\n", "TASK-1 more").unwrap();
    let p = push_env(
        &dir,
        &[("GL_USER", "alice"), (TOKEN_VAR, TOKEN)],
        &["-o", "deliver", "feature/TASK-1-login"],
    );
    assert!(p.accepted, "{}", p.stderr);
    assert!(
        p.remote_text().contains(
            "delivery of `TASK-1` refused: [two-approvals] `feature/TASK-1-login` of acme/web \
             has no open pull request; every branch needs a pull request with 2 (task moved \
             back to In Progress)"
        ),
        "{}",
        p.stderr
    );
    assert_eq!(task_status(&env, "TASK-1"), "In Progress");
    assert!(deliveries(&env).is_empty());
}
