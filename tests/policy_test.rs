//! `lockstep policy test`: the dry run that explains, rule by rule, what a push would meet.

use std::path::Path;

use crate::util::*;

/// Runs `lockstep policy test --repo REPO ARGS`.
fn dry_run(env: &Env, repo: &Path, args: &[&str]) -> std::process::Output {
    let repo = repo.to_string_lossy();
    let mut all = vec!["policy", "test", "--repo", &repo];
    all.extend_from_slice(args);
    env.lockstep(&all)
}

#[test]
fn explains_an_accepted_push_with_a_warning() {
    let env = Env::new(&["api"]);
    // Run in alice's clone, with the branch checked out, before she pushes.
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "login form");
    let out = dry_run(
        &env,
        &api,
        &[
            "--ref",
            "refs/heads/feature/TASK-1-login",
            "--new",
            "HEAD",
            "--pusher",
            "alice",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    insta::assert_snapshot!("accepted_with_warning", env.redact(&stdout(&out)));
}

#[test]
fn explains_a_rejected_push() {
    let env = Env::new(&["api"]);
    let api = env.clone_on_branch("api", "alice", "fix-login", "fix");
    let out = dry_run(
        &env,
        &api,
        &[
            "--ref",
            "refs/heads/fix-login",
            "--new",
            "HEAD",
            "--pusher",
            "alice",
        ],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    insta::assert_snapshot!("rejected", env.redact(&stdout(&out)));
}

#[test]
fn explains_protected_branches_by_pusher() {
    let env = Env::new(&["api"]);
    let api = env.sb.clone_for("api", "alice").unwrap();
    let old = head(&api, "HEAD");
    commit(&api, "alice", "a.txt", "a\n", "TASK-1 a").unwrap();
    let new = head(&api, "HEAD");
    let update = ["--ref", "refs/heads/master", "--old", &old, "--new", &new];

    let with = |pusher: &str| {
        let mut args = update.to_vec();
        args.extend(["--pusher", pusher]);
        dry_run(&env, &api, &args)
    };
    let out = with("alice");
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    assert!(
        text.contains(
            "  FAIL  protected-branch-writers  only `lockstep-bot` and the maintainers may \
             update `master`"
        ),
        "{text}"
    );
    assert!(
        text.contains("  pass  protected-branch-history\n"),
        "{text}"
    );
    assert!(text.contains(" by alice in `api`\n"), "{text}");
    assert!(text.ends_with("result: rejected\n"), "{text}");

    for pusher in ["lockstep-bot", "release-lead"] {
        let out = with(pusher);
        assert_eq!(code(&out), 0, "{pusher}: {}", stdout(&out));
        let text = stdout(&out);
        assert!(
            text.contains("  pass  protected-branch-writers\n"),
            "{text}"
        );
        assert!(text.contains("  n/a   branch-names-a-task\n"), "{text}");
        assert!(text.ends_with("result: accepted\n"), "{text}");
    }
}

/// The candidate branches a runner's CI builds (`lockstep/<delivery>`) name no task, and
/// only the bot writes them: what the CI builds is what the bot would land.
#[test]
fn only_the_bot_writes_candidate_branches() {
    let env = Env::new(&["api"]);
    let api = env.sb.clone_for("api", "alice").unwrap();
    commit(&api, "alice", "a.txt", "a\n", "TASK-1 a").unwrap();
    let new = head(&api, "HEAD");
    let with = |pusher: &str| {
        let args = [
            "--ref",
            "refs/heads/lockstep/7",
            "--old",
            ZERO,
            "--new",
            &new,
            "--pusher",
            pusher,
        ];
        dry_run(&env, &api, &args)
    };
    let out = with("alice");
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    assert!(
        text.contains(
            "  FAIL  candidate-branches        `lockstep/7` is a candidate branch, written \
             only by `lockstep-bot`; push your work to a task branch"
        ),
        "{text}"
    );
    assert!(text.contains("  n/a   branch-names-a-task\n"), "{text}");
    let out = with("lockstep-bot");
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(stdout(&out).contains("  pass  candidate-branches\n"));
}

#[test]
fn explains_deletions_rewinds_and_push_options() {
    let env = Env::new(&["api"]);
    let api = env.sb.clone_for("api", "lockstep-bot").unwrap();
    let old = head(&api, "HEAD");
    commit(&api, "lockstep-bot", "a.txt", "a\n", "TASK-1 a").unwrap();
    let new = head(&api, "HEAD");

    let out = dry_run(
        &env,
        &api,
        &[
            "--ref",
            "refs/heads/master",
            "--old",
            &old,
            "--new",
            ZERO,
            "--pusher",
            "lockstep-bot",
        ],
    );
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("  FAIL  protected-branch-history  nobody deletes `master`\n"),
        "{}",
        stdout(&out)
    );

    // Back from `new` to `old`: a rewind, allowed to the bot with `-o lockstep-undo` only.
    let back = [
        "--ref",
        "refs/heads/master",
        "--old",
        &new,
        "--new",
        &old,
        "--pusher",
        "lockstep-bot",
    ];
    let out = dry_run(&env, &api, &back);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("FAIL  protected-branch-history  nobody force-pushes `master`"),
        "{}",
        stdout(&out)
    );
    let mut undo = back.to_vec();
    undo.extend(["-o", "lockstep-undo"]);
    let out = dry_run(&env, &api, &undo);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(stdout(&out).contains("  pass  protected-branch-history\n"));
}

#[test]
fn pusher_defaults_to_the_identity_variables() {
    let env = Env::new(&["api"]);
    let api = env.sb.clone_for("api", "alice").unwrap();
    let mut cmd = lockstep_cmd();
    cmd.arg("--config")
        .arg(env.config())
        .args(["policy", "test", "--repo"])
        .arg(&api)
        .args(["--ref", "refs/heads/master", "--new", "HEAD"]);
    let out = run(cmd);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains(" by an unknown pusher in `api`\n"),
        "{}",
        stdout(&out)
    );

    let mut cmd = lockstep_cmd();
    cmd.arg("--config")
        .arg(env.config())
        .args(["policy", "test", "--repo"])
        .arg(&api)
        .args(["--ref", "refs/heads/master", "--new", "HEAD"])
        .env("GITEA_PUSHER_NAME", "lockstep-bot");
    let out = run(cmd);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(stdout(&out).contains(" by lockstep-bot in `api`\n"));
}

#[test]
fn bad_arguments_say_what_is_wrong() {
    let env = Env::new(&["api"]);
    let api = env.sb.clone_for("api", "alice").unwrap();
    let out = dry_run(
        &env,
        &api,
        &[
            "--ref",
            "refs/heads/feature/TASK-1-x",
            "--new",
            "no-such-branch",
        ],
    );
    assert_eq!(code(&out), 2);
    assert_eq!(
        env.redact(&stderr(&out)),
        "lockstep: error: `no-such-branch` names no commit in `[tmp]/sb/clones/alice/api`\n"
    );

    let out = dry_run(&env, &api, &["--ref", "feature/TASK-1-x", "--new", "HEAD"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("ref `feature/TASK-1-x` is not under `refs/`"),
        "{}",
        stderr(&out)
    );
}
