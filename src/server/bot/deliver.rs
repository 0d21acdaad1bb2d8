//! `/deliver`: the delivery rules with the pull request's facts, then the queue.

use super::{Asked, link, pr_facts, report};
use crate::delivery::{self, Request, Requested};
use crate::domain::{PrState, Source};
use crate::text::markdown::{code, fenced};

/// Asks for the delivery of the pull request's task at `priority`; returns the reply.
pub(super) async fn deliver(asked: &Asked<'_>, priority: i64) -> anyhow::Result<String> {
    let Asked {
        app,
        gh,
        repo,
        pull,
        task,
        user,
    } = *asked;
    let key = code(task.as_str());
    if pull.state != PrState::Open {
        return Ok(format!(
            "{repo}#{} is {}; only an open pull request is delivered.",
            pull.number, pull.state
        ));
    }
    let facts = pr_facts(gh, repo, pull).await?;
    let req = Request {
        task: task.clone(),
        priority,
        source: Source::GitHub,
        requester: user.to_string(),
        origin: asked.origin(),
        pr: Some(facts),
    };
    let e = &app.engine;
    let requested = delivery::request(
        &e.config,
        &e.policies,
        e.tracker.as_ref(),
        Some(gh),
        &e.store,
        &req,
    )
    .await?;
    Ok(match requested {
        Requested::Queued { id, position } => {
            app.wake.notify_one();
            report::queued(app, repo, pull, id, position).await;
            let ahead = if position <= 1 {
                "it starts as soon as the worker is free".to_string()
            } else {
                format!("{} deliveries ahead of it", position - 1)
            };
            format!(
                "queued the delivery of {key} as {} (position {position}; {ahead}). \
                 Follow it on [the queue page]({}); I'll post the outcome here.",
                link(app, id),
                app.public_url
            )
        }
        Requested::AlreadyQueued { id } => format!(
            "{key} is already queued or running as {}; I'll post its outcome.",
            link(app, id)
        ),
        Requested::Refused(d) => refusal(task.as_str(), &delivery::refusal_lines(&d)),
    })
}

/// The reply to a refused delivery: one line per failed rule.
/// The rules' messages quote what the push or the pull request says (branch names, commit
/// subjects, statuses): they are set in a fenced block, one line each.
pub fn refusal(task: &str, lines: &[String]) -> String {
    format!(
        "the delivery of {} was refused:\n\n{}\n\nFix these, then comment `/deliver` again.",
        code(task),
        fenced(&lines.join("\n"))
    )
}
