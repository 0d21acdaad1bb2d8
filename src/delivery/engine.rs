//! The engine that runs a delivery, and the order of its phases: prepare (rebase, build,
//! test: nothing outside the delivery's own checkouts changes), then release (deploy,
//! verify, merge: the shared environment and the upstreams change), then land or fail.
//!
//! Every transition is journaled before it acts. A failure anywhere stops the line, rolls back
//! what was deployed (in reverse order), merges nothing, and moves the task back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use super::slots::{Rank, Slots};
use super::stop::{Failure, Stop};
use crate::config::{Config, Repo};
use crate::domain::State;
use crate::domain::{DeliveryId, Event, Phase, RepoName, Stage, StepState};
use crate::git::Git;
use crate::policy::PolicySet;
use crate::store::{DeliveryRow, RepoRow, Store};
use crate::tracker::Tracker;

/// Whoever watches a delivery: the terminal, the server's log.
pub trait Watcher: Send + Sync {
    /// One line of the delivery's story: started, a step's result, failed, delivered.
    fn say(&self, line: &str);
    /// Where one repository stands in one phase (`rebase`, `build`, …, `merge`, `rollback`):
    /// `running`, then `passed`, `failed`, `timed out`, `stopped` or `not started`. The lines
    /// say the same; a watcher that draws a board of repositories × phases uses this.
    fn step(&self, _delivery: DeliveryId, _repo: &RepoName, _phase: Phase, _state: StepState) {}
    /// A staged delivery (`[delivery] stages`) enters `stages[current]`: its deploy and
    /// verify cells are that stage's from now on.
    fn stage(&self, _delivery: DeliveryId, _stages: &[&str], _current: usize) {}
}

/// A function of the line is a watcher that tells only the story.
impl<F: Fn(&str) + Send + Sync> Watcher for F {
    fn say(&self, line: &str) {
        self(line)
    }
}

/// Something to tell whoever watches (the terminal, the server's log).
pub type Progress = Arc<dyn Watcher>;

/// Everything a delivery needs, shared by the CLI worker and the server.
#[derive(Clone)]
pub struct Engine {
    pub config: Arc<Config>,
    pub policies: Arc<PolicySet>,
    pub store: Store,
    pub tracker: Arc<dyn Tracker>,
    pub progress: Progress,
    /// The build and test step slots, shared by every delivery of the pipeline.
    pub(super) slots: Arc<Slots>,
}

/// A repository of the delivery with its checkout: what every phase works on, as it is
/// recorded in the store.
#[derive(Debug, Clone)]
pub(super) struct Checkout {
    pub(super) repo: Repo,
    pub(super) row: RepoRow,
    pub(super) dir: PathBuf,
}

/// A delivery ahead in the pipeline, as one behind it is rebased onto it: its rebased
/// checkouts, whose commits the one behind builds on.
#[derive(Debug, Clone)]
pub(super) struct Ahead {
    pub(super) id: DeliveryId,
    pub(super) checkouts: Vec<Checkout>,
}

/// How a delivery is prepared: alone (the serial line, or the head) or as a candidate of
/// the pipeline, on the deliveries ahead of it.
pub(super) struct Preparation {
    /// The deliveries ahead of it whose results it builds on, the nearest last.
    pub(super) ahead: Vec<Ahead>,
    /// Its place for the step slots.
    pub(super) rank: Rank,
    /// Turns true when the preparation is to be thrown away: its steps are stopped.
    pub(super) discard: Option<watch::Receiver<bool>>,
    /// Called once every repository is rebased, with the checkouts.
    pub(super) on_rebased: Option<OnRebased>,
}

/// What a preparation calls once its checkouts are rebased.
pub(super) type OnRebased = Box<dyn FnOnce(&[Checkout]) + Send>;

impl Preparation {
    /// The serial line's: nothing ahead, nothing to discard.
    pub(super) fn alone(d: &DeliveryRow) -> Preparation {
        Preparation {
            ahead: Vec::new(),
            rank: Rank::new(d.candidate, d.priority, d.id.0),
            discard: None,
            on_rebased: None,
        }
    }

    pub(super) fn discarded(&self) -> bool {
        self.discard.as_ref().is_some_and(|d| *d.borrow())
    }
}

/// The URL git should use for a configured repository: local paths resolve against the
/// config's folder.
pub fn repo_url(config: &Config, repo: &Repo) -> String {
    let url = &repo.url;
    let remote = url.contains("://")
        || (url.contains(':') && !url.starts_with('/') && !url.starts_with('.'));
    if remote {
        url.clone()
    } else {
        config
            .resolve(Path::new(url))
            .to_string_lossy()
            .into_owned()
    }
}

impl Engine {
    pub(super) fn say(&self, line: &str) {
        self.progress.say(line);
    }

    /// A repository passed `phase` (its rebase, its merge): the board's cell, and the story's
    /// line `#id task: phase repo from → to`.
    pub(super) fn passed(
        &self,
        d: &DeliveryRow,
        repo: &RepoName,
        phase: Phase,
        from: &str,
        to: &str,
    ) {
        self.progress.step(d.id, repo, phase, StepState::Passed);
        self.say(&format!(
            "#{} {}: {:<8} {:<12} {from} → {to}",
            d.id,
            d.task,
            phase.as_str(),
            repo
        ));
    }

    /// Where the delivery's checkouts live, one folder per repository.
    pub(super) fn work_dir(&self, id: DeliveryId) -> PathBuf {
        self.config.state_dir().join("work").join(id.to_string())
    }

    /// The log of a step; a staged delivery's deploy, verify and rollback steps have one per
    /// stage (`api.deploy.staging.log`).
    pub(super) fn log_path(
        &self,
        id: DeliveryId,
        repo: &RepoName,
        step: Phase,
        stage: &str,
    ) -> PathBuf {
        let staged = self.config.delivery.staged()
            && matches!(step, Phase::Deploy | Phase::Verify | Phase::Rollback);
        let name = if staged {
            format!("{repo}.{step}.{stage}.log")
        } else {
            format!("{repo}.{step}.log")
        };
        self.config
            .state_dir()
            .join("logs")
            .join(id.to_string())
            .join(name)
    }

    /// A git handle acting as the bot: its identity on commits and, for hooks of local
    /// repositories, in the identity variables the hooks read.
    pub(super) fn bot_git(&self, dir: &Path) -> Git {
        let bot = &self.config.bot.user;
        let email = format!("{bot}@lockstep.invalid");
        let mut git = Git::new(dir)
            .with_env("GIT_AUTHOR_NAME", bot)
            .with_env("GIT_AUTHOR_EMAIL", &email)
            .with_env("GIT_COMMITTER_NAME", bot)
            .with_env("GIT_COMMITTER_EMAIL", &email);
        for var in &self.config.identity.env {
            git = git.with_env(var, bot);
        }
        // The hooks of a local repository read `LOCKSTEP_CONFIG` before their own config. One
        // that names another file than the config this engine runs (the demo, started from a
        // shell that has one set) must not decide the bot's pushes; it is hidden from them.
        if std::env::var_os("LOCKSTEP_CONFIG").is_some_and(|named| !self.runs_config(&named)) {
            git = git.without_env("LOCKSTEP_CONFIG");
        }
        git
    }

    /// Clones `repo` as the bot into `work/<repo>`: its folder, or why it could not (`cannot
    /// fetch …`, with git's answer) for the caller to report as its own failure.
    pub(super) async fn clone_into(
        &self,
        work: &Path,
        repo: &Repo,
    ) -> anyhow::Result<Result<PathBuf, String>> {
        let dir = work.join(repo.name.as_str());
        let url = repo_url(&self.config, repo);
        let git = self.bot_git(work);
        let dir_s = dir.to_string_lossy().into_owned();
        let (ok, _, err) = crate::runtime::blocking(move || {
            git.try_run(&[
                "clone",
                "--quiet",
                "--no-tags",
                "--end-of-options",
                &url,
                &dir_s,
            ])
        })
        .await?;
        Ok(if ok {
            Ok(dir)
        } else {
            Err(format!("cannot fetch `{}`: {}", repo.url, err.trim()))
        })
    }

    /// Whether `named` is the file this engine's config was read from.
    fn runs_config(&self, named: &std::ffi::OsStr) -> bool {
        let named = Path::new(named);
        named == self.config.path
            || matches!(
                (std::fs::canonicalize(named), std::fs::canonicalize(&self.config.path)),
                (Ok(a), Ok(b)) if a == b
            )
    }

    /// Runs one claimed delivery to its end and records the outcome. Returns the final state.
    pub async fn deliver(&self, d: &DeliveryRow) -> anyhow::Result<State> {
        let resume = Self::resume_phase(d);
        self.say(&format!("#{} {}: delivery started", d.id, d.task));
        match self.line(d, resume).await {
            Ok(checkouts) => {
                self.land(d, &checkouts, false).await?;
                Ok(State::Delivered)
            }
            Err(stop) => self.report_stop(d, stop).await,
        }
    }

    /// The phase a delivery requeued after a crash resumes at (build or test).
    pub(super) fn resume_phase(d: &DeliveryRow) -> Option<Phase> {
        d.phase.filter(|p| matches!(p, Phase::Build | Phase::Test))
    }

    /// Ends a delivery whose line stopped: journals and tells the failure, rolls back what
    /// was deployed, moves the task back. Returns the final state.
    pub(super) async fn report_stop(&self, d: &DeliveryRow, stop: Stop) -> anyhow::Result<State> {
        let failure = match stop {
            Stop::Failed(failure) => failure,
            // lockstep could not go on: reported as a failure of the phase it broke in.
            Stop::Broken(e) => Failure::new(
                self.current_phase(d.id).await.unwrap_or(Phase::Rebase),
                None,
                format!("{e:#}"),
            ),
        };
        self.store
            .journal(
                d.id,
                failure.phase,
                failure.repo.as_ref().map_or("", RepoName::as_str),
                Event::Failed,
                &failure.message,
            )
            .await?;
        if let Some(repo) = &failure.repo {
            self.progress
                .step(d.id, repo, failure.phase, StepState::Failed);
        }
        self.say(&format!("#{} {}: {}", d.id, d.task, failure.summary()));
        self.fail(d, &failure.summary(), &failure.log_tail).await
    }

    /// Deploys, verifies and merges a prepared delivery, then records it landed or failed.
    pub(super) async fn release_and_land(
        &self,
        d: &DeliveryRow,
        checkouts: &[Checkout],
    ) -> anyhow::Result<State> {
        match self.release(d, checkouts).await {
            Ok(()) => {
                self.land(d, checkouts, false).await?;
                Ok(State::Delivered)
            }
            Err(stop) => self.report_stop(d, stop).await,
        }
    }

    /// The line itself; the checkouts when every upstream advanced.
    async fn line(&self, d: &DeliveryRow, resume: Option<Phase>) -> Result<Vec<Checkout>, Stop> {
        let checkouts = self.prepare(d, resume, Preparation::alone(d)).await?;
        self.release(d, &checkouts).await?;
        Ok(checkouts)
    }

    /// Rebase, build and test: the delivery's checkouts, rebased onto the upstreams and
    /// built and tested. Nothing outside them changes, so a delivery interrupted here can be
    /// started again; `resume` (build or test) picks up at that phase when the checkouts of
    /// the interrupted run are intact.
    ///
    /// A candidate of the pipeline (`prep`) is rebased onto the deliveries ahead of it, and
    /// stops as soon as its preparation is discarded.
    pub(super) async fn prepare(
        &self,
        d: &DeliveryRow,
        resume: Option<Phase>,
        mut prep: Preparation,
    ) -> Result<Vec<Checkout>, Stop> {
        // Resume only with the checkouts as they were built; otherwise rebase again, which
        // may give other commits, and so build them again too.
        let resumed = match resume {
            Some(phase) => self.resume(d, phase).await?.map(|c| (phase, c)),
            None => None,
        };
        let (start, checkouts) = match resumed {
            Some(r) => r,
            None => (Phase::Build, self.rebase(d, &prep.ahead).await?),
        };
        if let Some(rebased) = prep.on_rebased.take() {
            rebased(&checkouts);
        }
        for phase in [Phase::Build, Phase::Test] {
            if phase < start {
                continue;
            }
            if prep.discarded() {
                return Err(Failure::new(phase, None, "discarded").into());
            }
            self.enter(d.id, phase).await?;
            self.parallel_phase(d, phase, &checkouts, prep.rank, prep.discard.clone())
                .await?;
        }
        Ok(checkouts)
    }

    /// Deploy, verify (steps and gates) and merge prepared checkouts: the shared environment
    /// changes (stage by stage, `[delivery] stages`), then every upstream, one repository at a
    /// time.
    pub(super) async fn release(
        &self,
        d: &DeliveryRow,
        checkouts: &[Checkout],
    ) -> Result<(), Stop> {
        self.deploy_and_verify(d, checkouts).await?;
        self.checkpoint(d.id, Phase::Merge).await?;
        // Checked before the merge phase is recorded: recovery finishes a merge forward, and
        // must never do so for one the policies refused.
        self.merge_policies(d).await?;
        self.store.set_phase(d.id, Phase::Merge).await?;
        self.merge(d, checkouts).await
    }

    /// Records that the delivery enters `phase`, unless it was asked to stop.
    pub(super) async fn enter(&self, id: DeliveryId, phase: Phase) -> Result<(), Stop> {
        self.checkpoint(id, phase).await?;
        self.store.set_phase(id, phase).await?;
        Ok(())
    }

    /// Stops the line if a cancel was asked for.
    pub(super) async fn checkpoint(&self, id: DeliveryId, phase: Phase) -> Result<(), Stop> {
        if self.store.cancel_requested(id).await.unwrap_or(false) {
            return Err(Failure::new(phase, None, "cancelled on request").into());
        }
        Ok(())
    }

    /// Records a delivery whose every upstream advanced, and moves its task on.
    pub(super) async fn land(
        &self,
        d: &DeliveryRow,
        checkouts: &[Checkout],
        after_restart: bool,
    ) -> anyhow::Result<()> {
        // The candidate branches go before the delivery is seen landed.
        self.delete_candidates(d.id).await;
        self.store.finish(d.id, State::Delivered, "").await?;
        let landed: Vec<String> = checkouts
            .iter()
            .map(|c| {
                format!(
                    "{} {} → {}",
                    c.row.repo,
                    crate::git::short(&c.row.rebased_sha),
                    c.repo.upstream
                )
            })
            .collect();
        let mut note = format!("delivered by lockstep (#{}): {}", d.id, landed.join(", "));
        if after_restart {
            note.push_str(" (completed after a restart)");
        }
        self.say(&format!("#{} {}: {note}", d.id, d.task));
        self.move_task(d, &self.config.tasks.delivered, &note).await;
        if self.config.delivery.delete_branches {
            self.delete_branches(d.id, checkouts).await;
        }
        self.delete_approvals(d, checkouts).await;
        let _ = std::fs::remove_dir_all(self.work_dir(d.id));
        Ok(())
    }

    /// Ends a delivery that cannot land: rolls back what it deployed, records it failed (or
    /// cancelled) and moves its task back.
    ///
    /// The delivery enters the `rollback` phase first, so a worker killed while rolling back
    /// leaves a delivery that recovery finishes rolling back: never one it would merge.
    pub(super) async fn fail(
        &self,
        d: &DeliveryRow,
        summary: &str,
        log_tail: &str,
    ) -> anyhow::Result<State> {
        self.store.mark_failing(d.id, summary).await?;
        let failed = self.rollback_deployed(d.id, &d.task).await;
        let summary = if failed.is_empty() {
            summary.to_string()
        } else {
            format!("{summary}; {}", Self::rollback_failure(d.id, &failed))
        };
        let summary = summary.as_str();
        let cancelled = self.store.cancel_requested(d.id).await.unwrap_or(false);
        let state = if cancelled {
            State::Cancelled
        } else {
            State::Failed
        };
        self.delete_candidates(d.id).await;
        self.store.finish(d.id, state, summary).await?;
        let left: Vec<String> = self
            .store
            .repos(d.id)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.merged)
            .map(|r| format!("`{}`", r.repo))
            .collect();
        let mut note = if left.is_empty() {
            format!("{summary} (lockstep #{}); nothing was merged", d.id)
        } else {
            format!(
                "{summary} (lockstep #{}); {} still merged: put it back by hand",
                d.id,
                left.join(", ")
            )
        };
        if !log_tail.is_empty() {
            note.push_str(&format!("\n\nlast lines of the log:\n{log_tail}"));
        }
        self.move_task(d, &self.config.tasks.returned, &note).await;
        Ok(state)
    }

    async fn current_phase(&self, id: DeliveryId) -> Option<Phase> {
        self.store
            .delivery(id)
            .await
            .ok()
            .flatten()
            .and_then(|d| d.phase)
    }

    pub(super) async fn move_task(&self, d: &DeliveryRow, status: &str, note: &str) {
        match self
            .tracker
            .move_to(&d.task, status, &crate::text::note(note))
            .await
        {
            Ok(()) => {
                let _ = self
                    .store
                    .journal(d.id, Stage::Report, "", Event::TaskMoved, status)
                    .await;
            }
            Err(e) => {
                tracing::warn!(delivery = d.id.0, task = %d.task, "cannot move the task: {e}");
                let _ = self
                    .store
                    .journal(d.id, Stage::Report, "", Event::TaskNotMoved, &e.to_string())
                    .await;
                self.say(&format!(
                    "#{} {}: could not move the task to {status}: {e}",
                    d.id, d.task
                ));
            }
        }
    }
}
