//! A showroom follows its task. It remembers the status its task had in the tracker when it
//! was deployed (`task_status` in the store), and goes, however it was asked for, when:
//!
//! - a delivery of the task ends ([`finished`]): delivered, or failed or cancelled (the task
//!   went back to `[tasks] returned`), at once, by the worker;
//! - the task moved, since, to `[tasks] returned` or `[tasks] delivered` (a person sent it
//!   back or closed it), or is gone from the tracker: seen by each poll of `lockstep serve`
//!   ([`follow`]).
//!
//! A task that stays where it was keeps its showroom: with the default `returned = "In
//! Progress"`, a showroom asked for while the task is In Progress stays while it is worked on.
//! The poller records each other status it sees the task in, so that a move back to In
//! Progress from, say, In QA is seen (a move there and back between two polls is not).
//!
//! When the tracker did not say the task's status at deploy time (it did not answer, or does
//! not hold the task), the first status a poll reads is taken as the one it had; a task the
//! tracker never knew is never "gone". A poll the tracker does not answer changes nothing.
//!
//! Each teardown leaves a note on the task saying why (none on a task that is gone), as do the
//! ttl's and an eviction's ([`tear_noted`]).

use super::{Engine, tear};
use crate::domain::{State, TaskKey};
use crate::store::{DeliveryRow, ShowroomState};

/// The task's status in the tracker, when it says.
pub(super) async fn status_of(engine: &Engine, task: &TaskKey) -> Option<String> {
    match engine.tracker.task(task).await {
        Ok(t) => t.map(|t| t.status),
        Err(e) => {
            tracing::warn!("showroom {task}: cannot read the task's status: {e}");
            None
        }
    }
}

/// Leaves a note on a task, in the status it is in now.
pub(super) async fn note(engine: &Engine, task: &TaskKey, note: &str) {
    let Some(status) = status_of(engine, task).await else {
        tracing::warn!("showroom {task}: no note left: the tracker does not say where the task is");
        return;
    };
    let note = crate::text::note(note);
    if let Err(e) = engine.tracker.move_to(task, &status, &note).await {
        tracing::warn!("cannot leave a note on `{task}`: {e}");
    }
}

/// Tears down the showroom of `task` (at `url`) for `why` unless it is down by then, and
/// leaves a note on the task that says so (its ttl passed, it was evicted). Returns whether
/// it tore it down.
pub(super) async fn tear_noted(
    engine: &Engine,
    task: &TaskKey,
    url: &str,
    why: &str,
) -> anyhow::Result<bool> {
    let torn = tear(engine, task, why, false).await?;
    if torn {
        note(engine, task, &format!("showroom {url} taken down: {why}")).await;
    }
    Ok(torn)
}

/// Why a delivery that ended in `state` takes its task's showroom down (`None`: it does not).
fn why_finished(engine: &Engine, d: &DeliveryRow, state: State) -> Option<String> {
    let back = &engine.config.tasks.returned;
    Some(match state {
        State::Delivered => format!("the task was delivered (lockstep #{})", d.id),
        State::Failed => format!(
            "its delivery #{} failed; the task went back to `{back}`",
            d.id
        ),
        State::Cancelled => format!(
            "its delivery #{} was cancelled; the task went back to `{back}`",
            d.id
        ),
        State::Queued | State::Running => return None,
    })
}

/// A delivery ended in `state`: delivered, the task's showroom has served; failed or
/// cancelled, the task went back to its owner and the showroom shows what is no longer a
/// candidate. Either way it is torn down (nothing when it has none), and a note on the task
/// says so. What goes wrong is said, and does not change how the delivery ended.
pub async fn finished(engine: &Engine, d: &DeliveryRow, state: State) {
    if engine.config.showroom().is_none() {
        return;
    }
    let Some(why) = why_finished(engine, d, state) else {
        return;
    };
    let task = &d.task;
    let row = match engine.store.showroom(task.as_str()).await {
        Ok(Some(row)) if row.state != ShowroomState::Down => row,
        Ok(_) => return,
        Err(e) => {
            engine.say(&format!(
                "showroom {task}: not read after its delivery: {e:#}"
            ));
            return;
        }
    };
    let said = match tear(engine, task, &why, false).await {
        Ok(false) => return,
        Ok(true) => format!("showroom {} taken down: {why}", row.url),
        Err(e) => {
            engine.say(&format!(
                "showroom {task}: not torn down after its delivery: {e:#}"
            ));
            format!("showroom {} not taken down: {e:#}", row.url)
        }
    };
    note(engine, task, &said).await;
}

/// What became of one showroom at a poll.
enum Seen {
    /// Its task is where it was, or cannot be read: nothing to do.
    Same,
    /// Its task is somewhere new, neither returned nor delivered: remembered.
    Moved(String),
    /// It goes, for this reason.
    Gone(String),
}

/// Judges a showroom whose task was in `was` when it was deployed (or last seen), and is in
/// `now` (`None`: the tracker does not hold it); `ends` are `[tasks] returned` and
/// `[tasks] delivered`.
fn judge(ends: [&str; 2], was: Option<&str>, now: Option<&str>) -> Seen {
    match (was, now) {
        (Some(was), Some(now)) if was == now => Seen::Same,
        (Some(was), Some(now)) if ends.contains(&now) => {
            Seen::Gone(format!("the task moved from `{was}` to `{now}`"))
        }
        (_, Some(now)) => Seen::Moved(now.to_string()),
        (Some(_), None) => Seen::Gone("the task is gone from the tracker".into()),
        (None, None) => Seen::Same,
    }
}

/// One look at the task of every showroom that is up (`lockstep serve`'s poller): those whose
/// task was returned, closed or is gone are torn down. Returns a line for each.
pub(super) async fn follow(engine: &Engine) -> anyhow::Result<Vec<String>> {
    let mut said = Vec::new();
    for room in engine.store.showrooms().await? {
        if room.state != ShowroomState::Up {
            continue;
        }
        let key = TaskKey::new(&room.task);
        let now = match engine.tracker.task(&key).await {
            Ok(t) => t.map(|t| t.status),
            Err(e) => {
                tracing::debug!("showroom {key}: the tracker did not say the task's status: {e}");
                continue;
            }
        };
        let tasks = &engine.config.tasks;
        let ends = [tasks.returned.as_str(), tasks.delivered.as_str()];
        let why = match judge(ends, room.task_status.as_deref(), now.as_deref()) {
            Seen::Same => continue,
            Seen::Moved(status) => {
                engine
                    .store
                    .set_showroom_task_status(&room.task, &status)
                    .await?;
                continue;
            }
            Seen::Gone(why) => why,
        };
        let line = match tear(engine, &key, &why, true).await {
            Ok(false) => continue,
            Ok(true) => format!("showroom {} taken down: {why}", room.url),
            Err(e) => format!("showroom {} not taken down: {e:#}", room.url),
        };
        if now.is_some() {
            note(engine, &key, &line).await;
        }
        said.push(format!("showroom {key}: {line}"));
    }
    Ok(said)
}

#[cfg(test)]
mod tests {
    use super::{Seen, judge};

    const ENDS: [&str; 2] = ["In Progress", "Closed"];

    fn said(s: Seen) -> String {
        match s {
            Seen::Same => "same".into(),
            Seen::Moved(to) => format!("moved {to}"),
            Seen::Gone(why) => format!("gone: {why}"),
        }
    }

    #[test]
    fn a_showroom_goes_when_its_task_is_returned_closed_or_gone() {
        let j = |was, now| said(judge(ENDS, was, now));
        // Stays where it was: stays (In Progress is `returned`, yet not a move).
        assert_eq!(j(Some("In Progress"), Some("In Progress")), "same");
        // Elsewhere: remembered, so that coming back is a move.
        assert_eq!(j(Some("In Progress"), Some("In QA")), "moved In QA");
        assert_eq!(
            j(Some("In QA"), Some("In Progress")),
            "gone: the task moved from `In QA` to `In Progress`"
        );
        assert_eq!(
            j(Some("In Progress"), Some("Closed")),
            "gone: the task moved from `In Progress` to `Closed`"
        );
        assert_eq!(
            j(Some("In QA"), None),
            "gone: the task is gone from the tracker"
        );
        // Not known when deployed: the first status read is taken as its own; a task the
        // tracker never held is never gone.
        assert_eq!(j(None, Some("In Progress")), "moved In Progress");
        assert_eq!(j(None, Some("Closed")), "moved Closed");
        assert_eq!(j(None, None), "same");
    }
}
