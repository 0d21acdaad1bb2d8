//! `/showroom` and `/showroom down`: the task's showroom brought up (or deployed again) or
//! torn down, in the background: the reply says where it will be, the server's log how it
//! went, and `lockstep showrooms` and the queue page show it.

use super::Asked;
use crate::delivery::showroom::{self, Label};
use crate::text::markdown::code;

/// Starts the showroom's deploy (or teardown) and returns the reply.
pub(super) async fn showroom(asked: &Asked<'_>, down: bool) -> anyhow::Result<String> {
    let Asked {
        app, task, user, ..
    } = *asked;
    let key = code(task.as_str());
    let Some(settings) = app.config().showroom() else {
        return Ok(format!(
            "there are no showrooms here: `lockstep.toml` has no `[environments.showroom]`; \
             nothing done for {key}."
        ));
    };
    let label = match Label::of(task) {
        Ok(l) => l,
        Err(e) => return Ok(format!("no showroom for {key}: {}", code(&e.to_string()))),
    };
    let url = showroom::url_of(settings.url, &label);
    if down && app.engine.store.showroom(task.as_str()).await?.is_none() {
        return Ok(format!("{key} has no showroom; nothing to tear down."));
    }
    let (engine, task, who) = (app.engine.clone(), task.clone(), user.to_string());
    tokio::spawn(async move {
        let done = if down {
            let why = format!("taken down by {who} (/showroom down)");
            showroom::down(&engine, &task, &why).await
        } else {
            showroom::up(&engine, &task, &who).await
        };
        match done {
            Ok(outcome) => tracing::info!("showroom {task}: {outcome:?}"),
            Err(e) => tracing::warn!("showroom {task}: {e:#}"),
        }
    });
    Ok(reply(&key, &url, down))
}

/// The reply to `/showroom` (`down` false) or `/showroom down`.
fn reply(key: &str, url: &str, down: bool) -> String {
    if down {
        format!("tearing down the showroom of {key} ({url}).")
    } else {
        format!(
            "deploying the showroom of {key}: its branches rebased on upstream, beside the \
             delivery line; it will be at {url}. `lockstep showrooms` says when it is up."
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replies_say_where() {
        let up = super::reply("`TASK-1`", "https://task-1.show.example.com", false);
        assert_eq!(
            up,
            "deploying the showroom of `TASK-1`: its branches rebased on upstream, beside the \
             delivery line; it will be at https://task-1.show.example.com. `lockstep showrooms` \
             says when it is up."
        );
        let down = super::reply("`TASK-1`", "https://task-1.show.example.com", true);
        assert_eq!(
            down,
            "tearing down the showroom of `TASK-1` (https://task-1.show.example.com)."
        );
    }
}
