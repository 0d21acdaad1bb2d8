//! Undoing a delivery: the rollback steps of what it deployed (last deployed first, the latest
//! stage first), when it
//! fails and on `lockstep rollback`, and the revert commits `lockstep rollback --revert` (and
//! a firing alert about a watched delivery) pushes for what it merged, all or nothing.

use anyhow::Context as _;

use super::engine::{Checkout, Engine};
use super::gate::Trigger;
use super::merge::Pushed;
use super::stages::to_roll_back;
use super::stop::Stop;
use crate::config::MergeMode;
use crate::domain::{DeliveryId, Event, Phase, Stage, State, TaskKey};
use crate::runtime::blocking;
use crate::store::{DeliveryRow, RepoFlag};

impl Engine {
    /// Rolls back every deployed repository of a delivery, last deployed first; a staged
    /// delivery stage by stage, the latest stage first, each rollback step with its stage's
    /// `LOCKSTEP_ENV` and variables.
    ///
    /// Returns the repositories whose rollback failed (they are still deployed).
    pub(super) async fn rollback_deployed(&self, id: DeliveryId, task: &TaskKey) -> Vec<String> {
        let (rows, journal) = match (self.store.repos(id).await, self.store.journal_of(id).await) {
            (Ok(r), Ok(j)) => (r, j),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(
                    delivery = id.0,
                    "cannot read the delivery's repositories: {e:#}"
                );
                return vec!["(unknown)".into()];
            }
        };
        let Ok(Some(d)) = self.store.delivery(id).await else {
            return vec!["(unknown)".into()];
        };
        let plan = to_roll_back(&journal, &rows, self.config.delivery.first_stage());
        // A repository whose every stage is rolled back already (the worker stopped before
        // its flag was set) is marked so.
        for row in rows.iter().filter(|r| r.deployed && !r.rolled_back) {
            if !plan.iter().any(|p| p.repo == row.repo) {
                let _ = self
                    .store
                    .set_repo_flag(id, &row.repo, RepoFlag::RolledBack, true)
                    .await;
            }
        }
        let mut failed: Vec<String> = Vec::new();
        for (i, at) in plan.iter().enumerate() {
            let Some(row) = rows.iter().find(|r| r.repo == at.repo) else {
                continue;
            };
            let Some(repo) = self.config.repo(row.repo.as_str()) else {
                continue;
            };
            let staged = if at.staged {
                format!(" from {}", at.stage)
            } else {
                String::new()
            };
            let c = Checkout {
                repo: repo.clone(),
                row: row.clone(),
                dir: self.work_dir(id).join(row.repo.as_str()),
            };
            let Some(command) = repo.steps.rollback.clone() else {
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
                self.say(&format!(
                    "#{id} {task}: rollback {:<12} has no rollback step; nothing run{staged}",
                    row.repo
                ));
                continue;
            };
            if let Err(e) = self.ensure_checkout(&c).await {
                let _ = self
                    .store
                    .journal(
                        id,
                        Phase::Rollback,
                        row.repo.as_str(),
                        Event::NoCheckout,
                        &format!("{e:#}"),
                    )
                    .await;
            }
            let why = match self
                .exec(&d, Phase::Rollback, &command, &c, &at.stage, None)
                .await
            {
                Ok(()) => {
                    if at.staged {
                        let _ = self
                            .store
                            .journal(
                                id,
                                Phase::Rollback,
                                row.repo.as_str(),
                                Event::RolledBack,
                                &at.stage,
                            )
                            .await;
                    }
                    // The repository is rolled back once no stage of it is left to undo.
                    let left = plan[i + 1..].iter().any(|p| p.repo == row.repo)
                        || failed.contains(&row.repo.to_string());
                    if !left {
                        let _ = self
                            .store
                            .set_repo_flag(id, &row.repo, RepoFlag::RolledBack, true)
                            .await;
                    }
                    continue;
                }
                Err(Stop::Failed(f)) => f.message,
                Err(Stop::Broken(e)) => format!("{e:#}"),
            };
            let why = if at.staged {
                format!("{}: {why}", at.stage)
            } else {
                why
            };
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
        failed
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
        let reverted_before: std::collections::BTreeSet<String> = self
            .store
            .journal_of(d.id)
            .await?
            .into_iter()
            .filter(|j| j.stage == Stage::Phase(Phase::Rollback) && j.event == Event::Reverted)
            .map(|j| j.repo)
            .collect();
        let rows = self.store.repos(d.id).await?;
        let to_roll_back = rows.iter().filter(|r| r.deployed && !r.rolled_back).count();
        let to_revert = rows
            .iter()
            .filter(|r| r.merged && !reverted_before.contains(r.repo.as_str()))
            .count();
        if to_roll_back == 0 && (!revert || to_revert == 0) {
            let what = if revert && !reverted_before.is_empty() {
                "already rolled back and reverted"
            } else if revert {
                "already rolled back, and nothing was merged to revert"
            } else {
                "already rolled back"
            };
            let line = format!("#{} {}: {what}; nothing to do", d.id, d.task);
            self.say(&line);
            return Ok(line);
        }
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
        let failed = self.rollback_deployed(d.id, &d.task).await;
        let mut note = match cause {
            Cause::Manual => format!("rolled back by lockstep (#{})", d.id),
            Cause::Alert { quote, .. } => {
                format!("rolled back by lockstep (#{}) on the {quote}", d.id)
            }
            Cause::Gate { why } => {
                format!(
                    "rolled back by lockstep (#{}) during the watch: {why}",
                    d.id
                )
            }
        };
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
            note.push_str(&format!("; reverted: {}", reverted.join(", ")));
            if let Cause::Alert {
                fired_ms: Some(fired),
                ..
            } = cause
            {
                let took = (crate::store::now_ms() - fired).max(0);
                note.push_str(&format!(
                    "; every upstream reverted {} after the alert fired",
                    crate::config::humanize(std::time::Duration::from_millis(took as u64))
                ));
            }
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
                Ok((tip, sha)) => made.push((*c, tip, sha)),
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
        let mut pushed: Vec<&(&Checkout, String, String)> = Vec::new();
        for m in &made {
            let (c, tip, sha) = m;
            if let Pushed::Refused(why) = self.cas_push(c, tip, sha, false).await? {
                self.store
                    .journal(
                        d.id,
                        Phase::Rollback,
                        c.row.repo.as_str(),
                        Event::RevertFailed,
                        &why,
                    )
                    .await?;
                let failing = c.row.repo.clone();
                let mut put_back = Vec::new();
                for (c, tip, sha) in pushed.iter().rev() {
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
            pushed.push(m);
        }
        let mut reverted = Vec::new();
        for (c, _, sha) in &made {
            self.store
                .journal(
                    d.id,
                    Phase::Rollback,
                    c.row.repo.as_str(),
                    Event::Reverted,
                    sha,
                )
                .await?;
            reverted.push(format!("{} {}", c.row.repo, crate::git::short(sha)));
        }
        Ok(reverted)
    }
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
    pub fn trigger(&self) -> Trigger {
        match self {
            Cause::Manual => Trigger::Manual,
            Cause::Alert { .. } => Trigger::Alert,
            Cause::Gate { .. } => Trigger::Gate,
        }
    }
}
