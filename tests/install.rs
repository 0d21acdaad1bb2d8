//! `lockstep install-hooks`, the command an administrator runs on the server.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::util::*;
use lockstep::Git;

/// A sandbox meta-project (config, policies, tasks) and a fresh bare repository with a
/// `master`, no hooks yet, and a clone of it for alice.
struct Fresh {
    env: Env,
    bare: PathBuf,
    clone: PathBuf,
}

fn fresh() -> Fresh {
    let env = Env::new(&[]);
    let root = env.dir.path();
    let bare = root.join("shop.git");
    let admin = sandbox_git(root, "admin");
    admin
        .run(&[
            "init",
            "-q",
            "--bare",
            "--initial-branch=master",
            &bare.to_string_lossy(),
        ])
        .unwrap();
    let clone = root.join("alice-shop");
    admin
        .run(&[
            "clone",
            "-q",
            &bare.to_string_lossy(),
            &clone.to_string_lossy(),
        ])
        .unwrap();
    let g = sandbox_git(&clone, "alice");
    commit(&clone, "alice", "README", "shop\n", "first commit").unwrap();
    g.run(&["push", "-q", "origin", "HEAD:master"]).unwrap();
    Fresh { env, bare, clone }
}

fn install(env: &Env, args: &[&str]) -> std::process::Output {
    let mut all = vec!["install-hooks"];
    all.extend_from_slice(args);
    env.lockstep(&all)
}

fn git_config(bare: &Path, key: &str) -> Option<String> {
    sandbox_git(bare, "admin").config_get(key).unwrap()
}

/// Pushes a branch that names no task from alice's clone and checks the hooks refuse it;
/// returns alice's git, left on that branch.
fn refuses_a_branch_without_a_task(f: &Fresh) -> Git {
    let g = sandbox_git(&f.clone, "alice");
    g.run(&["switch", "-q", "-c", "fix-login"]).unwrap();
    let p = push_as(&f.clone, "alice", &["fix-login"]);
    assert!(!p.accepted, "{}", p.stderr);
    assert!(
        p.remote_text().contains("[branch-names-a-task]"),
        "{}",
        p.stderr
    );
    g
}

fn hook(bare: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(bare.join("hooks").join(name)).ok()
}

#[test]
fn install_writes_shims_records_the_config_and_is_idempotent() {
    let f = fresh();
    let repo = f.bare.to_string_lossy().into_owned();
    let out = install(&f.env, &[&repo]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{repo}: wrote pre-receive, wrote post-receive, recorded lockstep.config, enabled \
             push options\n"
        )
    );
    assert_eq!(
        git_config(&f.bare, "lockstep.config").map(PathBuf::from),
        Some(std::path::absolute(f.env.config()).unwrap())
    );
    assert_eq!(
        git_config(&f.bare, "receive.advertisePushOptions").as_deref(),
        Some("true")
    );
    for name in ["pre-receive", "post-receive"] {
        let path = f.bare.join("hooks").join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        // The test binary's path has no blanks and fits a `#!` line: the kernel starts
        // lockstep itself (the `sh` fallback is tested below).
        assert!(
            text.starts_with(&format!("#!{} hook\n", bin().display())),
            "{text}"
        );
        assert!(text.contains("lockstep-managed hook"), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{name} is not executable: {mode:o}");
    }
    assert_eq!(hook(&f.bare, "update"), None);

    let out = install(&f.env, &[&repo]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{repo}: up to date\n"));

    // And the hooks are live: a branch that names no task does not get in.
    let g = refuses_a_branch_without_a_task(&f);
    // Push options are advertised, so `-o` works through these hooks.
    g.run(&["switch", "-q", "-c", "feature/TASK-1-x"]).unwrap();
    let p = push_as(&f.clone, "alice", &["-o", "ci.skip", "feature/TASK-1-x"]);
    assert!(p.accepted, "{}", p.stderr);
}

#[test]
fn install_takes_several_repositories_and_rerecords_a_moved_config() {
    let f = fresh();
    let other = f.env.dir.path().join("other.git");
    sandbox_git(f.env.dir.path(), "admin")
        .run(&["init", "-q", "--bare", &other.to_string_lossy()])
        .unwrap();
    let a = f.bare.to_string_lossy().into_owned();
    let b = other.to_string_lossy().into_owned();
    let out = install(&f.env, &[&a, &b]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 2);
    assert!(hook(&other, "pre-receive").is_some());

    // The same policies under another config file: only the record changes.
    let second = f.env.sb.meta.join("second.toml");
    std::fs::copy(f.env.config(), &second).unwrap();
    let mut cmd = lockstep_cmd();
    cmd.arg("--config").arg(&second).args(["install-hooks", &a]);
    let out = run(cmd);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{a}: recorded lockstep.config\n"));
    assert_eq!(
        git_config(&f.bare, "lockstep.config").map(PathBuf::from),
        Some(second)
    );
}

#[test]
fn install_refuses_a_foreign_hook_unless_forced() {
    let f = fresh();
    let repo = f.bare.to_string_lossy().into_owned();
    let foreign = "#!/bin/sh\n# the team's own checks\nexit 0\n";
    std::fs::write(f.bare.join("hooks/pre-receive"), foreign).unwrap();

    let out = install(&f.env, &[&repo]);
    assert_eq!(code(&out), 2);
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!(
            "lockstep: error: `{repo}/hooks/pre-receive` exists and was not written by \
             lockstep; move it aside, or pass --force to replace it\n"
        )
    );
    // Nothing was touched: not the hook, not the other hook, not the git config.
    assert_eq!(hook(&f.bare, "pre-receive").as_deref(), Some(foreign));
    assert_eq!(hook(&f.bare, "post-receive"), None);
    assert_eq!(git_config(&f.bare, "lockstep.config"), None);

    // A foreign `update` hook does not matter for a whole-push install...
    std::fs::write(f.bare.join("hooks/update"), foreign).unwrap();
    let out = install(&f.env, &["--force", &repo]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        hook(&f.bare, "pre-receive")
            .unwrap()
            .contains("lockstep-managed hook")
    );
    // ...and is left alone even with --force, since lockstep does not want it.
    assert_eq!(hook(&f.bare, "update").as_deref(), Some(foreign));
}

#[test]
fn install_per_ref_uses_update_and_decides_ref_by_ref() {
    let f = fresh();
    let repo = f.bare.to_string_lossy().into_owned();
    assert_eq!(code(&install(&f.env, &[&repo])), 0);

    let out = install(&f.env, &["--per-ref", &repo]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{repo}: removed pre-receive, wrote update\n")
    );
    assert_eq!(hook(&f.bare, "pre-receive"), None);
    assert!(
        hook(&f.bare, "update")
            .unwrap()
            .starts_with(&format!("#!{} hook\n", bin().display()))
    );
    assert!(hook(&f.bare, "post-receive").is_some());

    // One good ref and one bad: with `update`, the good one lands.
    let g = sandbox_git(&f.clone, "alice");
    g.run(&["switch", "-q", "-c", "feature/TASK-1-login"])
        .unwrap();
    commit(&f.clone, "alice", "a.txt", "a\n", "TASK-1 a").unwrap();
    g.run(&["branch", "fix-login", "HEAD"]).unwrap();
    let p = push_as(&f.clone, "alice", &["feature/TASK-1-login", "fix-login"]);
    assert!(!p.accepted);
    assert!(
        p.remote_text().contains(
            "refs/heads/fix-login: [branch-names-a-task] branch `fix-login` names no task"
        ),
        "{}",
        p.stderr
    );
    assert!(p.stderr.contains("(hook declined)"), "{}", p.stderr);
    let bare = sandbox_git(&f.bare, "admin");
    assert_eq!(
        bare.resolve("refs/heads/feature/TASK-1-login").unwrap(),
        Some(head(&f.clone, "HEAD"))
    );
    assert_eq!(bare.resolve("refs/heads/fix-login").unwrap(), None);

    // And back to whole-push decisions.
    let out = install(&f.env, &[&repo]);
    assert_eq!(
        stdout(&out),
        format!("{repo}: wrote pre-receive, removed update\n")
    );
}

#[test]
fn install_refuses_a_config_that_does_not_load() {
    let f = fresh();
    let repo = f.bare.to_string_lossy().into_owned();
    f.env.add_policy("60-broken.toml", "[[rule]]\nname = 'x'\n");
    let out = install(&f.env, &[&repo]);
    assert_eq!(code(&out), 2);
    let err = f.env.redact(&stderr(&out));
    assert!(
        err.starts_with(
            "lockstep: error: the hooks would read `[tmp]/sb/meta/lockstep.toml`: \
             [tmp]/sb/meta/policies/60-broken.toml: "
        ),
        "{err}"
    );
    assert!(err.contains("missing field `on`"), "{err}");
    assert_eq!(hook(&f.bare, "pre-receive"), None);
    assert_eq!(git_config(&f.bare, "lockstep.config"), None);
}

#[test]
fn install_refuses_what_is_not_a_repository() {
    let f = fresh();
    let nothing = f.env.dir.path().join("no-such.git");
    std::fs::create_dir(&nothing).unwrap();
    let out = install(&f.env, &[&nothing.to_string_lossy()]);
    assert_eq!(code(&out), 2);
    let err = f.env.redact(&stderr(&out));
    assert!(
        err.starts_with("lockstep: error: `[tmp]/no-such.git` is not a git repository"),
        "{err}"
    );

    let out = f.env.lockstep(&["install-hooks"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("<REPO.git>"), "{}", stderr(&out));
}

/// Runs `install-hooks` with a copy of lockstep at `binary`, in the sandbox's environment.
fn install_as(binary: &Path, env: &Env, repo: &str) -> std::process::Output {
    let like = env.command(&["install-hooks", repo]);
    let mut cmd = std::process::Command::new(binary);
    cmd.args(like.get_args()).stdin(std::process::Stdio::null());
    copy_env(&like, &mut cmd);
    cmd.output().unwrap()
}

#[test]
fn a_binary_path_with_a_space_gets_sh_shims_that_work() {
    let f = fresh();
    let dir = f.env.dir.path().join("my tools");
    std::fs::create_dir(&dir).unwrap();
    let binary = dir.join("lockstep");
    if std::fs::hard_link(bin(), &binary).is_err() {
        std::fs::copy(bin(), &binary).unwrap();
    }
    let repo = f.bare.to_string_lossy().into_owned();
    let out = install_as(&binary, &f.env, &repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for name in ["pre-receive", "post-receive"] {
        let text = hook(&f.bare, name).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"), "{text}");
        assert!(
            text.contains(&format!("exec '{}' hook {name} \"$@\"", binary.display())),
            "{text}"
        );
    }
    let g = refuses_a_branch_without_a_task(&f);
    g.run(&["switch", "-q", "-c", "feature/TASK-1-x"]).unwrap();
    let p = push_as(&f.clone, "alice", &["feature/TASK-1-x"]);
    assert!(p.accepted, "{}", p.stderr);
}

#[test]
fn hook_files_in_a_dot_d_folder_run_as_their_folder_says() {
    // GitLab and Gitea run every file of `hooks/pre-receive.d/`; a direct hook file there is
    // named after lockstep, not after the hook.
    let f = fresh();
    let repo = f.bare.to_string_lossy().into_owned();
    assert_eq!(code(&install(&f.env, &[&repo])), 0);
    let hooks = f.bare.join("hooks");
    let folder = hooks.join("pre-receive.d");
    std::fs::create_dir(&folder).unwrap();
    std::fs::rename(hooks.join("pre-receive"), folder.join("lockstep")).unwrap();
    std::fs::write(
        hooks.join("pre-receive"),
        "#!/bin/sh\nset -e\ninput=$(cat)\nfor h in \"$(dirname \"$0\")\"/pre-receive.d/*; do\n  printf '%s\\n' \"$input\" | \"$h\"\ndone\n",
    )
    .unwrap();
    std::fs::set_permissions(
        hooks.join("pre-receive"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    refuses_a_branch_without_a_task(&f);

    // A hook file named after no hook is refused with the reason, never run as something else.
    std::fs::rename(folder.join("lockstep"), hooks.join("lockstep")).unwrap();
    let out = std::process::Command::new(hooks.join("lockstep"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no such hook"), "{}", stderr(&out));
}

#[test]
fn into_gitolites_common_hooks_both_hooks_go_next_to_gitolites_update() {
    let env = Env::new(&[]);
    let common = env.dir.path().join("local/hooks/common");
    std::fs::create_dir_all(&common).unwrap();
    std::fs::write(common.join("update"), "#!/usr/bin/perl\n# gitolite's\n").unwrap();
    let dir = common.to_string_lossy().into_owned();
    let o = install(&env, &["--gitolite", &dir]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "{dir}: wrote pre-receive, wrote post-receive, enabled push options for this \
             account (git config --global); now run `gitolite setup --hooks-only` as this \
             account to link them into every repository\n"
        )
    );
    for hook in ["pre-receive", "post-receive"] {
        let text = std::fs::read_to_string(common.join(hook)).unwrap();
        // gitolite's repositories carry no `lockstep.config`: the hook names the config.
        assert!(
            text.ends_with(&format!(
                "exec '{}' --config '{}' hook {hook} \"$@\"\n",
                bin().display(),
                env.config().display()
            )),
            "{text}"
        );
        let mode = std::fs::metadata(common.join(hook))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{hook} is not executable");
    }
    assert_eq!(
        std::fs::read_to_string(common.join("update")).unwrap(),
        "#!/usr/bin/perl\n# gitolite's\n"
    );
    let global = std::fs::read_to_string(env.home().join(".gitconfig")).unwrap();
    assert!(global.contains("advertisePushOptions = true"), "{global}");
    // Again: nothing to do. Ref by ref: refused, gitolite keeps `update`.
    let o = install(&env, &["--gitolite", &dir]);
    assert!(
        stdout(&o).starts_with(&format!("{dir}: up to date;")),
        "{}",
        stdout(&o)
    );
    let o = install(&env, &["--gitolite", &dir, "--per-ref"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("gitolite keeps the `update` hook for its own access rules"),
        "{}",
        stderr(&o)
    );
}
