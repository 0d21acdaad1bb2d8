//! Bad input: malformed hook input, broken policies and configs, missing files. Every case
//! is refused with a message that says what is wrong and how to fix it, and never panics
//! (`util::run` checks every output for `panicked` and `RUST_BACKTRACE`).

use std::os::unix::ffi::OsStrExt as _;

use crate::util::*;

const A: &str = "1111111111111111111111111111111111111111";

#[test]
fn malformed_stdin_lines_are_refused_with_exit_2() {
    let env = Env::new(&["api"]);
    let bare = env.bare("api");
    let cfg = env.config();
    let long = "f".repeat(100_000);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"garbage\n".to_vec(),
            "line 1: expected `<old-oid> <new-oid> <ref>`, got 1 field(s)",
        ),
        (format!("{ZERO} {A}\n").into_bytes(), "got 2 field(s)"),
        (
            format!("{ZERO} {A} refs/heads/a b\n").into_bytes(),
            "got 4 field(s)",
        ),
        (
            format!("{ZERO}\t{A}\trefs/heads/x\n").into_bytes(),
            "got 1 field(s)",
        ),
        (
            format!("{ZERO} nothex refs/heads/x\n").into_bytes(),
            "line 1: `nothex` is not an object id",
        ),
        (
            format!("{ZERO} {} refs/heads/x\n", "ABCDEF0123".repeat(4)).into_bytes(),
            "is not an object id",
        ),
        (
            format!("{ZERO} {A} HEAD\n").into_bytes(),
            "line 1: ref `HEAD` is not under `refs/`",
        ),
        (
            format!("{ZERO} {A} refs/\n").into_bytes(),
            "ref `refs/` is not under `refs/`",
        ),
        (
            format!("{ZERO} {A} refs/heads/ok\n\ngarbage\n").into_bytes(),
            "line 3: expected",
        ),
        (
            format!("{ZERO} {long} refs/heads/x\n").into_bytes(),
            "is not an object id",
        ),
        (
            vec![0xff, 0xfe, 0x00, b'\n'],
            "line 1: ref name is not UTF-8",
        ),
    ];
    for (input, want) in cases {
        let out = run_hook(&bare, Some(&cfg), &["pre-receive"], &[], &input);
        let err = stderr(&out);
        let shown = String::from_utf8_lossy(&input[..input.len().min(200)]).into_owned();
        assert_eq!(code(&out), 2, "{shown:?}: {err}");
        assert!(
            err.starts_with(
                "lockstep: push rejected: git sent a ref update lockstep cannot read: "
            ),
            "{shown:?}: {err}"
        );
        assert!(err.contains(want), "{want:?} missing from {err}");
        // A huge value is cut, not echoed back whole.
        assert!(err.len() < 1000, "{} bytes", err.len());
    }
}

#[test]
fn empty_stdin_and_crlf_lines_are_fine() {
    let env = Env::new(&["api"]);
    let bare = env.bare("api");
    let cfg = env.config();
    let out = run_hook(&bare, Some(&cfg), &["pre-receive"], &[], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stderr(&out), "");

    // A maintainer's tag deletion needs no object, so an unknown id is fine here; CRLF is
    // tolerated.
    let line = format!("{A} {ZERO} refs/tags/old\r\n");
    let maintainer = [("GL_USER", "release-lead")];
    let out = run_hook(
        &bare,
        Some(&cfg),
        &["pre-receive"],
        &maintainer,
        line.as_bytes(),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn update_hook_with_bad_arguments_is_refused_with_exit_2() {
    let env = Env::new(&["api"]);
    let bare = env.bare("api");
    let cfg = env.config();
    for (args, want) in [
        (
            ["update", "refs/heads/x", "nothex", A],
            "`nothex` is not an object id",
        ),
        (
            ["update", "master", ZERO, A],
            "ref `master` is not under `refs/`",
        ),
    ] {
        let out = run_hook(&bare, Some(&cfg), &args, &[], b"");
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{err}");
        assert!(err.contains(want), "{want} missing from {err}");
    }
}

#[test]
fn non_utf8_ref_name_is_refused() {
    let env = Env::new(&["api"]);
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    // git allows any byte above 0x7f in a ref name; lockstep asks for UTF-8.
    let mut name = b"feature/TASK-1-".to_vec();
    name.push(0xff);
    let name = std::ffi::OsStr::from_bytes(&name);
    let out = std::process::Command::new("git")
        .current_dir(&api)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .arg("branch")
        .arg(name)
        .arg("HEAD")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let p = push_env(&api, &[("GL_USER", "alice")], &[name]);
    assert!(!p.accepted);
    assert!(
        p.remote_text().contains(
            "lockstep: push rejected: git sent a ref update lockstep cannot read: line 1: ref \
             name is not UTF-8; name refs in UTF-8"
        ),
        "{}",
        p.stderr
    );
    let refs = git(&env.bare("api"), "admin")
        .run(&["for-each-ref", "--format=%(refname)"])
        .unwrap();
    assert_eq!(refs.trim(), "refs/heads/master");

    // The per-ref `update` hook gets the name as an argument: same answer, same exit code.
    let mut cmd = lockstep_cmd();
    let mut refname = b"refs/heads/".to_vec();
    refname.push(0xff);
    cmd.arg("--config")
        .arg(env.config())
        .args(["hook", "update"])
        .arg(std::ffi::OsStr::from_bytes(&refname))
        .args([ZERO, A])
        .current_dir(env.bare("api"));
    let out = run(cmd);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "lockstep: push rejected: git sent a ref update lockstep cannot read: line 1: ref name \
         is not UTF-8; name refs in UTF-8\n"
    );
}

const BROKEN_SYNTAX: &str = r#"
[[rule]]
name = "broken"
on = ["push"]
require = 'branch =='
message = "m"
"#;

#[test]
fn policy_syntax_error_rejects_every_push_with_exit_2() {
    let env = Env::new(&["api"]);
    env.add_policy("60-broken.toml", BROKEN_SYNTAX);
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    let p = push_as(&api, "alice", &["feature/TASK-1-login"]);
    assert!(!p.accepted);
    let text = p.remote_text();
    assert!(
        text.starts_with("lockstep: push rejected: "),
        "{}",
        p.stderr
    );
    for want in [
        "60-broken.toml: rule `broken`, `require`: syntax error at line 1 column 10:",
        "  | branch ==",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert_eq!(env.rev("api", "refs/heads/feature/TASK-1-login"), None);

    // Straight to the hook: exit 2, lockstep could not decide (not 1, a policy said no).
    let new = head(&api, "HEAD");
    // The objects are not in the server: the hook fails before it needs them.
    let line = format!("{ZERO} {new} refs/heads/feature/TASK-1-login\n");
    let out = run_hook(
        &env.bare("api"),
        Some(&env.config()),
        &["pre-receive"],
        &[("GL_USER", "alice")],
        line.as_bytes(),
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("60-broken.toml: rule `broken`, `require`"));
}

#[test]
fn policy_check_lists_every_error() {
    let env = Env::new(&[]);
    env.add_policy("60-broken.toml", BROKEN_SYNTAX);
    env.add_policy(
        "70-more.toml",
        r#"
[[rule]]
name = "typo-key"
on = ["push"]
requires = 'true'
require = 'true'
message = "m"

[[rule]]
name = "typo-var"
on = ["push"]
require = 'brnch != ""'
message = "{pusherr} did it"
"#,
    );
    env.add_policy(
        "80-empty.toml",
        "[[rule]]\nname = \"no-stage\"\non = []\nrequire = 'true'\nmessage = 'm'\n",
    );
    let out = env.lockstep(&["policy", "check"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let err = env.redact(&stderr(&out));
    for want in [
        "lockstep: [tmp]/sb/meta/policies/60-broken.toml: rule `broken`, `require`: syntax error",
        "lockstep: [tmp]/sb/meta/policies/70-more.toml: TOML parse error",
        "unknown field `requires`",
        "lockstep: [tmp]/sb/meta/policies/80-empty.toml: rule `no-stage`, `on` is empty; name a \
         stage: push, deliver or merge",
        "lockstep: 3 error(s)",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }

    // With the TOML error fixed, the file's other mistakes show.
    env.add_policy(
        "70-more.toml",
        "[[rule]]\nname = \"typo-var\"\non = [\"push\"]\nrequire = 'brnch != \"\"'\nmessage = \"{pusherr} did it\"\n",
    );
    let out = env.lockstep(&["policy", "check"]);
    assert_eq!(code(&out), 1);
    let err = env.redact(&stderr(&out));
    for want in [
        "70-more.toml: rule `typo-var`, `message` names `{pusherr}`, which is no fact (did you \
         mean `pusher`?)",
        "70-more.toml: rule `typo-var`, `require`: unknown variable `brnch` (did you mean \
         `branch`?)",
        "lockstep: 4 error(s)",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
}

#[test]
fn policy_check_passes_the_shipped_policies() {
    let env = Env::new(&[]);
    env.require_approvals();
    let out = env.lockstep(&["policy", "check"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "push: branch-names-a-task, task-in-progress, protected-branch-writers, \
         protected-branch-history, candidate-branches, tags-stay-put, commit-mentions-task\n\
         deliver: task-for-delivery, two-approvals\n\
         ok: 9 rules in 1 folder(s)\n"
    );
}

#[test]
fn unknown_config_key_names_the_file_and_the_key() {
    let env = Env::new(&["api"]);
    env.set_config("[bot]\nuser = \"lockstep-bot\"\nmaintainer = [\"release-lead\"]\n");
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    let p = push_as(&api, "alice", &["feature/TASK-1-login"]);
    assert!(!p.accepted);
    let text = env.redact(&p.remote_text());
    assert!(
        text.starts_with("lockstep: push rejected: bad config `[tmp]/sb/meta/lockstep.toml`"),
        "{text}"
    );
    assert!(text.contains("line 3"), "{text}");
    assert!(
        text.contains("unknown field `maintainer`, expected one of `user`, `maintainers`"),
        "{text}"
    );
    assert_eq!(env.rev("api", "refs/heads/feature/TASK-1-login"), None);

    let out = env.lockstep(&["policy", "check"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("unknown field `maintainer`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tracker_config_that_cannot_work_is_refused_by_the_hook() {
    let env = Env::new(&["api"]);
    env.edit_config(|config| config.replace("kind = \"file\"", "kind = \"jira\""));
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    let p = push_as(&api, "alice", &["feature/TASK-1-login"]);
    assert!(!p.accepted);
    assert!(
        p.remote_text().contains(
            "lockstep: push rejected: `tracker.url` is required with kind = \"jira\"; add it to `[tracker]`"
        ),
        "{}",
        p.stderr
    );
}

#[test]
fn missing_tasks_file_rejects_task_pushes_and_says_how_to_fix() {
    let env = Env::new(&["api"]);
    std::fs::remove_file(env.sb.meta.join("tasks.toml")).unwrap();
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    let p = push_as(&api, "alice", &["feature/TASK-1-login"]);
    assert!(!p.accepted);
    let text = env.redact(&p.remote_text());
    assert!(
        text.contains(
            "[task-in-progress] tracker `file`: cannot read tasks file \
             `[tmp]/sb/meta/tasks.toml`: No such file or directory (os error 2); create it or \
             set `tracker.path`; push rejected (rule task-in-progress)"
        ),
        "{text}"
    );
    // A warning-only rule never claims it rejected the push.
    for line in text.lines().filter(|l| l.starts_with("lockstep: warning:")) {
        assert!(!line.contains("push rejected"), "{line}");
    }
    assert_eq!(env.rev("api", "refs/heads/feature/TASK-1-login"), None);

    // Pushes that name no task do not need the tracker.
    let bot = env.sb.clone_for("api", "lockstep-bot").unwrap();
    commit(&bot, "lockstep-bot", "a.txt", "a\n", "release").unwrap();
    let p = push_as(&bot, "lockstep-bot", &["master"]);
    assert!(p.accepted, "{}", p.stderr);
}

/// Issue 23: a tracker that cannot answer is a rule that cannot be judged, and counts as
/// `[tracker] on_error` says: a rejection by policy, exit 1. A tracker config that cannot work
/// is lockstep unable to decide: exit 2.
#[test]
fn issue23_a_tracker_that_does_not_answer_rejects_with_exit_1() {
    let env = Env::new(&["api"]);
    std::fs::remove_file(env.sb.meta.join("tasks.toml")).unwrap();
    let line = format!(
        "{ZERO} {} refs/heads/feature/TASK-1-login\n",
        env.master("api")
    );
    let hook = |env: &Env| {
        run_hook(
            &env.bare("api"),
            Some(&env.config()),
            &["pre-receive"],
            &[("GL_USER", "alice")],
            line.as_bytes(),
        )
    };
    let out = hook(&env);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot read tasks file")
            && stderr(&out).contains("push rejected (rule task-in-progress)"),
        "{}",
        stderr(&out)
    );

    env.edit_config(|config| config.replace("kind = \"file\"", "kind = \"jira\""));
    let out = hook(&env);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`tracker.url` is required"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unreadable_tasks_file_can_be_allowed_through_with_a_warning() {
    let env = Env::new(&["api"]);
    std::fs::remove_file(env.sb.meta.join("tasks.toml")).unwrap();
    env.edit_config(|config| config.replace("[tracker]\n", "[tracker]\non_error = \"allow\"\n"));
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    let p = push_as(&api, "alice", &["feature/TASK-1-login"]);
    assert!(p.accepted, "{}", p.stderr);
    let text = p.remote_text();
    assert!(
        text.contains("[task-in-progress] tracker `file`: cannot read tasks file"),
        "{text}"
    );
    assert!(text.contains("push accepted without this check"), "{text}");
    assert!(!text.contains("push rejected"), "{text}");
}

#[test]
fn missing_config_says_how_to_fix_it() {
    let env = Env::new(&["api"]);

    // A repository lockstep was never installed in.
    let plain = env.dir.path().join("plain.git");
    sandbox_git(env.dir.path(), "admin")
        .run(&["init", "-q", "--bare", &plain.to_string_lossy()])
        .unwrap();
    let line = format!("{ZERO} {A} refs/heads/x\n");
    let out = run_hook(&plain, None, &["pre-receive"], &[], line.as_bytes());
    assert_eq!(code(&out), 2);
    assert_eq!(
        stderr(&out),
        "lockstep: push rejected: no config found; pass `--config PATH`, set \
         `LOCKSTEP_CONFIG`, or run `lockstep install-hooks --config PATH` on this repository\n"
    );

    // The config the hooks were installed with has gone.
    let moved = env.sb.meta.join("moved.toml");
    std::fs::rename(env.config(), &moved).unwrap();
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    let p = push_as(&api, "alice", &["feature/TASK-1-login"]);
    assert!(!p.accepted);
    let text = env.redact(&p.remote_text());
    assert!(
        text.contains(
            "cannot read config `[tmp]/sb/meta/lockstep.toml` (this repository's \
             `lockstep.config`): No such file or directory (os error 2); restore it, or run \
             `lockstep install-hooks --config PATH` on this repository"
        ),
        "{text}"
    );
    assert_eq!(env.rev("api", "refs/heads/feature/TASK-1-login"), None);

    // `LOCKSTEP_CONFIG` overrides the recorded path, as documented.
    let out = {
        let mut cmd = lockstep_cmd();
        cmd.args(["hook", "pre-receive"])
            .current_dir(env.bare("api"))
            .env("GIT_DIR", ".")
            .env("GL_USER", "release-lead")
            .env("LOCKSTEP_CONFIG", &moved);
        run_with_stdin(cmd, format!("{A} {ZERO} refs/tags/x\n").as_bytes())
    };
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // A command run by hand, with no config anywhere.
    let mut cmd = lockstep_cmd();
    cmd.args(["policy", "check"]).current_dir(env.dir.path());
    let out = run(cmd);
    assert_eq!(code(&out), 2);
    assert_eq!(
        stderr(&out),
        "lockstep: error: cannot read config `lockstep.toml`: No such file or directory (os \
         error 2); pass `--config PATH`, set `LOCKSTEP_CONFIG`, or run from the folder that \
         holds `lockstep.toml`\n"
    );
}

#[test]
fn missing_policy_folder_is_named() {
    let env = Env::new(&["api"]);
    std::fs::remove_dir_all(env.sb.meta.join("policies")).unwrap();
    let out = env.lockstep(&["policy", "check"]);
    assert_eq!(code(&out), 1);
    let err = env.redact(&stderr(&out));
    assert!(
        err.contains("cannot read policy folder `[tmp]/sb/meta/policies`")
            && err.contains("create it or fix `policies.dirs`"),
        "{err}"
    );
}

#[test]
fn policy_that_fails_at_evaluation_fails_closed() {
    let env = Env::new(&["api"]);
    // Valid CEL that cannot be evaluated on a push with no task: `task` is null.
    env.add_policy(
        "60-eval.toml",
        "[[rule]]\nname = \"assignee\"\non = [\"push\"]\nrequire = 'task.assignee == pusher'\nmessage = 'm'\n",
    );
    let bot = env.sb.clone_for("api", "lockstep-bot").unwrap();
    commit(&bot, "lockstep-bot", "a.txt", "a\n", "release").unwrap();
    let p = push_as(&bot, "lockstep-bot", &["master"]);
    assert!(!p.accepted);
    assert!(
        p.remote_text().contains(
            "refs/heads/master: [assignee] policy error: `task.assignee == pusher` failed"
        ),
        "{}",
        p.stderr
    );
}
