//! The delivery commands: `deliver`, `work`, `recover`, `queue`, `show`, `logs`, `cancel`,
//! `rollback`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{Config, ConfigSource};
use crate::delivery::line::{Engine, Progress};
use crate::delivery::{self, Request, Requested, worker};
use crate::store::{DeliveryRow, State, Store};

/// Exit code of a delivery that landed.
pub const DELIVERED: i32 = 0;
/// Exit code of a delivery that failed, was refused or cancelled.
pub const FAILED: i32 = 1;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn printer() -> Progress {
    Arc::new(|line: &str| println!("{line}"))
}

/// A config path and where it came from (for messages when it is missing).
pub type ConfigAt = (PathBuf, ConfigSource);

fn load(at: &ConfigAt) -> anyhow::Result<Config> {
    Config::load_from(&at.0, at.1)
}

/// The person asking, for the journal.
fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default()
}

/// `lockstep deliver TASK`.
pub fn deliver(at: &ConfigAt, task: &str, priority: i64, no_wait: bool) -> anyhow::Result<i32> {
    let config = load(at)?;
    runtime()?.block_on(async move {
        let engine = worker::engine(config, crate::board::for_stdout()).await?;
        let req = Request { task: task.to_string(), priority, source: "cli".into(), requester: whoami(), ..Default::default() };
        let id = match delivery::request(&engine.config, &engine.policies, engine.tracker.as_ref(), None, &engine.store, &req).await? {
            Requested::Refused(d) => {
                eprintln!("lockstep: delivery of `{task}` refused");
                for line in delivery::refusal_lines(&d) {
                    eprintln!("  {line}");
                }
                return Ok(FAILED);
            }
            Requested::Queued { id, position } => {
                println!("#{id} {task}: queued (position {position})");
                id
            }
            Requested::AlreadyQueued { id } => {
                println!("#{id} {task}: already queued; following it");
                id
            }
        };
        if no_wait {
            println!("follow it with `lockstep show {id}`; it runs when a worker is free (`lockstep work`, `lockstep serve`)");
            if let Some(lease) = worker::try_lead(&engine).await? {
                lease.release().await;
                worker::spawn_detached(&engine.config)?;
            }
            return Ok(DELIVERED);
        }
        let state = follow(&engine, id).await?;
        let d = engine.store.delivery(id).await?.context("the delivery vanished from the store")?;
        Ok(report(&d, state))
    })
}

/// Works the queue until delivery `id` ends (or waits for the worker that holds it).
async fn follow(engine: &Engine, id: i64) -> anyhow::Result<State> {
    let mut told = false;
    loop {
        if let Some(d) = engine.store.delivery(id).await?
            && d.state.is_final()
        {
            return Ok(d.state);
        }
        if let Some(lease) = worker::try_lead(engine).await? {
            worker::recover(engine).await?;
            worker::work(engine, &lease, |done, _| done == id).await?;
            lease.release().await;
            if !engine.store.queued().await?.is_empty() {
                // Nobody else may be around to run the rest.
                worker::spawn_detached(&engine.config)?;
            }
            continue;
        }
        if !told {
            println!("#{id}: another worker holds the queue; waiting for it to run this delivery");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn report(d: &DeliveryRow, state: State) -> i32 {
    match state {
        State::Delivered => {
            println!("#{} {}: delivered", d.id, d.task);
            DELIVERED
        }
        _ => {
            eprintln!(
                "lockstep: #{} {}: {}: {}",
                d.id,
                d.task,
                state.as_str(),
                d.error
            );
            eprintln!(
                "  see `lockstep show {}` and `lockstep logs {}`",
                d.id, d.id
            );
            FAILED
        }
    }
}

/// `lockstep work`: runs the queue until it is empty (what `-o deliver` starts in the background).
pub fn work(at: &ConfigAt) -> anyhow::Result<i32> {
    let config = load(at)?;
    runtime()?.block_on(async move {
        let engine = worker::engine(config, printer()).await?;
        loop {
            let Some(lease) = worker::try_lead(&engine).await? else {
                println!("another worker holds the queue; nothing to do");
                return Ok(0);
            };
            worker::recover(&engine).await?;
            worker::work(&engine, &lease, |_, _| false).await?;
            lease.release().await;
            // A delivery queued after the queue was found empty, but before the lock was let
            // go, has a worker started for it that found the lock taken: look once more.
            if engine.store.queued().await?.is_empty() {
                return Ok(0);
            }
        }
    })
}

/// `lockstep recover`.
pub fn recover(at: &ConfigAt) -> anyhow::Result<i32> {
    let config = load(at)?;
    runtime()?.block_on(async move {
        let engine = worker::engine(config, printer()).await?;
        let Some(_lock) = worker::try_lead(&engine).await? else {
            anyhow::bail!(
                "a worker is running; it recovers by itself (stop it first to recover by hand)"
            );
        };
        let said = worker::recover(&engine).await?;
        if said.is_empty() {
            println!("nothing to recover");
        }
        Ok(0)
    })
}

/// `lockstep store copy --to-env VAR`.
pub fn store_copy(at: &ConfigAt, var: &str) -> anyhow::Result<i32> {
    runtime()?.block_on(async move {
        let (_, source) = store_of(at).await?;
        let target = Store::open_postgres_env(var).await?;
        let c = source.copy_to(&target).await?;
        println!(
            "copied {} deliveries ({} repositories, {} journal entries, {} steps), {} webhook ids \
             and {} tracker statuses into the store in `{var}`",
            c.deliveries, c.repos, c.journal, c.steps, c.webhooks, c.tracker_seen
        );
        println!("next: set `[store] url_env = \"{var}\"` in lockstep.toml");
        Ok(0)
    })
}

async fn store_of(at: &ConfigAt) -> anyhow::Result<(Config, Store)> {
    let config = load(at)?;
    let store = Store::for_config(&config).await?;
    Ok((config, store))
}

fn ago(ms: Option<i64>) -> String {
    ms.map(|t| {
        chrono::DateTime::from_timestamp_millis(t)
            .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default()
    })
    .unwrap_or_else(|| "-".into())
}

/// `lockstep queue`.
pub fn queue(at: &ConfigAt, json: bool) -> anyhow::Result<i32> {
    runtime()?.block_on(async move {
        let (_, store) = store_of(at).await?;
        let running = store.running().await?;
        let queued = store.queued().await?;
        let history = store.history(10).await?;
        if json {
            let v = serde_json::json!({ "running": running, "queued": queued, "recent": history });
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(0);
        }
        if running.is_empty() && queued.is_empty() {
            println!("the queue is empty");
        }
        for d in &running {
            println!(
                "running  #{:<4} {:<14} {:<8} since {}",
                d.id,
                d.task,
                d.phase,
                ago(d.started_at)
            );
        }
        for (i, d) in queued.iter().enumerate() {
            println!(
                "{:>7}  #{:<4} {:<14} priority {:<3} by {}",
                i + 1,
                d.id,
                d.task,
                d.priority,
                d.requester
            );
        }
        if !history.is_empty() {
            println!("\nrecent:");
            for d in &history {
                println!(
                    "  #{:<4} {:<14} {:<10} {}  {}",
                    d.id,
                    d.task,
                    d.state.as_str(),
                    ago(d.finished_at),
                    d.error
                );
            }
        }
        Ok(0)
    })
}

/// `lockstep show ID`.
pub fn show(at: &ConfigAt, id: i64, json: bool) -> anyhow::Result<i32> {
    runtime()?.block_on(async move {
        let (_, store) = store_of(at).await?;
        let d = store.delivery(id).await?.with_context(|| format!("no delivery #{id}; see `lockstep queue`"))?;
        let repos = store.repos(id).await?;
        let journal = store.journal_of(id).await?;
        let steps = store.steps(id).await?;
        if json {
            let v = serde_json::json!({ "delivery": d, "repos": repos, "steps": steps, "journal": journal });
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(0);
        }
        println!("#{} {}: {} (phase {})", d.id, d.task, d.state.as_str(), if d.phase.is_empty() { "-" } else { &d.phase });
        println!("  requested by {} via {}, {}", if d.requester.is_empty() { "?" } else { &d.requester }, d.source, ago(Some(d.created_at)));
        if !d.error.is_empty() {
            println!("  {}", d.error);
        }
        for r in &repos {
            let mut flags = Vec::new();
            if r.deployed {
                flags.push("deployed");
            }
            if r.merged {
                flags.push("merged");
            }
            if r.rolled_back {
                flags.push("rolled back");
            }
            println!(
                "  {:<12} {} {} → {} (on {}) {}",
                r.repo,
                r.branch,
                crate::push::short(&r.branch_sha),
                crate::push::short(&r.rebased_sha),
                crate::push::short(&r.base_sha),
                flags.join(", ")
            );
        }
        println!("journal:");
        for j in &journal {
            println!("  {}  {:<8} {:<10} {} {}", ago(Some(j.at)), j.phase, j.repo, j.event, j.detail);
        }
        Ok(0)
    })
}

/// `lockstep logs ID`.
pub fn logs(at: &ConfigAt, id: i64, repo: Option<&str>, step: Option<&str>) -> anyhow::Result<i32> {
    runtime()?.block_on(async move {
        let (_, store) = store_of(at).await?;
        store
            .delivery(id)
            .await?
            .with_context(|| format!("no delivery #{id}; see `lockstep queue`"))?;
        let steps: Vec<_> = store
            .steps(id)
            .await?
            .into_iter()
            .filter(|s| repo.is_none_or(|r| s.repo == r) && step.is_none_or(|x| s.step == x))
            .collect();
        if steps.is_empty() {
            println!("no step logs for #{id} with that filter");
        }
        for s in steps {
            println!(
                "==> {} {} ({}, exit {}) <==",
                s.repo,
                s.step,
                s.outcome,
                s.exit_code.map_or("-".into(), |c| c.to_string())
            );
            // The file when the step ran on this host, else the copy another replica kept in
            // the store.
            let text = match std::fs::read_to_string(&s.log_path) {
                Ok(text) => text,
                Err(e) => match store.step_log(s.id).await? {
                    Some(text) => text,
                    None => format!("(log unreadable: {e})\n"),
                },
            };
            print!("{text}");
        }
        Ok(0)
    })
}

/// `lockstep cancel ID`.
pub fn cancel(at: &ConfigAt, id: i64) -> anyhow::Result<i32> {
    runtime()?.block_on(async move {
        let (config, store) = store_of(at).await?;
        match store.cancel(id).await? {
            None => anyhow::bail!("no delivery #{id}; see `lockstep queue`"),
            Some(State::Queued) => {
                println!("#{id}: cancelled");
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
                    .move_to(&d.task, returned, &note)
                    .await
                {
                    Ok(()) => {
                        store
                            .journal(id, "report", "", "task moved", returned)
                            .await?;
                        println!("#{id} {}: moved back to {returned}", d.task);
                    }
                    Err(e) => {
                        store
                            .journal(id, "report", "", "task not moved", &e.to_string())
                            .await?;
                        eprintln!(
                            "lockstep: #{id}: could not move `{}` back to {returned}: {e}",
                            d.task
                        );
                    }
                }
            }
            Some(State::Running) => {
                println!("#{id}: stops at its next step; what it deployed is rolled back")
            }
            Some(s) => {
                println!("#{id}: already {}; nothing to cancel", s.as_str());
                return Ok(FAILED);
            }
        }
        Ok(0)
    })
}

/// `lockstep rollback ID [--revert]`.
pub fn rollback(at: &ConfigAt, id: i64, revert: bool) -> anyhow::Result<i32> {
    let config = load(at)?;
    runtime()?.block_on(async move {
        let engine = worker::engine(config, printer()).await?;
        let Some(_lock) = worker::try_lead(&engine).await? else {
            anyhow::bail!("a worker is running a delivery; try again when it is done");
        };
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
            eprintln!("lockstep: #{id} {}: {e:#}", d.task);
            return Ok(FAILED);
        }
        Ok(0)
    })
}
