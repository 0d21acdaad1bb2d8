//! The worker: one per ecosystem, holding a lock file in `state_dir`.
//!
//! Whoever holds the lock (a `lockstep deliver`, a detached `lockstep work`, `lockstep serve`)
//! first recovers what a killed worker left behind, then runs queued deliveries one at a time.
//! The lock is an OS file lock, so it is released the moment its holder dies, even by SIGKILL.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use super::line::{Engine, Phase, Progress};
use crate::config::Config;
use crate::store::{State, Store};

/// The ecosystem's worker lock, held while this value lives.
pub struct WorkerLock {
    _file: File,
}

impl WorkerLock {
    /// Takes the lock if no other worker holds it; records this process's id in it.
    pub fn try_acquire(state_dir: &Path) -> anyhow::Result<Option<WorkerLock>> {
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join("worker.lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open `{}`", path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                writeln!(file, "{}", std::process::id())?;
                Ok(Some(WorkerLock { _file: file }))
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock `{}`", path.display()))
            }
        }
    }
}

/// Builds the engine from a config: store, policies, tracker.
pub async fn engine(config: Config, progress: Progress) -> anyhow::Result<Engine> {
    let policies = crate::policy::PolicySet::for_config(&config)?;
    let store = Store::open(&config.state_dir()).await?;
    let tracker: Arc<dyn crate::tracker::Tracker> = Arc::from(crate::tracker::open(&config)?);
    Ok(Engine {
        config: Arc::new(config),
        policies: Arc::new(policies),
        store,
        tracker,
        progress,
    })
}

/// Finishes or undoes what a killed worker left running. Call it only while holding the lock.
///
/// First the steps the dead worker left running are killed (they run in process groups of
/// their own, which outlive it). Then, by the phase the delivery was in:
/// - rebase: queued again, from the start;
/// - build or test: queued again at the head, resuming that phase;
/// - deploy or verify: what was deployed is rolled back and the delivery fails;
/// - merge: the upstreams are read and made all-merged or none-merged;
/// - rollback (it had failed already): the rollback is finished.
pub async fn recover(engine: &Engine) -> anyhow::Result<Vec<String>> {
    let mut said = Vec::new();
    for d in engine.store.running().await? {
        let stopped = engine.stop_leftover_steps(d.id).await?;
        if stopped > 0 {
            let line = format!(
                "#{} {}: stopped {stopped} step(s) the previous worker left running",
                d.id, d.task
            );
            engine.progress.say(&line);
            said.push(line);
        }
        let phase = Phase::parse(&d.phase);
        let line = match phase {
            None | Some(Phase::Rebase) => {
                engine
                    .store
                    .requeue(d.id, "", "the worker stopped during rebase; starting over")
                    .await?;
                format!(
                    "#{} {}: was interrupted in rebase; queued again",
                    d.id, d.task
                )
            }
            Some(p @ (Phase::Build | Phase::Test)) => {
                let why = format!("the worker stopped during {}; resuming it", p.as_str());
                engine.store.requeue(d.id, p.as_str(), &why).await?;
                format!(
                    "#{} {}: was interrupted in {}; queued again to resume it",
                    d.id,
                    d.task,
                    p.as_str()
                )
            }
            Some(p @ (Phase::Deploy | Phase::Verify)) => {
                let why = format!(
                    "the worker stopped during {}; what was deployed is rolled back",
                    p.as_str()
                );
                engine
                    .store
                    .journal(d.id, p.as_str(), "", "recovered", &why)
                    .await?;
                let summary = format!("delivery failed in {}: {why}", p.as_str());
                engine.fail(&d, &summary, "").await?;
                format!("#{} {}: {summary}", d.id, d.task)
            }
            Some(Phase::Merge) => engine.recover_merge(&d).await?,
            Some(Phase::Rollback) => {
                engine
                    .store
                    .journal(d.id, "rollback", "", "recovered", "finishing the rollback")
                    .await?;
                engine.fail(&d, &d.error, "").await?;
                format!(
                    "#{} {}: was interrupted while rolling back; rolled back: {}",
                    d.id, d.task, d.error
                )
            }
        };
        engine.progress.say(&line);
        said.push(line);
    }
    Ok(said)
}

/// Runs queued deliveries until `done` says stop (checked after each) or the queue is empty.
pub async fn work(engine: &Engine, mut done: impl FnMut(i64, State) -> bool) -> anyhow::Result<()> {
    while let Some(d) = engine.store.claim_next().await? {
        let state = engine.deliver(&d).await?;
        if done(d.id, state) {
            break;
        }
    }
    Ok(())
}

/// Starts `lockstep work` in the background, detached from the caller (a hook must not wait
/// for a delivery, and git waits for a hook's output streams to close).
pub fn spawn_detached(config: &Config) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the lockstep executable")?;
    let state = config.state_dir();
    std::fs::create_dir_all(&state)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.join("worker.log"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--config")
        .arg(&config.path)
        .arg("work")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(log.try_clone()?))
        .stderr(std::process::Stdio::from(log));
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("GIT_")) {
            cmd.env_remove(k);
        }
    }
    cmd.spawn().context("cannot start a background worker")?;
    Ok(())
}
