//! Running one step (build, test, deploy, verify, rollback) as a real process.
//!
//! Each step runs in its own process group with a clean environment: a few basic variables,
//! those named in `[delivery] pass_env`, the delivery environment's `vars`, and the
//! `LOCKSTEP_*` variables that carry the untrusted values (branch names, task keys). Nothing
//! untrusted is ever spliced into a command line. A step that outlives its timeout is killed
//! with its whole process group.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

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
}

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
    pub fn passed(&self) -> bool {
        *self == StepOutcome::Passed
    }
    pub fn label(&self) -> &'static str {
        match self {
            StepOutcome::Passed => "passed",
            StepOutcome::Failed(_) => "failed",
            StepOutcome::TimedOut(_) => "timed out",
            StepOutcome::NotStarted(_) => "not started",
            StepOutcome::Stopped => "stopped",
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
                format!("ran past {} and was killed", crate::tracker::humanize(*d))
            }
            StepOutcome::NotStarted(e) => format!("could not start: {e}"),
            StepOutcome::Stopped => "was stopped: another step of the phase failed".into(),
        }
    }
}

/// A step started and not yet waited for.
pub struct Running {
    child: tokio::process::Child,
    pgid: Option<Pid>,
    timeout: Duration,
}

/// Runs a step to its end (or its timeout), writing stdout and stderr to its log.
pub async fn run(spec: &StepSpec) -> anyhow::Result<StepOutcome> {
    match start(spec)? {
        Ok(running) => running.wait().await,
        Err(outcome) => Ok(outcome),
    }
}

/// Starts a step in a process group of its own; `Err` with the outcome when it could not be
/// started at all.
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
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(&spec.cwd)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .process_group(0)
        .kill_on_drop(true);
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
            let why = format!("`{program}`: {e}");
            let _ = std::fs::write(&spec.log, format!("lockstep: could not start {why}\n"));
            return Ok(Err(StepOutcome::NotStarted(why)));
        }
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    Ok(Ok(Running {
        child,
        pgid,
        timeout: spec.timeout,
    }))
}

impl Running {
    /// The step's process id, which is also its process group's id.
    pub fn pid(&self) -> Option<i32> {
        self.pgid.map(Pid::as_raw)
    }

    /// Waits for the step to end, killing its whole group at the timeout.
    pub async fn wait(mut self) -> anyhow::Result<StepOutcome> {
        // If this future is dropped (a server shutting down), the whole group goes, not just
        // the direct child that `kill_on_drop` reaches.
        let mut guard = GroupGuard(self.pgid);
        let waited = tokio::time::timeout(self.timeout, self.child.wait()).await;
        guard.0 = None;
        match waited {
            Ok(status) => {
                let status = status.context("cannot wait for the step")?;
                // The step is over; anything it left running in its group goes with it.
                if let Some(pgid) = self.pgid {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
                Ok(if status.success() {
                    StepOutcome::Passed
                } else {
                    StepOutcome::Failed(status.code())
                })
            }
            Err(_) => {
                if let Some(pgid) = self.pgid {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
                let _ = self.child.wait().await;
                Ok(StepOutcome::TimedOut(self.timeout))
            }
        }
    }
}

impl Running {
    /// Like [`Running::wait`], but gives up as soon as `stop` turns true, killing the step's
    /// whole group (dropping the wait does it).
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

/// Kills a step's process group when dropped while armed.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Kills what is left of a step started by a worker that died (a step's process group
/// outlives a worker killed with SIGKILL). `marker` is a `NAME=value` variable the step was
/// given: if the group's leader is alive and lacks it, the id was reused by another process,
/// which is left alone. Returns once the group is gone, or after `grace`.
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
    if killpg(pgid, Signal::SIGKILL).is_err() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + grace;
    while killpg(pgid, None).is_ok() && tokio::time::Instant::now() < deadline {
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

/// The last `lines` lines of a log, for reports.
pub fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, argv: &[&str], timeout: Duration) -> StepSpec {
        StepSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: dir.to_path_buf(),
            env: vec![("LOCKSTEP_BRANCH".into(), "feature/x; rm -rf /".into())],
            pass_env: vec![],
            timeout,
            log: dir.join("logs/step.log"),
        }
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
        assert_eq!(tail(&s.log, 5), "branch=feature/x; rm -rf /");
        let s = spec(dir.path(), &["true"], Duration::from_secs(10));
        assert!(run(&s).await.unwrap().passed());
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
}
