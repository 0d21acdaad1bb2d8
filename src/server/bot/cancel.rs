//! `/cancel`: a queued delivery is dropped, a running one stops at its next step.

use super::{Asked, link, report};
use crate::domain::State;
use crate::text::markdown::code;

/// Cancels the task's queued or running delivery; returns the reply.
pub(super) async fn cancel(asked: &Asked<'_>) -> anyhow::Result<String> {
    let Asked {
        app,
        repo,
        pull,
        task,
        user,
        ..
    } = *asked;
    let key = code(task.as_str());
    let store = &app.engine.store;
    match store.latest_of_task(task).await? {
        Some(d) if !d.state.is_final() => match store.cancel(d.id).await? {
            Some(State::Queued) => {
                report::cancelled_while_queued(app, &d, pull, repo, user).await;
                Ok(format!(
                    "cancelled {} of {key} before it started.",
                    link(app, d.id)
                ))
            }
            _ => Ok(format!(
                "{} of {key} stops at its next step; what it deployed is rolled back and \
                 nothing is merged. I'll post the outcome here.",
                link(app, d.id)
            )),
        },
        _ => Ok(format!(
            "{key} has no queued or running delivery; nothing to cancel."
        )),
    }
}
