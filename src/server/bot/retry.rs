//! `/retry`: a failed or cancelled delivery asked for again, the task declared ready again.

use super::deliver::deliver;
use super::{Asked, link};
use crate::delivery;
use crate::domain::State;
use crate::text::markdown::code;

/// Retries the task's last delivery when it failed or was cancelled; returns the reply.
pub(super) async fn retry(asked: &Asked<'_>) -> anyhow::Result<String> {
    let Asked {
        app,
        repo,
        pull,
        task,
        user,
        ..
    } = *asked;
    let key = code(task.as_str());
    let last = app.engine.store.latest_of_task(task).await?;
    match last {
        Some(d) if matches!(d.state, State::Failed | State::Cancelled) => {
            let note = format!(
                "ready for delivery again: {user} asked for a retry on {}",
                super::origin(repo, pull.number)
            );
            delivery::ready::mark(app.config(), app.engine.tracker.as_ref(), task, &note).await?;
            let mut text = deliver(asked, d.priority).await?;
            text.insert_str(
                0,
                &format!(
                    "retrying after {} ({}): ",
                    link(app, d.id),
                    d.state.as_str()
                ),
            );
            Ok(text)
        }
        Some(d) if !d.state.is_final() => Ok(format!(
            "{key} is already {} as {}; nothing to retry.",
            d.state.as_str(),
            link(app, d.id)
        )),
        Some(d) => Ok(format!(
            "the last delivery of {key} ({}) landed; nothing to retry. Use `/rollback` to undo \
             it.",
            link(app, d.id)
        )),
        None => Ok(format!("{key} was never delivered; use `/deliver`.")),
    }
}
