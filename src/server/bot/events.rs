//! What a pull request's events (closed, a review submitted or dismissed) do to the delivery
//! it asked for that still waits.

use super::{App, Handled, link, origin, pr_facts, report};
use crate::delivery;
use crate::domain::State;
use crate::github::{GitHub, GitHubRepo, Pull};
use crate::policy::Stage;
use crate::store::DeliveryRow;
use crate::text::markdown::{code, fenced};

/// The task of a pull request and its delivery requested from that pull request that still
/// waits; or why there is nothing to act on.
async fn waiting_delivery<'p>(
    app: &App,
    repo: &GitHubRepo,
    pull: &'p Pull,
) -> anyhow::Result<Result<(&'p str, DeliveryRow), Handled>> {
    let Some(task) = app.config().tasks.task_of(&pull.head_ref) else {
        return Ok(Err(Handled::Ignored("the branch names no task".into())));
    };
    let origin = origin(repo, pull.number);
    let waiting = app
        .engine
        .store
        .queued()
        .await?
        .into_iter()
        .find(|d| d.task == task && d.origin == origin);
    Ok(match waiting {
        Some(d) => Ok((task, d)),
        None => Err(Handled::Ignored(
            "no delivery of this pull request waits".into(),
        )),
    })
}

/// A pull request was closed: its queued delivery no longer has a reason to run.
pub async fn on_closed(
    app: &App,
    gh: &GitHub,
    repo: &GitHubRepo,
    pull: &Pull,
) -> anyhow::Result<Handled> {
    let number = pull.number;
    let (task, d) = match waiting_delivery(app, repo, pull).await? {
        Ok(found) => found,
        Err(ignored) => return Ok(ignored),
    };
    let key = code(task);
    if app.engine.store.cancel(d.id).await? == Some(State::Queued) {
        let text = format!(
            "this pull request was closed, so its queued delivery {} of {key} was cancelled.",
            link(app, d.id)
        );
        gh.comment(repo, number, &text).await?;
        return Ok(Handled::Acted(format!(
            "cancelled #{} ({repo}#{number} closed)",
            d.id
        )));
    }
    Ok(Handled::Ignored("the delivery had already started".into()))
}

/// What happened to a review, as its webhook tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewChange {
    /// Who submitted or dismissed it (the event's sender), when the event says.
    pub by: Option<String>,
    pub dismissed: bool,
}

impl ReviewChange {
    /// `` `carol` dismissed a review ``, for the reply.
    fn words(&self) -> String {
        match &self.by {
            Some(who) => format!(
                "{} {} a review",
                code(who),
                if self.dismissed {
                    "dismissed"
                } else {
                    "submitted"
                }
            ),
            None => "the reviews changed".to_string(),
        }
    }
}

/// A review was submitted or dismissed: a queued delivery of this pull request is checked
/// against the delivery rules again, and cancelled if they no longer hold.
pub async fn on_review(
    app: &App,
    gh: &GitHub,
    repo: &GitHubRepo,
    pull: &Pull,
    change: &ReviewChange,
) -> anyhow::Result<Handled> {
    let number = pull.number;
    let (task, d) = match waiting_delivery(app, repo, pull).await? {
        Ok(found) => found,
        Err(ignored) => return Ok(ignored),
    };
    let facts = pr_facts(gh, repo, pull).await?;
    let e = &app.engine;
    let current =
        crate::tracker::task_with_timeout(e.tracker.as_ref(), &d.task, e.config.tracker.timeout)
            .await
            .map_err(|err| anyhow::anyhow!("{err}"))?;
    let branches = delivery::branches_for(&e.config, &e.policies, Some(gh), task).await?;
    let repos: Vec<_> = e.config.repos.iter().map(|r| r.name.clone()).collect();
    let facts = delivery::deliver_facts(
        &e.config,
        &delivery::Judged {
            tracker: e.tracker.name(),
            key: task,
            task: current.as_ref(),
            requester: &d.requester,
            pr: Some(&facts),
            branches: &branches,
            repos: &repos,
            delivery: Some(d.id),
        },
    );
    let decision = e.policies.evaluate(Stage::Deliver, &facts);
    crate::audit::record(
        &e.config,
        &crate::audit::Entry::delivery(
            Stage::Deliver,
            &d.task,
            &d.requester,
            Some(d.id),
            &decision,
            &e.policies.revision,
        ),
    );
    if decision.accepted() {
        return Ok(Handled::Ignored("the delivery rules still hold".into()));
    }
    if e.store.cancel(d.id).await? != Some(State::Queued) {
        return Ok(Handled::Ignored("the delivery had already started".into()));
    }
    let lines = delivery::refusal_lines(&decision);
    let key = code(task);
    let mut text = format!(
        "{} and the delivery rules no longer hold, so the queued delivery {} of {key} was \
         cancelled:\n",
        change.words(),
        link(app, d.id)
    );
    text.push_str(&format!(
        "\n{}\n\nComment `/deliver` once they hold again.",
        fenced(&lines.join("\n"))
    ));
    gh.comment(repo, number, &text).await?;
    report::cancelled_while_queued(app, &d, pull, repo, "a review").await;
    let after = match change.by {
        Some(_) => change.words(),
        None => "a review".to_string(),
    };
    Ok(Handled::Acted(format!(
        "cancelled #{}: the rules no longer hold after {after}",
        d.id
    )))
}
