//! `lockstep deliver TASK`: a delivery asked for, and followed until it ends.

use std::time::Duration;

use anyhow::Context as _;

use super::{load, runtime, say_line, whoami};
use crate::config::Located;
use crate::delivery::Engine;
use crate::delivery::{self, Request, Requested, worker};
use crate::domain::{DeliveryId, Source, State, TaskKey};
use crate::exit::Exit;
use crate::store::DeliveryRow;
use crate::text::escape;

/// `lockstep deliver TASK`.
pub fn deliver(at: &Located, task: &str, priority: i64, no_wait: bool) -> anyhow::Result<Exit> {
    let config = load(at)?;
    runtime()?.block_on(async move {
        let engine = worker::engine(config, crate::board::for_stdout()).await?;
        let req = Request {
            task: TaskKey::new(task),
            priority,
            source: Source::Cli,
            requester: whoami(),
            ..Default::default()
        };
        let id = match engine.request(&req).await? {
            Requested::Refused(d) => {
                eprintln!("lockstep: delivery of `{task}` refused");
                for line in delivery::refusal_lines(&d) {
                    eprintln!("  {}", escape(&line));
                }
                return Ok(Exit::Failed);
            }
            Requested::Queued { id, position } => {
                say!("#{id} {task}: queued (position {position})");
                id
            }
            Requested::AlreadyQueued { id } => {
                say!("#{id} {task}: already queued; following it");
                id
            }
        };
        if no_wait {
            say!(
                "follow it with `lockstep show {id}`; it runs when a worker is free \
                 (`lockstep work`, `lockstep serve`)"
            );
            if let Some(lease) = worker::try_lead(&engine).await? {
                lease.release().await;
                worker::spawn_detached(&engine.config)?;
            }
            return Ok(Exit::Success);
        }
        let state = follow(&engine, id).await?;
        let d = engine
            .store
            .delivery(id)
            .await?
            .context("the delivery vanished from the store")?;
        report(&d, state)
    })
}

/// Works the queue until delivery `id` ends (or waits for the worker that holds it).
async fn follow(engine: &Engine, id: DeliveryId) -> anyhow::Result<State> {
    let mut told = false;
    loop {
        if let Some(d) = engine.store.delivery(id).await?
            && d.state.is_final()
        {
            return Ok(d.state);
        }
        if let Some(lease) = worker::try_lead(engine).await? {
            worker::recover(engine).await?;
            worker::work(engine, &lease, |done, _| done == id, None).await?;
            lease.release().await;
            if !engine.store.queued().await?.is_empty() {
                // Nobody else may be around to run the rest.
                worker::spawn_detached(&engine.config)?;
            }
            continue;
        }
        if !told {
            say!("#{id}: another worker holds the queue; waiting for it to run this delivery");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn report(d: &DeliveryRow, state: State) -> anyhow::Result<Exit> {
    Ok(match state {
        State::Delivered => {
            say!("#{} {}: delivered", d.id, d.task);
            Exit::Success
        }
        _ => {
            eprintln!(
                "lockstep: #{} {}: {}: {}",
                d.id,
                escape(d.task.as_str()),
                state.as_str(),
                escape(&d.error)
            );
            eprintln!(
                "  see `lockstep show {}` and `lockstep logs {}`",
                d.id, d.id
            );
            Exit::Failed
        }
    })
}
