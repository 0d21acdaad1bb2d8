//! `/status`: where the task is in the tracker and where its delivery is.

use super::{App, link, report};
use crate::domain::{Phase, State, TaskKey};
use crate::text::markdown::code;

/// `/status`: where the task's delivery is.
pub(super) async fn status(app: &App, task: &TaskKey) -> anyhow::Result<String> {
    let key = code(task.as_str());
    let store = &app.engine.store;
    let tracker_status = match crate::tracker::task_with_timeout(
        app.engine.tracker.as_ref(),
        task,
        app.config().tracker.timeout,
    )
    .await
    {
        Ok(Some(t)) => format!("{key} is {} in the tracker", code(&t.status)),
        Ok(None) => format!("{key} does not exist in the tracker"),
        Err(e) => format!(
            "the tracker did not answer about {key} ({})",
            code(&e.to_string())
        ),
    };
    let delivery = match store.latest_of_task(task).await? {
        None => "it has never been delivered".to_string(),
        Some(d) => match d.state {
            State::Queued => {
                let position = store
                    .queued()
                    .await?
                    .iter()
                    .position(|q| q.id == d.id)
                    .map_or(0, |p| p + 1);
                format!("{} is queued at position {position}", link(app, d.id))
            }
            State::Running => format!(
                "{} is running, in the **{}** phase",
                link(app, d.id),
                d.phase.unwrap_or(Phase::Rebase)
            ),
            State::Delivered => format!("{} delivered it", link(app, d.id)),
            State::Failed | State::Cancelled => {
                format!(
                    "{} {}: {}",
                    link(app, d.id),
                    d.state.as_str(),
                    code(&crate::text::clip(&d.error, report::REASON_BYTES))
                )
            }
        },
    };
    Ok(format!("{tracker_status}; {delivery}."))
}
