//! Undoing a delivery: the rollback steps of what it deployed (last deployed first), when it
//! fails and on `lockstep rollback`, and the revert commits `lockstep rollback --revert`
//! pushes for what it merged.

use anyhow::Context as _;

use super::engine::{Checkout, Engine};
use super::stop::Stop;
use crate::config::MergeMode;
use crate::domain::{DeliveryId, Phase, TaskKey};
use crate::runtime::blocking;
use crate::store::{DeliveryRow, RepoFlag};

impl Engine {
    /// Rolls back every deployed repository of a delivery, last deployed first.
    ///
    /// Returns the repositories whose rollback failed (they are still deployed).
    pub(super) async fn rollback_deployed(&self, id: DeliveryId, task: &TaskKey) -> Vec<String> {
        let rows = match self.store.repos(id).await {
            Ok(r) => r,
            Err(e) => {
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
        let mut failed = Vec::new();
        for row in rows.iter().rev().filter(|r| r.deployed && !r.rolled_back) {
            let Some(repo) = self.config.repo(&row.repo) else {
                continue;
            };
            let c = Checkout {
                repo: repo.clone(),
                row: row.clone(),
                dir: self.work_dir(id).join(row.repo.as_str()),
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
            let why = match self.exec(&d, Phase::Rollback, &command, &c, None).await {
                Ok(()) => {
                    let _ = self
                        .store
                        .set_repo_flag(id, &row.repo, RepoFlag::RolledBack, true)
                        .await;
                    continue;
                }
                Err(Stop::Failed(f)) => f.message,
                Err(Stop::Broken(e)) => format!("{e:#}"),
            };
            let _ = self
                .store
                .journal(id, "rollback", &row.repo, "rollback failed", &why)
                .await;
            failed.push(row.repo.to_string());
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
                .filter(|c| c.row.merged && !reverted_before.contains(c.row.repo.as_str()))
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
                        reverted.push(format!("{} {}", c.row.repo, crate::git::short(&sha)));
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
}
