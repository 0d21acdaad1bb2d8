//! The delivery commands: `deliver`, `work`, `recover`, `queue`, `show`, `logs`, `cancel`,
//! `rollback`.
//!
//! What they print quotes task keys, errors and step output: every line goes through
//! [`crate::text::escape`] (the `say!` macro). A reader gone away (`lockstep logs 1 | head`) makes the
//! next write fail with a broken pipe, which ends the command quietly (see `main`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{Config, Located};
use crate::delivery::line::{Engine, Progress};
use crate::delivery::{self, Request, Requested, worker};
use crate::domain::{DeliveryId, Event, Phase, Source, Stage, State, TaskKey};
use crate::exit::Exit;
use crate::store::{DeliveryRow, Lease, Store};
use crate::text::escape;

/// Prints a line on standard output, its control characters escaped; a write that fails (a
/// closed pipe) returns the error from the enclosing function.
macro_rules! say {
    ($($arg:tt)*) => {
        say_line(&format!($($arg)*))?
    };
}

/// Writes one line on standard output with its control characters escaped.
pub fn say_line(line: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    writeln!(std::io::stdout().lock(), "{}", escape(line))
}

/// The commands' runtime: two threads are plenty for one delivery at a time.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    crate::runtime::multi_thread(Some(2))
}

fn printer() -> Progress {
    Arc::new(crate::board::print_line)
}

fn load(at: &Located) -> anyhow::Result<Config> {
    at.load()
}

/// The person asking, for the journal.
fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default()
}

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
async fn lead_by_hand(engine: &Engine) -> anyhow::Result<Option<Lease>> {
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

/// `lockstep store copy --to-env VAR`.
pub fn store_copy(at: &Located, var: &str) -> anyhow::Result<Exit> {
    runtime()?.block_on(async move {
        let (_, source) = store_of(at).await?;
        let target = Store::open_postgres_env(var).await?;
        let c = source.copy_to(&target).await?;
        say!(
            "copied {} deliveries ({} repositories, {} journal entries, {} steps), {} webhook ids, \
             {} webhook events, {} tracker statuses and {} alerts into the store in `{var}`",
            c.deliveries,
            c.repos,
            c.journal,
            c.steps,
            c.webhooks,
            c.events,
            c.tracker_seen,
            c.alerts
        );
        say!("next: set `[store] url_env = \"{var}\"` in lockstep.toml");
        Ok(Exit::Success)
    })
}

async fn store_of(at: &Located) -> anyhow::Result<(Config, Store)> {
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
pub fn queue(at: &Located, json: bool) -> anyhow::Result<Exit> {
    runtime()?.block_on(async move {
        let (_, store) = store_of(at).await?;
        let running = store.train().await?;
        let queued = store.queued().await?;
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

/// `lockstep show ID`.
pub fn show(at: &Located, id: DeliveryId, json: bool) -> anyhow::Result<Exit> {
    runtime()?.block_on(async move {
        let (_, store) = store_of(at).await?;
        let d = store
            .delivery(id)
            .await?
            .with_context(|| format!("no delivery #{id}; see `lockstep queue`"))?;
        let repos = store.repos(id).await?;
        let journal = store.journal_of(id).await?;
        let steps = store.steps(id).await?;
        if json {
            let v = serde_json::json!({
                "delivery": d, "repos": repos, "steps": steps, "journal": journal
            });
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
    })
}

/// `lockstep logs ID`.
pub fn logs(
    at: &Located,
    id: DeliveryId,
    repo: Option<&str>,
    step: Option<&str>,
    raw: bool,
) -> anyhow::Result<Exit> {
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
            .filter(|s| {
                repo.is_none_or(|r| s.repo == r) && step.is_none_or(|x| s.step.as_str() == x)
            })
            .collect();
        if steps.is_empty() {
            say!("no step logs for #{id} with that filter");
        }
        let raw = raw || stdout_is_a_file();
        for s in steps {
            say!(
                "==> {} {} ({}, exit {}) <==",
                s.repo,
                s.step,
                s.outcome,
                s.exit_code.map_or("-".into(), |c| c.to_string())
            );
            // The file when the step ran on this host, else the copy another replica kept in
            // the store.
            let mut out = std::io::stdout().lock();
            match std::fs::File::open(&s.log_path) {
                Ok(file) if raw => {
                    std::io::copy(&mut std::io::BufReader::new(file), &mut out)?;
                }
                Ok(file) => crate::text::copy_escaped(file, &mut out)?,
                Err(e) => match store.step_log(s.id).await? {
                    Some(text) if raw => std::io::Write::write_all(&mut out, text.as_bytes())?,
                    Some(text) => crate::text::copy_escaped(text.as_bytes(), &mut out)?,
                    None => {
                        drop(out);
                        say!("(log unreadable: {e})");
                    }
                },
            }
        }
        Ok(Exit::Success)
    })
}

/// Whether standard output is a regular file (`lockstep logs 1 > build.log`): the log is
/// copied as it is, not escaped for a terminal.
fn stdout_is_a_file() -> bool {
    std::fs::metadata("/proc/self/fd/1").is_ok_and(|m| m.is_file())
}

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
        let Some(lease) = lead_by_hand(&engine).await? else {
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
