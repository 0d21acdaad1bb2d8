//! Issue 10: what an attacker and an unlucky operator found, each reproduced against the real
//! executable (the GitHub side is in `serve.rs`).

use std::io::Read as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// Bytes a hostile step or commit message would send to a terminal: clear the screen, set
/// the window title, ring the bell.
const HOSTILE: &str = "\x1b[2J\x1b]0;owned\x07fake green";

/// Runs a command, killing it (and failing the test) if it has not ended within `limit`: a
/// test of something that used to hang must fail, not hang.
fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let _ = out.read_to_end(&mut o);
        let _ = err.read_to_end(&mut e);
        (o, e)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = reader.join().unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Replaces the build step of every repository by `script` (a `sh` script).
fn build_step(env: &Env, script: &str) {
    let path = env.sb.meta.join("steps").join("build.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
}

/// TASK-1 with a branch in `api`, ready for delivery.
fn ready(env: &Env) {
    env.set_status(&[("TASK-1", "In Progress")]);
    env.task_branch("api", "feature/TASK-1-login", "login.txt", "login\n");
    env.set_status(&[("TASK-1", "For Delivery")]);
}

fn no_raw_control(what: &str, text: &[u8]) {
    let bad: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| (*b < 0x20 && *b != b'\n' && *b != b'\t') || *b == 0x7f)
        .collect();
    assert!(
        bad.is_empty(),
        "{what} has raw control bytes {bad:?}:\n{}",
        String::from_utf8_lossy(text)
    );
}

#[test]
fn issue10_a_commit_summary_cannot_drive_the_pushers_terminal() {
    let env = Env::new(&["api"]);
    env.set_status(&[("TASK-1", "In Progress")]);
    // The commit does not mention its task: the warning quotes its summary.
    let dir = env.clone_on_branch("api", "alice", "feature/TASK-1-login", HOSTILE);
    let bare = env.bare("api");
    let new = head(&dir, "HEAD");
    // Straight from the hook, as a terminal would get it (whatever git does on the way). The
    // clone's objects are offered as git offers a quarantined push's.
    let objects = dir.join(".git/objects");
    let out = run_hook(
        &bare,
        Some(env.config().as_path()),
        &["pre-receive"],
        &[
            ("GL_USER", "alice"),
            (
                "GIT_ALTERNATE_OBJECT_DIRECTORIES",
                objects.to_str().unwrap(),
            ),
        ],
        format!("{ZERO} {new} refs/heads/feature/TASK-1-login\n").as_bytes(),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    assert!(
        String::from_utf8_lossy(&text).contains("\\x1b[2J\\x1b]0;owned\\x07fake green"),
        "{}",
        String::from_utf8_lossy(&text)
    );
    no_raw_control("the hook's output", &text);
}

#[test]
fn issue10_step_output_reaches_terminals_and_notes_escaped() {
    let env = Env::new(&["api"]);
    ready(&env);
    build_step(
        &env,
        &format!(
            "printf '%b\\n' '{}'\nexit 1",
            HOSTILE.replace('\x1b', "\\033").replace('\x07', "\\007")
        ),
    );
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    no_raw_control(
        "deliver",
        &[o.stdout.as_slice(), o.stderr.as_slice()].concat(),
    );
    assert!(stderr(&o).contains("\\x1b[2J"), "{}", stderr(&o));
    for args in [
        &["logs", "1"][..],
        &["show", "1"],
        &["queue"],
        &["show", "1", "--json"],
    ] {
        let o = env.lockstep(args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        no_raw_control(&format!("{args:?}"), &o.stdout);
    }
    let logs = stdout(&env.lockstep(&["logs", "1"]));
    assert!(logs.contains("\\x1b]0;owned\\x07fake green"), "{logs}");
    // The raw bytes, when asked for, or when written to a file.
    let raw = env.lockstep(&["logs", "1", "--raw"]);
    assert!(stdout(&raw).contains(HOSTILE), "{}", stdout(&raw));
    env.spawn("logs-to-file", &["logs", "1"]).wait().unwrap();
    assert!(env.spawned_output("logs-to-file").0.contains(HOSTILE));
    // The tracker's note.
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    let all = notes.join("\n");
    no_raw_control("the tracker's notes", all.as_bytes());
    assert!(all.contains("\\x1b[2J"), "{all}");
}

#[test]
fn issue10_no_push_rule_refuses_every_push_unless_the_config_allows_it() {
    let env = Env::new(&["api"]);
    for entry in std::fs::read_dir(env.sb.meta.join("policies")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let check = env.lockstep(&["policy", "check"]);
    assert_eq!(code(&check), 1, "{}{}", stdout(&check), stderr(&check));
    assert!(
        stderr(&check).contains("no rule applies to pushes")
            && stderr(&check).contains("`policies.allow_empty = true`"),
        "{}",
        stderr(&check)
    );
    // Anyone pushing to master is refused, with the reason.
    let dir = env.clone_of("api", "mallory");
    commit(&dir, "mallory", "x.txt", "x\n", "straight to master").unwrap();
    let before = env.master("api");
    let p = push_as(&dir, "mallory", &["HEAD:master"]);
    assert!(!p.accepted, "{}", p.stderr);
    assert!(
        p.remote_text().contains("no rule applies to pushes"),
        "{}",
        p.remote_text()
    );
    assert_eq!(env.master("api"), before);

    // Said explicitly: every push is accepted.
    env.edit_config(|t| format!("{t}\n[policies]\nallow_empty = true\n"));
    let check = env.lockstep(&["policy", "check"]);
    assert_eq!(code(&check), 0, "{}", stderr(&check));
    let p = push_as(&dir, "mallory", &["HEAD:master"]);
    assert!(p.accepted, "{}", p.stderr);
}

/// Seven nested comprehensions over literal lists: 10^7 evaluations of the innermost
/// expression, minutes of CPU if nothing cuts it short.
fn runaway_rule(on_error: &str) -> String {
    let list = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]";
    let mut expr = "a + b + c + d + e + f + g >= 0".to_string();
    for v in ["g", "f", "e", "d", "c", "b", "a"] {
        expr = format!("{list}.all({v}, {expr})");
    }
    format!(
        "[[rule]]\nname = \"runaway\"\non = [\"push\"]\nrequire = '{expr}'\nmessage = \"never\"\non_error = \"{on_error}\"\n"
    )
}

/// `git push origin feature/TASK-1-login` as alice, from `dir`, through the real hooks.
fn alice_pushes_login(dir: &std::path::Path) -> Command {
    let mut push = Command::new("git");
    scrub(&mut push);
    push.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GL_USER", "alice")
        .args(["push", "origin", "feature/TASK-1-login"]);
    push
}

#[test]
fn issue10_a_runaway_rule_is_cut_at_the_policy_timeout() {
    let env = Env::new(&["api"]);
    env.edit_config(|t| format!("{t}\n[policies]\ntimeout = \"1s\"\n"));
    env.add_policy("90-runaway.toml", &runaway_rule("pass"));
    env.set_status(&[("TASK-1", "In Progress")]);
    // Loading does not run rules.
    let check = output_within(env.command(&["policy", "check"]), Duration::from_secs(20));
    assert_eq!(code(&check), 0, "{}", stderr(&check));

    // The rule runs past the timeout: it counts as its `on_error` says (pass).
    let dir = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 login");
    let out = output_within(alice_pushes_login(&dir), Duration::from_secs(20));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // And as a failure, named, when `on_error` is fail.
    env.add_policy("90-runaway.toml", &runaway_rule("fail"));
    commit(&dir, "alice", "more.txt", "more\n", "TASK-1 more").unwrap();
    let out = output_within(alice_pushes_login(&dir), Duration::from_secs(20));
    assert_ne!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("runaway") && stderr(&out).contains("`policies.timeout`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn issue10_a_huge_step_log_makes_a_short_note() {
    let env = Env::new(&["api"]);
    ready(&env);
    // Thirty lines, then 4 MB on one last line, then failure.
    build_step(
        &env,
        "for i in $(seq 1 30); do echo \"line $i\"; done\nhead -c 4000000 /dev/zero | tr '\\0' x\nexit 1",
    );
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(o.stderr.len() < 8_000, "{} bytes on stderr", o.stderr.len());
    let (_, notes) = env.task("TASK-1");
    let note = notes.last().unwrap();
    assert!(note.len() < 8_000, "a note of {} bytes", note.len());
    assert!(
        note.contains("line 30\n[… 3999600 bytes cut] xxx"),
        "{note}"
    );
    assert!(note.contains("[… cut:"), "{note}");
    let tasks = std::fs::metadata(env.sb.meta.join("tasks.toml")).unwrap();
    assert!(tasks.len() < 20_000, "tasks.toml is {} bytes", tasks.len());
    let show = env.lockstep(&["show", "1"]);
    assert!(
        show.stdout.len() < 20_000,
        "show: {} bytes",
        show.stdout.len()
    );
}

#[test]
fn issue10_a_step_that_daemonizes_does_not_outlive_it() {
    let env = Env::new(&["api"]);
    ready(&env);
    // setsid in a double fork: the daemon's parent exits at once, the daemon leaves the
    // step's session and process group, and would write `escaped` half a minute later.
    build_step(
        &env,
        "( setsid sh -c 'echo $$ > \"$SANDBOX/daemon.pid\"; sleep 30; touch \"$SANDBOX/escaped\"' > /dev/null 2>&1 & )\n\
         while [ ! -s \"$SANDBOX/daemon.pid\" ]; do sleep 0.05; done\necho built",
    );
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let pid: i32 = std::fs::read_to_string(env.root().join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid > 1);
    // Nothing of the step is left once the delivery is over.
    let left = env.step_processes();
    assert!(left.is_empty(), "step processes left running: {left:?}");
    let logs = stdout(&env.lockstep(&["logs", "1", "--step", "build"]));
    assert!(
        logs.contains("lockstep: the step left") && logs.contains("running; they were killed"),
        "{logs}"
    );
}

/// Runs lockstep with its stdout a pipe whose reader is gone.
fn into_closed_pipe(env: &Env, args: &[&str]) -> Output {
    let mut child = env
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn issue10_output_into_a_closed_pipe_ends_quietly() {
    let env = Env::new(&["api"]);
    ready(&env);
    build_step(&env, "seq 1 200000\nexit 1");
    assert_eq!(code(&env.lockstep(&["deliver", "TASK-1"])), 1);
    for args in [
        &["logs", "1"][..],
        &["show", "1"],
        &["show", "1", "--json"],
        &["queue"],
        &["queue", "--json"],
    ] {
        let o = into_closed_pipe(&env, args);
        assert!(
            matches!(code(&o), 0 | 141),
            "{args:?} exited {}: {}",
            code(&o),
            stderr(&o)
        );
        assert_eq!(stderr(&o), "", "{args:?}");
    }
}

#[test]
fn issue10_the_demo_ignores_the_callers_config_variable() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("lockstep.toml");
    std::fs::write(&elsewhere, "[bot]\nuser = \"someone-else\"\n").unwrap();
    let out = lockstep_cmd()
        .arg("demo")
        .env("LOCKSTEP_CONFIG", &elsewhere)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "all {} acts went as told",
            lockstep::sandbox::ACTS.len()
        )),
        "{}",
        stdout(&out)
    );
}

/// Issue 22: a store file truncated to nothing is not taken for a new, empty store: the
/// command fails, names the file, and says how to go on; the file stays as it was found.
#[test]
fn issue22_a_truncated_store_is_refused_not_started_afresh() {
    let env = Env::new(&["api"]);
    ready(&env);
    // Delivered in this process (not `--no-wait`, whose detached worker could still be
    // writing the database while the test empties it).
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let db = env.state_dir().join("lockstep.db");
    for f in ["lockstep.db-wal", "lockstep.db-shm"] {
        let _ = std::fs::remove_file(env.state_dir().join(f));
    }
    std::fs::File::create(&db).unwrap();
    let o = env.lockstep(&["queue"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("the state database `{}` is empty", db.display())),
        "{err}"
    );
    assert!(err.contains("Restore `"), "{err}");
    assert!(err.contains("lockstep.db.id`"), "{err}");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
}

/// A log that cannot be written (stderr's reader gone, as in `lockstep queue 2>&1 | head`)
/// is dropped: the logger's own report of the failure must not panic a worker thread and
/// leave the command hanging.
#[test]
fn a_debug_log_into_a_closed_stderr_ends_the_command() {
    let env = Env::new(&["api"]);
    ready(&env);
    let mut child = env
        .command(&["queue"])
        .env("LOCKSTEP_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`lockstep queue` with a closed stderr still ran after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        matches!(status.code(), Some(0 | 141)),
        "`lockstep queue` with a closed stderr: {status}"
    );
}
