//! Tracker statuses drive showrooms (`lockstep serve`'s poller): a task that enters one of
//! `[environments.showroom] statuses` gets its showroom, and loses it once it has left all of
//! them; showrooms past their ttl go too. Each leaves a note on the task, with the URL or why.
//!
//! Only the showrooms the statuses brought up (asked by [`BY_STATUS`]) are taken down when
//! their task leaves the statuses: one asked for by hand stays until it is taken down, its
//! task returned, closed or delivered (`task.rs`, polled here too), or its ttl passed.

use super::{Outcome, down, expire, up};
use crate::delivery::Engine;
use crate::domain::TaskKey;
use crate::store::ShowroomState;

/// Who asked, for a showroom the tracker's statuses brought up.
pub const BY_STATUS: &str = "tracker";

/// One poll of the showroom statuses, its lines logged.
pub async fn poll_logged(engine: &Engine) {
    match poll(engine).await {
        Ok(lines) => {
            for l in lines {
                tracing::info!(target: "lockstep::showroom", "{l}");
            }
        }
        Err(e) => tracing::warn!("cannot follow the showroom statuses: {e:#}"),
    }
}

/// One poll; returns what it did, one line per task.
pub async fn poll(engine: &Engine) -> anyhow::Result<Vec<String>> {
    let Some(settings) = engine.config.showroom() else {
        return Ok(Vec::new());
    };
    let mut said: Vec<String> = expire(engine)
        .await?
        .into_iter()
        .map(|t| format!("showroom {t}: down, its ttl passed"))
        .collect();
    if !settings.statuses.is_empty() {
        said.extend(by_statuses(engine, settings.statuses).await?);
    }
    said.extend(super::task::follow(engine).await?);
    Ok(said)
}

/// The showrooms the statuses bring up and take down; a line per task.
async fn by_statuses(engine: &Engine, statuses: &[String]) -> anyhow::Result<Vec<String>> {
    let mut said = Vec::new();
    let tasks = engine
        .tracker
        .in_statuses(statuses)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rooms = engine.store.showrooms().await?;
    for task in &tasks {
        if rooms.iter().any(|r| r.task == task.key) {
            continue;
        }
        let key = TaskKey::new(task.key.as_str());
        let (line, note) = match up(engine, &key, BY_STATUS).await {
            Ok(Outcome::Up { url }) => (
                format!("showroom {}: up at {url} ({})", task.key, task.status),
                format!("showroom up at {url}"),
            ),
            Ok(Outcome::Failed(why) | Outcome::Refused(why)) => (
                format!("showroom {}: not up: {why}", task.key),
                format!("no showroom: {why}"),
            ),
            Ok(Outcome::Down) => continue,
            Err(e) => (
                format!("showroom {}: not up: {e:#}", task.key),
                format!("no showroom: {e:#}"),
            ),
        };
        note_on(engine, &key, &task.status, &note).await;
        said.push(line);
    }
    let left: Vec<String> = statuses.iter().map(|s| format!("`{s}`")).collect();
    for room in rooms {
        if room.requester != BY_STATUS
            || room.state != ShowroomState::Up
            || tasks.iter().any(|t| t.key == room.task)
        {
            continue;
        }
        let key = TaskKey::new(&room.task);
        let why = format!("the task left {}", left.join(", "));
        let note = match down(engine, &key, &why).await {
            Ok(_) => format!("showroom {} taken down: {why}", room.url),
            Err(e) => format!("showroom {} not taken down: {e:#}", room.url),
        };
        super::task::note(engine, &key, &note).await;
        said.push(format!("showroom {}: {note}", room.task));
    }
    Ok(said)
}

/// Leaves a note on a task, where it is.
async fn note_on(engine: &Engine, key: &TaskKey, status: &str, note: &str) {
    let note = crate::text::note(note);
    if let Err(e) = engine.tracker.move_to(key, status, &note).await {
        tracing::warn!("cannot leave a note on `{key}`: {e}");
    }
}
