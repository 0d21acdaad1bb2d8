//! Tracker-driven merges: a task that enters a for-delivery status (`[tasks] for_delivery`)
//! is queued for delivery, once per entry into that status.
//!
//! The poller remembers, in the store, which tasks it has seen in such a status. A task seen
//! before is left alone while it stays there (a refused or failed delivery is not retried
//! every `[tracker] poll`); once it leaves, it is forgotten, so entering again delivers it
//! again. A change that leaves and comes back between two polls is not seen (poll more often,
//! or have the tracker call `POST /webhooks/tracker`). A task already queued or running is
//! left alone: its delivery is under way, so the deliver rules are not judged again (as the
//! bot, they could refuse it and send the task back while it is being delivered).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::App;
use crate::delivery::{self, Request, Requested};
use crate::domain::{Source, TaskKey};

/// Polls every `every` (never when it is zero) until `stop`.
pub async fn run(app: Arc<App>, every: Duration, mut stop: watch::Receiver<bool>) {
    if every.is_zero() {
        return;
    }
    loop {
        match poll_once(&app).await {
            Ok(lines) => {
                for l in lines {
                    tracing::info!(target: "lockstep::tracker", "{l}");
                }
            }
            Err(e) => tracing::warn!("cannot poll the tracker: {e:#}"),
        }
        // `[autotest] statuses`: tasks waiting for their branches' autotests.
        match crate::delivery::autotest::poll(&app.engine).await {
            Ok(lines) => lines
                .iter()
                .for_each(|l| tracing::info!(target: "lockstep::autotest", "{l}")),
            Err(e) => tracing::warn!("cannot poll the tasks awaiting autotests: {e:#}"),
        }
        crate::delivery::showroom::poll_logged(&app.engine).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = super::stopped(&mut stop) => return,
        }
    }
}

/// One poll; returns what it did, one line per task.
pub async fn poll_once(app: &App) -> anyhow::Result<Vec<String>> {
    let _one_at_a_time = app.poll_lock.lock().await;
    let e = &app.engine;
    let config = &e.config;
    let ready = tokio::time::timeout(
        config.tracker.timeout.max(Duration::from_secs(5)),
        e.tracker.in_statuses(&config.tasks.for_delivery),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the tracker did not answer in time"))?
    .map_err(|err| anyhow::anyhow!("{err}"))?;
    let seen: BTreeMap<String, String> = e.store.tracker_seen().await?.into_iter().collect();
    let mut said = Vec::new();
    for task in &ready {
        if seen.contains_key(&task.key) {
            continue;
        }
        let key = TaskKey::new(task.key.as_str());
        if let Some(d) = e.store.latest_of_task(&key).await?
            && !d.state.is_final()
        {
            e.store.set_tracker_seen(&task.key, &task.status).await?;
            said.push(format!(
                "{} is {}: already {} as #{}",
                task.key,
                task.status,
                if d.state == crate::domain::State::Queued {
                    "queued"
                } else {
                    "running"
                },
                d.id
            ));
            continue;
        }
        let req = Request {
            task: key,
            priority: 0,
            source: Source::Tracker,
            requester: config.bot.user.clone(),
            origin: String::new(),
            pr: None,
        };
        let line = match delivery::request(
            config,
            &e.policies,
            e.tracker.as_ref(),
            app.github.as_deref(),
            &e.store,
            &req,
        )
        .await
        {
            Ok(Requested::Queued { id, position }) => {
                app.wake.notify_one();
                format!(
                    "{} is {}: queued as #{id} (position {position})",
                    task.key, task.status
                )
            }
            Ok(Requested::AlreadyQueued { id }) => {
                format!("{} is {}: already queued as #{id}", task.key, task.status)
            }
            Ok(Requested::Refused(d)) => {
                let why = delivery::refusal_lines(&d);
                let note = format!("lockstep did not deliver it: {}", why.join("; "));
                // Back to its owner with the reasons, as a failed delivery would be.
                if let Err(err) = e
                    .tracker
                    .move_to(
                        &TaskKey::new(task.key.as_str()),
                        &config.tasks.returned,
                        &crate::text::note(&note),
                    )
                    .await
                {
                    tracing::warn!("cannot move `{}` back: {err}", task.key);
                }
                format!(
                    "{} is {}: refused: {}",
                    task.key,
                    task.status,
                    why.join("; ")
                )
            }
            Err(err) => {
                // Not marked as seen: the next poll tries again.
                said.push(format!("{}: cannot queue it: {err:#}", task.key));
                continue;
            }
        };
        e.store.set_tracker_seen(&task.key, &task.status).await?;
        said.push(line);
    }
    for key in seen.keys() {
        if !ready.iter().any(|t| &t.key == key) {
            e.store.forget_tracker_seen(key).await?;
        }
    }
    Ok(said)
}
