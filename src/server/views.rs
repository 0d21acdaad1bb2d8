//! What the pages and `/api/queue` show, gathered from the store: the queue with the delivery
//! in flight, a delivery with its steps' logs.

use super::grid::{GridRow, grid};
use super::{App, page};
use crate::domain::{DeliveryId, StepState};
use crate::store::{DeliveryRow, JournalRow, RepoRow, StepRow, now_ms};

/// A delivery with what the store recorded about it, and its grid.
pub struct Recorded {
    pub delivery: DeliveryRow,
    pub repos: Vec<RepoRow>,
    pub steps: Vec<StepRow>,
    pub journal: Vec<JournalRow>,
    pub grid: Vec<GridRow>,
}

/// Delivery `id` with its records, if there is one.
pub async fn recorded(app: &App, id: DeliveryId) -> anyhow::Result<Option<Recorded>> {
    match app.engine.store.delivery(id).await? {
        Some(d) => Ok(Some(records_of(app, d).await?)),
        None => Ok(None),
    }
}

async fn records_of(app: &App, delivery: DeliveryRow) -> anyhow::Result<Recorded> {
    let store = &app.engine.store;
    let repos = store.repos(delivery.id).await?;
    let steps = store.steps(delivery.id).await?;
    let journal = store.journal_of(delivery.id).await?;
    let grid = grid(app.config(), &delivery, &repos, &steps, &journal);
    Ok(Recorded {
        delivery,
        repos,
        steps,
        journal,
        grid,
    })
}

async fn in_flight(app: &App, d: DeliveryRow) -> anyhow::Result<page::InFlight> {
    let r = records_of(app, d).await?;
    let current = r
        .steps
        .into_iter()
        .filter(|s| s.outcome == StepState::Running)
        .collect();
    Ok(page::InFlight {
        delivery: r.delivery,
        grid: r.grid,
        current,
    })
}

pub async fn queue_view(app: &App) -> anyhow::Result<page::QueueView> {
    let store = &app.engine.store;
    let mut running = Vec::new();
    // The head first, then the candidates behind it.
    for d in store.train().await? {
        running.push(in_flight(app, d).await?);
    }
    Ok(page::QueueView {
        repos: app
            .config()
            .repos
            .iter()
            .map(|r| r.name.to_string())
            .collect(),
        running,
        queued: store.queued().await?,
        recent: store.history(20).await?,
        now_ms: now_ms(),
        refresh_secs: app.config().server.refresh.as_secs().max(1),
    })
}

/// The last 256 KiB of a log, as text. Read off the async threads: a log on a slow or stalled
/// disk holds its request, not the server.
pub async fn read_log(path: String) -> String {
    tokio::task::spawn_blocking(move || last_of_log(&path))
        .await
        .unwrap_or_else(|_| "(no log)".into())
}

/// The last 256 KiB of a log, read now (blocking).
fn last_of_log(path: &str) -> String {
    use std::io::{Read as _, Seek as _, SeekFrom};
    const MAX: u64 = 256 * 1024;
    let Ok(mut f) = std::fs::File::open(path) else {
        return "(no log)".into();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut prefix = String::new();
    if len > MAX {
        let _ = f.seek(SeekFrom::Start(len - MAX));
        prefix = format!("(… the first {} bytes are left out)\n", len - MAX);
    }
    let mut buf = Vec::new();
    let _ = f.take(MAX).read_to_end(&mut buf);
    prefix + &String::from_utf8_lossy(&buf)
}

pub async fn delivery_view(
    app: &App,
    id: DeliveryId,
) -> anyhow::Result<Option<page::DeliveryView>> {
    let Some(Recorded {
        delivery: d,
        repos,
        steps,
        journal,
        grid,
    }) = recorded(app, id).await?
    else {
        return Ok(None);
    };
    let paths: Vec<String> = steps.iter().map(|s| s.log_path.clone()).collect();
    // Off the async threads, as `read_log`: one blocking task for every log of the page.
    let logs = tokio::task::spawn_blocking(move || {
        paths.iter().map(|p| last_of_log(p)).collect::<Vec<_>>()
    })
    .await?;
    let steps = steps
        .into_iter()
        .zip(logs)
        .map(|(step, log)| page::StepLog { step, log })
        .collect();
    Ok(Some(page::DeliveryView {
        repos_all: app
            .config()
            .repos
            .iter()
            .map(|r| r.name.to_string())
            .collect(),
        delivery: d,
        repos,
        grid,
        steps,
        journal,
        now_ms: now_ms(),
        refresh_secs: app.config().server.refresh.as_secs().max(1),
    }))
}
