//! Showrooms: a task's branches, rebased on upstream, deployed for people to look at before
//! the task is delivered. A showroom runs beside the delivery line (it takes no lease and
//! merges nothing), with the `[environments.showroom]` variables, the same containment and
//! the same confinement as a delivery's steps.
//!
//! - this file: bringing one up ([`up`]), taking one down ([`down`]), `max`, the ttl
//!   ([`expire`]) and what a killed process left ([`recover`]);
//! - `statuses`: the tracker's statuses bring showrooms up and take them down;
//! - `task`: a showroom follows its task: torn down when its delivery ends ([`finished`]), or
//!   when the task is returned, closed or gone, with a note on the task that says so;
//! - `label`: the task key made a safe DNS label, the one form of it a URL or a variable gets;
//! - `build`: the checkouts and the steps of one showroom.
//!
//! One process works on a showroom at a time: each holds the file lock `lock` in the
//! showroom's folder while it deploys or tears down; a showroom `deploying` or
//! `tearing-down` whose lock is free was left by a process that died.

mod build;
mod label;
mod statuses;
mod task;

use std::path::PathBuf;

use anyhow::Context as _;

pub use label::Label;
pub use statuses::poll_logged;
pub use task::finished;

use super::engine::Engine;
use crate::config::{OnFull, Showroom};
use crate::domain::TaskKey;
use crate::store::{ShowroomRow, ShowroomState};

/// What became of a request for a showroom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It is up at this URL.
    Up { url: String },
    /// Its deploy failed; its teardown ran. Why.
    Failed(String),
    /// `max` showrooms are up and `on_full = "refuse"`. Why.
    Refused(String),
    /// It was torn down.
    Down,
}

/// The settings, or an error that says how to get them.
fn settings(engine: &Engine) -> anyhow::Result<Showroom<'_>> {
    engine.config.showroom().context(
        "lockstep.toml has no `[environments.showroom]`; add one with its `url` and `vars` \
         (see docs/showrooms.md)",
    )
}

/// The folder of a showroom's checkouts, logs and lock under `state_dir`.
fn folder(engine: &Engine, label: &Label) -> PathBuf {
    folder_of(&engine.config, label)
}

/// The same, from the config alone.
fn folder_of(config: &crate::config::Config, label: &Label) -> PathBuf {
    config.state_dir().join("showrooms").join(label.as_str())
}

/// The folder a showroom's steps write their logs in (`build.rs`), which `lockstep logs
/// --showroom` reads.
pub fn logs_dir(config: &crate::config::Config, label: &Label) -> PathBuf {
    folder_of(config, label).join(LOGS)
}

/// The name of that folder under the showroom's.
const LOGS: &str = "logs";

/// The file holding the pid of the step a showroom runs now (its supervisor's).
fn running_file(folder: &std::path::Path) -> PathBuf {
    folder.join("running")
}

/// The showroom's URL: the template with `{task}` made the label.
pub fn url_of(template: &str, label: &Label) -> String {
    template.replace("{task}", label.as_str())
}

/// Holds the showroom's file lock, waiting for another process that holds it.
async fn lock(engine: &Engine, label: &Label) -> anyhow::Result<std::fs::File> {
    let dir = folder(engine, label);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open `{}`", path.display()))?;
    let file = crate::runtime::blocking(move || -> anyhow::Result<std::fs::File> {
        file.lock()?;
        Ok(file)
    })
    .await?;
    Ok(file)
}

/// Brings up (or deploys again) the showroom of `task`, asked by `requester`: makes room
/// under `max` first, rebases the task's branches on their upstreams, runs their `build`
/// and `deploy` steps. A deploy that fails runs the `teardown` steps and leaves the showroom
/// `failed`.
pub async fn up(engine: &Engine, task: &TaskKey, requester: &str) -> anyhow::Result<Outcome> {
    let settings = settings(engine)?;
    let label = Label::of(task)?;
    let url = url_of(settings.url, &label);
    let others: Vec<ShowroomRow> = engine
        .store
        .showrooms()
        .await?
        .into_iter()
        .filter(|s| s.task != task.as_str())
        .collect();
    if let Some(twin) = others.iter().find(|s| s.label == label.as_str()) {
        anyhow::bail!(
            "`{}` would share the showroom `{label}` of `{}`; take that one down first \
             (`lockstep showroom {} --down`)",
            crate::text::escape(task.as_str()),
            crate::text::escape(&twin.task),
            crate::text::shell_word(&twin.task)
        );
    }
    let mut occupied: Vec<&ShowroomRow> = others.iter().filter(|s| s.state.occupies()).collect();
    while occupied.len() >= settings.max {
        match settings.on_full {
            OnFull::Refuse => {
                return Ok(Outcome::Refused(format!(
                    "{} showrooms are up (`max = {}`); take one down first \
                     (`lockstep showrooms` lists them)",
                    occupied.len(),
                    settings.max
                )));
            }
            OnFull::EvictOldest => {
                let oldest = occupied.remove(0);
                let why = format!(
                    "evicted to make room for `{task}` (`max = {}`)",
                    settings.max
                );
                engine.say(&format!("showroom {}: {why}", oldest.task));
                task::tear_noted(engine, &TaskKey::new(&oldest.task), &oldest.url, &why).await?;
            }
        }
    }
    let status = task::status_of(engine, task).await;
    let _lock = lock(engine, &label).await?;
    engine
        .store
        .showroom_deploying(
            task.as_str(),
            label.as_str(),
            &url,
            requester,
            status.as_deref(),
        )
        .await?;
    engine.say(&format!("showroom {task}: deploying at {url}"));
    let room = build::Room::new(engine, task, &label, &url, folder(engine, &label));
    match room.deploy().await {
        Ok(()) => {
            engine
                .store
                .set_showroom_state(task.as_str(), ShowroomState::Up, "")
                .await?;
            engine.say(&format!("showroom {task}: up at {url}"));
            Ok(Outcome::Up { url })
        }
        Err(why) => {
            engine.say(&format!("showroom {task}: deploy failed: {why}"));
            let torn = room.teardown().await;
            let reason = match torn {
                Ok(()) => why,
                Err(e) => format!("{why}; and its teardown failed: {e}"),
            };
            engine
                .store
                .set_showroom_state(task.as_str(), ShowroomState::Failed, &reason)
                .await?;
            Ok(Outcome::Failed(reason))
        }
    }
}

/// Tears down the showroom of `task` (its `teardown` steps), for `reason`. A showroom the
/// store does not know is an error; one already down is left as it is.
pub async fn down(engine: &Engine, task: &TaskKey, reason: &str) -> anyhow::Result<Outcome> {
    if engine.store.showroom(task.as_str()).await?.is_none() {
        anyhow::bail!("`{task}` has no showroom (`lockstep showrooms` lists them)");
    }
    tear(engine, task, reason, false).await?;
    Ok(Outcome::Down)
}

/// Tears down the showroom of `task` for `reason`, once its lock is held and the store read
/// again under it: nothing (false) when it is down by then, or, with `only_up`, not up (another
/// process tore it down or is deploying it again while this one waited).
async fn tear(
    engine: &Engine,
    task: &TaskKey,
    reason: &str,
    only_up: bool,
) -> anyhow::Result<bool> {
    let label = Label::of(task)?;
    let _lock = lock(engine, &label).await?;
    let Some(row) = engine.store.showroom(task.as_str()).await? else {
        return Ok(false);
    };
    if row.state == ShowroomState::Down || (only_up && row.state != ShowroomState::Up) {
        return Ok(false);
    }
    engine
        .store
        .set_showroom_state(task.as_str(), ShowroomState::TearingDown, reason)
        .await?;
    let room = build::Room::new(engine, task, &label, &row.url, folder(engine, &label));
    match room.teardown_recorded(&row).await {
        Ok(()) => {
            engine
                .store
                .set_showroom_state(task.as_str(), ShowroomState::Down, reason)
                .await?;
            engine.say(&format!("showroom {task}: down ({reason})"));
            let _ = std::fs::remove_dir_all(room.work());
            Ok(true)
        }
        Err(e) => {
            let why = format!("teardown failed: {e}");
            engine
                .store
                .set_showroom_state(task.as_str(), ShowroomState::Failed, &why)
                .await?;
            anyhow::bail!("the showroom of `{task}` was not torn down: {why}")
        }
    }
}

/// Tears down every showroom older than the ttl. Returns the tasks torn down.
pub async fn expire(engine: &Engine) -> anyhow::Result<Vec<String>> {
    let Some(ttl) = engine.config.showroom().and_then(|s| s.ttl) else {
        return Ok(Vec::new());
    };
    let now = crate::store::now_ms();
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let mut gone = Vec::new();
    for row in engine.store.showrooms().await? {
        if now.saturating_sub(row.created_at) >= ttl_ms && row.state.occupies() {
            let why = format!("its ttl of {} passed", crate::config::humanize(ttl));
            if task::tear_noted(engine, &TaskKey::new(&row.task), &row.url, &why).await? {
                gone.push(row.task);
            }
        }
    }
    Ok(gone)
}

/// What a killed process left: a showroom `deploying` or `tearing-down` whose lock is free is
/// marked `failed` and its teardown runs, so that nothing half-deployed stays unrecorded.
/// Returns a line for each.
pub async fn recover(engine: &Engine) -> anyhow::Result<Vec<String>> {
    let mut said = Vec::new();
    for row in engine.store.showrooms().await? {
        if !matches!(
            row.state,
            ShowroomState::Deploying | ShowroomState::TearingDown
        ) {
            continue;
        }
        let task = TaskKey::new(&row.task);
        let label = Label::of(&task)?;
        let path = folder(engine, &label).join("lock");
        let free = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f.try_lock().is_ok(),
            Err(_) => true,
        };
        if !free {
            continue;
        }
        let why = format!("left {} by a process that stopped", row.state);
        // The step it was running outlives it (its supervisor is in a group of its own).
        let running = running_file(&folder(engine, &label));
        if let Some(pid) = std::fs::read_to_string(&running)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let marker = format!("LOCKSTEP_SHOWROOM={label}");
            super::steps::kill_leftover(pid, &marker, std::time::Duration::from_secs(5)).await;
            let _ = std::fs::remove_file(&running);
        }
        engine
            .store
            .set_showroom_state(task.as_str(), ShowroomState::Failed, &why)
            .await?;
        let line = match down(engine, &task, &format!("{why}; torn down by recover")).await {
            Ok(_) => format!("showroom {task}: {why}; torn down"),
            Err(e) => format!("showroom {task}: {why}; {e:#}"),
        };
        engine.say(&line);
        said.push(line);
    }
    Ok(said)
}

/// Starts `lockstep showroom TASK` in the background, asked by `by` (a push, which does not
/// wait for the deploy); its output goes to `showrooms.log` in `state_dir`.
pub fn spawn_detached(
    config: &crate::config::Config,
    task: &TaskKey,
    by: &str,
) -> anyhow::Result<()> {
    crate::runtime::spawn_lockstep(
        config,
        &["showroom", "--by", by, "--", task.as_str()],
        "showrooms.log",
    )
    .context("cannot start `lockstep showroom` in the background")
}
