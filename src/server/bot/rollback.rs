//! `/rollback`: a finished delivery's rollback steps, run by the worker when nothing deploys.

use anyhow::Context as _;

use super::{App, Asked, Job, link};
use crate::domain::DeliveryId;
use crate::store::DeliveryRow;
use crate::text::markdown::code;

/// Hands the rollback of the task's last finished delivery to the worker; returns the reply.
pub(super) async fn rollback(asked: &Asked<'_>) -> anyhow::Result<String> {
    let Asked {
        app,
        repo,
        pull,
        task,
        user,
        ..
    } = *asked;
    let key = code(task.as_str());
    match app.engine.store.latest_of_task(task).await? {
        Some(d) if d.state.is_final() => {
            app.jobs
                .send(Job::Rollback {
                    id: d.id,
                    requester: user.to_string(),
                    repo: repo.clone(),
                    number: pull.number,
                })
                .context("the worker is gone")?;
            app.wake.notify_one();
            Ok(format!(
                "rolling back {} of {key} ({}): its rollback steps run next in the queue. I'll \
                 post the outcome here.",
                link(app, d.id),
                d.state.as_str()
            ))
        }
        Some(d) => Ok(format!(
            "{} of {key} is {}; `/cancel` it instead (what it deployed is rolled back).",
            link(app, d.id),
            d.state.as_str()
        )),
        None => Ok(format!("{key} was never delivered; nothing to roll back.")),
    }
}

/// The comment after a `/rollback`.
pub fn rollback_outcome(
    app: &App,
    id: DeliveryId,
    requester: &str,
    result: &anyhow::Result<DeliveryRow>,
) -> String {
    match result {
        Ok(d) => format!(
            "@{requester} rolled back {} of {}: its rollback steps ran and the task was moved \
             back to {}. The upstream branches were not reverted; see the journal on the \
             delivery page.",
            link(app, id),
            code(d.task.as_str()),
            code(&app.config().tasks.returned)
        ),
        Err(e) => format!(
            "@{requester} the rollback of {} failed: {}",
            link(app, id),
            code(&format!("{e:#}"))
        ),
    }
}
