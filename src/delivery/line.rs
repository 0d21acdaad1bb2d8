//! The delivery line: rebase → build → test → deploy → verify → merge, each phase for every
//! repository of the task before the next phase, all or nothing.
//!
//! Every transition is journaled before it acts. A failure anywhere stops the line, rolls back
//! what was deployed (in reverse order), merges nothing, and moves the task back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::{Semaphore, watch};

use super::steps::{self, StepOutcome, StepSpec};
use crate::config::{Command, Config, MergeMode, Repo};
use crate::git::Git;
use crate::policy::{PolicySet, Stage};
use crate::store::{DeliveryRow, RepoFlag, RepoRow, State, Store};
use crate::tracker::Tracker;

mod merge;
mod rollback;

/// The phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Rebase,
    Build,
    Test,
    Deploy,
    Verify,
    Merge,
    /// The delivery failed and what it deployed is being rolled back.
    Rollback,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Rebase,
        Phase::Build,
        Phase::Test,
        Phase::Deploy,
        Phase::Verify,
        Phase::Merge,
        Phase::Rollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Rebase => "rebase",
            Phase::Build => "build",
            Phase::Test => "test",
            Phase::Deploy => "deploy",
            Phase::Verify => "verify",
            Phase::Merge => "merge",
            Phase::Rollback => "rollback",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }

    fn step(self, repo: &Repo) -> Option<&Command> {
        match self {
            Phase::Build => repo.steps.build.as_ref(),
            Phase::Test => repo.steps.test.as_ref(),
            Phase::Deploy => repo.steps.deploy.as_ref(),
            Phase::Verify => repo.steps.verify.as_ref(),
            Phase::Rebase | Phase::Merge | Phase::Rollback => None,
        }
    }
}

/// Why a delivery stopped.
#[derive(Debug, Clone)]
pub struct Failure {
    pub phase: String,
    pub repo: String,
    pub message: String,
    pub log_tail: String,
}

impl Failure {
    fn new(phase: Phase, repo: &str, message: impl Into<String>) -> Failure {
        Failure {
            phase: phase.as_str().into(),
            repo: repo.into(),
            message: message.into(),
            log_tail: String::new(),
        }
    }

    /// One line for the journal, the tracker note and the PR comment.
    pub fn summary(&self) -> String {
        if self.repo.is_empty() {
            format!("delivery failed in {}: {}", self.phase, self.message)
        } else {
            format!(
                "delivery failed in {} ({}): {}",
                self.phase, self.repo, self.message
            )
        }
    }
}

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

/// A repository of the delivery with its checkout.
#[derive(Debug, Clone)]
struct Checkout {
    repo: Repo,
    row: RepoRow,
    dir: PathBuf,
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
    fn say(&self, line: &str) {
        self.progress.say(line);
    }

    fn work_dir(&self, id: i64) -> PathBuf {
        self.config.state_dir().join("work").join(id.to_string())
    }

    pub fn log_path(&self, id: i64, repo: &str, step: &str) -> PathBuf {
        self.config
            .state_dir()
            .join("logs")
            .join(id.to_string())
            .join(format!("{repo}.{step}.log"))
    }

    /// A git handle acting as the bot: its identity on commits and, for hooks of local
    /// repositories, in the identity variables the hooks read.
    pub fn bot_git(&self, dir: &Path) -> Git {
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
        let result = match self.line(d, resume).await {
            Ok(r) => r,
            Err(e) => Err(Failure::new(
                Phase::parse(&self.current_phase(d.id).await).unwrap_or(Phase::Rebase),
                "",
                format!("{e:#}"),
            )),
        };
        match result {
            Ok(checkouts) => {
                self.land(d, &checkouts, false).await?;
                Ok(State::Delivered)
            }
            Err(failure) => {
                self.store
                    .journal(
                        d.id,
                        &failure.phase,
                        &failure.repo,
                        "failed",
                        &failure.message,
                    )
                    .await?;
                if !failure.repo.is_empty() {
                    self.progress
                        .step(d.id, &failure.repo, &failure.phase, "failed");
                }
                self.say(&format!("#{} {}: {}", d.id, d.task, failure.summary()));
                self.fail(d, &failure.summary(), &failure.log_tail).await
            }
        }
    }

    /// Records a delivery whose every upstream advanced, and moves its task on.
    async fn land(
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
    pub async fn fail(
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

    /// Stops the steps a killed worker left running for a delivery (they run in process
    /// groups of their own, which outlive the worker), so that nothing deploys behind the back
    /// of the recovery. Returns how many were stopped.
    pub async fn stop_leftover_steps(&self, id: i64) -> anyhow::Result<usize> {
        let mut stopped = 0;
        for step in self.store.steps(id).await? {
            if step.outcome != "running" {
                continue;
            }
            let marker = format!("LOCKSTEP_DELIVERY={id}");
            let killed = match step.pid.and_then(|p| i32::try_from(p).ok()) {
                Some(pid) => {
                    steps::kill_leftover(pid, &marker, std::time::Duration::from_secs(5)).await
                }
                None => false,
            };
            self.store
                .step_finished(step.id, None, "interrupted")
                .await?;
            let detail = if killed {
                "the worker stopped; what it left running was killed"
            } else {
                "the worker stopped"
            };
            self.store
                .journal(id, &step.step, &step.repo, "step interrupted", detail)
                .await?;
            stopped += usize::from(killed);
        }
        Ok(stopped)
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

    async fn move_task(&self, d: &DeliveryRow, status: &str, note: &str) {
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

    async fn checkpoint(&self, id: i64, phase: Phase) -> Result<(), Failure> {
        if self.store.cancel_requested(id).await.unwrap_or(false) {
            return Err(Failure::new(phase, "", "cancelled on request"));
        }
        Ok(())
    }

    /// The line itself; Ok with the checkouts when every upstream advanced.
    async fn line(
        &self,
        d: &DeliveryRow,
        resume: Option<Phase>,
    ) -> anyhow::Result<Result<Vec<Checkout>, Failure>> {
        // Resume only with the checkouts as they were built; otherwise rebase again, which
        // may give other commits, and so build them again too.
        let resumed = match resume {
            Some(phase) => match self.resume_checkouts(d).await? {
                Some(c) => {
                    self.store
                        .journal(d.id, phase.as_str(), "", "resumed", "checkouts intact")
                        .await?;
                    Some((phase, c))
                }
                None => {
                    self.store
                        .journal(
                            d.id,
                            phase.as_str(),
                            "",
                            "not resumed",
                            "the checkouts are gone or changed; starting over",
                        )
                        .await?;
                    None
                }
            },
            None => None,
        };
        let (start, checkouts) = match resumed {
            Some(r) => r,
            None => match self.rebase(d).await? {
                Ok(c) => (Phase::Build, c),
                Err(f) => return Ok(Err(f)),
            },
        };
        for phase in [Phase::Build, Phase::Test] {
            if phase < start {
                continue;
            }
            if let Err(f) = self.checkpoint(d.id, phase).await {
                return Ok(Err(f));
            }
            self.store.set_phase(d.id, phase.as_str()).await?;
            if let Err(f) = self.parallel_phase(d, phase, &checkouts).await? {
                return Ok(Err(f));
            }
        }
        for phase in [Phase::Deploy, Phase::Verify] {
            if let Err(f) = self.checkpoint(d.id, phase).await {
                return Ok(Err(f));
            }
            self.store.set_phase(d.id, phase.as_str()).await?;
            for (i, c) in checkouts.iter().enumerate() {
                // Deploys run one repository at a time: a cancel stops the next one too.
                if i > 0
                    && let Err(f) = self.checkpoint(d.id, phase).await
                {
                    return Ok(Err(f));
                }
                if phase == Phase::Deploy && phase.step(&c.repo).is_some() {
                    // Recorded before the step runs: a deploy cut short is still rolled back.
                    self.store
                        .set_repo_flag(d.id, &c.row.repo, RepoFlag::Deployed, true)
                        .await?;
                }
                if let Err(f) = self.run_step(d, phase, c, None).await? {
                    return Ok(Err(f));
                }
            }
        }
        if let Err(f) = self.checkpoint(d.id, Phase::Merge).await {
            return Ok(Err(f));
        }
        // Checked before the merge phase is recorded: recovery finishes a merge forward, and
        // must never do so for one the policies refused.
        if let Err(f) = self.merge_policies(d).await? {
            return Ok(Err(f));
        }
        self.store.set_phase(d.id, Phase::Merge.as_str()).await?;
        match self.merge(d, &checkouts).await? {
            Ok(()) => Ok(Ok(checkouts)),
            Err(f) => Ok(Err(f)),
        }
    }

    /// Finds the task's branch in every repository and rebases each onto its upstream.
    async fn rebase(&self, d: &DeliveryRow) -> anyhow::Result<Result<Vec<Checkout>, Failure>> {
        self.store.set_phase(d.id, Phase::Rebase.as_str()).await?;
        let work = self.work_dir(d.id);
        if work.exists() {
            std::fs::remove_dir_all(&work)
                .with_context(|| format!("cannot clear `{}`", work.display()))?;
        }
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create `{}`", work.display()))?;
        let mut found = Vec::new();
        for (position, repo) in self.config.repos.iter().enumerate() {
            let dir = work.join(&repo.name);
            let url = repo_url(&self.config, repo);
            let git = self.bot_git(&work);
            let dir_s = dir.to_string_lossy().into_owned();
            let cloned = blocking(move || {
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
            if !cloned.0 {
                return Ok(Err(Failure::new(
                    Phase::Rebase,
                    &repo.name,
                    format!("cannot fetch `{}`: {}", repo.url, cloned.2.trim()),
                )));
            }
            let git = self.bot_git(&dir);
            let g = git.clone();
            let branches = blocking(move || {
                g.run(&[
                    "for-each-ref",
                    "--format=%(refname:strip=3)",
                    "refs/remotes/origin/",
                ])
            })
            .await?;
            let mine: Vec<&str> = branches
                .lines()
                .filter(|b| *b != "HEAD" && self.config.tasks.task_of(b) == Some(d.task.as_str()))
                .collect();
            match mine.as_slice() {
                [] => continue,
                [branch] => {
                    let base = git.resolve(&format!("refs/remotes/origin/{}", repo.upstream))?;
                    let Some(base) = base else {
                        return Ok(Err(Failure::new(
                            Phase::Rebase,
                            &repo.name,
                            format!(
                                "`{}` has no branch `{}` to deliver onto; fix `upstream` in lockstep.toml",
                                repo.name, repo.upstream
                            ),
                        )));
                    };
                    let branch_sha = git
                        .resolve(&format!("refs/remotes/origin/{branch}"))?
                        .unwrap_or_default();
                    found.push(Checkout {
                        repo: repo.clone(),
                        row: RepoRow {
                            repo: repo.name.clone(),
                            position: position as i64,
                            branch: branch.to_string(),
                            branch_sha,
                            base_sha: base,
                            rebased_sha: String::new(),
                            deployed: false,
                            merged: false,
                            rolled_back: false,
                        },
                        dir,
                    });
                }
                several => {
                    return Ok(Err(Failure::new(
                        Phase::Rebase,
                        &repo.name,
                        format!(
                            "`{}` has {} branches for `{}`: {}; delete all but one",
                            repo.name,
                            several.len(),
                            d.task,
                            several
                                .iter()
                                .map(|b| format!("`{b}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )));
                }
            }
        }
        if found.is_empty() {
            let names: Vec<&str> = self.config.repos.iter().map(|r| r.name.as_str()).collect();
            return Ok(Err(Failure::new(
                Phase::Rebase,
                "",
                format!(
                    "task `{}` has no branch in any repository (looked in {})",
                    d.task,
                    names.join(", ")
                ),
            )));
        }
        let rows: Vec<RepoRow> = found.iter().map(|c| c.row.clone()).collect();
        self.store.set_repos(d.id, &rows).await?;
        for c in &mut found {
            let git = self.bot_git(&c.dir);
            let (branch_sha, upstream) = (c.row.branch_sha.clone(), c.repo.upstream.clone());
            let g = git.clone();
            let outcome = blocking(move || -> anyhow::Result<Result<(), Vec<String>>> {
                g.run(&[
                    "checkout",
                    "--quiet",
                    "-B",
                    "lockstep-delivery",
                    &branch_sha,
                ])?;
                let (ok, _, _) = g.try_run(&[
                    "rebase",
                    "--quiet",
                    &format!("refs/remotes/origin/{upstream}"),
                ])?;
                if ok {
                    return Ok(Ok(()));
                }
                let files = g
                    .run(&["diff", "--name-only", "--diff-filter=U"])
                    .unwrap_or_default();
                let _ = g.try_run(&["rebase", "--abort"]);
                Ok(Err(files.lines().map(String::from).collect()))
            })
            .await?;
            if let Err(files) = outcome {
                let list = if files.is_empty() {
                    "(git named no file)".to_string()
                } else {
                    files.join(", ")
                };
                return Ok(Err(Failure::new(
                    Phase::Rebase,
                    &c.row.repo,
                    format!(
                        "`{}` does not rebase onto `{}`: conflicts in {list}; rebase it by hand and push again",
                        c.row.branch, c.repo.upstream
                    ),
                )));
            }
            if self.config.delivery.merge == MergeMode::MergeCommit {
                let message = format!(
                    "Deliver {} ({})\n\nMerged by lockstep, delivery #{}.",
                    d.task, c.row.branch, d.id
                );
                let (upstream, g) = (c.repo.upstream.clone(), git.clone());
                blocking(move || -> anyhow::Result<()> {
                    g.run(&[
                        "checkout",
                        "--quiet",
                        "-B",
                        "lockstep-merge",
                        &format!("refs/remotes/origin/{upstream}"),
                    ])?;
                    g.run(&[
                        "merge",
                        "--quiet",
                        "--no-ff",
                        "-m",
                        &message,
                        "lockstep-delivery",
                    ])?;
                    Ok(())
                })
                .await?;
            }
            c.row.rebased_sha = git
                .resolve("HEAD")?
                .context("the rebased checkout has no HEAD")?;
            self.store
                .journal(
                    d.id,
                    "rebase",
                    &c.row.repo,
                    "rebased",
                    &format!(
                        "{} {} onto {} {}",
                        c.row.branch, c.row.branch_sha, c.repo.upstream, c.row.base_sha
                    ),
                )
                .await?;
            self.progress.step(d.id, &c.row.repo, "rebase", "passed");
            self.say(&format!(
                "#{} {}: rebase   {:<12} {} → {}",
                d.id,
                d.task,
                c.row.repo,
                crate::push::short(&c.row.branch_sha),
                crate::push::short(&c.row.rebased_sha)
            ));
        }
        let rows: Vec<RepoRow> = found.iter().map(|c| c.row.clone()).collect();
        self.store.set_repos(d.id, &rows).await?;
        let skipped: Vec<&str> = self
            .config
            .repos
            .iter()
            .filter(|r| !rows.iter().any(|x| x.repo == r.name))
            .map(|r| r.name.as_str())
            .collect();
        if !skipped.is_empty() {
            self.store
                .journal(d.id, "rebase", "", "left alone", &skipped.join(", "))
                .await?;
        }
        Ok(Ok(found))
    }

    /// After a crash in build or test: the checkouts, if they still hold the rebased commits.
    async fn resume_checkouts(&self, d: &DeliveryRow) -> anyhow::Result<Option<Vec<Checkout>>> {
        let rows = self.store.repos(d.id).await?;
        if rows.is_empty() || rows.iter().any(|r| r.rebased_sha.is_empty()) {
            return Ok(None);
        }
        let mut out = Vec::new();
        for row in rows {
            let Some(repo) = self.config.repo(&row.repo) else {
                return Ok(None);
            };
            let dir = self.work_dir(d.id).join(&row.repo);
            let head = Git::new(&dir).resolve("HEAD").ok().flatten();
            if head.as_deref() != Some(row.rebased_sha.as_str()) {
                return Ok(None);
            }
            let status = Git::new(&dir)
                .run(&["status", "--porcelain", "--untracked-files=no"])
                .unwrap_or_else(|_| "?".into());
            if !status.trim().is_empty() {
                return Ok(None);
            }
            out.push(Checkout {
                repo: repo.clone(),
                row,
                dir,
            });
        }
        Ok(Some(out))
    }

    fn step_env(&self, d: &DeliveryRow, c: &Checkout, step: &str) -> Vec<(String, String)> {
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
            ("LOCKSTEP_STEP".into(), step.into()),
        ]);
        env
    }

    /// Runs one repository's step of a phase (a phase with no step for it passes); a step
    /// given `stop` is killed when it turns true.
    async fn run_step(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        c: &Checkout,
        stop: Option<watch::Receiver<bool>>,
    ) -> anyhow::Result<Result<(), Failure>> {
        let Some(command) = phase.step(&c.repo) else {
            return Ok(Ok(()));
        };
        self.exec(d, phase.as_str(), command, c, stop)
            .await
            .map(|r| {
                r.map_err(|(msg, tail)| Failure {
                    phase: phase.as_str().into(),
                    repo: c.row.repo.clone(),
                    message: msg,
                    log_tail: tail,
                })
            })
    }

    /// Runs a command for a checkout, journaled, with its log; Err((why, log tail)) on failure.
    async fn exec(
        &self,
        d: &DeliveryRow,
        step: &str,
        command: &Command,
        c: &Checkout,
        stop: Option<watch::Receiver<bool>>,
    ) -> anyhow::Result<Result<(), (String, String)>> {
        let log = self.log_path(d.id, &c.row.repo, step);
        let spec = StepSpec {
            argv: command.argv(),
            cwd: c.dir.clone(),
            env: self.step_env(d, c, step),
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
                match stop {
                    Some(mut stop) => running.wait_or_stop(&mut stop).await?,
                    None => running.wait().await?,
                }
            }
            Err(outcome) => outcome,
        };
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
            return Ok(Ok(()));
        }
        let tail = steps::tail(&log, 20);
        let mut why = format!("`{step}` {}", outcome.describe());
        if let Some(last) = tail.lines().rev().find(|l| !l.trim().is_empty()) {
            why.push_str(&format!(": {}", last.trim()));
        }
        Ok(Err((why, tail)))
    }

    /// Build or test: every repository at once (bounded by `delivery.parallel`). The first
    /// failure stops the line: the other repositories' steps are killed (`stopped` in their
    /// logs), steps still waiting for their turn never start, and that failure is reported.
    async fn parallel_phase(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        checkouts: &[Checkout],
    ) -> anyhow::Result<Result<(), Failure>> {
        let limit = Arc::new(Semaphore::new(self.config.delivery.parallel));
        let (stop, stopping) = watch::channel(false);
        let mut steps = tokio::task::JoinSet::new();
        for c in checkouts {
            let (engine, d, c, limit) = (self.clone(), d.clone(), c.clone(), limit.clone());
            let stopping = stopping.clone();
            steps.spawn(async move {
                let _permit = limit.acquire_owned().await;
                if *stopping.borrow() {
                    return Ok(Ok(()));
                }
                engine.run_step(&d, phase, &c, Some(stopping)).await
            });
        }
        let mut first = None;
        while let Some(r) = steps.join_next().await {
            if let (Err(f), None) = (r.context("a step task panicked")??, &first) {
                first = Some(f);
                let _ = stop.send(true);
            }
        }
        Ok(first.map_or(Ok(()), Err))
    }
}

/// The useful part of a failed push: the server's rejection lines, else git's error.
fn push_error(stdout: &str, stderr: &str) -> String {
    let remote: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("remote: "))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if !remote.is_empty() {
        return remote.join(" / ");
    }
    let rejected: Vec<&str> = stdout.lines().filter(|l| l.starts_with('!')).collect();
    if !rejected.is_empty() {
        return rejected.join(" / ");
    }
    stderr
        .trim()
        .lines()
        .last()
        .unwrap_or("git push failed")
        .to_string()
}

/// Runs blocking work (git) off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
