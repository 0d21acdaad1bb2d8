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

use super::line::{Engine, Progress};
use crate::config::Config;
use crate::domain::{DeliveryId, State};
use crate::store::Store;

pub use super::recover::recover;

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
    let slots = super::slots::Slots::new(config.delivery.parallel);
    Ok(Engine {
        config: Arc::new(config),
        policies: Arc::new(policies),
        store,
        slots,
        tracker,
        progress,
    })
}

/// Runs queued deliveries until `done` says stop (checked after each) or the queue is empty:
/// one at a time with `[delivery] window = 1`, as a pipeline otherwise.
pub async fn work(
    engine: &Engine,
    mut done: impl FnMut(DeliveryId, State) -> bool + Send,
) -> anyhow::Result<()> {
    if engine.config.delivery.window > 1 {
        let until = super::train::Until {
            done: &mut done,
            shutdown: None,
        };
        return super::train::run(engine, &super::train::Quiet, until).await;
    }
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
