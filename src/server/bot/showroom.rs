//! `/showroom` and `/showroom down`: the task's showroom brought up (or deployed again) or
//! torn down, in the background: the reply says where it will be; a second comment on the
//! same pull request, once the deploy (or teardown) has ended, says where it is up or why it
//! is not; `lockstep showrooms` and the queue page show it.

use super::Asked;
use crate::delivery::showroom::{self, Label, Outcome};
use crate::server::report::REASON_BYTES;
use crate::text::markdown::{code, fenced};
use crate::text::{clip, escape};

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
    let (gh, repo, number) = (app.github.clone(), asked.repo.clone(), asked.pull.number);
    tokio::spawn(async move {
        let done = if down {
            let why = format!("taken down by {who} (/showroom down)");
            showroom::down(&engine, &task, &why).await
        } else {
            showroom::up(&engine, &task, &who).await
        };
        match &done {
            Ok(outcome) => tracing::info!("showroom {task}: {outcome:?}"),
            Err(e) => tracing::warn!("showroom {task}: {e:#}"),
        }
        let Some(gh) = gh else { return };
        let text = format!("@{who} {}", ended(&code(task.as_str()), &done));
        if let Err(e) = gh.comment(&repo, number, &text).await {
            tracing::warn!("showroom {task}: cannot say how it went on {repo}#{number}: {e:#}");
        }
    });
    Ok(reply(&key, &url, down))
}

/// The second comment: how the deploy or teardown the command started ended.
fn ended(key: &str, done: &anyhow::Result<Outcome>) -> String {
    let why = |text: &str| fenced(&clip(&escape(text), REASON_BYTES));
    match done {
        Ok(Outcome::Up { url }) => format!("the showroom of {key} is up: {url}"),
        Ok(Outcome::Down) => format!("the showroom of {key} is down."),
        Ok(Outcome::Failed(reason)) => format!(
            "the showroom of {key} failed; its teardown ran:\n\n{}",
            why(reason)
        ),
        Ok(Outcome::Refused(reason)) => format!("no showroom for {key}:\n\n{}", why(reason)),
        Err(e) => format!(
            "the showroom of {key} could not be worked on:\n\n{}",
            why(&format!("{e:#}"))
        ),
    }
}

/// The reply to `/showroom` (`down` false) or `/showroom down`.
fn reply(key: &str, url: &str, down: bool) -> String {
    if down {
        format!("tearing down the showroom of {key} ({url}).")
    } else {
        format!(
            "deploying the showroom of {key}: its branches rebased on upstream, beside the \
             delivery line; it will be at {url}. Another comment here says when it is up, or \
             why not."
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
             delivery line; it will be at https://task-1.show.example.com. Another comment here \
             says when it is up, or why not."
        );
        let down = super::reply("`TASK-1`", "https://task-1.show.example.com", true);
        assert_eq!(
            down,
            "tearing down the showroom of `TASK-1` (https://task-1.show.example.com)."
        );
    }

    /// The second comment, for each way a deploy or teardown ends; a reason (step output, a
    /// task key) is never live Markdown.
    #[test]
    fn the_second_comment_says_how_it_ended() {
        use crate::delivery::showroom::Outcome;
        let key = "`TASK-1`";
        let texts: Vec<String> = [
            Ok(Outcome::Up {
                url: "https://task-1.show.example.com".into(),
            }),
            Ok(Outcome::Down),
            Ok(Outcome::Failed(
                "deploy of `api`: `deploy/apply.sh` exited with 1".into(),
            )),
            Ok(Outcome::Refused(
                "5 showrooms are up (`max = 5`); take one down first".into(),
            )),
            Err(anyhow::anyhow!("cannot open the store")),
        ]
        .iter()
        .map(|done| super::ended(key, done))
        .collect();
        insta::assert_snapshot!(texts.join("\n\n---\n\n"));
    }

    #[test]
    fn issue22_the_second_comment_is_never_live_markdown() {
        use crate::delivery::showroom::Outcome;
        use crate::text::markdown::{PAYLOADS, assert_inert, code};
        let evil = PAYLOADS.join(" ");
        let key = code(&format!("TASK-1{evil}"));
        for done in [
            Ok(Outcome::Failed(format!("```\n# {evil}\n\x1b[31m{evil}"))),
            Ok(Outcome::Refused(evil.clone())),
            Err(anyhow::anyhow!("{evil}")),
        ] {
            assert_inert(&super::ended(&key, &done));
        }
    }
}
