//! What the pages and `/api/queue` show, gathered from the store: the queue with the delivery
//! in flight, a delivery with its steps' logs.

use super::grid::{GridRow, grid};
use super::{App, page};
use crate::delivery::steps;
use crate::domain::{DeliveryId, StepState};
use crate::store::{DeliveryRow, JournalRow, RepoRow, StepRow, Store, now_ms};

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
        stages: crate::delivery::stages_of(&r.journal),
        delivery: r.delivery,
        grid: r.grid,
        current,
    })
}

pub async fn queue_view(app: &App) -> anyhow::Result<page::QueueView> {
    let store = &app.engine.store;
    let (train, queued) = store.line().await?;
    let mut running = Vec::new();
    // The head first, then the candidates behind it.
    for d in train {
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
        queued,
        recent: store.history(20).await?,
        autotests: store.autotests(None, 10).await?,
        showrooms: store.showrooms().await?,
        now_ms: now_ms(),
        refresh_secs: app.config().server.refresh.as_secs().max(1),
    })
}

/// The end of a step's log (its last 256 KiB): the file, when the step ran on this host, or
/// else the copy in the store (a step another replica ran). The file is read off the async
/// threads: a log on a slow or stalled disk holds its request, not the server.
pub async fn read_log(store: &Store, step: &StepRow) -> String {
    let path = std::path::PathBuf::from(&step.log_path);
    let local = tokio::task::spawn_blocking(move || steps::last_of_log(&path))
        .await
        .ok()
        .flatten();
    match local {
        Some(text) => text,
        None => store
            .step_log(step.id)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| "(no log)".into()),
    }
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
    let mut logs = Vec::with_capacity(steps.len());
    for step in &steps {
        logs.push(read_log(&app.engine.store, step).await);
    }
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
