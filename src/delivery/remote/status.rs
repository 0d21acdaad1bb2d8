//! A step on a status runner: the candidate's push triggers the CI, which is told nothing
//! else (not who the step is for, nor its stage); lockstep waits for the commit statuses the
//! step lists on the candidate's sha.

use std::time::Duration;

use super::super::engine::Engine;
use super::super::steps::StepOutcome;
use super::{Ran, RemoteStep, StepLog, WHY_BYTES};
use crate::config::{Runner, RunnerStep};
use crate::runner::status::{self, Verdict};

/// How often a step on a status runner reads the statuses of its sha.
const STATUS_POLL: Duration = Duration::from_millis(300);

/// How often it reads GitHub's statuses and check runs of the sha (two requests a time,
/// well within GitHub's hourly limit for a window of steps).
const GITHUB_POLL: Duration = Duration::from_secs(3);

impl Engine {
    /// Pushes the candidate (which triggers the CI) and waits until every context the step
    /// lists is `success` on its sha, one is `failure` or `error`, no status at all arrived
    /// within `start_within`, or `wait` passed.
    pub(super) async fn on_status(
        &self,
        step: &RunnerStep,
        runner: &Runner,
        r: RemoteStep<'_>,
        lines: &mut StepLog,
    ) -> anyhow::Result<Ran> {
        let contexts = step.contexts.clone().unwrap_or_default();
        let sha = r.sha.to_string();
        let phase = r.phase;
        let branch = &r.branch;
        let listed = contexts
            .iter()
            .map(|c| format!("`{}`", crate::text::escape(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let on = format!("on runner `{}`", step.runner);
        lines.push(format!(
            "lockstep: {phase} waits {on} for the statuses {listed} of {sha} (pushed as {branch})"
        ));
        if let Err(ran) = self.push_remote(&r, lines).await? {
            return Ok(ran);
        }
        self.note(&r, &format!("{}: waits for {listed} on {sha}", step.runner))
            .await?;
        // A repository on GitHub also has GitHub's statuses and check runs of the sha read.
        let github = match (&self.config.github, r.repo.github.as_deref()) {
            (Some(gh), Some(name)) => match (
                crate::github::GitHub::api_only(&self.config, gh),
                crate::github::GitHubRepo::parse(name),
            ) {
                (Ok(client), Some(name)) => {
                    lines.push(format!(
                        "lockstep: reads the statuses and check runs of {name}@{sha} on GitHub too"
                    ));
                    Some((client, name))
                }
                (Err(e), _) => {
                    let why = format!("could not start: cannot read GitHub's checks: {e:#}");
                    lines.push(format!("lockstep: {why}"));
                    return Ok(Ran::not_started(why));
                }
                (_, None) => None,
            },
            _ => None,
        };
        let mut on_github = Vec::new();
        let mut github_read: Option<std::time::Instant> = None;
        let mut github_error = String::new();
        let wait = runner.wait.min(self.config.delivery.step_timeout);
        let started = std::time::Instant::now();
        let stopped = self.stopped(&r);
        tokio::pin!(stopped);
        let ended = |outcome: StepOutcome, why: String, lines: &mut StepLog| {
            lines.push(format!("lockstep: {why}"));
            Ok(Ran {
                outcome,
                why,
                tail: String::new(),
            })
        };
        loop {
            tokio::select! {
                () = &mut stopped => {
                    return ended(StepOutcome::Stopped, format!("was stopped {on}"), lines);
                }
                () = tokio::time::sleep(STATUS_POLL) => {}
            }
            if let Some((gh, name)) = &github
                && github_read.is_none_or(|t| t.elapsed() >= GITHUB_POLL)
            {
                github_read = Some(std::time::Instant::now());
                match gh.checks(name, &sha).await {
                    Ok(checks) => {
                        on_github = status::from_github(checks);
                        github_error.clear();
                    }
                    // Said once in the log; the statuses posted to lockstep still count.
                    Err(e) => {
                        let e = crate::text::escape(&format!("{e:#}")).to_string();
                        if e != github_error {
                            lines.push(format!("lockstep: {e}"));
                            github_error = e;
                        }
                    }
                }
            }
            let statuses = status::merge(self.store.commit_statuses(&sha).await?, &on_github);
            match status::judge(&contexts, &statuses) {
                Verdict::Passed => {
                    lines.push(format!("lockstep: every status is `success` on {sha}"));
                    return Ok(Ran {
                        outcome: StepOutcome::Passed,
                        why: String::new(),
                        tail: String::new(),
                    });
                }
                Verdict::Failed(s) => {
                    let mut why = format!(
                        "failed {on}: status `{}` is `{}`",
                        crate::text::escape(&s.context),
                        s.state.as_str()
                    );
                    if let Some(text) = &s.description {
                        why.push_str(&format!(
                            ": {}",
                            crate::text::clip(&crate::text::escape(text), WHY_BYTES)
                        ));
                    }
                    if let Some(url) = &s.target_url {
                        why.push_str(&format!(
                            " ({})",
                            crate::text::clip(&crate::text::escape(url), WHY_BYTES)
                        ));
                    }
                    return ended(StepOutcome::Failed(None), why, lines);
                }
                Verdict::Waiting { seen } => {
                    let elapsed = started.elapsed();
                    if !seen && elapsed >= runner.start_within {
                        let why = format!(
                            "was never started {on}: no status arrived for {sha} within {}",
                            crate::config::humanize(runner.start_within)
                        );
                        return ended(StepOutcome::NotStarted(why.clone()), why, lines);
                    }
                    if elapsed >= wait {
                        let why = format!(
                            "waited {} {on} for {listed} and gave up",
                            crate::config::humanize(wait)
                        );
                        return ended(StepOutcome::TimedOut(wait), why, lines);
                    }
                }
            }
        }
    }
}
