//! The worker: one per ecosystem at a time, holding the queue's lease.
//!
//! Whoever holds the lease (a `lockstep deliver`, a detached `lockstep work`, one replica of
//! `lockstep serve`) first recovers what a killed worker left behind, then runs queued
//! deliveries one at a time. On SQLite the lease is an OS file lock in `state_dir`, released
//! the moment its holder dies, even by SIGKILL; on PostgreSQL a lease row another replica
//! takes over once it expires (see the store's `lease`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use super::line::{Engine, Progress};
use crate::config::Config;
use crate::domain::{DeliveryId, State};
use crate::store::{Lease, Store};

pub use super::recover::recover;

/// Takes the queue's lease if no other worker holds it. While it is held, the engine's store
/// writes under its fence.
pub async fn try_lead(engine: &Engine) -> anyhow::Result<Option<Lease>> {
    Lease::try_acquire(
        &engine.store,
        &engine.config.state_dir(),
        engine.config.store.lease,
    )
    .await
}

/// Builds the engine from a config: store, policies, tracker.
pub async fn engine(config: Config, progress: Progress) -> anyhow::Result<Engine> {
    let policies = crate::policy::PolicySet::for_config(&config)?;
    let store = Store::for_config(&config).await?;
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
/// one at a time with `[delivery] window = 1`, as a pipeline otherwise. Losing the lease
/// stops the deliveries in progress at once (their steps are killed) and ends the work with
/// an error: the worker that took over recovers them. When `shutdown` (a flag and a grace)
/// turns true, nothing new starts and what runs gets the grace to finish; what is left then
/// is stopped and recovered by the next worker.
pub async fn work(
    engine: &Engine,
    lease: &Lease,
    mut done: impl FnMut(DeliveryId, State) -> bool + Send,
    shutdown: Option<(watch::Receiver<bool>, Duration)>,
) -> anyhow::Result<()> {
    if engine.config.delivery.window > 1 {
        let until = super::train::Until {
            done: &mut done,
            shutdown,
        };
        return tokio::select! {
            r = super::train::run(engine, &super::train::Quiet, until) => r,
            () = lease.lost() => Err(lost_lease()),
        };
    }
    let stopping = |s: &Option<(watch::Receiver<bool>, Duration)>| {
        s.as_ref().is_some_and(|(flag, _)| *flag.borrow())
    };
    while !stopping(&shutdown)
        && let Some(d) = engine.store.claim_next().await?
    {
        let past_grace = async {
            match shutdown.clone() {
                Some((mut flag, grace)) => {
                    let _ = flag.wait_for(|stop| *stop).await;
                    tokio::time::sleep(grace).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let state = tokio::select! {
            state = engine.deliver(&d) => state?,
            () = lease.lost() => {
                return Err(lost_lease().context(format!("#{} {}", d.id, d.task)));
            }
            // Dropping the delivery stops its step; what it journaled lets the next worker
            // recover it.
            () = past_grace => {
                engine.say(&format!(
                    "#{} {}: stopped past the shutdown grace; it is recovered at the next start",
                    d.id, d.task
                ));
                return Ok(());
            }
        };
        if done(d.id, state) {
            break;
        }
    }
    Ok(())
}

/// Why the work ended when the lease went to another worker.
fn lost_lease() -> anyhow::Error {
    anyhow::anyhow!(
        "this worker lost the lease of the queue; stopped, and left to the worker that holds \
         it now"
    )
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
