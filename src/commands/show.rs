//! `lockstep show`: one delivery, its repositories and its journal; or, given a task key,
//! everything of that task (`task.rs`).

use anyhow::Context as _;

use super::{ago, runtime, say_line, store_of};
use crate::config::Located;
use crate::domain::{DeliveryId, Phase, TaskKey};
use crate::exit::Exit;
use crate::store::Store;

/// `lockstep show ID|TASK [--task]`: a number is a delivery's id, anything else (or anything
/// with `as_task`) a task key.
pub fn show(at: &Located, what: &str, as_task: bool, json: bool) -> anyhow::Result<Exit> {
    let id = if as_task {
        None
    } else {
        super::task::delivery_id(what)?
    };
    runtime()?.block_on(async move {
        let (_, store) = store_of(at).await?;
        match id {
            Some(id) => delivery(&store, DeliveryId(id), json).await,
            None => super::task::show(&store, TaskKey::new(what.trim()), json).await,
        }
    })
}

/// `lockstep show ID`.
async fn delivery(store: &Store, id: DeliveryId, json: bool) -> anyhow::Result<Exit> {
    let d = store
        .delivery(id)
        .await?
        .with_context(|| format!("no delivery #{id}; see `lockstep queue`"))?;
    let repos = store.repos(id).await?;
    let journal = store.journal_of(id).await?;
    let steps = store.steps(id).await?;
    let stages = crate::delivery::stages_of(&journal);
    if json {
        let mut v = serde_json::json!({
            "delivery": d, "repos": repos, "steps": steps, "journal": journal
        });
        if !stages.is_empty() {
            v["stages"] = serde_json::to_value(&stages)?;
        }
        say!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(Exit::Success);
    }
    say!(
        "#{} {}: {} (phase {})",
        d.id,
        d.task,
        d.state.as_str(),
        d.phase.map_or("-", Phase::as_str)
    );
    let who = if d.requester.is_empty() {
        "?"
    } else {
        &d.requester
    };
    say!(
        "  requested by {who} via {}, {}",
        d.source,
        ago(Some(d.created_at))
    );
    if !d.error.is_empty() {
        say!("  {}", d.error);
    }
    if !stages.is_empty() {
        say!("  stages: {}", crate::delivery::describe_stages(&stages));
    }
    if !d.built_on.is_empty() {
        say!("  built on {}", d.built_on);
    }
    if !d.held.is_empty() {
        say!(
            "  held (not reported while deliveries ahead are unresolved): {}",
            d.held
        );
    }
    if d.discards > 0 {
        say!("  prepared again {} time(s): a base changed", d.discards);
    }
    for r in &repos {
        say!(
            "  {:<12} {} {} → {} (on {}) {}",
            r.repo,
            r.branch,
            crate::git::short(&r.branch_sha),
            crate::git::short(&r.rebased_sha),
            crate::git::short(&r.base_sha),
            r.flags()
        );
    }
    say!("journal:");
    for j in &journal {
        say!(
            "  {}  {:<8} {:<10} {} {}",
            ago(Some(j.at)),
            j.stage,
            j.repo,
            j.event,
            j.detail
        );
    }
    Ok(Exit::Success)
}
