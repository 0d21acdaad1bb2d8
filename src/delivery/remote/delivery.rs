//! A delivery's step on a runner: journaled and in the steps table like a local step, told
//! its stage and that stage's variables, followed again after a restart; and the delivery's
//! candidate branches, pushed for a CI and deleted when it lands, fails or is discarded.

use tokio::sync::watch;

use super::super::engine::{Checkout, Engine};
use super::super::steps::StepOutcome;
use super::super::stop::{Failure, Stop};
use super::{Purpose, RemoteStep};
use crate::config::RunnerStep;
use crate::domain::{DeliveryId, Phase, StepState};
use crate::store::DeliveryRow;

impl Engine {
    /// Runs a step of `phase` for a checkout in `stage` on its runner, journaled like a local
    /// step, with a local log that says where it ran; `stop` stops the build on the CI.
    pub(in crate::delivery) async fn exec_on_runner(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        on: &RunnerStep,
        c: &Checkout,
        stage: &str,
        stop: Option<watch::Receiver<bool>>,
    ) -> Result<(), Stop> {
        let repo = &c.row.repo;
        let log = self.log_path(d.id, repo, phase, stage);
        // A step a killed worker left waiting for a build of this very candidate follows
        // that build: the CI builds each candidate once.
        let resumed = match self.store.last_runner_build(d.id, repo, phase).await? {
            Some((StepState::Interrupted, build)) => parse_build(&build)
                .filter(|(runner, _, sha)| *runner == on.runner && *sha == c.row.rebased_sha)
                .map(|(_, request, _)| request),
            _ => None,
        };
        let step_id = self.step_begun(d.id, repo, phase, &log).await?;
        let started = std::time::Instant::now();
        let ran = self
            .run_remote(
                on,
                RemoteStep {
                    purpose: Purpose::Delivery {
                        id: d.id,
                        step: step_id,
                        resumed,
                    },
                    task: &d.task,
                    repo: &c.repo,
                    dir: &c.dir,
                    sha: &c.row.rebased_sha,
                    phase,
                    env: stage,
                    vars: self.config.stage_vars(stage),
                    branch: self.config.candidate_branch(d.id),
                    log: log.clone(),
                    stop,
                },
            )
            .await?;
        let outcome = ran.outcome;
        self.step_ended(d.id, step_id, repo, phase, &log, &outcome)
            .await?;
        self.say(&format!(
            "#{} {}: {phase:<8} {:<12} {} on {} ({:.1}s)",
            d.id,
            d.task,
            repo,
            outcome.state(),
            on.runner,
            started.elapsed().as_secs_f64()
        ));
        if outcome == StepOutcome::Passed {
            return Ok(());
        }
        let mut failure = Failure::new(phase, Some(repo), format!("`{phase}` {}", ran.why));
        failure.log_tail = ran.tail;
        Err(failure.into())
    }

    /// Pushes the candidate branch before a command step (`[delivery] push_candidates`), for
    /// a step that hands the candidate to a CI of its own; a refused push fails the step.
    pub(in crate::delivery) async fn push_candidate_for(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        c: &Checkout,
    ) -> Result<(), Stop> {
        let branch = self.config.candidate_branch(d.id);
        match self
            .push_candidate(&c.dir, &c.row.rebased_sha, &branch)
            .await?
        {
            Ok(()) => Ok(()),
            Err(why) => Err(Failure::new(
                phase,
                Some(&c.row.repo),
                format!("`{phase}` could not start: the candidate branch `{branch}` was not pushed: {why}"),
            )
            .into()),
        }
    }

    /// Deletes the delivery's candidate branch from every repository it may have been pushed
    /// to (best effort: a branch never pushed is no error).
    pub(in crate::delivery) async fn delete_candidates(&self, id: DeliveryId) {
        let branch = self.config.candidate_branch(id);
        let every = self.config.delivery.push_candidates;
        for repo in self
            .config
            .repos
            .iter()
            .filter(|r| every || r.steps.on_runners())
        {
            let dir = self.work_dir(id).join(repo.name.as_str());
            self.delete_candidate(&dir, repo.name.as_str(), &branch)
                .await;
        }
    }
}

/// A recorded `<runner> <build request> <sha>`.
pub(super) fn parse_build(text: &str) -> Option<(&str, i64, &str)> {
    let mut parts = text.split(' ');
    let runner = parts.next()?;
    let request = parts.next()?.parse().ok()?;
    let sha = parts.next()?;
    parts.next().is_none().then_some((runner, request, sha))
}
