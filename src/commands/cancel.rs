//! `lockstep cancel` and `lockstep rollback`: a delivery stopped or undone.

use anyhow::Context as _;

use super::{load, printer, runtime, say_line, store_of, whoami};
use crate::config::Located;
use crate::delivery::Engine;
use crate::delivery::worker;
use crate::domain::{DeliveryId, Event, Stage, State};
use crate::exit::Exit;
use crate::text::escape;

/// `lockstep cancel ID`.
pub fn cancel(at: &Located, id: DeliveryId) -> anyhow::Result<Exit> {
    runtime()?.block_on(async move {
        let (config, store) = store_of(at).await?;
        match store.cancel(id).await? {
            None => anyhow::bail!("no delivery #{id}; see `lockstep queue`"),
            Some(State::Queued) => {
                say!("#{id}: cancelled");
                // Back to the team, as when a running delivery is stopped: left For Delivery,
                // the tracker would ask for it again.
                let d = store
                    .delivery(id)
                    .await?
                    .context("the delivery vanished from the store")?;
                let who = whoami();
                let by = if who.is_empty() {
                    String::new()
                } else {
                    format!(" by `{who}`")
                };
                let note = format!("delivery cancelled{by} before it started (lockstep #{id})");
                let returned = &config.tasks.returned;
                match crate::tracker::open(&config)?
                    .move_to(&d.task, returned, &crate::text::note(&note))
                    .await
                {
                    Ok(()) => {
                        store
                            .journal(id, Stage::Report, "", Event::TaskMoved, returned)
                            .await?;
                        say!("#{id} {}: moved back to {returned}", d.task);
                    }
                    Err(e) => {
                        store
                            .journal(id, Stage::Report, "", Event::TaskNotMoved, &e.to_string())
                            .await?;
                        eprintln!(
                            "lockstep: #{id}: could not move `{}` back to {returned}: {}",
                            escape(d.task.as_str()),
                            escape(&e.to_string())
                        );
                    }
                }
            }
            Some(State::Running) => {
                say!("#{id}: stops at its next step; what it deployed is rolled back")
            }
            Some(s) => {
                say!("#{id}: already {}; nothing to cancel", s.as_str());
                return Ok(Exit::Failed);
            }
        }
        Ok(Exit::Success)
    })
}

/// `lockstep rollback ID [--revert]`.
pub fn rollback(at: &Located, id: DeliveryId, revert: bool) -> anyhow::Result<Exit> {
    let config = load(at)?;
    runtime()?.block_on(async move {
        let engine = worker::engine(config, printer()).await?;
        let Some(lease) = super::work::lead_by_hand(&engine).await? else {
            anyhow::bail!("a worker is running a delivery; try again when it is done");
        };
        let outcome = rollback_led(&engine, id, revert).await;
        lease.release().await;
        outcome
    })
}

/// The rollback of a finished delivery, by the worker holding the lease.
async fn rollback_led(engine: &Engine, id: DeliveryId, revert: bool) -> anyhow::Result<Exit> {
    let d = engine
        .store
        .delivery(id)
        .await?
        .with_context(|| format!("no delivery #{id}; see `lockstep queue`"))?;
    if !d.state.is_final() {
        anyhow::bail!(
            "#{id} is {}; cancel it with `lockstep cancel {id}`",
            d.state.as_str()
        );
    }
    if let Err(e) = engine.rollback_finished(&d, revert).await {
        eprintln!(
            "lockstep: #{id} {}: {}",
            escape(d.task.as_str()),
            escape(&format!("{e:#}"))
        );
        return Ok(Exit::Failed);
    }
    Ok(Exit::Success)
}
