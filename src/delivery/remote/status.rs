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
        let mut github = match self.github_checks(&r, &sha, lines) {
            Ok(g) => g,
            Err(ran) => return Ok(ran),
        };
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
            if let Some(g) = &mut github {
                g.read(&sha, lines).await;
            }
            let on_github = github.as_ref().map_or(&[][..], |g| &g.seen[..]);
            let statuses = status::merge(self.store.commit_statuses(&sha).await?, on_github);
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
                    return ended(StepOutcome::Failed(None), failed_why(&on, &s), lines);
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

impl Engine {
    /// The reader of GitHub's statuses and check runs of the candidate, for a repository on
    /// GitHub when the config has `[github]`; `Err` with the step's end when it cannot be made.
    fn github_checks(
        &self,
        r: &RemoteStep<'_>,
        sha: &str,
        lines: &mut StepLog,
    ) -> Result<Option<GitHubChecks>, Ran> {
        let (Some(gh), Some(name)) = (&self.config.github, r.repo.github.as_deref()) else {
            return Ok(None);
        };
        match (
            crate::github::GitHub::api_only(&self.config, gh),
            crate::github::GitHubRepo::parse(name),
        ) {
            (Ok(client), Some(name)) => {
                lines.push(format!(
                    "lockstep: reads the statuses and check runs of {name}@{sha} on GitHub too"
                ));
                Ok(Some(GitHubChecks {
                    client,
                    name,
                    seen: Vec::new(),
                    read_at: None,
                    error: String::new(),
                }))
            }
            (Err(e), _) => {
                let why = format!("could not start: cannot read GitHub's checks: {e:#}");
                lines.push(format!("lockstep: {why}"));
                Err(Ran::not_started(why))
            }
            (_, None) => Ok(None),
        }
    }
}

/// GitHub's statuses and check runs of a sha, read every [`GITHUB_POLL`]: what was seen last,
/// and the last error (said once in the log; the statuses posted to lockstep still count).
struct GitHubChecks {
    client: crate::github::GitHub,
    name: crate::github::GitHubRepo,
    seen: Vec<status::CommitStatus>,
    read_at: Option<std::time::Instant>,
    error: String,
}

impl GitHubChecks {
    /// Reads them again if [`GITHUB_POLL`] has passed since the last read.
    async fn read(&mut self, sha: &str, lines: &mut StepLog) {
        if self.read_at.is_some_and(|t| t.elapsed() < GITHUB_POLL) {
            return;
        }
        self.read_at = Some(std::time::Instant::now());
        match self.client.checks(&self.name, sha).await {
            Ok(checks) => {
                self.seen = status::from_github(checks);
                self.error.clear();
            }
            Err(e) => {
                let e = crate::text::escape(&format!("{e:#}")).to_string();
                if e != self.error {
                    lines.push(format!("lockstep: {e}"));
                    self.error = e;
                }
            }
        }
    }
}

/// Why a step failed on a status `s` that is `failure` or `error`: its context, state,
/// description and link, escaped and clipped.
fn failed_why(on: &str, s: &status::CommitStatus) -> String {
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
    why
}
