//! Telling GitHub how a delivery goes: the `lockstep` commit status (pending while queued and
//! running, then success or failure, linking to the delivery's page) and, for a delivery
//! requested from a pull request, a final comment with the outcome.
//!
//! Reports are best effort: GitHub being down never changes a delivery; it is logged.

use super::App;
use super::origin::parse_origin;
use crate::delivery::Cause;
use crate::delivery::steps;
use crate::domain::{DeliveryId, Event, Stage, State, StepState};
use crate::github::{GitHub, GitHubRepo, Pull, StatusState};
use crate::store::{DeliveryRow, JournalRow, RepoRow, StepRow};
use crate::text::markdown::{cell, code, fenced};
use crate::text::{clip, escape};

/// At most this much of a failure's reason goes into a comment (its log excerpt is bounded
/// by [`crate::text::Tail`]).
pub const REASON_BYTES: usize = 1000;

async fn set_status(
    gh: &GitHub,
    repo: &GitHubRepo,
    sha: &str,
    state: StatusState,
    description: &str,
    url: &str,
) {
    if let Err(e) = gh.status(repo, sha, state, description, url).await {
        tracing::warn!("{e:#}");
    }
}

/// A delivery was queued from a pull request.
pub async fn queued(app: &App, repo: &GitHubRepo, pull: &Pull, id: DeliveryId, position: usize) {
    let Some(gh) = &app.github else { return };
    let what = format!("queued as #{id} (position {position})");
    set_status(
        gh,
        repo,
        &pull.head_sha,
        StatusState::Pending,
        &what,
        &app.delivery_url(id),
    )
    .await;
}

/// A delivery queued from a pull request was cancelled before it started.
pub async fn cancelled_while_queued(
    app: &App,
    d: &DeliveryRow,
    pull: &Pull,
    repo: &GitHubRepo,
    by: &str,
) {
    let Some(gh) = &app.github else { return };
    set_status(
        gh,
        repo,
        &pull.head_sha,
        StatusState::Error,
        &format!("#{} cancelled by {by} before it started", d.id),
        &app.delivery_url(d.id),
    )
    .await;
}

/// The worker took a delivery.
pub async fn started(app: &App, d: &DeliveryRow) {
    let Some(gh) = &app.github else { return };
    let Some((repo, number)) = parse_origin(&d.origin) else {
        return;
    };
    match gh.pull(&repo, number).await {
        Ok(pull) => {
            set_status(
                gh,
                &repo,
                &pull.head_sha,
                StatusState::Pending,
                &format!(
                    "delivering #{}: rebase, build, test, deploy, verify, merge",
                    d.id
                ),
                &app.delivery_url(d.id),
            )
            .await
        }
        Err(e) => tracing::warn!("{e:#}"),
    }
}

/// Sets the `lockstep` status on every delivered branch head of a delivery, and on the head
/// of the pull request it was asked from; returns that pull request, if any.
async fn statuses(
    app: &App,
    gh: &GitHub,
    d: &DeliveryRow,
    repos: &[RepoRow],
    status: StatusState,
    description: &str,
) -> Option<(GitHubRepo, u64)> {
    let url = app.delivery_url(d.id);
    let origin = parse_origin(&d.origin);
    let mut origin_covered = false;
    for r in repos {
        let Some(full) = app
            .config()
            .repo(r.repo.as_str())
            .and_then(|c| c.github.clone())
        else {
            continue;
        };
        let Some(gh_repo) = GitHubRepo::parse(&full) else {
            continue;
        };
        if origin.as_ref().is_some_and(|(o, _)| o == &gh_repo) {
            origin_covered = true;
        }
        set_status(gh, &gh_repo, &r.branch_sha, status, description, &url).await;
    }
    let (repo, number) = origin?;
    if !origin_covered {
        match gh.pull(&repo, number).await {
            Ok(pull) => set_status(gh, &repo, &pull.head_sha, status, description, &url).await,
            Err(e) => tracing::warn!("{e:#}"),
        }
    }
    Some((repo, number))
}

/// A watched delivery was rolled back on an alert (or a gate of the watch): the statuses turn
/// to failure, and the pull request it was asked from gets a comment quoting the alert.
pub async fn rolled_back_while_watched(
    app: &App,
    d: &DeliveryRow,
    cause: &Cause,
    result: &anyhow::Result<String>,
) {
    let Some(gh) = &app.github else { return };
    let repos = app.engine.store.repos(d.id).await.unwrap_or_default();
    let on = match cause {
        Cause::Gate { .. } => "a gate",
        _ => "an alert",
    };
    let description = match result {
        Ok(_) => format!("#{} rolled back on {on}", d.id),
        Err(_) => format!("#{}: the rollback on {on} failed", d.id),
    };
    let Some((repo, number)) =
        statuses(app, gh, d, &repos, StatusState::Failure, &description).await
    else {
        return;
    };
    let body = alert_comment(&app.delivery_url(d.id), d, cause, result);
    if let Err(e) = gh.comment(&repo, number, &body).await {
        tracing::warn!("cannot report the rollback of #{} on an alert: {e:#}", d.id);
    }
}

/// The comment on the pull request of a watched delivery rolled back.
pub fn alert_comment(
    url: &str,
    d: &DeliveryRow,
    cause: &Cause,
    result: &anyhow::Result<String>,
) -> String {
    let what = match cause {
        Cause::Alert { quote, .. } => format!("{} fired", code(quote)),
        Cause::Gate { why } => format!("{} during the watch", code(&escape(why))),
        Cause::Manual => "a rollback was asked for".into(),
    };
    let head = format!(
        "🚨 {what} while {} ([#{}]({url})) was watched after it landed.",
        code(d.task.as_str()),
        d.id
    );
    match result {
        Ok(note) => format!(
            "{head}\n\nlockstep rolled it back: the rollback steps ran in reverse order, \
             every repository of the delivery got a revert commit, and the task went back to \
             its owner.\n\n{}",
            fenced(&clip(&escape(note), REASON_BYTES))
        ),
        Err(e) => format!(
            "{head}\n\nThe rollback failed: {}\n\nSee the journal on the delivery page, fix \
             it, then run `lockstep rollback {} --revert`.",
            code(&clip(&escape(&format!("{e:#}")), REASON_BYTES)),
            d.id
        ),
    }
}

/// Why a delivery failed, from its journal and steps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureFacts {
    pub phase: String,
    pub repo: String,
    pub message: String,
    pub log_tail: String,
}

/// The last failure the journal recorded, with the log tail of the step that failed.
pub fn failure_facts(journal: &[JournalRow], steps: &[StepRow]) -> FailureFacts {
    let Some(f) = journal
        .iter()
        .rev()
        .find(|j| j.event == Event::Failed && j.stage != Stage::Done)
    else {
        return FailureFacts::default();
    };
    let log_tail = steps
        .iter()
        .rev()
        .find(|s| {
            Stage::Phase(s.step) == f.stage && s.repo == *f.repo && s.outcome != StepState::Passed
        })
        .map(|s| steps::tail(std::path::Path::new(&s.log_path)))
        .unwrap_or_default();
    FailureFacts {
        phase: f.stage.to_string(),
        repo: f.repo.clone(),
        message: f.detail.clone(),
        log_tail,
    }
}

/// The final comment on the pull request a delivery was requested from.
pub fn outcome_comment(
    url: &str,
    d: &DeliveryRow,
    state: State,
    repos: &[RepoRow],
    upstream_of: &dyn Fn(&str) -> String,
    failure: &FailureFacts,
) -> String {
    let took = match (d.started_at, d.finished_at) {
        (Some(a), Some(b)) => format!(" in {}", super::page::duration(b - a)),
        _ => String::new(),
    };
    let who = if d.requester.is_empty() {
        String::new()
    } else {
        format!("@{} ", d.requester)
    };
    match state {
        State::Delivered => {
            let mut s = format!(
                "{who}✅ delivered {} ([#{}]({url})){took}: every repository advanced together.\n\n\
                 | repository | branch | landed |\n|---|---|---|\n",
                code(d.task.as_str()),
                d.id
            );
            for r in repos {
                s.push_str(&format!(
                    "| {} | {} | {} on {} |\n",
                    cell(r.repo.as_str()),
                    cell(&r.branch),
                    cell(crate::git::short(&r.rebased_sha)),
                    cell(&upstream_of(r.repo.as_str()))
                ));
            }
            s
        }
        _ => {
            let (icon, verb) = if state == State::Cancelled {
                ("⏹️", "was cancelled")
            } else {
                ("❌", "failed")
            };
            let mut s = format!(
                "{who}{icon} the delivery of {} ([#{}]({url})) {verb}",
                code(d.task.as_str()),
                d.id
            );
            if !failure.phase.is_empty() {
                s.push_str(&format!(" in the **{}** phase", failure.phase));
                if !failure.repo.is_empty() {
                    s.push_str(&format!(" of {}", code(&failure.repo)));
                }
            }
            if let (Some(a), Some(b)) = (d.started_at, d.finished_at) {
                s.push_str(&format!(" after {}", super::page::duration(b - a)));
            }
            s.push_str(".\n\n");
            let why = if failure.message.is_empty() {
                &d.error
            } else {
                &failure.message
            };
            if !why.is_empty() {
                s.push_str(&format!(
                    "{}\n\n",
                    fenced(&clip(&escape(why), REASON_BYTES))
                ));
            }
            s.push_str(
                "Nothing was merged, and what was deployed was rolled back; the task went back \
                 to its owner.",
            );
            if !failure.log_tail.trim().is_empty() {
                s.push_str(&format!(
                    "\n\nThe last lines of the log:\n\n{}",
                    fenced(&failure.log_tail)
                ));
            }
            s.push_str("\n\nFix it, then comment `/retry`.");
            s
        }
    }
}

/// A delivery ended: statuses on every delivered branch, the outcome on the PR.
pub async fn finished(app: &App, d: &DeliveryRow, state: State) {
    let store = &app.engine.store;
    let journal = store.journal_of(d.id).await.unwrap_or_default();
    app.metrics.delivery_finished(&journal);
    let Some(gh) = &app.github else { return };
    let d = store
        .delivery(d.id)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| d.clone());
    let repos = store.repos(d.id).await.unwrap_or_default();
    let steps = store.steps(d.id).await.unwrap_or_default();
    // The log tail is read from disk: off the async threads.
    let failure = tokio::task::spawn_blocking(move || failure_facts(&journal, &steps))
        .await
        .unwrap_or_default();
    let url = app.delivery_url(d.id);
    let (status, description) = match state {
        State::Delivered => (StatusState::Success, format!("delivered by #{}", d.id)),
        State::Cancelled => (StatusState::Error, format!("#{} was cancelled", d.id)),
        _ if !failure.phase.is_empty() => (
            StatusState::Failure,
            format!("#{} failed in {}", d.id, failure.phase),
        ),
        _ => (StatusState::Failure, format!("#{} failed", d.id)),
    };
    let Some((repo, number)) = statuses(app, gh, &d, &repos, status, &description).await else {
        return;
    };
    let config = app.config();
    let upstream_of = |name: &str| {
        config
            .repo(name)
            .map_or_else(|| "?".to_string(), |r| r.upstream.clone())
    };
    let body = outcome_comment(&url, &d, state, &repos, &upstream_of, &failure);
    if let Err(e) = gh.comment(&repo, number, &body).await {
        tracing::warn!("cannot post the outcome of #{}: {e:#}", d.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Phase, TaskKey};

    fn d(state: State) -> DeliveryRow {
        let mut d = crate::server::fixtures::delivery(state, "test");
        d.id = crate::domain::DeliveryId(4);
        d.finished_at = Some(73_000);
        d.error = "delivery failed in test (api): `test` exited with 1".into();
        d
    }

    /// The comment on delivery #4, failed as `f` says.
    fn failed_comment(f: &FailureFacts) -> String {
        outcome_comment(
            "http://q/deliveries/4",
            &d(State::Failed),
            State::Failed,
            &[],
            &|_| "master".into(),
            f,
        )
    }

    #[test]
    fn failure_comment() {
        let journal = [JournalRow {
            at: 0,
            stage: Phase::Test.into(),
            repo: "api".into(),
            event: Event::Failed,
            detail: "`test` exited with 1".into(),
        }];
        let mut f = failure_facts(&journal, &[]);
        assert_eq!((f.phase.as_str(), f.repo.as_str()), ("test", "api"));
        f.log_tail = "testing api\nassertion failed: login ``` works".into();
        let text = failed_comment(&f);
        insta::assert_snapshot!(text);
    }

    /// Issue 10: what a step printed reaches the comment escaped and bounded.
    #[test]
    fn issue10_a_failure_comment_is_escaped_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("test.log");
        let mut text = "x".repeat(3_000_000);
        text.push_str("\n\x1b[2J\x1b]0;owned\x07fake green\n");
        std::fs::write(&log, &text).unwrap();
        let journal = [JournalRow {
            at: 0,
            stage: Phase::Test.into(),
            repo: "api".into(),
            event: Event::Failed,
            detail: format!("`test` exited with 1: \x1b[2J{}", "y".repeat(100_000)),
        }];
        let steps = [StepRow {
            log_path: log.display().to_string(),
            ..crate::server::fixtures::step(1, "api", "test", "failed")
        }];
        let f = failure_facts(&journal, &steps);
        let text = failed_comment(&f);
        assert!(text.len() < 8_000, "{} bytes", text.len());
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text}");
        assert!(text.contains("\\x1b]0;owned\\x07fake green"), "{text}");
        assert!(text.contains("[… 2999600 bytes cut] xxx"), "{text}");
    }

    /// Issue 22: every comment of this file, with untrusted text carrying a mention, an
    /// image, a link, HTML and backticks in each place it can come from: none of it is live.
    #[test]
    fn issue22_untrusted_text_is_never_live_markdown() {
        use crate::text::markdown::{PAYLOADS, assert_inert};
        let evil = PAYLOADS.join(" ");
        let journal = [JournalRow {
            at: 0,
            stage: Stage::Phase(Phase::Test),
            repo: "api".into(),
            event: Event::Failed,
            detail: format!("`test` exited with 1: assertion failed: {evil}\n# {evil}"),
        }];
        let mut f = failure_facts(&journal, &[]);
        f.log_tail = format!("{evil}\n```\n{evil}");
        assert_inert(&failed_comment(&f));
        let mut cancelled = d(State::Cancelled);
        cancelled.error = format!("cancelled: {evil}");
        let text = outcome_comment(
            "http://q/deliveries/4",
            &cancelled,
            State::Cancelled,
            &[],
            &|_| "master".into(),
            &FailureFacts::default(),
        );
        assert_inert(&text);
        let mut delivered = d(State::Delivered);
        delivered.task = TaskKey::new(format!("TASK-1{evil}"));
        let repos = [RepoRow {
            repo: "api".into(),
            position: 0,
            branch: format!("feature/TASK-1-{evil}|{evil}\\|{evil}"),
            branch_sha: "a".repeat(40),
            base_sha: "b".repeat(40),
            rebased_sha: "c".repeat(40),
            deployed: true,
            merged: true,
            rolled_back: false,
        }];
        let text = outcome_comment(
            "http://q/deliveries/4",
            &delivered,
            State::Delivered,
            &repos,
            &|_| format!("master{evil}"),
            &FailureFacts::default(),
        );
        assert_inert(&text);

        let alert: crate::monitor::alert::Alert = serde_json::from_value(serde_json::json!({
            "status": "firing",
            "labels": {"alertname": evil, "lockstep_repo": "api", "team": evil},
            "annotations": {"summary": evil},
            "startsAt": "2026-11-30T08:50:01Z",
            "fingerprint": "f",
        }))
        .unwrap();
        let quote = alert.quote();
        let causes = [
            Cause::Alert {
                quote: quote.clone(),
                fired_ms: None,
            },
            Cause::Gate {
                why: format!("gate `errors`: {evil}"),
            },
            Cause::Manual,
        ];
        for cause in &causes {
            for result in [
                Ok(format!(
                    "rolled back by lockstep (#4) on the {quote}; reverted: api {evil}"
                )),
                Err(anyhow::anyhow!("cannot revert: {evil}")),
            ] {
                assert_inert(&alert_comment(
                    "http://q/deliveries/4",
                    &delivered,
                    cause,
                    &result,
                ));
            }
        }
    }

    #[test]
    fn success_comment() {
        let repos = [RepoRow {
            repo: "api".into(),
            position: 0,
            branch: "feature/TASK-1-login".into(),
            branch_sha: "a".repeat(40),
            base_sha: "b".repeat(40),
            rebased_sha: "c".repeat(40),
            deployed: true,
            merged: true,
            rolled_back: false,
        }];
        let text = outcome_comment(
            "http://q/deliveries/4",
            &d(State::Delivered),
            State::Delivered,
            &repos,
            &|_| "master".into(),
            &FailureFacts::default(),
        );
        insta::assert_snapshot!(text);
    }
}
