//! Steps start as any program started from a shell would: no signal blocked, none ignored.
//! A step's supervisor takes its signals one at a time with `sigwait`, so it blocks them for
//! itself; the step must not inherit that, or `wait` in a shell never hears of its children
//! and no `trap … TERM` ever runs.

use super::*;

/// `test` of every repository becomes `script`, run by dash (the `/bin/sh` of Debian, whose
/// `wait` hangs when `SIGCHLD` is blocked); `None` when there is no dash here.
fn dash_test(env: &Env, script: &str) -> Option<()> {
    let dash = ["/bin/dash", "/usr/bin/dash"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let path = env.sb.meta.join("steps").join("test.sh");
    std::fs::write(&path, format!("#!{dash}\n{script}")).unwrap();
    Some(())
}

/// Issue 22: a step that waits for its own background job finishes when the job does, with
/// an empty signal mask and no signal ignored; before, it hung until the step timeout.
#[test]
fn issue22_a_step_waits_for_its_background_job_with_no_signal_blocked() {
    let env = Env::new(&["api"]);
    env.set_delivery("step_timeout", "\"20s\"");
    let signals = env.root().join("signals");
    let script = format!(
        "while read -r line; do case $line in SigBlk*|SigIgn*) echo \"$line\";; esac; \\
         done < /proc/$$/status > '{}'\nsleep 1 & wait $!\necho waited\n",
        signals.display()
    );
    if dash_test(&env, &script).is_none() {
        eprintln!("skipped: no dash");
        return;
    }
    ready(&env, "TASK-1", &["api"], &[]);
    let started = std::time::Instant::now();
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "the step waited {:?}",
        started.elapsed()
    );
    let signals = std::fs::read_to_string(&signals).unwrap();
    let mask = |name: &str| {
        let line = signals.lines().find_map(|l| l.strip_prefix(name)).unwrap();
        u64::from_str_radix(line.trim(), 16).unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "{signals}");
    // 32 and 33 are the C library's own: its posix_spawn leaves them ignored in a child, and
    // no program can set them (the C library takes them back as it needs them).
    assert_eq!(mask("SigIgn:") & 0x7fff_ffff, 0, "{signals}");
}

/// Issue 22: a step stopped (here by its timeout) gets `SIGTERM` first, and its cleanup trap
/// runs before anything is killed.
#[test]
fn issue22_a_stopped_step_gets_sigterm_and_its_trap_runs() {
    let env = Env::new(&["api"]);
    env.set_delivery("step_timeout", "\"2s\"");
    let trapped = env.root().join("trapped");
    let script = format!(
        "trap 'echo cleaned up > \"{}\"; exit 143' TERM\nsleep 30 & wait $!\n",
        trapped.display()
    );
    if dash_test(&env, &script).is_none() {
        eprintln!("skipped: no dash");
        return;
    }
    ready(&env, "TASK-1", &["api"], &[]);
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("delivery failed in test (api): `test` ran past 2s and was killed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&trapped).ok().as_deref(),
        Some("cleaned up\n"),
        "the step's TERM trap did not run"
    );
    wait_for("the stopped step's processes to end", || {
        env.step_processes().is_empty().then_some(())
    });
}

/// Issue 22: a worker started with signals ignored (`nohup`, a background job of a script)
/// does not hand that to its steps: an ignored signal stays ignored across `exec`, so the
/// step's own process puts each back to its default first.
#[test]
fn issue22_signals_the_worker_ignores_are_not_ignored_in_its_steps() {
    let env = Env::new(&["api"]);
    let signals = env.root().join("signals");
    let script = format!(
        "while read -r line; do case $line in SigIgn*) echo \"$line\";; esac; \\
         done < /proc/$$/status > '{}'\n",
        signals.display()
    );
    if dash_test(&env, &script).is_none() {
        eprintln!("skipped: no dash");
        return;
    }
    ready(&env, "TASK-1", &["api"], &[]);
    let deliver = env.command(&["deliver", "TASK-1"]);
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("trap '' HUP INT QUIT USR1 TERM; exec \"$@\"")
        .arg("sh")
        .arg(deliver.get_program())
        .args(deliver.get_args());
    for (k, v) in deliver.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let line = std::fs::read_to_string(&signals).unwrap();
    let ignored =
        u64::from_str_radix(line.trim().trim_start_matches("SigIgn:").trim(), 16).unwrap();
    assert_eq!(ignored & 0x7fff_ffff, 0, "{line}");
}
