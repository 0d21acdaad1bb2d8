//! What the bot does with a pull request's commands and events, and how it words its replies.
//!
//! Every command needs a commenter with write access to the repository (admin, maintain or
//! write on GitHub) or one of `[bot] github_maintainers`; anyone else gets a reply saying so,
//! and nothing happens. `[bot] maintainers` are identities of the git server, not GitHub
//! logins: a GitHub account of the same name gets no say from them. The pull request names its task by its head branch (`[tasks] pattern`).

use anyhow::Context as _;

use super::command::{self, BotCommand, ParseError};
use super::origin::origin;
use super::{App, Handled, Job, report};
use crate::delivery::{self, PrFacts, Request, Requested};
use crate::domain::{DeliveryId, Phase, PrState, Source, State, TaskKey};
use crate::github::{self, GitHub, GitHubRepo, Pull};
use crate::policy::Stage;
use crate::store::DeliveryRow;
use crate::text::markdown::{code, fenced};

fn link(app: &App, id: DeliveryId) -> String {
    format!("[#{id}]({})", app.delivery_url(id))
}

/// The PR facts the `on = "deliver"` rules read: author, head, latest review per reviewer.
async fn pr_facts(gh: &GitHub, repo: &GitHubRepo, pull: &Pull) -> anyhow::Result<PrFacts> {
    let reviews = gh.reviews(repo, pull.number).await?;
    Ok(PrFacts {
        repo: repo.to_string(),
        number: pull.number,
        author: pull.author.clone(),
        head: pull.head_ref.clone(),
        reviews: github::latest_reviews(&reviews),
    })
}

/// Whether the GitHub user `user` may command the bot on `repo`: GitHub's permission
/// answer decides, unless the config names the login in `[bot] github_maintainers`.
async fn may_command(
    app: &App,
    gh: &GitHub,
    repo: &GitHubRepo,
    user: &str,
) -> anyhow::Result<bool> {
    if app
        .config()
        .bot
        .github_maintainers
        .iter()
        .any(|m| m.eq_ignore_ascii_case(user))
    {
        return Ok(true);
    }
    Ok(gh.permission(repo, user).await?.can_write())
}

/// A new comment on a pull request.
pub async fn on_comment(
    app: &App,
    gh: &GitHub,
    repo: &GitHubRepo,
    number: u64,
    user: &str,
    body: &str,
) -> anyhow::Result<Handled> {
    let commands = command::parse(body);
    if commands.is_empty() {
        return Ok(Handled::Ignored("no command in the comment".into()));
    }
    if !may_command(app, gh, repo, user).await? {
        let text = format!(
            "@{user} only people with write access to `{repo}` (or the maintainers named in \
             lockstep.toml) can command lockstep; nothing was done."
        );
        gh.comment(repo, number, &text).await?;
        return Ok(Handled::Acted(format!(
            "`{user}` may not command the bot on {repo}; told so"
        )));
    }
    let pull = gh.pull(repo, number).await?;
    let task = app.config().tasks.task_of(&pull.head_ref).map(TaskKey::new);
    let mut sections = Vec::new();
    let mut done = Vec::new();
    for c in &commands {
        let section = match c {
            Err(e) => unknown(e),
            Ok(cmd) => {
                done.push(cmd.to_string());
                run(app, gh, repo, &pull, task.as_ref(), user, *cmd).await?
            }
        };
        sections.push(section);
    }
    let text = format!("@{user} {}", sections.join("\n\n---\n\n"));
    gh.comment(repo, number, &text).await?;
    Ok(Handled::Acted(if done.is_empty() {
        format!("replied to {repo}#{number} with the help")
    } else {
        format!("ran {} on {repo}#{number}", done.join(", "))
    }))
}

fn unknown(e: &ParseError) -> String {
    format!("{e}.\n\n{}", command::help())
}

fn no_task(pull: &Pull, app: &App) -> String {
    format!(
        "branch {} names no task (`[tasks] pattern` is {}); lockstep delivers tasks, so \
         name the branch like `feature/TASK-123-short-name`.",
        code(&pull.head_ref),
        code(app.config().tasks.pattern.as_str())
    )
}

/// Runs one command; returns its part of the reply.
async fn run(
    app: &App,
    gh: &GitHub,
    repo: &GitHubRepo,
    pull: &Pull,
    task: Option<&TaskKey>,
    user: &str,
    cmd: BotCommand,
) -> anyhow::Result<String> {
    if cmd == BotCommand::Help {
        return Ok(command::help());
    }
    let Some(task) = task else {
        return Ok(no_task(pull, app));
    };
    let key = code(task.as_str());
    let store = &app.engine.store;
    match cmd {
        BotCommand::Help => unreachable!("answered above"),
        BotCommand::Deliver { priority } => {
            deliver(app, gh, repo, pull, task.as_str(), user, priority).await
        }
        BotCommand::Retry => {
            let last = store.latest_of_task(task).await?;
            match last {
                Some(d) if matches!(d.state, State::Failed | State::Cancelled) => {
                    let ready = app
                        .config()
                        .tasks
                        .for_delivery
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "For Delivery".into());
                    let current = crate::tracker::task_with_timeout(
                        app.engine.tracker.as_ref(),
                        task,
                        app.config().tracker.timeout,
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                    if let Some(t) = current
                        && !app.config().tasks.for_delivery.contains(&t.status)
                    {
                        let note = format!(
                            "ready for delivery again: {user} asked for a retry on {}",
                            origin(repo, pull.number)
                        );
                        app.engine
                            .tracker
                            .move_to(task, &ready, &crate::text::note(&note))
                            .await
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                    }
                    let mut text =
                        deliver(app, gh, repo, pull, task.as_str(), user, d.priority).await?;
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
                    "the last delivery of {key} ({}) landed; nothing to retry. \
                     Use `/rollback` to undo it.",
                    link(app, d.id)
                )),
                None => Ok(format!("{key} was never delivered; use `/deliver`.")),
            }
        }
        BotCommand::Cancel => {
            let last = store.latest_of_task(task).await?;
            match last {
                Some(d) if !d.state.is_final() => {
                    let was = store.cancel(d.id).await?;
                    match was {
                        Some(State::Queued) => {
                            report::cancelled_while_queued(app, &d, pull, repo, user).await;
                            Ok(format!(
                                "cancelled {} of {key} before it started.",
                                link(app, d.id)
                            ))
                        }
                        _ => Ok(format!(
                            "{} of {key} stops at its next step; what it deployed is rolled \
                             back and nothing is merged. I'll post the outcome here.",
                            link(app, d.id)
                        )),
                    }
                }
                _ => Ok(format!(
                    "{key} has no queued or running delivery; nothing to cancel."
                )),
            }
        }
        BotCommand::Rollback => {
            let last = store.latest_of_task(task).await?;
            match last {
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
                        "rolling back {} of {key} ({}): its rollback steps run next in the \
                         queue. I'll post the outcome here.",
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
        BotCommand::Status => status(app, task).await,
    }
}

/// `/deliver`: the delivery rules with this PR's facts, then the queue.
async fn deliver(
    app: &App,
    gh: &GitHub,
    repo: &GitHubRepo,
    pull: &Pull,
    task: &str,
    user: &str,
    priority: i64,
) -> anyhow::Result<String> {
    let key = code(task);
    if pull.state != PrState::Open {
        return Ok(format!(
            "{repo}#{} is {}; only an open pull request is delivered.",
            pull.number, pull.state
        ));
    }
    let facts = pr_facts(gh, repo, pull).await?;
    let req = Request {
        task: TaskKey::new(task),
        priority,
        source: Source::GitHub,
        requester: user.to_string(),
        origin: origin(repo, pull.number),
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
        Requested::Refused(d) => refusal(task, &delivery::refusal_lines(&d)),
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

/// `/status`: where the task's delivery is.
async fn status(app: &App, task: &TaskKey) -> anyhow::Result<String> {
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
    let facts = delivery::deliver_facts(
        &e.config,
        e.tracker.name(),
        task,
        current.as_ref(),
        &d.requester,
        Some(&facts),
        &branches,
        &e.config
            .repos
            .iter()
            .map(|r| r.name.clone())
            .collect::<Vec<_>>(),
        Some(d.id),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_text() {
        insta::assert_snapshot!(refusal(
            "TASK-1",
            &[
                "[task-for-delivery] task `TASK-1` is In Progress; move it to For Delivery first"
                    .to_string(),
                "[two-approvals] pull request #3 has 1 approval(s) by people other than its \
                 author; it needs 2"
                    .to_string(),
            ]
        ));
    }

    /// Issue 22: a refusal quotes the rules' messages, which quote branch names and commit
    /// subjects; an unknown argument of a command is quoted back. Neither is live Markdown.
    #[test]
    fn issue22_refusals_and_command_errors_are_never_live_markdown() {
        use crate::text::markdown::{PAYLOADS, assert_inert};
        let evil = PAYLOADS.join(" ");
        assert_inert(&refusal(
            &format!("TASK-1{evil}"),
            &[
                format!("[commit-mentions-task] commit 1a2b3c `{evil}` does not mention `TASK-1`"),
                format!("[branch-names] branch `feature/{evil}` names no task\n# {evil}"),
            ],
        ));
        for arg in ["`@org/team`", "`![x](http://127.0.0.1/x)`", "`<img`src=x>"] {
            for line in [format!("/deliver {arg}"), format!("/cancel {arg}")] {
                for parsed in command::parse(&line) {
                    let e = parsed.expect_err("a bad argument");
                    assert_inert(&unknown(&e));
                }
            }
        }
    }
}
