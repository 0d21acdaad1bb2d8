//! What the bot does with a pull request's commands and events, and how it words its replies.
//!
//! Every command needs a commenter with write access to the repository (admin, maintain or
//! write on GitHub) or one of `[bot] github_maintainers`; anyone else gets a reply saying so,
//! and nothing happens. `[bot] maintainers` are identities of the git server, not GitHub
//! logins: a GitHub account of the same name gets no say from them. The pull request names its task by its head branch (`[tasks] pattern`).

//!
//! Each command has its file: [`deliver`](mod@deliver), `retry`, `cancel`, `rollback`,
//! `status`, `autotest`; `events` holds what a closed pull request or a changed review does.

mod autotest;
mod cancel;
mod deliver;
mod events;
mod retry;
mod rollback;
mod showroom;
mod status;

#[cfg(test)]
use deliver::refusal;
pub use events::{ReviewChange, on_closed, on_review};
pub use rollback::rollback_outcome;

use super::command::{self, BotCommand, ParseError};
use super::origin::origin;
use super::{App, Handled, Job, report};
use crate::delivery::PrFacts;
use crate::domain::{DeliveryId, TaskKey};
use crate::github::{self, GitHub, GitHubRepo, Pull};
use crate::text::markdown::code;

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
    let asked = task.as_ref().map(|task| Asked {
        app,
        gh,
        repo,
        pull: &pull,
        task,
        user,
    });
    let mut sections = Vec::new();
    let mut done = Vec::new();
    for c in &commands {
        let section = match c {
            Err(e) => unknown(e),
            Ok(cmd) => {
                done.push(cmd.to_string());
                run(app, &pull, asked.as_ref(), *cmd).await?
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

/// Who asked what on which pull request, for one command whose task is known.
#[derive(Clone, Copy)]
struct Asked<'a> {
    app: &'a App,
    gh: &'a GitHub,
    repo: &'a GitHubRepo,
    pull: &'a Pull,
    task: &'a TaskKey,
    user: &'a str,
}

impl Asked<'_> {
    /// Where the request came from, as the queue records it.
    fn origin(&self) -> String {
        origin(self.repo, self.pull.number)
    }
}

/// Runs one command; returns its part of the reply. `asked` is `None` when the pull
/// request's branch names no task.
async fn run(
    app: &App,
    pull: &Pull,
    asked: Option<&Asked<'_>>,
    cmd: BotCommand,
) -> anyhow::Result<String> {
    if cmd == BotCommand::Help {
        return Ok(command::help());
    }
    let Some(asked) = asked else {
        return Ok(no_task(pull, app));
    };
    match cmd {
        BotCommand::Help => Ok(command::help()),
        BotCommand::Deliver { priority } => deliver::deliver(asked, priority).await,
        BotCommand::Retry => retry::retry(asked).await,
        BotCommand::Cancel => cancel::cancel(asked).await,
        BotCommand::Rollback => rollback::rollback(asked).await,
        BotCommand::Status => status::status(app, asked.task).await,
        BotCommand::Autotest => autotest::autotest(asked).await,
        BotCommand::Showroom { down } => showroom::showroom(asked, down).await,
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
