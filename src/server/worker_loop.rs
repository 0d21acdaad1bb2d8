//! The server's background loops: the worker that holds the queue and runs it (one delivery
//! at a time, or as a pipeline), reporting each delivery to GitHub, with the jobs the bot
//! hands it, run whenever no delivery is deploying (among them the rollbacks of watched
//! deliveries, and the gates sampled during a watch); and the pruner of old webhook ids and
//! alerts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{App, Job, bot, report, stopped};
use crate::delivery::worker;
use crate::delivery::{Cause, train};
use crate::domain::{DeliveryId, State};
use crate::store::{DeliveryRow, Lease, now_ms};

/// Reports the pipeline's deliveries to GitHub as they start and end, and watches the gates
/// of those that landed.
struct Reporter<'a> {
    app: Arc<App>,
    /// The worker's jobs, run whenever the pipeline has nothing deploying.
    jobs: tokio::sync::Mutex<&'a mut mpsc::UnboundedReceiver<Job>>,
}

#[async_trait::async_trait]
impl train::TrainWatcher for Reporter<'_> {
    async fn started(&self, d: &DeliveryRow) {
        report::started(&self.app, d).await;
    }
    async fn finished(&self, d: &DeliveryRow, state: State) {
        report::finished(&self.app, d, state).await;
        if state == State::Delivered {
            watch_gates(&self.app, d.id);
        }
    }
    async fn between(&self) -> bool {
        let mut jobs = self.jobs.lock().await;
        let mut ran = false;
        while let Ok(job) = jobs.try_recv() {
            run_job(&self.app, job).await;
            ran = true;
        }
        ran
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
/// recovers what the previous worker left, then runs the queue one delivery at a time,
/// reporting to GitHub, until the server stops (the lease is let go at once) or the lease is
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
        match lead(&app, &lease, &mut jobs, &mut stop, grace).await {
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

/// Runs the queue while `lease` holds.
async fn lead(
    app: &Arc<App>,
    lease: &Lease,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    stop: &mut watch::Receiver<bool>,
    grace: Duration,
) -> Spell {
    loop {
        if *stop.borrow() {
            return Spell::Stopped;
        }
        if lease.is_lost() {
            return Spell::Lost;
        }
        if let Ok(job) = jobs.try_recv() {
            run_job(app, job).await;
            continue;
        }
        if app.config().delivery.window > 1 {
            // The pipeline runs until the queue is empty; jobs (rollbacks) run whenever
            // nothing is deploying, so an alert's revert does not wait for the queue.
            let reporter = Reporter {
                app: app.clone(),
                jobs: tokio::sync::Mutex::new(&mut *jobs),
            };
            let mut never = |_: DeliveryId, _: State| false;
            let until = train::Until {
                done: &mut never,
                shutdown: Some((stop.clone(), grace)),
            };
            // Dropping the pipeline (a lost lease) kills its steps' process groups; what it
            // journaled lets the replica that holds the lease now recover it.
            let ran = tokio::select! {
                r = train::run(&app.engine, &reporter, until) => r,
                _ = lease.lost() => {
                    tracing::error!(
                        "the pipeline stopped: the lease was lost; the replica that holds it \
                         now recovers its deliveries"
                    );
                    return Spell::Lost;
                }
            };
            if let Err(e) = ran {
                tracing::error!("the pipeline broke: {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            if *stop.borrow() {
                return Spell::Stopped;
            }
            if let Some(spell) = idle(app, lease, jobs, stop).await {
                return spell;
            }
            continue;
        }
        let next = match app.engine.store.claim_next().await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("cannot read the queue: {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(d) = next else {
            if let Some(spell) = idle(app, lease, jobs, stop).await {
                return spell;
            }
            continue;
        };
        report::started(app, &d).await;
        let delivering = app.engine.deliver(&d);
        tokio::pin!(delivering);
        let mut stop_seen = stop.clone();
        // Dropping the delivery (a lost lease, a shutdown past its grace) kills its steps'
        // process groups; what it journaled so far lets the next worker recover it.
        let outcome = tokio::select! {
            r = &mut delivering => Ok(r),
            _ = lease.lost() => Err(Spell::Lost),
            _ = async { stopped(&mut stop_seen).await; tokio::time::sleep(grace).await } => {
                Err(Spell::Stopped)
            }
        };
        match outcome {
            Ok(Ok(state)) => {
                report::finished(app, &d, state).await;
                if state == State::Delivered {
                    watch_gates(app, d.id);
                }
            }
            Ok(Err(e)) => {
                // The line could not even journal its failure (the store is gone, or the
                // lease was lost and the write refused).
                tracing::error!(delivery = d.id.0, task = %d.task, "the delivery broke: {e:#}");
            }
            Err(Spell::Lost) => {
                tracing::error!(
                    delivery = d.id.0,
                    task = %d.task,
                    "stopped: the lease was lost; the replica that holds it now recovers it"
                );
                return Spell::Lost;
            }
            Err(Spell::Stopped) => {
                tracing::warn!(
                    delivery = d.id.0,
                    task = %d.task,
                    "stopped during shutdown; it is recovered at the next start"
                );
                return Spell::Stopped;
            }
        }
    }
}

/// Waits, the queue being empty, for a delivery, a job (run here), a second to pass, or the
/// end of this spell.
async fn idle(
    app: &App,
    lease: &Lease,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    stop: &mut watch::Receiver<bool>,
) -> Option<Spell> {
    tokio::select! {
        _ = app.wake.notified() => {}
        job = jobs.recv() => if let Some(job) = job { run_job(app, job).await },
        // Deliveries queued by other processes and replicas (`git push -o deliver`, the CLI,
        // webhooks another replica took).
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        _ = lease.lost() => return Some(Spell::Lost),
        _ = stopped(stop) => return Some(Spell::Stopped),
    }
    None
}

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
