//! Containing a step's whole process tree: every step runs under a small supervisor, the
//! `lockstep` executable itself started as `lockstep __contain-step PROGRAM ARGS…`.
//!
//! A process group is not enough: a step's child may call `setsid` (or double-fork into a new
//! session) and leave the group, and then it outlives the step and the delivery. The
//! supervisor makes itself a *child subreaper* (`prctl(PR_SET_CHILD_SUBREAPER)`): whatever a
//! step daemonizes is re-parented to it rather than to `init`, so it stays findable as the
//! supervisor's descendant. When the step ends, or when lockstep stops it (`SIGTERM`: a
//! timeout, a cancel, a failure elsewhere, a worker shutting down), the supervisor kills every
//! descendant it has left, reaps them, and only then exits, with the step's exit status. What
//! a step left running is said at the end of its log.
//!
//! The supervisor takes its signals one at a time with `sigwait`, so it blocks them, and a
//! child inherits the signal mask across `fork` and `exec` (the standard library does not clear
//! it). A step started with `SIGCHLD` blocked hangs in a shell's `wait`, and one with `SIGTERM`
//! blocked never runs its cleanup trap. Without `unsafe` there is no running code between
//! `fork` and `exec`, so the supervisor starts the step through the `lockstep` executable once
//! more (`lockstep __contain-step __exec-step PROGRAM ARGS…`), which empties its signal mask,
//! puts every signal it inherited ignored back to its default, and `exec`s the step in its own
//! place: the step keeps that process, its id and its group. There, too, what the step may
//! write is limited ([`super::confine`]), so that the limit binds the step and not lockstep.
//!
//! Stopping is gentle first: the step's process group gets `SIGTERM` and [`TERM_GRACE`] to
//! end (a trap can clean up), then whatever is left gets `SIGKILL`.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, raise, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::confine;

/// The first argument that makes `lockstep` the supervisor of one step.
pub const CONTAIN_ARG: &str = "__contain-step";

/// The first argument after [`CONTAIN_ARG`] that makes `lockstep` the step itself: it sets
/// its signals as a step starts with, then becomes the step's program.
const EXEC_ARG: &str = "__exec-step";

/// How long a step told to stop (`SIGTERM`) has to end before it is killed; below the
/// worker's own grace for the supervisor, so the sweep after it still fits.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// How long the supervisor keeps killing what a step left before it gives up on it.
const SWEEP_LIMIT: Duration = Duration::from_secs(10);

/// Exit code of a supervisor that could not start its step at all; the log then starts with
/// [`CANNOT_START_SAYS`] and the reason.
pub const CANNOT_START: u8 = 127;
/// How the log of a step that could not be started begins.
pub const CANNOT_START_SAYS: &str = "lockstep: could not start ";

/// `lockstep __contain-step PROGRAM ARGS…`: runs the step and contains its process tree;
/// exits as the step did (killed by a signal: killed itself, by `SIGKILL`).
pub fn supervise(argv: &[OsString]) -> u8 {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("lockstep: `{CONTAIN_ARG}` needs the step's command");
        return CANNOT_START;
    };
    if program == EXEC_ARG {
        return exec_step(args);
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("lockstep: cannot contain the step (child subreaper: {e})");
        return CANNOT_START;
    }
    // Signals are taken one at a time with `sigwait`, so they are blocked here; the step is
    // started through `exec_step`, which unblocks them in its own process.
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    if let Err(e) = signals.thread_block() {
        eprintln!("lockstep: cannot contain the step (signal mask: {e})");
        return CANNOT_START;
    }
    let step = match std::process::Command::new("/proc/self/exe")
        .arg(CONTAIN_ARG)
        .arg(EXEC_ARG)
        .arg(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .spawn()
    {
        Ok(c) => Pid::from_raw(c.id() as i32),
        Err(e) => {
            eprintln!("{CANNOT_START_SAYS}`{}`: {e}", program.to_string_lossy());
            return CANNOT_START;
        }
    };
    let ended = wait_for(step, &signals);
    if ended.is_none() {
        // Stopped: the step hears of it first, and may clean up.
        terminate(step);
    }
    let left = sweep(step);
    let mut log = std::io::stderr().lock();
    match ended {
        Some(_) if left > 0 => {
            let _ = writeln!(
                log,
                "lockstep: the step left {left} process(es) running; they were killed (a step \
                 must not outlive itself: no daemons, no `setsid`, no `nohup`)"
            );
        }
        None if left > 0 => {
            let _ = writeln!(
                log,
                "lockstep: the step was stopped; {left} process(es) killed"
            );
        }
        _ => {}
    }
    drop(log);
    match ended {
        Some(WaitStatus::Exited(_, code)) => u8::try_from(code).unwrap_or(1),
        _ => {
            // Killed by a signal, or stopped: lockstep reads "killed by a signal".
            let _ = raise(Signal::SIGKILL);
            1
        }
    }
}

/// `lockstep __contain-step __exec-step PROGRAM ARGS…`: the step's own process. Empties the
/// signal mask the supervisor handed down, restores what was ignored, and becomes `PROGRAM`;
/// returns only when that cannot be done.
fn exec_step(argv: &[OsString]) -> u8 {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("lockstep: `{EXEC_ARG}` needs the step's command");
        return CANNOT_START;
    };
    // While the mask still blocks them, no signal is lost to a handler set just for `exec`.
    let _restored = match restore_ignored() {
        Ok(handlers) => handlers,
        Err(e) => {
            eprintln!("lockstep: cannot start the step with default signal handling: {e:#}");
            return CANNOT_START;
        }
    };
    if let Err(e) = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None) {
        eprintln!("lockstep: cannot start the step with no signal blocked: {e}");
        return CANNOT_START;
    }
    // Last: from here on this process writes only where the step may.
    let off = std::env::var_os(confine::CONFINE_VAR).is_some_and(|v| v == "off");
    let writable = confine::writable(std::env::var_os(confine::WRITABLE_VAR));
    if !off && let Err(e) = confine::confine(&writable) {
        eprintln!(
            "{CANNOT_START_SAYS}`{}`: cannot limit what it writes (Landlock: {e})",
            program.to_string_lossy()
        );
        return CANNOT_START;
    }
    let e = std::process::Command::new(program).args(args).exec();
    eprintln!("{CANNOT_START_SAYS}`{}`: {e}", program.to_string_lossy());
    CANNOT_START
}

/// The signals this process inherited ignored (`SigIgn` of `/proc/self/status`), but those
/// that cannot be caught and the C library's own (32 and above).
fn ignored_signals() -> Vec<i32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    (1..32)
        .filter(|n| mask & (1 << (n - 1)) != 0)
        // SIGPIPE: the standard library ignores it in itself and restores it in what it
        // starts. KILL and STOP are never ignored; ILL, FPE and SEGV are not to be caught.
        .filter(|n| {
            ![
                Signal::SIGPIPE,
                Signal::SIGKILL,
                Signal::SIGSTOP,
                Signal::SIGILL,
                Signal::SIGFPE,
                Signal::SIGSEGV,
            ]
            .iter()
            .any(|s| *s as i32 == *n)
        })
        .collect()
}

/// Puts a handler on every signal inherited ignored, which `exec` turns into the default
/// disposition (an ignored signal stays ignored across `exec`; a handled one does not). The
/// handlers must live until then: they are returned, with the runtime that holds them.
fn restore_ignored()
-> anyhow::Result<Option<(tokio::runtime::Runtime, Vec<tokio::signal::unix::Signal>)>> {
    let ignored = ignored_signals();
    if ignored.is_empty() {
        return Ok(None);
    }
    let rt = crate::runtime::current_thread()?;
    let handlers = rt.block_on(async {
        ignored
            .iter()
            .map(|n| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(*n)))
            .collect::<std::io::Result<Vec<_>>>()
    })?;
    Ok(Some((rt, handlers)))
}

/// Tells the step's process group to stop (`SIGTERM`) and waits up to [`TERM_GRACE`] for the
/// step's own process to end.
fn terminate(step: Pid) {
    let _ = kill(Pid::from_raw(-step.as_raw()), Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < TERM_GRACE {
        match waitpid(step, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => return,
            Ok(_) => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the step's end (its status) or for a signal to stop it (`None`). Other
/// descendants that end meanwhile are reaped as they go.
fn wait_for(step: Pid, signals: &SigSet) -> Option<WaitStatus> {
    loop {
        // Reap what has ended, the step first among equals.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(status @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)))
                    if pid == step =>
                {
                    return Some(status);
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(_) => return None,
        }
    }
}

/// Kills every descendant the supervisor still has (the step's group first), until none is
/// left or [`SWEEP_LIMIT`] has passed; returns how many processes were killed.
fn sweep(step: Pid) -> usize {
    let _ = kill(Pid::from_raw(-step.as_raw()), Signal::SIGKILL);
    let me = nix::unistd::getpid();
    let start = Instant::now();
    let mut killed = std::collections::BTreeSet::new();
    loop {
        let all = descendants(me);
        for pid in &all {
            if kill(*pid, Signal::SIGKILL).is_ok() && *pid != step {
                killed.insert(pid.as_raw());
            }
        }
        // Reap every child that has ended (zombies among `all` included).
        let mut children = false;
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    children = true;
                    break;
                }
                Ok(_) => children = true,
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        if (all.is_empty() && !children) || start.elapsed() > SWEEP_LIMIT {
            return killed.len();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every live process below `root`, by the parent ids in `/proc/*/stat`.
fn descendants(root: Pid) -> Vec<Pid> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`; the command name may hold spaces and parentheses.
            // A zombie has ended already: it is only reaped, not counted.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let (Some(state), Some(ppid)) = (fields.next(), fields.next()) else {
                continue;
            };
            if let (false, Ok(ppid)) = (state == "Z", ppid.parse::<i32>()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![root.as_raw()];
    while let Some(p) = frontier.pop() {
        for (child, _) in parent_of.iter().filter(|(_, pp)| *pp == p) {
            if !found.contains(child) {
                found.push(*child);
                frontier.push(*child);
            }
        }
    }
    found.into_iter().map(Pid::from_raw).collect()
}
