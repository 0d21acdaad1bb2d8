//! The accounts a git server runs lockstep as: a decision that cannot be logged, a tracker
//! file other accounts write, a repository another account owns, and `lockstep doctor`.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;

use crate::util::*;

fn is_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// `git push origin ARGS` as `push_env` runs it, but without the power to override file
/// permissions when the tests run as root (`setpriv` drops `CAP_DAC_OVERRIDE`): a folder
/// without write permission is then as unwritable for the hook as for any other account.
fn push_bound_by_permissions(dir: &Path, user: &str, args: &[&str]) -> Pushed {
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
            "git",
        ]);
        c
    } else {
        Command::new("git")
    };
    scrub(&mut cmd);
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GL_USER", user)
        .args(["push", "origin"])
        .args(args);
    let out = run(cmd);
    Pushed {
        accepted: out.status.success(),
        stderr: stderr(&out),
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The state folder is not writable by the account the hooks run as: the push is refused,
/// naming the folder and why; with `[audit] on_error = "warn"` it goes through with a
/// warning, and `lockstep audit` reports the gap the hook noted in the repository.
#[test]
fn a_decision_that_cannot_be_logged_rejects_the_push_or_warns() {
    let env = Env::new(&["api"]);
    let state = env.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    chmod(&state, 0o555);
    let clone = env.clone_on_branch("api", "alice", "feature/TASK-1-a", "TASK-1 a");

    let refused = push_bound_by_permissions(&clone, "alice", &["feature/TASK-1-a"]);
    let text = refused.remote_text();
    assert!(!refused.accepted, "{}", refused.stderr);
    assert!(
        text.contains(&format!(
            "lockstep: push rejected: its decision could not be written to the decision log \
             in `{}`:",
            state.display()
        )),
        "{text}"
    );
    assert!(text.contains("Permission denied"), "{text}");
    assert!(
        text.contains("must be able to create and write files in"),
        "{text}"
    );
    assert!(text.contains("`[audit] on_error = \"warn\"`"), "{text}");
    assert_eq!(env.rev("api", "refs/heads/feature/TASK-1-a"), None);

    env.edit_config(|t| format!("{t}\n[audit]\non_error = \"warn\"\n"));
    let warned = push_bound_by_permissions(&clone, "alice", &["feature/TASK-1-a"]);
    let text = warned.remote_text();
    assert!(warned.accepted, "{}", warned.stderr);
    assert!(
        text.contains("lockstep: warning: this push's decision was not written"),
        "{text}"
    );
    // The error-level log line follows the pusher's warning.
    assert!(text.contains("ERROR"), "{text}");
    let noted = env.bare("api").join("lockstep-unlogged");
    assert!(
        text.contains(&format!("the gap is noted in `{}`", noted.display())),
        "{text}"
    );

    chmod(&state, 0o755);
    let o = env.lockstep(&["audit"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let warning = stderr(&o);
    assert!(
        warning.contains("1 push decision(s) between") && warning.contains("lockstep-unlogged"),
        "{warning}"
    );
}

fn chown_tree(p: &Path, uid: u32) {
    let o = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A replay run by an account that does not own the repository: git refuses to read it
/// ("dubious ownership"), which is named with its fix, and the replay exits 2, not 0 with
/// every push "gone". Trusting the folder (`safe.directory`) makes it whole again.
#[test]
fn replay_names_gits_ownership_check_and_fails() {
    if !is_root() {
        say_skipped(
            "replay_names_gits_ownership_check_and_fails",
            "root",
            "run the tests as root, to give the repository to another account",
        );
        return;
    }
    let env = Env::new(&["api"]);
    let clone = env.clone_on_branch("api", "alice", "feature/TASK-1-a", "TASK-1 a");
    assert!(push_as(&clone, "alice", &["feature/TASK-1-a"]).accepted);
    let bare = env.bare("api");
    chown_tree(&bare, 65534);

    let o = env.lockstep(&["policy", "replay"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 2, "{out}{}", stderr(&o));
    let absolute = std::fs::canonicalize(&bare).unwrap();
    assert!(out.contains("1 not read"), "{out}");
    assert!(
        out.contains("not read (the replay is incomplete):"),
        "{out}"
    );
    assert!(out.contains("\"dubious ownership\""), "{out}");
    assert!(
        out.contains("`git config --global --add safe.directory /") && out.contains("api.git`"),
        "{out}"
    );
    assert!(
        stderr(&o).contains("the replay is incomplete"),
        "{}",
        stderr(&o)
    );

    // The fix the message gives, in the HOME the replay runs with.
    std::fs::write(
        env.home().join(".gitconfig"),
        format!("[safe]\n\tdirectory = {}\n", absolute.display()),
    )
    .unwrap();
    let o = env.lockstep(&["policy", "replay"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("0 not replayable\n"), "{}", stdout(&o));
    chown_tree(&bare, 0);
}

/// `lockstep doctor` on a repository whose `post-receive` is another's, checked for an account
/// that cannot write the state folder or the tracker file: each problem said with its fix,
/// exit 1; the same repository set right, nothing to fix, exit 0.
#[test]
fn doctor_says_what_a_server_admin_must_fix() {
    let env = Env::new(&["api"]);
    let bare = env.bare("api");
    std::fs::write(bare.join("hooks/post-receive"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let o = env
        .command(&["doctor", "--as", "nobody"])
        .arg(&bare)
        .output()
        .unwrap();
    assert_no_panic(&o);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    insta::assert_snapshot!("doctor", env.redact(&stdout(&o)));

    let o = env
        .command(&["doctor", "--json", "--as", "65534"])
        .arg(&bare)
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["problems"], 3, "{report:#}");
    let checks = report["repos"][0]["checks"].as_array().unwrap();
    let status = |name: &str| -> Vec<&str> {
        checks
            .iter()
            .filter(|c| c["check"] == name)
            .map(|c| c["status"].as_str().unwrap())
            .collect()
    };
    assert_eq!(status("hooks"), ["ok", "problem"]);
    assert_eq!(status("state_dir"), ["problem"]);
    assert_eq!(status("tracker"), ["problem"]);
    assert_eq!(status("identity"), ["note"]);

    // Set right: lockstep's hooks, and no other account asked about.
    let o = env
        .command(&["install-hooks", "--force"])
        .arg(&bare)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = env
        .command(&["doctor"])
        .arg(&bare)
        .env("GL_USER", "alice")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert!(
        text.ends_with("1 repository checked: nothing to fix\n"),
        "{text}"
    );
    assert!(
        text.contains("ok      identity: `GL_USER` is set here"),
        "{text}"
    );

    // Not a repository, and an account that does not exist.
    let o = env.lockstep(&["doctor", "/nonexistent/x.git"]);
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains("is not a git repository here"),
        "{}",
        stdout(&o)
    );
    let o = env.lockstep(&["doctor", "--as", "no-such-user-here", "x.git"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("no such account"), "{}", stderr(&o));
}
