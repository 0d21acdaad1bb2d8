//! `lockstep work` and `lockstep recover`: the worker by hand.

use std::time::Duration;

use super::{load, printer, runtime, say_line};
use crate::config::Located;
use crate::delivery::Engine;
use crate::delivery::worker;
use crate::exit::Exit;
use crate::store::Lease;

/// `lockstep work`: runs the queue until it is empty (what `-o deliver` starts in the background).
/// On SIGTERM or ctrl-c it takes nothing new, gives what runs `[server] shutdown_grace` to
/// finish, and leaves the rest to the next worker's recovery, as `lockstep serve` does.
pub fn work(at: &Located) -> anyhow::Result<Exit> {
    let config = load(at)?;
    let grace = config.server.shutdown_grace;
    runtime()?.block_on(async move {
        let engine = worker::engine(config, printer()).await?;
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            crate::server::shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        loop {
            let Some(lease) = worker::try_lead(&engine).await? else {
                say!("another worker holds the queue; nothing to do");
                return Ok(Exit::Success);
            };
            worker::recover(&engine).await?;
            let shutdown = Some((stop.clone(), grace));
            worker::work(&engine, &lease, |_, _| false, shutdown).await?;
            lease.release().await;
            if *stop.borrow() {
                say!("stopped; a delivery left unfinished is recovered by the next worker");
                return Ok(Exit::Success);
            }
            // A delivery queued after the queue was found empty, but before the lock was let
            // go, has a worker started for it that found the lock taken: look once more.
            if engine.store.queued().await?.is_empty() {
                return Ok(Exit::Success);
            }
        }
    })
}

/// Takes the queue's lease for a command a person runs by hand (`recover`, `rollback`). On
/// PostgreSQL a worker that died keeps its lease until it expires, so the lease is asked for
/// again until one lease period has passed: a live worker renews it meanwhile and keeps it; a
/// dead one's lapses. SQLite's lock goes with its process: asked once.
pub(super) async fn lead_by_hand(engine: &Engine) -> anyhow::Result<Option<Lease>> {
    if let Some(lease) = worker::try_lead(engine).await? {
        return Ok(Some(lease));
    }
    if engine.store.backend() != crate::store::Backend::Postgres {
        return Ok(None);
    }
    let lease = engine.config.store.lease;
    eprintln!(
        "lockstep: another worker holds the queue's lease; waiting up to {} in case it has \
         stopped",
        crate::config::humanize(lease)
    );
    let deadline = tokio::time::Instant::now() + lease + Duration::from_secs(1);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(lease) = worker::try_lead(engine).await? {
            return Ok(Some(lease));
        }
    }
    Ok(None)
}

/// `lockstep recover`.
pub fn recover(at: &Located) -> anyhow::Result<Exit> {
    let config = load(at)?;
    runtime()?.block_on(async move {
        let engine = worker::engine(config, printer()).await?;
        let Some(lease) = lead_by_hand(&engine).await? else {
            anyhow::bail!(
                "a worker is running; it recovers by itself (stop it first to recover by hand)"
            );
        };
        let said = worker::recover(&engine).await;
        lease.release().await;
        if said?.is_empty() {
            say!("nothing to recover");
        }
        Ok(Exit::Success)
    })
}
