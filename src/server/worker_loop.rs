//! The server's background loops: the worker's edge, which takes the queue's lease when this
//! replica can and runs the one worker loop (`delivery::worker::run`) under it, reporting
//! each delivery to GitHub and handing it the jobs the bot queues, run whenever no delivery
//! is deploying (among them the rollbacks of watched deliveries, and the gates sampled during
//! a watch); and the pruner of old webhook ids and alerts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{App, Job, bot, report, stopped};
use crate::delivery::Cause;
use crate::delivery::worker::{self, Cut, End, Idle};
use crate::domain::{DeliveryId, State};
use crate::store::{DeliveryRow, Lease, now_ms};

/// The server as the edge of the worker: it reports each delivery to GitHub and watches the
/// gates of those that landed, runs the jobs its bot and alerts queue, waits for deliveries
/// when the queue is empty, and stops the worker at its shutdown.
struct Server<'a> {
    app: Arc<App>,
    /// Locked by the worker alone: its one task takes jobs, waits for them, and runs them.
    jobs: tokio::sync::Mutex<&'a mut mpsc::UnboundedReceiver<Job>>,
    stop: watch::Receiver<bool>,
    grace: Duration,
}

#[async_trait::async_trait]
impl worker::Edge for Server<'_> {
    type Job = Job;

    async fn started(&self, d: &DeliveryRow) {
        report::started(&self.app, d).await;
    }
    async fn finished(&self, d: &DeliveryRow, state: State) {
        report::finished(&self.app, d, state).await;
        if state == State::Delivered {
            watch_gates(&self.app, d.id);
        }
    }
    async fn next_job(&self) -> Option<Job> {
        self.jobs.lock().await.try_recv().ok()
    }
    async fn run_job(&self, job: Job) {
        run_job(&self.app, job).await;
    }
    /// Waits for a delivery, a job, or a second to pass.
    async fn idle(&self) -> Idle<Job> {
        let mut jobs = self.jobs.lock().await;
        tokio::select! {
            _ = self.app.wake.notified() => Idle::Again,
            job = jobs.recv() => job.map_or(Idle::Again, Idle::Job),
            // Deliveries queued by other processes and replicas (`git push -o deliver`, the
            // CLI, webhooks another replica took).
            _ = tokio::time::sleep(Duration::from_secs(1)) => Idle::Again,
        }
    }
    fn shutdown(&self) -> Option<(watch::Receiver<bool>, Duration)> {
        Some((self.stop.clone(), self.grace))
    }
}

/// How a replica's spell as the queue's worker ended.
enum Spell {
    /// The server is stopping.
    Stopped,
    /// Another replica took the lease over (or this one could not renew it).
    Lost,
}

/// How often a standby tries to take the lease.
const STANDBY_POLL: Duration = Duration::from_millis(500);

/// Works the queue whenever this replica holds the lease: stands by until it can take it,
/// recovers what the previous worker left, then runs the queue (one delivery at a time, or as
/// a pipeline), reporting to GitHub, until the server stops (the lease is let go at once) or the lease is
/// lost (the delivery in progress is stopped, its steps killed, and the replica stands by).
pub async fn worker_loop(
    app: Arc<App>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut told = false;
    loop {
        let lease = loop {
            match worker::try_lead(&app.engine).await {
                Ok(Some(lease)) => break lease,
                Ok(None) if !told => {
                    tracing::info!("another worker holds the queue; standing by");
                    told = true;
                }
                Ok(None) => {}
                Err(e) => tracing::error!("cannot take the lease of the queue: {e:#}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(STANDBY_POLL) => {}
                _ = stopped(&mut stop) => return,
            }
        };
        told = false;
        tracing::info!(
            epoch = lease.epoch(),
            store = app.engine.store.backend().as_str(),
            "took the lease of the queue; this replica works it"
        );
        match worker::recover(&app.engine).await {
            Ok(lines) => {
                for l in lines {
                    tracing::warn!("recovered: {l}");
                }
            }
            Err(e) => tracing::error!("recovery failed: {e:#}"),
        }
        match lead(&app, &lease, &mut jobs, &stop, grace).await {
            Spell::Stopped => {
                lease.release().await;
                return;
            }
            Spell::Lost => {
                tracing::warn!(
                    epoch = lease.epoch(),
                    "lost the lease of the queue; standing by"
                );
            }
        }
    }
}

/// Runs the queue while `lease` holds (see `worker::run`); a broken run is logged and run
/// again a second later.
async fn lead(
    app: &Arc<App>,
    lease: &Lease,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    stop: &watch::Receiver<bool>,
    grace: Duration,
) -> Spell {
    let server = Server {
        app: app.clone(),
        jobs: tokio::sync::Mutex::new(jobs),
        stop: stop.clone(),
        grace,
    };
    loop {
        match worker::run(&app.engine, lease, &server).await {
            Ok(End::Stopped { cut }) => {
                if let Some(Cut::Delivery { id, task }) = cut {
                    tracing::warn!(
                        delivery = id.0,
                        task = %task,
                        "stopped during shutdown; it is recovered at the next start"
                    );
                }
                return Spell::Stopped;
            }
            Ok(End::LeaseLost { cut }) => {
                match cut {
                    Some(Cut::Delivery { id, task }) => tracing::error!(
                        delivery = id.0,
                        task = %task,
                        "stopped: the lease was lost; the replica that holds it now recovers it"
                    ),
                    Some(Cut::Pipeline) => tracing::error!(
                        "the pipeline stopped: the lease was lost; the replica that holds it \
                         now recovers its deliveries"
                    ),
                    None => {}
                }
                return Spell::Lost;
            }
            // The server's worker waits when the queue is empty; were it ever done, it looks
            // at the queue again.
            Ok(End::Done) => {}
            Err(e) => {
                // The store is gone, or the line could not even journal a failure.
                tracing::error!("the worker broke: {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Runs one of the jobs the bot and the alerts queue (a new kind of job is a variant of
/// `Job` and its arm here).
async fn run_job(app: &App, job: Job) {
    match job {
        Job::Rollback {
            id,
            requester,
            repo,
            number,
        } => {
            let result = match app.engine.store.delivery(id).await {
                Ok(Some(d)) if d.state.is_final() => {
                    app.engine.rollback_finished(&d, false).await.map(|_| d)
                }
                Ok(Some(d)) => Err(anyhow::anyhow!(
                    "#{id} is {} again; nothing was rolled back",
                    d.state.as_str()
                )),
                Ok(None) => Err(anyhow::anyhow!("no delivery #{id}")),
                Err(e) => Err(e),
            };
            let body = bot::rollback_outcome(app, id, &requester, &result);
            if let Some(gh) = &app.github
                && let Err(e) = gh.comment(&repo, number, &body).await
            {
                tracing::warn!("cannot report the rollback of #{id}: {e:#}");
            }
        }
        Job::AlertRollback {
            id,
            quote,
            fired_ms,
        } => roll_back_watched(app, id, Cause::Alert { quote, fired_ms }).await,
        Job::GateRollback { id, why } => roll_back_watched(app, id, Cause::Gate { why }).await,
    }
}

/// Rolls back and reverts a watched delivery, then tells its pull request.
async fn roll_back_watched(app: &App, id: DeliveryId, cause: Cause) {
    let Ok(Some(d)) = app.engine.store.delivery(id).await else {
        tracing::error!("no delivery #{id} to roll back");
        return;
    };
    let result = app.engine.roll_back(&d, true, &cause).await;
    if let Err(e) = &result {
        tracing::error!(
            delivery = id.0,
            "the rollback of a watched delivery failed: {e:#}"
        );
    }
    report::rolled_back_while_watched(app, &d, &cause, &result).await;
}

/// Samples the gates of a delivery that landed for its watch (`[delivery] watch_gates`), in
/// the background; a failure queues its rollback.
fn watch_gates(app: &Arc<App>, id: DeliveryId) {
    let config = &app.config().delivery;
    if !config.watch_gates || config.watch.is_zero() {
        return;
    }
    let app = app.clone();
    tokio::spawn(async move {
        match app.engine.watch_gates(id).await {
            Ok(Some(why)) => {
                tracing::warn!(delivery = id.0, "a gate failed during the watch: {why}");
                if app.jobs.send(Job::GateRollback { id, why }).is_ok() {
                    app.wake.notify_one();
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(delivery = id.0, "cannot watch the gates: {e:#}"),
        }
    });
}

/// Forgets webhook delivery ids and alerts after a week (GitHub redelivers for a few days at
/// most; Alertmanager repeats a firing alert every `repeat_interval`, hours by default).
pub async fn prune_loop(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    const KEEP: i64 = 7 * 24 * 3600 * 1000;
    loop {
        if let Err(e) = app.engine.store.prune_webhooks(now_ms() - KEEP).await {
            tracing::warn!("cannot prune webhook ids: {e:#}");
        }
        if let Err(e) = app.engine.store.prune_alerts(now_ms() - KEEP).await {
            tracing::warn!("cannot prune alerts: {e:#}");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}
