//! Running the steps of a phase for the delivery's checkouts: build and test in parallel
//! (the first failure stops the others), deploy and verify one repository at a time; each
//! step journaled, logged and shown to whoever watches, with the `LOCKSTEP_*` variables.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::{Semaphore, watch};

use super::engine::{Checkout, Engine};
use super::phase::Phase;
use super::steps::{self, StepOutcome, StepSpec};
use super::stop::{Failure, Stop};
use crate::config::Command;
use crate::store::{Backend, DeliveryRow, RepoFlag};

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Engine {
    /// Build or test: every repository at once (bounded by `delivery.parallel`). The first
    /// failure stops the line: the other repositories' steps are killed (`stopped` in their
    /// logs), steps still waiting for their turn never start, and that failure is reported.
    pub(super) async fn parallel_phase(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        checkouts: &[Checkout],
    ) -> Result<(), Stop> {
        let limit = Arc::new(Semaphore::new(self.config.delivery.parallel));
        let (stop, stopping) = watch::channel(false);
        let mut steps = tokio::task::JoinSet::new();
        for c in checkouts {
            let (engine, d, c, limit) = (self.clone(), d.clone(), c.clone(), limit.clone());
            let stopping = stopping.clone();
            steps.spawn(async move {
                let _permit = limit.acquire_owned().await;
                if *stopping.borrow() {
                    return Ok(());
                }
                engine.run_step(&d, phase, &c, Some(stopping)).await
            });
        }
        let mut first = None;
        while let Some(r) = steps.join_next().await {
            match r.context("a step task panicked")? {
                Ok(()) => {}
                Err(Stop::Failed(f)) => {
                    if first.is_none() {
                        first = Some(f);
                        let _ = stop.send(true);
                    }
                }
                // Dropping the set stops the other steps.
                Err(broken @ Stop::Broken(_)) => return Err(broken),
            }
        }
        first.map_or(Ok(()), |f| Err(f.into()))
    }

    /// Deploy or verify: one repository at a time, in the order of `lockstep.toml`; a cancel
    /// stops the line before the next repository's step.
    pub(super) async fn serial_phase(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        checkouts: &[Checkout],
    ) -> Result<(), Stop> {
        for (i, c) in checkouts.iter().enumerate() {
            if i > 0 {
                self.checkpoint(d.id, phase).await?;
            }
            if phase == Phase::Deploy && phase.step(&c.repo).is_some() {
                // Recorded before the step runs: a deploy cut short is still rolled back.
                self.store
                    .set_repo_flag(d.id, &c.row.repo, RepoFlag::Deployed, true)
                    .await?;
            }
            self.run_step(d, phase, c, None).await?;
        }
        Ok(())
    }

    /// Runs one repository's step of a phase (a phase with no step for it passes); a step
    /// given `stop` is killed when it turns true.
    async fn run_step(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        c: &Checkout,
        stop: Option<watch::Receiver<bool>>,
    ) -> Result<(), Stop> {
        match phase.step(&c.repo) {
            Some(command) => self.exec(d, phase, command, c, stop).await,
            None => Ok(()),
        }
    }

    /// Runs a command of `phase` for a checkout, journaled, with its log; a step that does not
    /// pass is a failure of that phase in that repository, with the last lines of its log.
    pub(super) async fn exec(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        command: &Command,
        c: &Checkout,
        stop: Option<watch::Receiver<bool>>,
    ) -> Result<(), Stop> {
        let step = phase.as_str();
        let log = self.log_path(d.id, &c.row.repo, phase);
        let spec = StepSpec {
            argv: command.argv(),
            cwd: c.dir.clone(),
            env: self.step_env(d, c, phase),
            pass_env: self.config.delivery.pass_env.clone(),
            timeout: self.config.delivery.step_timeout,
            log: log.clone(),
        };
        self.store
            .journal(d.id, step, &c.row.repo, "step started", "")
            .await?;
        self.progress.step(d.id, &c.row.repo, step, "running");
        let step_id = self
            .store
            .step_started(d.id, &c.row.repo, step, &log.to_string_lossy())
            .await?;
        let started = std::time::Instant::now();
        let outcome = match steps::start(&spec)? {
            Ok(running) => {
                if let Some(pid) = running.pid() {
                    self.store.step_pid(step_id, pid).await?;
                }
                let _mirror = self.mirror_log(step_id, &log);
                match stop {
                    Some(mut stop) => running.wait_or_stop(&mut stop).await?,
                    None => running.wait().await?,
                }
            }
            Err(outcome) => outcome,
        };
        if self.store.backend() == Backend::Postgres {
            self.copy_log(step_id, &log).await?;
        }
        self.store
            .step_finished(step_id, outcome.exit_code(), outcome.label())
            .await?;
        self.store
            .journal(d.id, step, &c.row.repo, "step finished", outcome.label())
            .await?;
        self.progress.step(d.id, &c.row.repo, step, outcome.label());
        self.say(&format!(
            "#{} {}: {step:<8} {:<12} {} ({:.1}s)",
            d.id,
            d.task,
            c.row.repo,
            outcome.label(),
            started.elapsed().as_secs_f64()
        ));
        if outcome == StepOutcome::Passed {
            return Ok(());
        }
        let tail = steps::tail(&log, 20);
        let mut why = format!("`{step}` {}", outcome.describe());
        if let Some(last) = tail.lines().rev().find(|l| !l.trim().is_empty()) {
            why.push_str(&format!(": {}", last.trim()));
        }
        let mut failure = Failure::new(phase, &c.row.repo, why);
        failure.log_tail = tail;
        Err(failure.into())
    }

    /// On PostgreSQL, where other replicas show this step too, copies the end of its log into
    /// the store every second while it runs (stopped when the value is dropped). SQLite's
    /// readers are on this host and read the file.
    fn mirror_log(&self, step_id: i64, log: &Path) -> Option<AbortOnDrop> {
        if self.store.backend() != Backend::Postgres {
            return None;
        }
        let (engine, log) = (self.clone(), log.to_path_buf());
        Some(AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if let Err(e) = engine.copy_log(step_id, &log).await {
                    tracing::warn!("cannot copy the log of step {step_id} to the store: {e:#}");
                }
            }
        })))
    }

    /// Copies the end of a step's log (its last 256 KiB) into the store.
    async fn copy_log(&self, step_id: i64, log: &Path) -> anyhow::Result<()> {
        let path = log.to_path_buf();
        let text = tokio::task::spawn_blocking(move || steps::last_of_log(&path))
            .await?
            .unwrap_or_default();
        self.store.set_step_log(step_id, &text).await
    }

    /// The variables a step gets from lockstep: the untrusted values (task key, branch name)
    /// travel here, never on a command line.
    fn step_env(&self, d: &DeliveryRow, c: &Checkout, phase: Phase) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self.config.environment_vars().into_iter().collect();
        env.extend([
            ("LOCKSTEP_TASK".into(), d.task.clone()),
            ("LOCKSTEP_REPO".into(), c.row.repo.clone()),
            ("LOCKSTEP_BRANCH".into(), c.row.branch.clone()),
            ("LOCKSTEP_SHA".into(), c.row.rebased_sha.clone()),
            ("LOCKSTEP_BASE_SHA".into(), c.row.base_sha.clone()),
            ("LOCKSTEP_DELIVERY".into(), d.id.to_string()),
            (
                "LOCKSTEP_ENV".into(),
                self.config.delivery.environment.clone(),
            ),
            ("LOCKSTEP_STEP".into(), phase.as_str().into()),
        ]);
        env
    }
}
