//! The delivery line: rebase → build → test → deploy → verify → merge, each phase for every
//! repository of the task before the next phase, all or nothing.
//!
//! Every transition is journaled before it acts. A failure anywhere stops the line, rolls back
//! what was deployed (in reverse order), merges nothing, and moves the task back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::Semaphore;

use super::steps::{self, StepOutcome, StepSpec};
use crate::config::{Command, Config, MergeMode, Repo};
use crate::git::Git;
use crate::policy::{PolicySet, Stage};
use crate::store::{DeliveryRow, RepoFlag, RepoRow, State, Store};
use crate::tracker::Tracker;

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

/// Something to tell whoever watches (the terminal, the server's log).
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

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
        (self.progress)(line);
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
                if let Err(f) = self.run_step(d, phase, c).await? {
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

    /// Runs one repository's step of a phase (a phase with no step for it passes).
    async fn run_step(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        c: &Checkout,
    ) -> anyhow::Result<Result<(), Failure>> {
        let Some(command) = phase.step(&c.repo) else {
            return Ok(Ok(()));
        };
        self.exec(d, phase.as_str(), command, c).await.map(|r| {
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
                running.wait().await?
            }
            Err(outcome) => outcome,
        };
        self.store
            .step_finished(step_id, outcome.exit_code(), outcome.label())
            .await?;
        self.store
            .journal(d.id, step, &c.row.repo, "step finished", outcome.label())
            .await?;
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

    /// Build or test: every repository at once (bounded by `delivery.parallel`); the first
    /// failure in declaration order is the one reported.
    async fn parallel_phase(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        checkouts: &[Checkout],
    ) -> anyhow::Result<Result<(), Failure>> {
        let limit = Arc::new(Semaphore::new(self.config.delivery.parallel));
        let mut handles = Vec::new();
        for c in checkouts {
            let (engine, d, c, limit) = (self.clone(), d.clone(), c.clone(), limit.clone());
            handles.push(tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                engine.run_step(&d, phase, &c).await
            }));
        }
        let mut first = None;
        for h in handles {
            let r = h.await.context("a step task panicked")??;
            if let (Err(f), None) = (r, &first) {
                first = Some(f);
            }
        }
        Ok(first.map_or(Ok(()), Err))
    }

    /// The `on = "merge"` rules, checked right before anything is pushed.
    async fn merge_policies(&self, d: &DeliveryRow) -> anyhow::Result<Result<(), Failure>> {
        if self.policies.rules_for(Stage::Merge).next().is_none() {
            return Ok(Ok(()));
        }
        let task = self
            .tracker
            .task(&d.task)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let repos: Vec<String> = self
            .store
            .repos(d.id)
            .await?
            .into_iter()
            .map(|r| r.repo)
            .collect();
        let facts = super::deliver_facts(
            &self.config,
            self.tracker.name(),
            &d.task,
            task.as_ref(),
            &d.requester,
            None,
            repos,
            Some(d.id),
        );
        let decision = self.policies.evaluate(Stage::Merge, &facts);
        if decision.accepted() {
            return Ok(Ok(()));
        }
        let why: Vec<String> = decision
            .violations()
            .map(|v| format!("[{}] {}", v.rule, v.messages().join("; ")))
            .collect();
        Ok(Err(Failure::new(
            Phase::Merge,
            "",
            format!("merge refused by policy: {}", why.join("; ")),
        )))
    }

    /// Moves every upstream to its rebased head, one compare-and-swap push each; if one fails,
    /// the upstreams already moved are put back (compare-and-swap again).
    async fn merge(
        &self,
        d: &DeliveryRow,
        checkouts: &[Checkout],
    ) -> anyhow::Result<Result<(), Failure>> {
        let mut pushed: Vec<&Checkout> = Vec::new();
        for c in checkouts {
            self.store
                .journal(
                    d.id,
                    "merge",
                    &c.row.repo,
                    "push",
                    &format!(
                        "{} {} → {}",
                        c.repo.upstream, c.row.base_sha, c.row.rebased_sha
                    ),
                )
                .await?;
            let result = self
                .cas_push(
                    &c.dir,
                    &c.repo.upstream,
                    &c.row.base_sha,
                    &c.row.rebased_sha,
                    false,
                )
                .await?;
            match result {
                Ok(()) => {
                    self.store
                        .set_repo_flag(d.id, &c.row.repo, RepoFlag::Merged, true)
                        .await?;
                    self.store
                        .journal(d.id, "merge", &c.row.repo, "pushed", &c.row.rebased_sha)
                        .await?;
                    self.say(&format!(
                        "#{} {}: merge    {:<12} {} → {}",
                        d.id,
                        d.task,
                        c.row.repo,
                        crate::push::short(&c.row.rebased_sha),
                        c.repo.upstream
                    ));
                    pushed.push(c);
                }
                Err(why) => {
                    let mut message = format!(
                        "the bot could not push `{}` of `{}`: {why}",
                        c.repo.upstream, c.row.repo
                    );
                    let undone = self.undo_merges(d.id, &pushed).await?;
                    if !undone.is_empty() {
                        message.push_str(&format!("; put back {}", undone.join(", ")));
                    }
                    return Ok(Err(Failure::new(Phase::Merge, &c.row.repo, message)));
                }
            }
        }
        Ok(Ok(()))
    }

    /// Puts back upstreams this delivery moved. Returns the repos put back.
    async fn undo_merges(&self, id: i64, pushed: &[&Checkout]) -> anyhow::Result<Vec<String>> {
        let mut undone = Vec::new();
        for c in pushed.iter().rev() {
            self.store
                .journal(
                    id,
                    "merge",
                    &c.row.repo,
                    "undo",
                    &format!(
                        "{} {} → {}",
                        c.repo.upstream, c.row.rebased_sha, c.row.base_sha
                    ),
                )
                .await?;
            match self
                .cas_push(
                    &c.dir,
                    &c.repo.upstream,
                    &c.row.rebased_sha,
                    &c.row.base_sha,
                    true,
                )
                .await?
            {
                Ok(()) => {
                    self.store
                        .set_repo_flag(id, &c.row.repo, RepoFlag::Merged, false)
                        .await?;
                    undone.push(c.row.repo.clone());
                }
                Err(why) => {
                    self.store
                        .journal(id, "merge", &c.row.repo, "undo failed", &why)
                        .await?;
                    anyhow::bail!(
                        "`{}` of `{}` was advanced and could not be put back ({why}); reset it to {} by hand",
                        c.repo.upstream,
                        c.row.repo,
                        c.row.base_sha
                    );
                }
            }
        }
        Ok(undone)
    }

    /// `git push --force-with-lease=<ref>:<expect> origin <new>:<ref>`: moves the ref only if
    /// it still points at `expect`.
    async fn cas_push(
        &self,
        dir: &Path,
        branch: &str,
        expect: &str,
        new: &str,
        undo: bool,
    ) -> anyhow::Result<Result<(), String>> {
        let git = self.bot_git(dir);
        let refname = format!("refs/heads/{branch}");
        let lease = format!("--force-with-lease={refname}:{expect}");
        let spec = format!("{new}:{refname}");
        blocking(move || {
            let mut args = vec!["push", "--porcelain", "--quiet", lease.as_str()];
            if undo {
                args.extend(["-o", "lockstep-undo"]);
            }
            args.extend(["origin", spec.as_str()]);
            let (ok, out, err) = git.try_run(&args)?;
            if ok {
                return Ok(Ok(()));
            }
            if undo && err.contains("does not support push options") {
                // A server without lockstep's hooks: nothing to tell, push without the option.
                let (ok, out, err) =
                    git.try_run(&["push", "--porcelain", "--quiet", &lease, "origin", &spec])?;
                return Ok(if ok {
                    Ok(())
                } else {
                    Err(push_error(&out, &err))
                });
            }
            Ok(Err(push_error(&out, &err)))
        })
        .await
    }

    /// Rolls back every deployed repository of a delivery, last deployed first.
    ///
    /// Returns the repositories whose rollback failed (they are still deployed).
    pub async fn rollback_deployed(&self, id: i64, task: &str) -> Vec<String> {
        let rows = match self.store.repos(id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(
                    delivery = id,
                    "cannot read the delivery's repositories: {e:#}"
                );
                return vec!["(unknown)".into()];
            }
        };
        let Ok(Some(d)) = self.store.delivery(id).await else {
            return vec!["(unknown)".into()];
        };
        let mut failed = Vec::new();
        for row in rows.iter().rev().filter(|r| r.deployed && !r.rolled_back) {
            let Some(repo) = self.config.repo(&row.repo) else {
                continue;
            };
            let c = Checkout {
                repo: repo.clone(),
                row: row.clone(),
                dir: self.work_dir(id).join(&row.repo),
            };
            let Some(command) = repo.steps.rollback.clone() else {
                let _ = self
                    .store
                    .journal(id, "rollback", &row.repo, "no rollback step", "")
                    .await;
                self.say(&format!(
                    "#{id} {task}: rollback {:<12} has no rollback step; nothing run",
                    row.repo
                ));
                continue;
            };
            if let Err(e) = self.ensure_checkout(&c).await {
                let _ = self
                    .store
                    .journal(id, "rollback", &row.repo, "no checkout", &format!("{e:#}"))
                    .await;
            }
            match self.exec(&d, "rollback", &command, &c).await {
                Ok(Ok(())) => {
                    let _ = self
                        .store
                        .set_repo_flag(id, &row.repo, RepoFlag::RolledBack, true)
                        .await;
                }
                Ok(Err((why, _))) => {
                    let _ = self
                        .store
                        .journal(id, "rollback", &row.repo, "rollback failed", &why)
                        .await;
                    failed.push(row.repo.clone());
                }
                Err(e) => {
                    let _ = self
                        .store
                        .journal(
                            id,
                            "rollback",
                            &row.repo,
                            "rollback failed",
                            &format!("{e:#}"),
                        )
                        .await;
                    failed.push(row.repo.clone());
                }
            }
        }
        failed
    }

    /// A sentence naming the repositories whose rollback failed, and where to look.
    fn rollback_failure(id: i64, failed: &[String]) -> String {
        let names: Vec<String> = failed.iter().map(|r| format!("`{r}`")).collect();
        let (verb, pronoun) = if failed.len() == 1 {
            ("is", "it")
        } else {
            ("are", "they")
        };
        format!(
            "the rollback of {} failed: {pronoun} {verb} still deployed; see `lockstep logs {id} --step rollback`, fix it, then run `lockstep rollback {id}`",
            names.join(", ")
        )
    }

    /// `lockstep rollback`: runs the rollback steps of a finished delivery, moves its task
    /// back and, with `revert`, pushes revert commits of what it merged.
    pub async fn rollback_finished(&self, d: &DeliveryRow, revert: bool) -> anyhow::Result<()> {
        // Each repository is rolled back, and reverted, once: `rollback` then `rollback
        // --revert` must not run a rollback step twice (a second one may well go back one
        // version too many).
        let reverted_before: std::collections::BTreeSet<String> = self
            .store
            .journal_of(d.id)
            .await?
            .into_iter()
            .filter(|j| j.phase == "rollback" && j.event == "reverted")
            .map(|j| j.repo)
            .collect();
        let rows = self.store.repos(d.id).await?;
        let to_roll_back = rows.iter().filter(|r| r.deployed && !r.rolled_back).count();
        let to_revert = rows
            .iter()
            .filter(|r| r.merged && !reverted_before.contains(&r.repo))
            .count();
        if to_roll_back == 0 && (!revert || to_revert == 0) {
            let what = if revert && !reverted_before.is_empty() {
                "already rolled back and reverted"
            } else if revert {
                "already rolled back, and nothing was merged to revert"
            } else {
                "already rolled back"
            };
            self.say(&format!("#{} {}: {what}; nothing to do", d.id, d.task));
            return Ok(());
        }
        self.store
            .journal(
                d.id,
                "rollback",
                "",
                "requested",
                if revert { "with revert" } else { "" },
            )
            .await?;
        let failed = self.rollback_deployed(d.id, &d.task).await;
        let mut reverted = Vec::new();
        if revert {
            for c in self
                .checkouts_of(d.id)
                .await?
                .iter()
                .filter(|c| c.row.merged && !reverted_before.contains(&c.row.repo))
            {
                self.ensure_checkout(c).await?;
                let git = self.bot_git(&c.dir);
                let (up, base, head) = (
                    c.repo.upstream.clone(),
                    c.row.base_sha.clone(),
                    c.row.rebased_sha.clone(),
                );
                let merge_commit = self.config.delivery.merge == MergeMode::MergeCommit;
                let task = d.task.clone();
                let id = d.id;
                let pushed = blocking(move || -> anyhow::Result<String> {
                    git.run(&["fetch", "--quiet", "origin"])?;
                    let remote = format!("refs/remotes/origin/{up}");
                    let tip = git.resolve(&remote)?.context("upstream vanished")?;
                    git.run(&["checkout", "--quiet", "-B", "lockstep-revert", &tip])?;
                    if merge_commit {
                        git.run(&["revert", "--no-commit", "-m", "1", &head])?;
                    } else {
                        git.run(&["revert", "--no-commit", &format!("{base}..{head}")])?;
                    }
                    let msg = format!("Revert the delivery of {task} (lockstep #{id})");
                    git.run(&["commit", "--quiet", "-m", &msg])?;
                    let lease = format!("--force-with-lease=refs/heads/{up}:{tip}");
                    git.run(&[
                        "push",
                        "--quiet",
                        &lease,
                        "origin",
                        &format!("HEAD:refs/heads/{up}"),
                    ])?;
                    git.resolve("HEAD").map(|h| h.unwrap_or_default())
                })
                .await;
                match pushed {
                    Ok(sha) => {
                        self.store
                            .journal(d.id, "rollback", &c.row.repo, "reverted", &sha)
                            .await?;
                        reverted.push(format!("{} {}", c.row.repo, crate::push::short(&sha)));
                    }
                    Err(e) => {
                        self.store
                            .journal(
                                d.id,
                                "rollback",
                                &c.row.repo,
                                "revert failed",
                                &format!("{e:#}"),
                            )
                            .await?;
                        anyhow::bail!("cannot revert `{}` in `{}`: {e:#}", d.task, c.row.repo);
                    }
                }
            }
        }
        let mut note = format!("rolled back by lockstep (#{})", d.id);
        if !reverted.is_empty() {
            note.push_str(&format!("; reverted: {}", reverted.join(", ")));
        }
        if !failed.is_empty() {
            note.push_str(&format!("; {}", Self::rollback_failure(d.id, &failed)));
        }
        self.say(&format!("#{} {}: {note}", d.id, d.task));
        self.move_task(d, &self.config.tasks.returned, &note).await;
        if !failed.is_empty() {
            anyhow::bail!("{}", Self::rollback_failure(d.id, &failed));
        }
        Ok(())
    }

    /// Makes sure the checkout exists (after a crash, or for `lockstep rollback` later).
    async fn ensure_checkout(&self, c: &Checkout) -> anyhow::Result<()> {
        if c.dir.join(".git").exists() {
            return Ok(());
        }
        std::fs::create_dir_all(c.dir.parent().unwrap_or(Path::new(".")))?;
        let url = repo_url(&self.config, &c.repo);
        let git = self.bot_git(c.dir.parent().unwrap_or(Path::new(".")));
        let dir = c.dir.to_string_lossy().into_owned();
        let sha = c.row.rebased_sha.clone();
        let inner = self.bot_git(&c.dir);
        blocking(move || -> anyhow::Result<()> {
            git.run(&[
                "clone",
                "--quiet",
                "--no-tags",
                "--end-of-options",
                &url,
                &dir,
            ])?;
            if !sha.is_empty() && inner.try_run(&["checkout", "--quiet", "--detach", &sha])?.0 {
                return Ok(());
            }
            Ok(())
        })
        .await
    }

    async fn delete_branches(&self, id: i64, checkouts: &[Checkout]) {
        for c in checkouts {
            let git = self.bot_git(&c.dir);
            let lease = format!(
                "--force-with-lease=refs/heads/{}:{}",
                c.row.branch, c.row.branch_sha
            );
            let target = format!(":refs/heads/{}", c.row.branch);
            let r = blocking(move || git.try_run(&["push", "--quiet", &lease, "origin", &target]))
                .await;
            let detail = match r {
                Ok((true, _, _)) => "deleted".to_string(),
                Ok((false, out, err)) => push_error(&out, &err),
                Err(e) => format!("{e:#}"),
            };
            let _ = self
                .store
                .journal(
                    id,
                    "report",
                    &c.row.repo,
                    "branch",
                    &format!("{}: {detail}", c.row.branch),
                )
                .await;
        }
    }

    /// Rebuilds the checkouts of a finished delivery from the store (for recovery).
    async fn checkouts_of(&self, id: i64) -> anyhow::Result<Vec<Checkout>> {
        let mut out = Vec::new();
        for row in self.store.repos(id).await? {
            let repo = self
                .config
                .repo(&row.repo)
                .with_context(|| format!("repo `{}` is no longer in lockstep.toml", row.repo))?;
            let dir = self.work_dir(id).join(&row.repo);
            out.push(Checkout {
                repo: repo.clone(),
                row,
                dir,
            });
        }
        Ok(out)
    }

    /// After a crash in the merge phase: reads every upstream and makes them all-merged or
    /// none-merged, then records the delivery as landed or failed. Returns what happened, for
    /// the operator.
    pub async fn recover_merge(&self, d: &DeliveryRow) -> anyhow::Result<String> {
        match self.reconcile_merge(d).await {
            Ok(Ok(checkouts)) => {
                self.land(d, &checkouts, true).await?;
                Ok(format!(
                    "#{} {}: was interrupted in merge; every upstream now has it: delivered",
                    d.id, d.task
                ))
            }
            Ok(Err(why)) => {
                let summary = format!(
                    "delivery failed in merge: interrupted, then {why}; every upstream was put back"
                );
                self.fail(d, &summary, "").await?;
                Ok(format!("#{} {}: {summary}", d.id, d.task))
            }
            Err(e) => {
                let summary = format!(
                    "delivery failed in merge: cannot reconcile the upstreams after a restart: {e:#}"
                );
                self.fail(d, &summary, "").await?;
                Ok(format!("#{} {}: {summary}", d.id, d.task))
            }
        }
    }

    /// Reads every upstream of a delivery interrupted in merge. When some have it and the
    /// others are where the delivery found them, the merge is finished forward (every check
    /// passed before it began); when that cannot be done, those that have it are put back.
    /// `Ok(Err(why))` means none has it any more.
    async fn reconcile_merge(
        &self,
        d: &DeliveryRow,
    ) -> anyhow::Result<Result<Vec<Checkout>, String>> {
        let checkouts = self.checkouts_of(d.id).await?;
        let mut merged = Vec::new();
        let mut unmerged = Vec::new();
        let mut moved = Vec::new();
        for c in &checkouts {
            self.ensure_checkout(c).await?;
            let git = self.bot_git(&c.dir);
            let (upstream, rebased) = (c.repo.upstream.clone(), c.row.rebased_sha.clone());
            let remote = blocking(move || -> anyhow::Result<(String, bool)> {
                git.run(&["fetch", "--quiet", "origin", &upstream])?;
                let remote = git.resolve("FETCH_HEAD")?.unwrap_or_default();
                // Someone may already have built on top of what the delivery pushed.
                let contains =
                    remote == rebased || git.is_ancestor(&rebased, &remote).unwrap_or(false);
                Ok((remote, contains))
            })
            .await?;
            match remote {
                (_, true) => merged.push(c),
                (sha, false) if sha == c.row.base_sha => unmerged.push(c),
                (sha, false) => moved.push(format!(
                    "`{}` of `{}` moved to {} meanwhile",
                    c.repo.upstream,
                    c.row.repo,
                    crate::push::short(&sha)
                )),
            }
        }
        for c in &merged {
            self.store
                .set_repo_flag(d.id, &c.row.repo, RepoFlag::Merged, true)
                .await?;
        }
        self.store
            .journal(
                d.id,
                "merge",
                "",
                "reconcile",
                &format!(
                    "{} merged, {} not, {} moved",
                    merged.len(),
                    unmerged.len(),
                    moved.len()
                ),
            )
            .await?;
        if !moved.is_empty() {
            self.undo_merges(d.id, &merged).await?;
            return Ok(Err(moved.join(", ")));
        }
        let mut done = merged.clone();
        for c in &unmerged {
            match self
                .cas_push(
                    &c.dir,
                    &c.repo.upstream,
                    &c.row.base_sha,
                    &c.row.rebased_sha,
                    false,
                )
                .await?
            {
                Ok(()) => {
                    self.store
                        .set_repo_flag(d.id, &c.row.repo, RepoFlag::Merged, true)
                        .await?;
                    self.store
                        .journal(d.id, "merge", &c.row.repo, "pushed", "after recovery")
                        .await?;
                    done.push(c);
                }
                Err(why) => {
                    self.store
                        .journal(d.id, "merge", &c.row.repo, "push failed", &why)
                        .await?;
                    self.undo_merges(d.id, &done).await?;
                    return Ok(Err(format!(
                        "the bot could not push `{}` of `{}`: {why}",
                        c.repo.upstream, c.row.repo
                    )));
                }
            }
        }
        Ok(Ok(checkouts))
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
