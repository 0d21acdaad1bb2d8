//! A step on a Buildbot runner: the candidate pushed, the build forced with who it is for
//! and where it runs (`lockstep_purpose`, `lockstep_env`, `lockstep_vars`), and followed to
//! its end.

use super::super::engine::{Engine, repo_url};
use super::super::steps::StepOutcome;
use super::{Purpose, Ran, RemoteStep, StepLog, WHY_BYTES, vars_json};
use crate::config::{Runner, RunnerStep};
use crate::domain::Event;
use crate::runner::{Buildbot, Job, Outcome};

impl Engine {
    /// Pushes the candidate, forces the build and follows it (or follows the build request a
    /// delivery's killed worker forced before a restart).
    pub(super) async fn on_buildbot(
        &self,
        on: &RunnerStep,
        config: &Runner,
        r: RemoteStep<'_>,
        lines: &mut StepLog,
    ) -> anyhow::Result<Ran> {
        let bb = match Buildbot::new(&on.runner, config) {
            Ok(bb) => bb,
            Err(e) => {
                let why = format!("could not start: {e:#}");
                lines.push(format!("lockstep: {why}"));
                return Ok(Ran::not_started(why));
            }
        };
        let phase = r.phase;
        let job = self.job_of(on, &r);
        lines.push(format!(
            "lockstep: {phase} runs on {}, builder `{}`, of {} at {} ({} in `{}`)",
            bb.describe(),
            job.builder,
            r.branch,
            job.revision,
            job.purpose,
            crate::text::escape(r.env),
        ));
        let resumed = match r.purpose {
            Purpose::Delivery { resumed, .. } => resumed,
            _ => None,
        };
        let request = match resumed {
            Some(request) => {
                lines.push(format!(
                    "lockstep: follows build request {request}, forced before a restart"
                ));
                request
            }
            None => {
                if let Err(ran) = self.push_remote(&r, lines).await? {
                    return Ok(ran);
                }
                match bb.force(&job).await {
                    Ok(request) => request,
                    Err(e) => {
                        let why = format!("could not start on {}: {e}", bb.describe());
                        lines.push(format!("lockstep: {why}"));
                        return Ok(Ran::not_started(why));
                    }
                }
            }
        };
        match &r.purpose {
            Purpose::Delivery { step, .. } => {
                self.store
                    .step_runner_build(*step, &format!("{} {request} {}", on.runner, job.revision))
                    .await?
            }
            // Stopped by the restart when a killed worker leaves it running; read by `logs`.
            Purpose::Autotest(id) => {
                self.store
                    .autotest_runner_build(
                        *id,
                        &format!("{phase} {} {request} {}", on.runner, job.revision),
                    )
                    .await?
            }
            Purpose::Showroom(_) => {}
        }
        let request_url = bb.request_url(request);
        lines.push(format!("lockstep: build request {request}: {request_url}"));
        self.note(
            &r,
            &format!(
                "{}: build request {request_url}{}",
                on.runner,
                if resumed.is_some() {
                    " (followed again after a restart)"
                } else {
                    ""
                }
            ),
        )
        .await?;
        let wait = bb.wait.min(self.config.delivery.step_timeout);
        // Each build the request gets is journaled (a delivery's) as soon as the master names
        // it, and said in the local log when it ends.
        let (built_tx, journal) = self.journal_builds(&r, &on.runner);
        let outcome = bb
            .follow(request, &job.revision, wait, self.stopped(&r), |b| {
                let _ = built_tx.send(b.url.clone());
            })
            .await;
        drop(built_tx);
        for url in journal.await.unwrap_or_default() {
            lines.push(format!("lockstep: build {url}"));
        }
        let on = format!("on runner `{}`", on.runner);
        Ok(judge(outcome, &on, &request_url, lines))
    }

    /// The job a step is for the CI: the candidate, why it runs, and who and where it is for.
    fn job_of(&self, on: &RunnerStep, r: &RemoteStep<'_>) -> Job {
        let phase = r.phase;
        Job {
            builder: on.builder.clone().unwrap_or_default(),
            repository: r
                .repo
                .ci_url
                .clone()
                .unwrap_or_else(|| repo_url(&self.config, r.repo)),
            branch: r.branch.clone(),
            revision: r.sha.to_string(),
            reason: format!(
                "lockstep {} {}: {phase} of {}",
                r.purpose.describe(),
                r.task,
                r.repo.name
            ),
            task: r.task.to_string(),
            delivery: match &r.purpose {
                Purpose::Delivery { id, .. } => id.to_string(),
                _ => String::new(),
            },
            phase: phase.as_str().into(),
            repo: r.repo.name.to_string(),
            purpose: r.purpose.as_str().into(),
            env: r.env.to_string(),
            vars: vars_json(&r.vars),
        }
    }

    /// A channel for the builds a request gets, and the task that journals each (for a
    /// delivery) as soon as the master names it; the task returns their URLs once the
    /// channel closes.
    fn journal_builds(
        &self,
        r: &RemoteStep<'_>,
        runner: &str,
    ) -> (
        tokio::sync::mpsc::UnboundedSender<String>,
        tokio::task::JoinHandle<Vec<String>>,
    ) {
        let (built_tx, mut built_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let store = self.store.clone();
        let delivery = match r.purpose {
            Purpose::Delivery { id, .. } => Some(id),
            _ => None,
        };
        let (phase, repo, runner) = (r.phase, r.repo.name.to_string(), runner.to_string());
        let journal = tokio::spawn(async move {
            let mut urls = Vec::new();
            while let Some(url) = built_rx.recv().await {
                if let Some(id) = delivery {
                    let detail = format!("{runner}: build {url}");
                    if let Err(e) = store
                        .journal(id, phase, &repo, Event::OnRunner, &detail)
                        .await
                    {
                        tracing::warn!("cannot journal the build {url}: {e:#}");
                    }
                }
                urls.push(url);
            }
            urls
        });
        (built_tx, journal)
    }
}

/// What a followed build comes to: the step's outcome, the reason it did not pass and the end
/// of the failing step's log; each said in the local log too.
fn judge(outcome: Outcome, on: &str, request_url: &str, lines: &mut StepLog) -> Ran {
    let (outcome, why, tail) = match outcome {
        Outcome::Passed(b) => {
            lines.push(format!("lockstep: build {} passed", b.url));
            (StepOutcome::Passed, String::new(), String::new())
        }
        Outcome::Failed {
            build,
            result,
            step: failed,
            log_tail,
        } => {
            let mut why = match &build {
                Some(b) => format!("failed {on}: build {} ended in {result}", b.url),
                None => format!("failed {on}: build request {request_url} ended in {result}"),
            };
            if let Some(s) = &failed {
                why.push_str(&format!(", step `{}` failed", crate::text::escape(s)));
            }
            if let Some(last) = log_tail.lines().rev().find(|l| !l.trim().is_empty()) {
                why.push_str(&format!(": {}", crate::text::clip(last.trim(), WHY_BYTES)));
            }
            lines.push(format!("lockstep: {why}"));
            if !log_tail.is_empty() {
                lines.push(log_tail.clone());
            }
            (StepOutcome::Failed(None), why, log_tail)
        }
        Outcome::NeverStarted(within) => {
            let why = format!(
                "was never started {on}: no worker took build request {request_url} within \
                 {}; it was cancelled",
                crate::config::humanize(within)
            );
            lines.push(format!("lockstep: {why}"));
            (StepOutcome::NotStarted(why.clone()), why, String::new())
        }
        Outcome::TimedOut(after, build) => {
            let why = format!(
                "ran past {} {on} and was stopped{}",
                crate::config::humanize(after),
                build
                    .map(|b| format!(" (build {})", b.url))
                    .unwrap_or_default()
            );
            lines.push(format!("lockstep: {why}"));
            (StepOutcome::TimedOut(after), why, String::new())
        }
        Outcome::Stopped(build) => {
            let why = format!(
                "was stopped {on}{}",
                build
                    .map(|b| format!(": build {} stopped", b.url))
                    .unwrap_or_default()
            );
            lines.push(format!("lockstep: {why}"));
            (StepOutcome::Stopped, why, String::new())
        }
        Outcome::Unreachable(e) => {
            let why = format!("failed {on}: {e}");
            lines.push(format!("lockstep: {why}"));
            (StepOutcome::Failed(None), why, String::new())
        }
    };
    Ran { outcome, why, tail }
}
