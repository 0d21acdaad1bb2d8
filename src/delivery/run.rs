//! Running the steps of a phase for the delivery's checkouts: build and test in parallel
//! (the first failure stops the others), deploy and verify one repository at a time; each
//! step journaled, logged and shown to whoever watches, with the `LOCKSTEP_*` variables.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;

use super::confine::{self, CONFINE_VAR, WRITABLE_VAR};
use super::engine::{Checkout, Engine};
use super::slots::Rank;
use super::steps::{self, StepOutcome, StepSpec};
use super::stop::{Failure, Stop};
use crate::config::StepCommand;
use crate::domain::{DeliveryId, Event, Phase, RepoName, StepState};
use crate::store::{Backend, DeliveryRow, RepoFlag};

/// At most this much of a failing step's last line goes into the one-line reason.
const WHY_BYTES: usize = 200;

impl Engine {
    /// Build or test: every repository at once (bounded by the engine's step slots, shared
    /// with the other deliveries of the pipeline; `rank` is this one's place for them). The
    /// first failure stops the line: the other repositories' steps are killed (`stopped` in
    /// their logs), steps still waiting for their turn never start, and that failure is
    /// reported. When `discard` turns true, every step is stopped the same way.
    pub(super) async fn parallel_phase(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        checkouts: &[Checkout],
        rank: Rank,
        discard: Option<watch::Receiver<bool>>,
    ) -> Result<(), Stop> {
        let (stop, stopping) = watch::channel(false);
        let stop = Arc::new(stop);
        let forward = discard.map(|mut discard| {
            let stop = stop.clone();
            AbortOnDrop(tokio::spawn(async move {
                if discard.wait_for(|d| *d).await.is_ok() {
                    let _ = stop.send(true);
                }
            }))
        });
        let mut steps = tokio::task::JoinSet::new();
        for c in checkouts {
            let (engine, d, c) = (self.clone(), d.clone(), c.clone());
            let mut stopping = stopping.clone();
            steps.spawn(async move {
                let _slot = tokio::select! {
                    slot = engine.slots.acquire(rank) => slot,
                    _ = stopping.wait_for(|s| *s) => return Ok(()),
                };
                if *stopping.borrow() {
                    return Ok(());
                }
                let stage = engine.config.delivery.first_stage().to_string();
                engine.run_step(&d, phase, &c, &stage, Some(stopping)).await
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
        drop(forward);
        if first.is_none() && *stop.borrow() {
            first = Some(Failure::new(phase, None, "discarded"));
        }
        first.map_or(Ok(()), |f| Err(f.into()))
    }

    /// Deploy or verify in a stage: one repository at a time, in the order of
    /// `lockstep.toml`; a cancel stops the line before the next repository's step.
    pub(super) async fn serial_phase(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        checkouts: &[Checkout],
        stage: &str,
    ) -> Result<(), Stop> {
        for (i, c) in checkouts.iter().enumerate() {
            if i > 0 {
                self.checkpoint(d.id, phase).await?;
            }
            if phase == Phase::Deploy && c.repo.step(phase).is_some() {
                // Recorded before the step runs: a deploy cut short is still rolled back.
                if self.config.delivery.staged() {
                    self.store
                        .journal(d.id, phase, c.row.repo.as_str(), Event::Deploying, stage)
                        .await?;
                }
                self.store
                    .set_repo_flag(d.id, &c.row.repo, RepoFlag::Deployed, true)
                    .await?;
            }
            self.run_step(d, phase, c, stage, None).await?;
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
        stage: &str,
        stop: Option<watch::Receiver<bool>>,
    ) -> Result<(), Stop> {
        match c.repo.step(phase) {
            Some(command) => self.exec(d, phase, command, c, stage, stop).await,
            None => Ok(()),
        }
    }

    /// Runs a command of `phase` for a checkout in a stage (its `LOCKSTEP_ENV` and
    /// `[environments.<stage>] vars`), journaled, with its log; a step that does not pass is a
    /// failure of that phase in that repository, with the last lines of its log.
    pub(super) async fn exec(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        command: &StepCommand,
        c: &Checkout,
        stage: &str,
        stop: Option<watch::Receiver<bool>>,
    ) -> Result<(), Stop> {
        if let StepCommand::Runner(on) = command {
            return self.exec_on_runner(d, phase, on, c, stage, stop).await;
        }
        if self.config.delivery.push_candidates {
            self.push_candidate_for(d, phase, c).await?;
        }
        let step = phase;
        let log = self.log_path(d.id, &c.row.repo, phase, stage);
        let home = step_home(c);
        std::fs::create_dir_all(&home)
            .with_context(|| format!("cannot create `{}`", home.display()))?;
        // Where the kernel cannot limit what steps write, the worker says so, once.
        if self.config.delivery.confine_steps {
            confine::enforced();
        }
        let spec = StepSpec {
            argv: command.argv(),
            cwd: c.dir.clone(),
            env: self.step_env(d, c, phase, stage),
            pass_env: self.config.delivery.pass_env.clone(),
            timeout: self.config.delivery.step_timeout,
            log: log.clone(),
            supervisor: steps::this_executable(),
        };
        let step_id = self.step_begun(d.id, &c.row.repo, step, &log).await?;
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
        self.step_ended(d.id, step_id, &c.row.repo, step, &log, &outcome)
            .await?;
        self.say(&format!(
            "#{} {}: {step:<8} {:<12} {} ({:.1}s)",
            d.id,
            d.task,
            c.row.repo,
            outcome.state(),
            started.elapsed().as_secs_f64()
        ));
        if outcome == StepOutcome::Passed {
            return Ok(());
        }
        let tail = steps::tail(&log);
        let mut why = format!("`{step}` {}", outcome.describe());
        if let Some(last) = tail.lines().rev().find(|l| !l.trim().is_empty()) {
            why.push_str(&format!(": {}", crate::text::clip(last.trim(), WHY_BYTES)));
        }
        let mut failure = Failure::new(phase, Some(&c.row.repo), why);
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
    /// A delivery's step starts, here or on a runner: journaled, shown, and its row of the
    /// steps table (with where its log goes) made. Returns that row's id.
    pub(super) async fn step_begun(
        &self,
        id: DeliveryId,
        repo: &RepoName,
        phase: Phase,
        log: &Path,
    ) -> anyhow::Result<i64> {
        self.store
            .journal(id, phase, repo.as_str(), Event::StepStarted, "")
            .await?;
        self.progress.step(id, repo, phase, StepState::Running);
        self.store
            .step_started(id, repo, phase, &log.to_string_lossy())
            .await
    }

    /// A delivery's step ended with `outcome`: its log copied to the store for the other
    /// replicas (on PostgreSQL), its row and the journal written, and the board told.
    pub(super) async fn step_ended(
        &self,
        id: DeliveryId,
        step_id: i64,
        repo: &RepoName,
        phase: Phase,
        log: &Path,
        outcome: &StepOutcome,
    ) -> anyhow::Result<()> {
        if self.store.backend() == Backend::Postgres {
            self.copy_log(step_id, log).await?;
        }
        self.store
            .step_finished(step_id, outcome.exit_code(), outcome.state())
            .await?;
        self.store
            .journal(
                id,
                phase,
                repo.as_str(),
                Event::StepFinished,
                outcome.state().as_str(),
            )
            .await?;
        self.progress.step(id, repo, phase, outcome.state());
        Ok(())
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
    fn step_env(
        &self,
        d: &DeliveryRow,
        c: &Checkout,
        phase: Phase,
        stage: &str,
    ) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self.config.stage_vars(stage).into_iter().collect();
        env.extend([
            ("LOCKSTEP_TASK".into(), d.task.to_string()),
            ("LOCKSTEP_REPO".into(), c.row.repo.to_string()),
            ("LOCKSTEP_BRANCH".into(), c.row.branch.clone()),
            ("LOCKSTEP_SHA".into(), c.row.rebased_sha.clone()),
            ("LOCKSTEP_BASE_SHA".into(), c.row.base_sha.clone()),
            ("LOCKSTEP_DELIVERY".into(), d.id.to_string()),
            ("LOCKSTEP_ENV".into(), stage.to_string()),
            ("LOCKSTEP_STEP".into(), phase.as_str().into()),
            ("LOCKSTEP_PURPOSE".into(), "delivery".into()),
        ]);
        self.confined_env(&c.repo, &step_home(c), &mut env);
        if self.config.delivery.push_candidates {
            env.push((
                "LOCKSTEP_CANDIDATE_BRANCH".into(),
                self.config.candidate_branch(d.id),
            ));
        }
        env
    }

    /// The variables that confine a step: its `HOME`, the folders it may write besides its
    /// checkout (`[[repo]] writable`), and whether the write limit is on.
    pub(super) fn confined_env(
        &self,
        repo: &crate::config::Repo,
        home: &Path,
        env: &mut Vec<(String, String)>,
    ) {
        let mut writable = vec![home.to_path_buf()];
        writable.extend(repo.writable.iter().map(|p| self.config.resolve(p)));
        // `[[repo]] writable` has no `:` (the config refuses it); a state folder with one
        // leaves the step only its checkout and the temporary folder to write.
        match std::env::join_paths(&writable) {
            Ok(paths) => env.push((WRITABLE_VAR.into(), paths.to_string_lossy().into_owned())),
            Err(e) => tracing::warn!(
                "steps of `{}` may not write their HOME `{}`: {e}; move the state folder to a \
                 path without `:`",
                repo.name,
                home.display()
            ),
        }
        env.push(("HOME".into(), home.to_string_lossy().into_owned()));
        let confined = if self.config.delivery.confine_steps {
            "on"
        } else {
            "off"
        };
        env.push((CONFINE_VAR.into(), confined.into()));
    }
}

/// A step's `HOME`: a folder of the delivery's work folder, beside its checkouts (`@` is in no
/// repository's name), so that nothing of the bot's own home (its SSH key, its tokens)
/// reaches a step; what a step needs it gets in its environment.
fn step_home(c: &Checkout) -> PathBuf {
    let work = c.dir.parent().unwrap_or(&c.dir);
    work.join("@home").join(c.row.repo.as_str())
}

/// A task aborted when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
