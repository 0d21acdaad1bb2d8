//! Running one step (build, test, deploy, verify, rollback) as a real process.
//!
//! Each step runs under its own supervisor ([`super::contain`]), with a clean environment: a
//! few basic variables, those named in `[delivery] pass_env`, the delivery environment's
//! `vars`, and the `LOCKSTEP_*` variables that carry the untrusted values (branch names, task
//! keys). Nothing untrusted is ever spliced into a command line. When a step ends, is stopped
//! or outlives its timeout, its supervisor kills its whole process tree, daemons included.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::contain::{CANNOT_START, CANNOT_START_SAYS, CONTAIN_ARG};
use crate::domain::StepState;

/// Variables every step gets from lockstep's own environment.
const BASIC_ENV: &[&str] = &[
    "PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "USER", "LOGNAME", "SHELL", "TZ",
];

/// How a step is to run.
#[derive(Debug, Clone)]
pub struct StepSpec {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub pass_env: Vec<String>,
    pub timeout: Duration,
    pub log: PathBuf,
    /// The `lockstep` executable, which supervises the step ([`super::contain`]).
    pub supervisor: PathBuf,
}

/// The `lockstep` executable running now, to supervise steps: the file this process runs,
/// even if it was replaced on disk since (an upgrade while a server runs).
pub fn this_executable() -> PathBuf {
    PathBuf::from("/proc/self/exe")
}

/// How long a supervisor told to stop gets to kill its step's tree before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Passed,
    /// Exit code, or None when killed by a signal.
    Failed(Option<i32>),
    TimedOut(Duration),
    /// It could not be started at all.
    NotStarted(String),
    /// Killed because another repository's step of the same phase failed: the line stops.
    Stopped,
}

impl StepOutcome {
    /// The state it leaves its repository in, in its phase.
    pub fn state(&self) -> StepState {
        match self {
            StepOutcome::Passed => StepState::Passed,
            StepOutcome::Failed(_) => StepState::Failed,
            StepOutcome::TimedOut(_) => StepState::TimedOut,
            StepOutcome::NotStarted(_) => StepState::NotStarted,
            StepOutcome::Stopped => StepState::Stopped,
        }
    }
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            StepOutcome::Passed => Some(0),
            StepOutcome::Failed(c) => *c,
            _ => None,
        }
    }
    /// A sentence for reports.
    pub fn describe(&self) -> String {
        match self {
            StepOutcome::Passed => "passed".into(),
            StepOutcome::Failed(Some(c)) => format!("exited with {c}"),
            StepOutcome::Failed(None) => "was killed by a signal".into(),
            StepOutcome::TimedOut(d) => {
                format!("ran past {} and was killed", crate::config::humanize(*d))
            }
            StepOutcome::NotStarted(e) => format!("could not start: {e}"),
            StepOutcome::Stopped => "was stopped: another step of the phase failed".into(),
        }
    }
}

/// A step started and not yet waited for.
pub struct Running {
    /// The step's supervisor (in a process group of its own, which it leads).
    child: tokio::process::Child,
    pgid: Option<Pid>,
    /// Armed from the start: a `Running` dropped before anyone waited on it (a stop that won
    /// the race against the first poll of [`Running::wait`]) still stops its step.
    guard: StopGuard,
    timeout: Duration,
    log: PathBuf,
}

/// Starts a step under its supervisor; `Err` with the outcome when it could not be started
/// at all.
pub fn start(spec: &StepSpec) -> anyhow::Result<Result<Running, StepOutcome>> {
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
    }
    let log = std::fs::File::create(&spec.log)
        .with_context(|| format!("cannot create `{}`", spec.log.display()))?;
    let Some((program, args)) = spec.argv.split_first() else {
        return Ok(Err(StepOutcome::NotStarted(
            "the step's command is empty".into(),
        )));
    };
    // The supervisor is stopped with SIGTERM, so that it can kill the step's tree; never
    // with SIGKILL on drop, which would leave that tree behind.
    let mut cmd = tokio::process::Command::new(&spec.supervisor);
    cmd.arg(CONTAIN_ARG)
        .arg(program)
        .args(args)
        .current_dir(&spec.cwd)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .process_group(0)
        .kill_on_drop(false);
    for k in BASIC_ENV
        .iter()
        .copied()
        .chain(spec.pass_env.iter().map(String::as_str))
    {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let why = format!("`{}`: {e}", spec.supervisor.display());
            let _ = std::fs::write(&spec.log, format!("lockstep: could not start {why}\n"));
            return Ok(Err(StepOutcome::NotStarted(why)));
        }
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    Ok(Ok(Running {
        child,
        pgid,
        guard: StopGuard(pgid),
        timeout: spec.timeout,
        log: spec.log.clone(),
    }))
}

impl Running {
    /// The step's supervisor's process id, which is also its process group's id.
    pub fn pid(&self) -> Option<i32> {
        self.pgid.map(Pid::as_raw)
    }

    /// Waits for the step to end, stopping it at the timeout.
    pub async fn wait(mut self) -> anyhow::Result<StepOutcome> {
        // If this future is dropped (a server shutting down, a stop), `self.guard` tells the
        // supervisor to stop.
        let waited = tokio::time::timeout(self.timeout, self.child.wait()).await;
        self.guard.0 = None;
        match waited {
            Ok(status) => {
                let status = status.context("cannot wait for the step")?;
                Ok(if status.success() {
                    StepOutcome::Passed
                } else if let Some(why) = not_started(status.code(), &self.log) {
                    StepOutcome::NotStarted(why)
                } else {
                    StepOutcome::Failed(status.code())
                })
            }
            Err(_) => {
                stop(self.pgid);
                if tokio::time::timeout(STOP_GRACE, self.child.wait())
                    .await
                    .is_err()
                {
                    if let Some(pgid) = self.pgid {
                        let _ = killpg(pgid, Signal::SIGKILL);
                    }
                    let _ = self.child.wait().await;
                }
                Ok(StepOutcome::TimedOut(self.timeout))
            }
        }
    }

    /// Like [`Running::wait`], but gives up as soon as `stop` turns true, stopping the step
    /// (dropping the wait does it).
    pub async fn wait_or_stop(
        self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<StepOutcome> {
        tokio::select! {
            outcome = self.wait() => outcome,
            Ok(_) = stop.wait_for(|stopped| *stopped) => Ok(StepOutcome::Stopped),
        }
    }
}

/// Why the supervisor could not start the step, when that is how it ended (said on the first
/// line of the log).
fn not_started(code: Option<i32>, log: &Path) -> Option<String> {
    use std::io::{BufRead as _, Read as _};
    if code != Some(i32::from(CANNOT_START)) {
        return None;
    }
    let file = std::fs::File::open(log).ok()?;
    let mut first = String::new();
    std::io::BufReader::new(file)
        .take(4096)
        .read_line(&mut first)
        .ok()?;
    first
        .strip_prefix(CANNOT_START_SAYS)
        .map(|why| why.trim_end().to_string())
}

/// Tells a step's supervisor to stop the step: it kills the step's whole tree, then exits.
fn stop(supervisor: Option<Pid>) {
    if let Some(pid) = supervisor {
        let _ = kill(pid, Signal::SIGTERM);
    }
}

/// Stops a step when dropped while armed.
struct StopGuard(Option<Pid>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        stop(self.0);
    }
}

/// Stops what is left of a step started by a worker that died (a step's supervisor outlives
/// a worker killed with SIGKILL). `marker` is a `NAME=value` variable the step was given: if
/// the supervisor is alive and lacks it, the id was reused by another process, which is left
/// alone. Returns once the supervisor (having killed the step's tree) is gone, or after
/// `grace`, when it is killed.
pub async fn kill_leftover(pgid: i32, marker: &str, grace: Duration) -> bool {
    if pgid <= 1 {
        return false;
    }
    if let Ok(environ) = std::fs::read(format!("/proc/{pgid}/environ"))
        && !environ.split(|b| *b == 0).any(|v| v == marker.as_bytes())
    {
        return false;
    }
    let pgid = Pid::from_raw(pgid);
    if killpg(pgid, Signal::SIGTERM).is_err() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + grace;
    while killpg(pgid, None).is_ok() {
        if tokio::time::Instant::now() >= deadline {
            let _ = killpg(pgid, Signal::SIGKILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// The most of a log's end shown or copied: 256 KiB.
const LOG_SHOWN: u64 = 256 * 1024;

/// The last 256 KiB of a log, as text, saying how much was left out before; `None` when
/// there is no such file (here: the step ran on another replica). Blocking.
pub fn last_of_log(path: &Path) -> Option<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut prefix = String::new();
    if len > LOG_SHOWN {
        let _ = f.seek(SeekFrom::Start(len - LOG_SHOWN));
        prefix = format!("(… the first {} bytes are left out)\n", len - LOG_SHOWN);
    }
    let mut buf = Vec::new();
    let _ = f.take(LOG_SHOWN).read_to_end(&mut buf);
    Some(prefix + &String::from_utf8_lossy(&buf))
}

/// The end of a log, for reports, notes and comments ([`crate::text::Tail`]): the log is
/// read a block at a time, never held whole, however much a step printed.
pub fn tail(log: &Path) -> String {
    use std::io::Read as _;
    let mut tail = crate::text::Tail::default();
    if let Ok(mut f) = std::fs::File::open(log) {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.push(&buf[..n]);
        }
    }
    tail.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a step to its end (or its timeout), writing stdout and stderr to its log.
    async fn run(spec: &StepSpec) -> anyhow::Result<StepOutcome> {
        match start(spec)? {
            Ok(running) => running.wait().await,
            Err(outcome) => Ok(outcome),
        }
    }

    /// The `lockstep` executable cargo built next to this test binary
    /// (`target/<profile>/lockstep`): the steps' supervisor.
    fn lockstep() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().unwrap().parent().unwrap().join("lockstep");
        assert!(
            bin.exists(),
            "`{}` is missing: run `cargo build` (or the whole `cargo test`) first",
            bin.display()
        );
        bin
    }

    fn spec(dir: &Path, argv: &[&str], timeout: Duration) -> StepSpec {
        StepSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: dir.to_path_buf(),
            env: vec![("LOCKSTEP_BRANCH".into(), "feature/x; rm -rf /".into())],
            pass_env: vec![],
            timeout,
            log: dir.join("logs/step.log"),
            supervisor: lockstep(),
        }
    }

    /// Issue 10: a step that daemonizes (`setsid` in a double fork) leaves its session and
    /// process group; its supervisor still finds it, kills it, and says so in the log.
    #[tokio::test]
    async fn issue10_a_daemon_does_not_outlive_its_step() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("daemon.pid");
        let script = format!(
            "( setsid sh -c 'echo $$ > {p}; exec sleep 30' > /dev/null 2>&1 & )\n\
             while [ ! -s {p} ]; do sleep 0.02; done\n\
             grep SigBlk /proc/self/status",
            p = pidfile.display()
        );
        let s = spec(dir.path(), &["sh", "-c", &script], Duration::from_secs(20));
        assert_eq!(run(&s).await.unwrap(), StepOutcome::Passed);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Gone, not a zombie: the supervisor reaped it.
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the daemon {pid} outlived its step"
        );
        let log = std::fs::read_to_string(&s.log).unwrap();
        assert!(log.contains("SigBlk:\t0000000000000000"), "{log}");
        assert!(
            log.contains("lockstep: the step left 1 process(es) running; they were killed"),
            "{log}"
        );
    }

    #[tokio::test]
    async fn passes_fails_and_logs() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(
            dir.path(),
            &["sh", "-c", "echo \"branch=$LOCKSTEP_BRANCH\"; exit 3"],
            Duration::from_secs(10),
        );
        assert_eq!(run(&s).await.unwrap(), StepOutcome::Failed(Some(3)));
        assert_eq!(tail(&s.log), "branch=feature/x; rm -rf /");
        let s = spec(dir.path(), &["true"], Duration::from_secs(10));
        assert_eq!(run(&s).await.unwrap(), StepOutcome::Passed);
        let s = spec(dir.path(), &["/no/such/program"], Duration::from_secs(10));
        assert!(matches!(run(&s).await.unwrap(), StepOutcome::NotStarted(_)));
        let s = spec(dir.path(), &[], Duration::from_secs(10));
        assert!(matches!(run(&s).await.unwrap(), StepOutcome::NotStarted(_)));
    }

    #[tokio::test]
    async fn leftovers_are_killed_only_when_they_are_ours() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(
            dir.path(),
            &["sh", "-c", "sleep 30 & sleep 30"],
            Duration::from_secs(60),
        );
        s.env.push(("LOCKSTEP_DELIVERY".into(), "7".into()));
        let running = start(&s).unwrap().unwrap();
        let pid = running.pid().unwrap();
        // Wait for the shell to have exec'd with its environment in place.
        let marker = "LOCKSTEP_DELIVERY=7";
        for _ in 0..200 {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if env.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let grace = Duration::from_millis(300);
        assert!(!kill_leftover(pid, "LOCKSTEP_DELIVERY=8", grace).await);
        assert!(kill_leftover(pid, marker, grace).await);
        assert_eq!(running.wait().await.unwrap(), StepOutcome::Failed(None));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        // A grandchild that would write the marker after the timeout if it were not killed.
        let script = format!("(sleep 0.6; touch '{}') & sleep 30", marker.display());
        let s = spec(
            dir.path(),
            &["sh", "-c", &script],
            Duration::from_millis(300),
        );
        assert_eq!(
            run(&s).await.unwrap(),
            StepOutcome::TimedOut(Duration::from_millis(300))
        );
        std::thread::sleep(Duration::from_millis(1200));
        assert!(!marker.exists(), "a process of the timed-out step survived");
    }

    #[tokio::test]
    async fn a_dropped_step_takes_its_group_along() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let script = format!("(sleep 0.6; touch '{}') & sleep 30", marker.display());
        let s = spec(dir.path(), &["sh", "-c", &script], Duration::from_secs(60));
        let cut_short = tokio::time::timeout(Duration::from_millis(300), run(&s)).await;
        assert!(cut_short.is_err());
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(!marker.exists(), "a process of the dropped step survived");
    }

    #[tokio::test]
    async fn a_step_stopped_before_anyone_waited_takes_its_tree_along() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let script = format!("(sleep 0.6; touch '{}') & sleep 30", marker.display());
        let s = spec(dir.path(), &["sh", "-c", &script], Duration::from_secs(60));
        let running = start(&s).unwrap().unwrap();
        // Give the shell time to fork the grandchild, then drop the step unwaited: what
        // `wait_or_stop` does when the stop was already set (another repository's step failed
        // while this one was starting) and `select!` picks the stop before polling the wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(running);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(!marker.exists(), "a process of the stopped step survived");
    }
}
