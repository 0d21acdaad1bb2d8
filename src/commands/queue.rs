//! `lockstep queue`: what waits and what runs.

use super::{ago, runtime, say_line, store_of};
use crate::config::Located;
use crate::domain::Phase;
use crate::exit::Exit;
use crate::store::DeliveryRow;

/// `lockstep queue`.
pub fn queue(at: &Located, json: bool) -> anyhow::Result<Exit> {
    runtime()?.block_on(async move {
        let (_, store) = store_of(at).await?;
        let (running, queued) = store.line().await?;
        let history = store.history(10).await?;
        if json {
            let v = serde_json::json!({ "running": running, "queued": queued, "recent": history });
            say!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(Exit::Success);
        }
        if running.is_empty() && queued.is_empty() {
            say!("the queue is empty");
        }
        let pipelined = running.iter().any(|d| d.candidate);
        for (i, d) in running.iter().enumerate() {
            let place = if pipelined {
                format!("  {}", train_place(i, d))
            } else {
                String::new()
            };
            say!(
                "running  #{:<4} {:<14} {:<8} since {}{place}",
                d.id,
                d.task,
                d.phase.map_or("", Phase::as_str),
                ago(d.started_at)
            );
        }
        for (i, d) in queued.iter().enumerate() {
            say!(
                "{:>7}  #{:<4} {:<14} priority {:<3} by {}",
                i + 1,
                d.id,
                d.task,
                d.priority,
                d.requester
            );
        }
        if !history.is_empty() {
            say!("\nrecent:");
            for d in &history {
                say!(
                    "  #{:<4} {:<14} {:<10} {}  {}",
                    d.id,
                    d.task,
                    d.state.as_str(),
                    ago(d.finished_at),
                    d.error
                );
            }
        }
        Ok(Exit::Success)
    })
}

/// Where a running delivery stands in the pipeline (the `i`th of the train): the head, or a
/// candidate with what it is built on, its held failure and how often it was discarded.
fn train_place(i: usize, d: &DeliveryRow) -> String {
    if !d.candidate {
        return "head".into();
    }
    let mut place = format!("candidate {}", i + 1);
    if !d.built_on.is_empty() {
        place.push_str(&format!(", on {}", d.built_on));
    }
    if d.discards > 0 {
        place.push_str(&format!(", discarded {}×", d.discards));
    }
    if !d.held.is_empty() {
        place.push_str(&format!(", held: {}", d.held));
    }
    place
}
