//! Undoing a delivery: the rollback steps of what it deployed (last deployed first, the latest
//! stage first), when it
//! fails and on `lockstep rollback`, and the revert commits `lockstep rollback --revert` (and
//! a firing alert about a watched delivery) pushes for what it merged, all or nothing.

use std::collections::BTreeSet;

use anyhow::Context as _;

use super::engine::{Checkout, Engine};
use super::gate::Trigger;
use super::merge::Pushed;
use super::stages::{Deployed, to_roll_back};
use super::stop::Stop;
use crate::config::{MergeMode, StepCommand};
use crate::domain::{DeliveryId, Event, Phase, RepoName, Stage, State, TaskKey};
use crate::runtime::blocking;
use crate::store::{DeliveryRow, RepoFlag, RepoRow};

impl Engine {
    /// Rolls back every deployed repository of a delivery, last deployed first; a staged
    /// delivery stage by stage, the latest stage first, each rollback step with its stage's
    /// `LOCKSTEP_ENV` and variables.
    ///
    /// Returns the repositories whose rollback failed (they are still deployed).
    pub(super) async fn rollback_deployed(&self, id: DeliveryId, task: &TaskKey) -> Vec<String> {
        let Some((d, rows, plan)) = self.rollback_plan(id).await else {
            return vec!["(unknown)".into()];
        };
        self.mark_rolled_back_already(id, &rows, &plan).await;
        let mut failed: Vec<String> = Vec::new();
        for (i, at) in plan.iter().enumerate() {
            let Some(row) = rows.iter().find(|r| r.repo == at.repo) else {
                continue;
            };
            let Some(repo) = self.config.repo(row.repo.as_str()) else {
                continue;
            };
            let c = Checkout {
                repo: repo.clone(),
                row: row.clone(),
                dir: self.work_dir(id).join(row.repo.as_str()),
            };
            let Some(command) = repo.steps.rollback.clone() else {
                self.no_rollback_step(id, task, row, at).await;
                continue;
            };
            match self.run_rollback_step(&d, &command, &c, at).await {
                Ok(()) => {
                    // The repository is rolled back once no stage of it is left to undo.
                    let left = plan[i + 1..].iter().any(|p| p.repo == row.repo)
                        || failed.contains(&row.repo.to_string());
                    if !left {
                        let _ = self
                            .store
                            .set_repo_flag(id, &row.repo, RepoFlag::RolledBack, true)
                            .await;
                    }
                }
                Err(why) => {
                    let _ = self
                        .store
                        .journal(
                            id,
                            Phase::Rollback,
                            row.repo.as_str(),
                            Event::RollbackFailed,
                            &why,
                        )
                        .await;
                    if !failed.contains(&row.repo.to_string()) {
                        failed.push(row.repo.to_string());
                    }
                }
            }
        }
        failed
    }

    /// The delivery, its repositories and what of them to roll back, in order; `None` (and
    /// logged) when the store cannot say.
    async fn rollback_plan(
        &self,
        id: DeliveryId,
    ) -> Option<(DeliveryRow, Vec<RepoRow>, Vec<Deployed>)> {
        let (rows, journal) = match (self.store.repos(id).await, self.store.journal_of(id).await) {
            (Ok(r), Ok(j)) => (r, j),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(
                    delivery = id.0,
                    "cannot read the delivery's repositories: {e:#}"
                );
                return None;
            }
        };
        let Ok(Some(d)) = self.store.delivery(id).await else {
            return None;
        };
        let plan = to_roll_back(&journal, &rows, self.config.delivery.first_stage());
        Some((d, rows, plan))
    }

    /// A repository whose every stage is rolled back already (the worker stopped before its
    /// flag was set) is marked so.
    async fn mark_rolled_back_already(&self, id: DeliveryId, rows: &[RepoRow], plan: &[Deployed]) {
        for row in rows.iter().filter(|r| r.deployed && !r.rolled_back) {
            if !plan.iter().any(|p| p.repo == row.repo) {
                let _ = self
                    .store
                    .set_repo_flag(id, &row.repo, RepoFlag::RolledBack, true)
                    .await;
            }
        }
    }

    /// A repository with no rollback step: journaled and told, nothing run.
    async fn no_rollback_step(&self, id: DeliveryId, task: &TaskKey, row: &RepoRow, at: &Deployed) {
        let _ = self
            .store
            .journal(
                id,
                Phase::Rollback,
                row.repo.as_str(),
                Event::NoRollbackStep,
                if at.staged { &at.stage } else { "" },
            )
            .await;
        let staged = if at.staged {
            format!(" from {}", at.stage)
        } else {
            String::new()
        };
        self.say(&format!(
            "#{id} {task}: rollback {:<12} has no rollback step; nothing run{staged}",
            row.repo
        ));
    }

    /// Runs one rollback step in its checkout (journaled when of a stage); what went wrong,
    /// the stage first, when it failed.
    async fn run_rollback_step(
        &self,
        d: &DeliveryRow,
        command: &StepCommand,
        c: &Checkout,
        at: &Deployed,
    ) -> Result<(), String> {
        let repo = c.row.repo.as_str();
        if let Err(e) = self.ensure_checkout(c).await {
            let _ = self
                .store
                .journal(
                    d.id,
                    Phase::Rollback,
                    repo,
                    Event::NoCheckout,
                    &format!("{e:#}"),
                )
                .await;
        }
        let why = match self
            .exec(d, Phase::Rollback, command, c, &at.stage, None)
            .await
        {
            Ok(()) => {
                if at.staged {
                    let _ = self
                        .store
                        .journal(d.id, Phase::Rollback, repo, Event::RolledBack, &at.stage)
                        .await;
                }
                return Ok(());
            }
            Err(Stop::Failed(f)) => f.message,
            Err(Stop::Broken(e)) => format!("{e:#}"),
        };
        Err(if at.staged {
            format!("{}: {why}", at.stage)
        } else {
            why
        })
    }

    /// A sentence naming the repositories whose rollback failed, and where to look.
    pub(super) fn rollback_failure(id: DeliveryId, failed: &[String]) -> String {
        let names: Vec<String> = failed.iter().map(|r| format!("`{r}`")).collect();
        let (verb, pronoun) = if failed.len() == 1 {
            ("is", "it")
        } else {
            ("are", "they")
        };
        format!(
            "the rollback of {} failed: {pronoun} {verb} still deployed; \
             see `lockstep logs {id} --step rollback`, fix it, then run `lockstep rollback {id}`",
            names.join(", ")
        )
    }

    /// `lockstep rollback` and `/rollback`: [`Engine::roll_back`] on a person's request.
    pub async fn rollback_finished(&self, d: &DeliveryRow, revert: bool) -> anyhow::Result<()> {
        self.roll_back(d, revert, &Cause::Manual).await.map(|_| ())
    }

    /// Rolls back a finished delivery: runs its rollback steps (last deployed first), moves
    /// its task back and, with `revert`, pushes revert commits of what it merged in every
    /// repository, all or nothing. Returns the note the task got.
    pub async fn roll_back(
        &self,
        d: &DeliveryRow,
        revert: bool,
        cause: &Cause,
    ) -> anyhow::Result<String> {
        // Each repository is rolled back, and reverted, once: `rollback` then `rollback
        // --revert` must not run a rollback step twice (a second one may well go back one
        // version too many).
        let reverted_before = self.reverted_before(d.id).await?;
        if let Some(line) = self.nothing_to_undo(d, revert, &reverted_before).await? {
            self.say(&line);
            return Ok(line);
        }
        self.journal_rollback_request(d, revert, cause).await?;
        let failed = self.rollback_deployed(d.id, &d.task).await;
        let mut note = cause.note(d.id);
        let mut reverted = Vec::new();
        if revert {
            let checkouts = self.checkouts_of(d.id).await?;
            let merged: Vec<&Checkout> = checkouts
                .iter()
                .filter(|c| c.row.merged && !reverted_before.contains(c.row.repo.as_str()))
                .collect();
            match self.revert_all(d, &merged).await {
                Ok(r) => reverted = r,
                Err(e) => {
                    // The rollback steps ran: the task goes back, saying what is still merged.
                    note.push_str(&format!("; {e:#}"));
                    self.say(&format!("#{} {}: {note}", d.id, d.task));
                    self.move_task(d, &self.config.tasks.returned, &note).await;
                    return Err(e);
                }
            }
        }
        if !reverted.is_empty() {
            note.push_str(&cause.reverted_note(&reverted));
        }
        if !failed.is_empty() {
            note.push_str(&format!("; {}", Self::rollback_failure(d.id, &failed)));
        }
        self.say(&format!("#{} {}: {note}", d.id, d.task));
        if d.state == State::Delivered {
            self.store.note_after(d.id, &note).await?;
        }
        self.move_task(d, &self.config.tasks.returned, &note).await;
        if !failed.is_empty() {
            anyhow::bail!("{}", Self::rollback_failure(d.id, &failed));
        }
        Ok(note)
    }

    /// The repositories a rollback of the delivery reverted already.
    async fn reverted_before(&self, id: DeliveryId) -> anyhow::Result<BTreeSet<String>> {
        Ok(self
            .store
            .journal_of(id)
            .await?
            .into_iter()
            .filter(|j| j.stage == Stage::Phase(Phase::Rollback) && j.event == Event::Reverted)
            .map(|j| j.repo)
            .collect())
    }

    /// The line that says so when nothing is left to roll back (nor, with `revert`, to
    /// revert); `None` when something is.
    async fn nothing_to_undo(
        &self,
        d: &DeliveryRow,
        revert: bool,
        reverted_before: &BTreeSet<String>,
    ) -> anyhow::Result<Option<String>> {
        let rows = self.store.repos(d.id).await?;
        let to_roll_back = rows.iter().filter(|r| r.deployed && !r.rolled_back).count();
        let to_revert = rows
            .iter()
            .filter(|r| r.merged && !reverted_before.contains(r.repo.as_str()))
            .count();
        if to_roll_back > 0 || (revert && to_revert > 0) {
            return Ok(None);
        }
        let what = if revert && !reverted_before.is_empty() {
            "already rolled back and reverted"
        } else if revert {
            "already rolled back, and nothing was merged to revert"
        } else {
            "already rolled back"
        };
        Ok(Some(format!("#{} {}: {what}; nothing to do", d.id, d.task)))
    }

    /// Journals what triggered the rollback, and what was asked of it.
    async fn journal_rollback_request(
        &self,
        d: &DeliveryRow,
        revert: bool,
        cause: &Cause,
    ) -> anyhow::Result<()> {
        self.store
            .journal(
                d.id,
                Phase::Rollback,
                "",
                Event::RollbackTriggered,
                cause.trigger().as_str(),
            )
            .await?;
        self.store
            .journal(
                d.id,
                Phase::Rollback,
                "",
                Event::Requested,
                &match (cause, revert) {
                    (Cause::Alert { quote, .. }, _) => format!("with revert, on the {quote}"),
                    (Cause::Gate { why }, _) => format!("with revert, during the watch: {why}"),
                    (Cause::Manual, true) => "with revert".into(),
                    (Cause::Manual, false) => String::new(),
                },
            )
            .await?;
        Ok(())
    }

    /// Pushes a revert of the delivery in every checkout, all or nothing: each revert commit
    /// is made first, then each upstream moves by compare-and-swap; when one push fails, the
    /// upstreams already moved are put back. Returns `repo sha` of each revert.
    async fn revert_all(
        &self,
        d: &DeliveryRow,
        merged: &[&Checkout],
    ) -> anyhow::Result<Vec<String>> {
        let mut made = Vec::new();
        for c in merged {
            made.push(self.make_revert(d, c).await?);
        }
        self.push_reverts(d, &made).await?;
        let mut reverted = Vec::new();
        for r in &made {
            self.store
                .journal(
                    d.id,
                    Phase::Rollback,
                    r.c.row.repo.as_str(),
                    Event::Reverted,
                    &r.sha,
                )
                .await?;
            reverted.push(format!("{} {}", r.c.row.repo, crate::git::short(&r.sha)));
        }
        Ok(reverted)
    }

    /// Commits a revert of the delivery on the upstream's tip in one checkout; when it cannot,
    /// journals why and fails (nothing was pushed yet).
    async fn make_revert<'c>(
        &self,
        d: &DeliveryRow,
        c: &'c Checkout,
    ) -> anyhow::Result<Revert<'c>> {
        self.ensure_checkout(c).await?;
        let git = self.bot_git(&c.dir);
        let (up, base, head) = (
            c.repo.upstream.clone(),
            c.row.base_sha.clone(),
            c.row.rebased_sha.clone(),
        );
        let merge_commit = self.config.delivery.merge == MergeMode::MergeCommit;
        let msg = format!("Revert the delivery of {} (lockstep #{})", d.task, d.id);
        let commit = blocking(move || -> anyhow::Result<(String, String)> {
            git.run(&["fetch", "--quiet", "origin"])?;
            let remote = format!("refs/remotes/origin/{up}");
            let tip = git.resolve(&remote)?.context("upstream vanished")?;
            git.run(&["checkout", "--quiet", "-B", "lockstep-revert", &tip])?;
            if merge_commit {
                git.run(&["revert", "--no-commit", "-m", "1", &head])?;
            } else {
                git.run(&["revert", "--no-commit", &format!("{base}..{head}")])?;
            }
            git.run(&["commit", "--quiet", "-m", &msg])?;
            Ok((tip, git.resolve("HEAD")?.unwrap_or_default()))
        })
        .await;
        match commit {
            Ok((tip, sha)) => Ok(Revert { c, tip, sha }),
            Err(e) => {
                let why = format!("{e:#}");
                self.store
                    .journal(
                        d.id,
                        Phase::Rollback,
                        c.row.repo.as_str(),
                        Event::RevertFailed,
                        &why,
                    )
                    .await?;
                anyhow::bail!(
                    "cannot revert `{}` in `{}`: {why}; nothing was reverted",
                    d.task,
                    c.row.repo
                );
            }
        }
    }

    /// Moves each upstream to its revert by compare-and-swap; when one refuses, journals why,
    /// puts back the ones already moved and fails saying so.
    async fn push_reverts(&self, d: &DeliveryRow, made: &[Revert<'_>]) -> anyhow::Result<()> {
        for (i, r) in made.iter().enumerate() {
            let Pushed::Refused(why) = self.cas_push(r.c, &r.tip, &r.sha, false).await? else {
                continue;
            };
            let c = r.c;
            self.store
                .journal(
                    d.id,
                    Phase::Rollback,
                    c.row.repo.as_str(),
                    Event::RevertFailed,
                    &why,
                )
                .await?;
            let put_back = self
                .put_back_reverts(d, &made[..i], &c.row.repo, &why)
                .await?;
            let undone = if put_back.is_empty() {
                String::new()
            } else {
                format!(" (put back {})", put_back.join(", "))
            };
            anyhow::bail!(
                "cannot push the revert of `{}` to `{}` of `{}`: {why}; nothing was \
                 reverted{undone}",
                d.task,
                c.repo.upstream,
                c.row.repo
            );
        }
        Ok(())
    }

    /// Puts the upstreams of the reverts `pushed` back where they were, the last pushed first,
    /// after the revert of `failing` was refused for `why`; returns the repositories put back.
    async fn put_back_reverts(
        &self,
        d: &DeliveryRow,
        pushed: &[Revert<'_>],
        failing: &RepoName,
        why: &str,
    ) -> anyhow::Result<Vec<String>> {
        let mut put_back = Vec::new();
        for Revert { c, tip, sha } in pushed.iter().rev() {
            match self.cas_push(c, sha, tip, true).await? {
                Pushed::Moved => {
                    self.store
                        .journal(
                            d.id,
                            Phase::Rollback,
                            c.row.repo.as_str(),
                            Event::RevertUndone,
                            tip,
                        )
                        .await?;
                    put_back.push(format!("`{}`", c.row.repo));
                }
                Pushed::Refused(e) => anyhow::bail!(
                    "cannot revert `{}` in `{failing}` ({why}), and the revert already \
                     pushed to `{}` of `{}` could not be put back ({e}); reset it to \
                     {tip} by hand",
                    d.task,
                    c.repo.upstream,
                    c.row.repo
                ),
            }
        }
        Ok(put_back)
    }
}

/// A revert commit made in a checkout, ready to push onto `tip`, the upstream it was made on.
struct Revert<'c> {
    c: &'c Checkout,
    tip: String,
    sha: String,
}

/// Why a finished delivery is rolled back.
#[derive(Debug, Clone)]
pub enum Cause {
    /// `lockstep rollback` or `/rollback`.
    Manual,
    /// A firing alert about one of its repositories, while it was watched.
    Alert {
        /// The alert, quoted and escaped ([`crate::monitor::alert::Alert::quote`]).
        quote: String,
        /// When it started firing (ms since the epoch), for the time to revert.
        fired_ms: Option<i64>,
    },
    /// A gate sampled during the watch (`[delivery] watch_gates`) failed.
    Gate {
        /// The gate's failure, naming the gate, the query, the value and the bound.
        why: String,
    },
}

impl Cause {
    /// The note a rolled back task gets, before what was reverted and what failed.
    fn note(&self, id: DeliveryId) -> String {
        match self {
            Cause::Manual => format!("rolled back by lockstep (#{id})"),
            Cause::Alert { quote, .. } => {
                format!("rolled back by lockstep (#{id}) on the {quote}")
            }
            Cause::Gate { why } => {
                format!("rolled back by lockstep (#{id}) during the watch: {why}")
            }
        }
    }

    /// What the note adds for the `reverted` repositories: them, and after an alert, how long
    /// after it fired every upstream was reverted.
    fn reverted_note(&self, reverted: &[String]) -> String {
        let mut note = format!("; reverted: {}", reverted.join(", "));
        if let Cause::Alert {
            fired_ms: Some(fired),
            ..
        } = self
        {
            let took = (crate::store::now_ms() - fired).max(0);
            note.push_str(&format!(
                "; every upstream reverted {} after the alert fired",
                crate::config::humanize(std::time::Duration::from_millis(took as u64))
            ));
        }
        note
    }

    /// What triggered the rollback, as the metrics and the journal count it.
    pub fn trigger(&self) -> Trigger {
        match self {
            Cause::Manual => Trigger::Manual,
            Cause::Alert { .. } => Trigger::Alert,
            Cause::Gate { .. } => Trigger::Gate,
        }
    }
}
