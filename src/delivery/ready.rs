//! A task declared ready for delivery by whoever asks for it (`git push -o deliver`, a
//! `/retry`): moved to the first of `[tasks] for_delivery`, unless it is in one already, so
//! that its deliver rules are judged with it ready.

use crate::config::Config;
use crate::domain::TaskKey;
use crate::tracker::{self, Tracker};

/// The status a task is moved to when someone declares it ready: the first of
/// `[tasks] for_delivery`.
pub fn status(config: &Config) -> &str {
    config
        .tasks
        .for_delivery
        .first()
        .map_or("For Delivery", String::as_str)
}

/// Moves `key` to the ready status with `note` (escaped and clipped here), unless the tracker
/// has it in a `for_delivery` status already or does not know it. Returns the status it was
/// moved from, so that a request that goes nowhere can put it back.
pub async fn mark(
    config: &Config,
    tracker: &dyn Tracker,
    key: &TaskKey,
    note: &str,
) -> anyhow::Result<Option<String>> {
    let current = tracker::task_with_timeout(tracker, key, config.tracker.timeout)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(task) = current else {
        return Ok(None);
    };
    if config.tasks.for_delivery.contains(&task.status) {
        return Ok(None);
    }
    tracker
        .move_to(key, status(config), &crate::text::note(note))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Some(task.status))
}
