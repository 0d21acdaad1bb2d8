//! The engine that runs a delivery, and the order of its phases: prepare (rebase, build,
//! test: nothing outside the delivery's own checkouts changes), then release (deploy,
//! verify, merge: the shared environment and the upstreams change), then land or fail.
//!
//! Every transition is journaled before it acts. A failure anywhere stops the line, rolls back
//! what was deployed (in reverse order), merges nothing, and moves the task back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::phase::Phase;
use super::stop::{Failure, Stop};
use crate::config::{Config, Repo};
use crate::git::Git;
use crate::policy::PolicySet;
use crate::store::{DeliveryRow, RepoRow, State, Store};
use crate::tracker::Tracker;

/// Whoever watches a delivery: the terminal, the server's log.
pub trait Watcher: Send + Sync {
    /// One line of the delivery's story: started, a step's result, failed, delivered.
    fn say(&self, line: &str);
    /// Where one repository stands in one phase (`rebase`, `build`, …, `merge`, `rollback`):
    /// `running`, then `passed`, `failed`, `timed out`, `stopped` or `not started`. The lines
    /// say the same; a watcher that draws a board of repositories × phases uses this.
    fn step(&self, _delivery: i64, _repo: &str, _phase: &str, _state: &str) {}
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
}

/// A repository of the delivery with its checkout: what every phase works on, as it is
/// recorded in the store.
#[derive(Debug, Clone)]
pub(super) struct Checkout {
    pub(super) repo: Repo,
    pub(super) row: RepoRow,
    pub(super) dir: PathBuf,
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

    /// Where the delivery's checkouts live, one folder per repository.
    pub(super) fn work_dir(&self, id: i64) -> PathBuf {
        self.config.state_dir().join("work").join(id.to_string())
    }

    pub(super) fn log_path(&self, id: i64, repo: &str, step: Phase) -> PathBuf {
        self.config
            .state_dir()
            .join("logs")
            .join(id.to_string())
            .join(format!("{repo}.{step}.log"))
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
        git
    }

    /// Runs one claimed delivery to its end and records the outcome. Returns the final state.
    pub async fn deliver(&self, d: &DeliveryRow) -> anyhow::Result<State> {
        let resume = Phase::parse(&d.phase).filter(|p| matches!(p, Phase::Build | Phase::Test));
        self.say(&format!("#{} {}: delivery started", d.id, d.task));
        let failure = match self.line(d, resume).await {
            Ok(checkouts) => {
                self.land(d, &checkouts, false).await?;
                return Ok(State::Delivered);
            }
            Err(Stop::Failed(failure)) => failure,
            // lockstep could not go on: reported as a failure of the phase it broke in.
            Err(Stop::Broken(e)) => Failure::new(
                Phase::parse(&self.current_phase(d.id).await).unwrap_or(Phase::Rebase),
                "",
                format!("{e:#}"),
            ),
        };
        self.store
            .journal(
                d.id,
                failure.phase.as_str(),
                &failure.repo,
                "failed",
                &failure.message,
            )
            .await?;
        if !failure.repo.is_empty() {
            self.progress
                .step(d.id, &failure.repo, failure.phase.as_str(), "failed");
        }
        self.say(&format!("#{} {}: {}", d.id, d.task, failure.summary()));
        self.fail(d, &failure.summary(), &failure.log_tail).await
    }

    /// The line itself; the checkouts when every upstream advanced.
    async fn line(&self, d: &DeliveryRow, resume: Option<Phase>) -> Result<Vec<Checkout>, Stop> {
        let checkouts = self.prepare(d, resume).await?;
        self.release(d, &checkouts).await?;
        Ok(checkouts)
    }

    /// Rebase, build and test: the delivery's checkouts, rebased onto the upstreams and
    /// built and tested. Nothing outside them changes, so a delivery interrupted here can be
    /// started again; `resume` (build or test) picks up at that phase when the checkouts of
    /// the interrupted run are intact.
    async fn prepare(&self, d: &DeliveryRow, resume: Option<Phase>) -> Result<Vec<Checkout>, Stop> {
        // Resume only with the checkouts as they were built; otherwise rebase again, which
        // may give other commits, and so build them again too.
        let resumed = match resume {
            Some(phase) => self.resume(d, phase).await?.map(|c| (phase, c)),
            None => None,
        };
        let (start, checkouts) = match resumed {
            Some(r) => r,
            None => (Phase::Build, self.rebase(d).await?),
        };
        for phase in [Phase::Build, Phase::Test] {
            if phase < start {
                continue;
            }
            self.enter(d.id, phase).await?;
            self.parallel_phase(d, phase, &checkouts).await?;
        }
        Ok(checkouts)
    }

    /// Deploy, verify (steps and gates) and merge prepared checkouts: the shared environment
    /// changes, then every upstream, one repository at a time.
    async fn release(&self, d: &DeliveryRow, checkouts: &[Checkout]) -> Result<(), Stop> {
        self.enter(d.id, Phase::Deploy).await?;
        self.serial_phase(d, Phase::Deploy, checkouts).await?;
        self.enter(d.id, Phase::Verify).await?;
        self.verify_phase(d, checkouts).await?;
        self.checkpoint(d.id, Phase::Merge).await?;
        // Checked before the merge phase is recorded: recovery finishes a merge forward, and
        // must never do so for one the policies refused.
        self.merge_policies(d).await?;
        self.store.set_phase(d.id, Phase::Merge.as_str()).await?;
        self.merge(d, checkouts).await
    }

    /// Records that the delivery enters `phase`, unless it was asked to stop.
    async fn enter(&self, id: i64, phase: Phase) -> Result<(), Stop> {
        self.checkpoint(id, phase).await?;
        self.store.set_phase(id, phase.as_str()).await?;
        Ok(())
    }

    /// Stops the line if a cancel was asked for.
    pub(super) async fn checkpoint(&self, id: i64, phase: Phase) -> Result<(), Stop> {
        if self.store.cancel_requested(id).await.unwrap_or(false) {
            return Err(Failure::new(phase, "", "cancelled on request").into());
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
        self.store.finish(d.id, State::Delivered, "").await?;
        let landed: Vec<String> = checkouts
            .iter()
            .map(|c| {
                format!(
                    "{} {} → {}",
                    c.row.repo,
                    crate::push::short(&c.row.rebased_sha),
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

    async fn current_phase(&self, id: i64) -> String {
        self.store
            .delivery(id)
            .await
            .ok()
            .flatten()
            .map(|d| d.phase)
            .unwrap_or_default()
    }

    pub(super) async fn move_task(&self, d: &DeliveryRow, status: &str, note: &str) {
        match self.tracker.move_to(&d.task, status, note).await {
            Ok(()) => {
                let _ = self
                    .store
                    .journal(d.id, "report", "", "task moved", status)
                    .await;
            }
            Err(e) => {
                tracing::warn!(delivery = d.id, task = %d.task, "cannot move the task: {e}");
                let _ = self
                    .store
                    .journal(d.id, "report", "", "task not moved", &e.to_string())
                    .await;
                self.say(&format!(
                    "#{} {}: could not move the task to {status}: {e}",
                    d.id, d.task
                ));
            }
        }
    }
}
