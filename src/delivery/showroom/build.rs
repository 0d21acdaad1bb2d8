//! One showroom's checkouts and steps: each repository with a branch for the task is cloned
//! into the showroom's folder and its branch rebased on its upstream, as a delivery's is
//! (nothing is pushed but a runner's candidate); its `build` and `deploy` steps, or its
//! `teardown`, then run as a delivery's steps run: under their supervisor, confined, with a
//! clean environment, or `build` and `deploy` on their runner (`lockstep_purpose =
//! showroom`, the candidate pushed as `<prefix>showroom-<label>`, deleted when they end).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::super::confine::{self, CONFINE_VAR, WRITABLE_VAR};
use super::super::engine::Engine;
use super::super::remote::{Purpose, RemoteStep};
use super::super::steps::{self, StepOutcome, StepSpec};
use super::Label;
use crate::config::{Repo, RunnerStep, SHOWROOM, StepCommand};
use crate::domain::{Phase, TaskKey};
use crate::runtime::blocking;
use crate::store::ShowroomRow;

/// At most this much of a failing step's last line goes into the reason.
const WHY_BYTES: usize = 200;

/// One repository of the showroom: its checkout, its branch and the commit deployed.
struct Checkout<'a> {
    repo: &'a Repo,
    dir: PathBuf,
    branch: String,
    sha: String,
    base: String,
}

/// A showroom being deployed or torn down.
pub(super) struct Room<'a> {
    engine: &'a Engine,
    task: &'a TaskKey,
    label: &'a Label,
    url: String,
    folder: PathBuf,
}

impl<'a> Room<'a> {
    pub(super) fn new(
        engine: &'a Engine,
        task: &'a TaskKey,
        label: &'a Label,
        url: &str,
        folder: PathBuf,
    ) -> Room<'a> {
        Room {
            engine,
            task,
            label,
            url: url.to_string(),
            folder,
        }
    }

    /// Where the checkouts are.
    pub(super) fn work(&self) -> PathBuf {
        self.folder.join("work")
    }

    /// Rebases the task's branches and runs their `build` and `deploy` steps, in the order of
    /// `lockstep.toml`; the first failure stops it, with why.
    pub(super) async fn deploy(&self) -> Result<(), String> {
        let checkouts = self.checkouts().await.map_err(|e| format!("{e:#}"))?;
        if checkouts.is_empty() {
            let names: Vec<&str> = self
                .engine
                .config
                .repos
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            return Err(format!(
                "task `{}` has no branch in any repository (looked in {})",
                self.task,
                names.join(", ")
            ));
        }
        let shas: BTreeMap<String, String> = checkouts
            .iter()
            .map(|c| (c.repo.name.to_string(), c.sha.clone()))
            .collect();
        self.engine
            .store
            .set_showroom_shas(self.task.as_str(), &shas)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let ran = self.build_and_deploy(&checkouts).await;
        // The CI fetched what it builds: the candidate branches go when the steps end.
        let branch = self.engine.config.showroom_candidate(self.label.as_str());
        for c in checkouts.iter().filter(|c| c.repo.steps.on_runners()) {
            self.engine
                .delete_candidate(&c.dir, c.repo.name.as_str(), &branch)
                .await;
        }
        ran
    }

    async fn build_and_deploy(&self, checkouts: &[Checkout<'_>]) -> Result<(), String> {
        for c in checkouts {
            for (step, command) in [
                ("build", &c.repo.steps.build),
                ("deploy", &c.repo.steps.deploy),
            ] {
                if let Some(command) = command {
                    self.run(c, step, command).await?;
                }
            }
        }
        Ok(())
    }

    /// Runs the `teardown` step of every repository the showroom's checkouts are of, the last
    /// first; every one runs, and the first failure is returned.
    pub(super) async fn teardown(&self) -> Result<(), String> {
        let checkouts = self.existing();
        self.teardown_of(&checkouts).await
    }

    /// Teardown of a showroom the store records: its checkouts, made again at the recorded
    /// commits when they are gone (a restart, another host).
    pub(super) async fn teardown_recorded(&self, row: &ShowroomRow) -> Result<(), String> {
        let mut checkouts = self.existing();
        for (repo, sha) in &row.shas {
            if checkouts.iter().any(|c| c.repo.name.as_str() == repo) {
                continue;
            }
            let Some(r) = self.engine.config.repo(repo) else {
                continue;
            };
            let c = self.clone_at(r, sha).await.map_err(|e| format!("{e:#}"))?;
            checkouts.push(c);
        }
        let order = |c: &Checkout| {
            self.engine
                .config
                .repos
                .iter()
                .position(|r| r.name == c.repo.name)
        };
        checkouts.sort_by_key(order);
        self.teardown_of(&checkouts).await
    }

    async fn teardown_of(&self, checkouts: &[Checkout<'_>]) -> Result<(), String> {
        let mut first = None;
        for c in checkouts.iter().rev() {
            if let Some(command) = &c.repo.steps.teardown
                && let Err(why) = self.run(c, "teardown", command).await
                && first.is_none()
            {
                first = Some(why);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The checkouts still in the showroom's folder.
    fn existing(&self) -> Vec<Checkout<'a>> {
        let mut out = Vec::new();
        for repo in &self.engine.config.repos {
            let dir = self.work().join(repo.name.as_str());
            if !dir.join(".git").exists() {
                continue;
            }
            let git = self.engine.bot_git(&dir);
            let sha = git.resolve("HEAD").ok().flatten().unwrap_or_default();
            let branch = git
                .run(&["config", "--get", "lockstep.branch"])
                .map(|b| b.trim().to_string())
                .unwrap_or_default();
            let base = git
                .run(&["config", "--get", "lockstep.base"])
                .map(|b| b.trim().to_string())
                .unwrap_or_default();
            out.push(Checkout {
                repo,
                dir,
                branch,
                sha,
                base,
            });
        }
        out
    }

    /// Clones every repository, finds the task's branch in each and rebases it on the
    /// upstream; the repositories without a branch are left out.
    async fn checkouts(&self) -> anyhow::Result<Vec<Checkout<'a>>> {
        let work = self.work();
        if work.exists() {
            std::fs::remove_dir_all(&work)
                .with_context(|| format!("cannot clear `{}`", work.display()))?;
        }
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create `{}`", work.display()))?;
        let mut out = Vec::new();
        for repo in &self.engine.config.repos {
            let dir = self.clone_repo(repo).await?;
            let git = self.engine.bot_git(&dir);
            let g = git.clone();
            let branches = blocking(move || {
                g.run(&[
                    "for-each-ref",
                    "--format=%(refname:strip=3)",
                    "refs/remotes/origin/",
                ])
            })
            .await?;
            let mine: Vec<String> = branches
                .lines()
                .filter(|b| {
                    *b != "HEAD" && self.engine.config.tasks.task_of(b) == Some(self.task.as_str())
                })
                .map(String::from)
                .collect();
            let branch = match mine.as_slice() {
                [] => {
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                }
                [branch] => branch.clone(),
                several => anyhow::bail!(
                    "`{}` has {} branches for `{}`: {}; delete all but one",
                    repo.name,
                    several.len(),
                    self.task,
                    several.join(", ")
                ),
            };
            let base = git
                .resolve(&format!("refs/remotes/origin/{}", repo.upstream))?
                .with_context(|| {
                    format!(
                        "`{}` has no branch `{}`; fix `upstream` in lockstep.toml",
                        repo.name, repo.upstream
                    )
                })?;
            let (g, b, up) = (git.clone(), branch.clone(), base.clone());
            let rebased = blocking(move || -> anyhow::Result<bool> {
                let tip = format!("refs/remotes/origin/{b}");
                g.run(&["checkout", "--quiet", "-B", "lockstep-showroom", &tip])?;
                let (ok, _, _) = g.try_run(&["rebase", "--quiet", &up])?;
                if !ok {
                    let _ = g.try_run(&["rebase", "--abort"]);
                }
                g.run(&["config", "lockstep.branch", &b])?;
                g.run(&["config", "lockstep.base", &up])?;
                Ok(ok)
            })
            .await?;
            if !rebased {
                anyhow::bail!(
                    "`{branch}` does not rebase onto `{}` of `{}`; rebase it by hand and push \
                     again",
                    repo.upstream,
                    repo.name
                );
            }
            let sha = git
                .resolve("HEAD")?
                .context("the rebased checkout has no HEAD")?;
            out.push(Checkout {
                repo,
                dir,
                branch,
                sha,
                base,
            });
        }
        Ok(out)
    }

    /// Clones one repository into the showroom's folder.
    async fn clone_repo(&self, repo: &Repo) -> anyhow::Result<PathBuf> {
        let work = self.work();
        std::fs::create_dir_all(&work)?;
        self.engine
            .clone_into(&work, repo)
            .await?
            .map_err(anyhow::Error::msg)
    }

    /// A checkout of `repo` at `sha` (the upstream when the commit is gone), for a teardown.
    async fn clone_at(&self, repo: &'a Repo, sha: &str) -> anyhow::Result<Checkout<'a>> {
        let dir = self.clone_repo(repo).await?;
        let git = self.engine.bot_git(&dir);
        let (g, s) = (git.clone(), sha.to_string());
        blocking(move || g.try_run(&["checkout", "--quiet", "--detach", &s])).await?;
        let head = git.resolve("HEAD")?.unwrap_or_default();
        Ok(Checkout {
            repo,
            dir,
            branch: String::new(),
            sha: head,
            base: String::new(),
        })
    }

    /// Runs one step of a checkout; why it failed, with the last line of its log.
    async fn run(&self, c: &Checkout<'_>, step: &str, command: &StepCommand) -> Result<(), String> {
        let engine = self.engine;
        let log = self
            .folder
            .join(super::LOGS)
            .join(format!("{}.{step}.log", c.repo.name));
        if let Some(on) = command.runner() {
            return self.run_remote(c, step, on, log).await;
        }
        let home = self.folder.join("@home").join(c.repo.name.as_str());
        std::fs::create_dir_all(&home)
            .map_err(|e| format!("cannot create `{}`: {e}", home.display()))?;
        if engine.config.delivery.confine_steps {
            confine::enforced();
        }
        let spec = StepSpec {
            argv: command.argv(),
            cwd: c.dir.clone(),
            env: self.env(c, step, &home),
            pass_env: engine.config.delivery.pass_env.clone(),
            timeout: engine.config.delivery.step_timeout,
            log: log.clone(),
            supervisor: steps::this_executable(),
        };
        let started = std::time::Instant::now();
        // The supervisor's pid, while the step runs: what `recover` stops if this process
        // dies meanwhile.
        let running_file = super::running_file(&self.folder);
        let outcome = match steps::start(&spec).map_err(|e| format!("{e:#}"))? {
            Ok(running) => {
                if let Some(pid) = running.pid() {
                    let _ = std::fs::write(&running_file, pid.to_string());
                }
                let waited = running.wait().await;
                let _ = std::fs::remove_file(&running_file);
                waited.map_err(|e| format!("{e:#}"))?
            }
            Err(outcome) => outcome,
        };
        engine.say(&format!(
            "showroom {}: {step:<8} {:<12} {} ({:.1}s)",
            self.task,
            c.repo.name,
            outcome.state(),
            started.elapsed().as_secs_f64()
        ));
        if outcome == StepOutcome::Passed {
            return Ok(());
        }
        let mut why = format!("`{step}` of `{}` {}", c.repo.name, outcome.describe());
        let tail = steps::tail(&log);
        if let Some(last) = tail.lines().rev().find(|l| !l.trim().is_empty()) {
            why.push_str(&format!(": {}", crate::text::clip(last.trim(), WHY_BYTES)));
        }
        Err(why)
    }

    /// Runs `build` or `deploy` of a checkout on its runner (a `teardown` runs here: the
    /// config refuses one on a runner), told it is for the showroom, with its variables.
    async fn run_remote(
        &self,
        c: &Checkout<'_>,
        step: &str,
        on: &RunnerStep,
        log: PathBuf,
    ) -> Result<(), String> {
        let phase = match step {
            "build" => Phase::Build,
            "deploy" => Phase::Deploy,
            _ => {
                return Err(format!(
                    "`{step}` of `{}` runs on the runner `{}`; a showroom's `{step}` runs on \
                     lockstep's own host: make it a command",
                    c.repo.name, on.runner
                ));
            }
        };
        let config = &self.engine.config;
        let started = std::time::Instant::now();
        let ran = self
            .engine
            .run_remote(
                on,
                RemoteStep {
                    purpose: Purpose::Showroom(self.label.to_string()),
                    task: self.task,
                    repo: c.repo,
                    dir: &c.dir,
                    sha: &c.sha,
                    phase,
                    env: SHOWROOM,
                    vars: self.vars(),
                    branch: config.showroom_candidate(self.label.as_str()),
                    log,
                    stop: None,
                },
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
        self.engine.say(&format!(
            "showroom {}: {step:<8} {:<12} {} on {} ({:.1}s)",
            self.task,
            c.repo.name,
            ran.outcome.state(),
            on.runner,
            started.elapsed().as_secs_f64()
        ));
        if ran.outcome == StepOutcome::Passed {
            return Ok(());
        }
        Err(format!("`{step}` of `{}` {}", c.repo.name, ran.why))
    }

    /// The showroom environment's `vars` and the showroom's own: `LOCKSTEP_URL` and
    /// `LOCKSTEP_SHOWROOM` (the label), as a runner is told them (`lockstep_vars`).
    fn vars(&self) -> BTreeMap<String, String> {
        let mut vars = self
            .engine
            .config
            .showroom()
            .map(|s| s.vars.clone())
            .unwrap_or_default();
        vars.insert("LOCKSTEP_URL".into(), self.url.clone());
        vars.insert("LOCKSTEP_SHOWROOM".into(), self.label.to_string());
        vars
    }

    /// The variables of a showroom's step: the showroom environment's `vars`, the
    /// `LOCKSTEP_*` of a delivery's steps (`LOCKSTEP_ENV=showroom`), and the showroom's own:
    /// `LOCKSTEP_URL`, `LOCKSTEP_SHOWROOM` (the label) and `LOCKSTEP_PURPOSE=showroom`.
    fn env(&self, c: &Checkout<'_>, step: &str, home: &Path) -> Vec<(String, String)> {
        let config = &self.engine.config;
        let mut env: Vec<(String, String)> = config
            .showroom()
            .map(|s| s.vars.clone().into_iter().collect())
            .unwrap_or_default();
        env.extend([
            ("LOCKSTEP_TASK".into(), self.task.to_string()),
            ("LOCKSTEP_REPO".into(), c.repo.name.to_string()),
            ("LOCKSTEP_BRANCH".into(), c.branch.clone()),
            ("LOCKSTEP_SHA".into(), c.sha.clone()),
            ("LOCKSTEP_BASE_SHA".into(), c.base.clone()),
            ("LOCKSTEP_ENV".into(), SHOWROOM.into()),
            ("LOCKSTEP_STEP".into(), step.into()),
            ("LOCKSTEP_URL".into(), self.url.clone()),
            ("LOCKSTEP_SHOWROOM".into(), self.label.to_string()),
            ("LOCKSTEP_PURPOSE".into(), SHOWROOM.into()),
        ]);
        let mut writable = vec![home.to_path_buf()];
        writable.extend(c.repo.writable.iter().map(|p| config.resolve(p)));
        match std::env::join_paths(&writable) {
            Ok(paths) => env.push((WRITABLE_VAR.into(), paths.to_string_lossy().into_owned())),
            Err(e) => tracing::warn!(
                "showroom steps of `{}` may not write their HOME `{}`: {e}; move the state \
                 folder to a path without `:`",
                c.repo.name,
                home.display()
            ),
        }
        env.push(("HOME".into(), home.to_string_lossy().into_owned()));
        let confined = if config.delivery.confine_steps {
            "on"
        } else {
            "off"
        };
        env.push((CONFINE_VAR.into(), confined.into()));
        env
    }
}
