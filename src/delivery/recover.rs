//! Crash recovery: what a killed worker left behind is finished or undone by the next worker
//! before it takes anything from the queue, so that every upstream has a delivery or none has,
//! what was deployed is rolled back, and no delivery is lost or run twice.

use super::engine::{Checkout, Engine};
use super::merge::Pushed;
use super::steps;
use crate::domain::{DeliveryId, Event, Phase, StepState};
use crate::git::Git;
use crate::runtime::blocking;
use crate::store::{DeliveryRow, RepoFlag};

/// Where the upstreams of a delivery interrupted in merge stand once reconciled.
enum Reconciled {
    /// Every upstream has it.
    Merged(Vec<Checkout>),
    /// None has it any more; why it could not be finished.
    PutBack(String),
}

/// Finishes or undoes what a killed worker left running. Call it only while holding the lock.
///
/// First the steps the dead worker left running are killed (they run in process groups of
/// their own, which outlive it). Then, by the phase the delivery was in:
/// - a candidate of the pipeline (never deployed): queued again, in its place, from the start;
/// - rebase: queued again, from the start;
/// - build or test: queued again at the head, resuming that phase;
/// - deploy or verify: what was deployed is rolled back (every stage of a staged delivery,
///   the latest first) and the delivery fails;
/// - merge: the upstreams are read and made all-merged or none-merged;
/// - rollback (it had failed already): the rollback is finished.
pub async fn recover(engine: &Engine) -> anyhow::Result<Vec<String>> {
    let mut said = Vec::new();
    for d in engine.store.running().await? {
        let stopped = engine.stop_leftover_steps(d.id).await?;
        if stopped > 0 {
            let line = format!(
                "#{} {}: stopped {stopped} step(s) the previous worker left running",
                d.id, d.task
            );
            engine.say(&line);
            said.push(line);
        }
        let line = engine.recover_delivery(&d).await?;
        engine.say(&line);
        said.push(line);
    }
    said.extend(super::showroom::recover(engine).await?);
    Ok(said)
}

impl Engine {
    /// Recovers one delivery a killed worker left running; says what became of it.
    async fn recover_delivery(&self, d: &DeliveryRow) -> anyhow::Result<String> {
        let phase = d.phase;
        let prepared = matches!(
            phase,
            None | Some(Phase::Rebase | Phase::Build | Phase::Test)
        );
        if d.candidate && prepared {
            self.store
                .requeue(
                    d.id,
                    None,
                    "the worker stopped while it was prepared behind the head; starting over",
                )
                .await?;
            return Ok(format!(
                "#{} {}: was a candidate in {}; queued again, from its rebase",
                d.id,
                d.task,
                phase.map_or("the queue", Phase::as_str)
            ));
        }
        Ok(match phase {
            None | Some(Phase::Rebase) => {
                self.store
                    .requeue(
                        d.id,
                        None,
                        "the worker stopped during rebase; starting over",
                    )
                    .await?;
                format!(
                    "#{} {}: was interrupted in rebase; queued again",
                    d.id, d.task
                )
            }
            Some(p @ (Phase::Build | Phase::Test)) => {
                let why = format!("the worker stopped during {p}; resuming it");
                self.store.requeue(d.id, Some(p), &why).await?;
                format!(
                    "#{} {}: was interrupted in {p}; queued again to resume it",
                    d.id, d.task
                )
            }
            Some(p @ (Phase::Deploy | Phase::Verify)) => {
                // A staged delivery: the stage it stopped in; every stage deployed is undone.
                let journal = self.store.journal_of(d.id).await?;
                let stage = match (super::stages::stages_of(&journal).pop(), p) {
                    (Some(s), Phase::Deploy) => format!(" to {}", s.stage),
                    (Some(s), _) => format!(" in {}", s.stage),
                    (None, _) => String::new(),
                };
                let why = format!(
                    "the worker stopped during {p}{stage}; what was deployed is rolled back"
                );
                self.store
                    .journal(d.id, p, "", Event::Recovered, &why)
                    .await?;
                let summary = format!("delivery failed in {p}: {why}");
                self.fail_recovered(d, &summary).await?;
                format!("#{} {}: {summary}", d.id, d.task)
            }
            Some(Phase::Merge) => self.recover_merge(d).await?,
            Some(Phase::Rollback) => {
                self.store
                    .journal(
                        d.id,
                        Phase::Rollback,
                        "",
                        Event::Recovered,
                        "finishing the rollback",
                    )
                    .await?;
                self.fail_recovered(d, &d.error).await?;
                format!(
                    "#{} {}: was interrupted while rolling back; rolled back: {}",
                    d.id, d.task, d.error
                )
            }
        })
    }

    /// Stops the steps a killed worker left running for a delivery (they run in process
    /// groups of their own, which outlive the worker), so that nothing deploys behind the back
    /// of the recovery. Returns how many were stopped.
    async fn stop_leftover_steps(&self, id: DeliveryId) -> anyhow::Result<usize> {
        let mut stopped = 0;
        for step in self.store.steps(id).await? {
            if step.outcome != StepState::Running {
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
                .step_finished(step.id, None, StepState::Interrupted)
                .await?;
            let detail = if killed {
                "the worker stopped; what it left running was killed"
            } else {
                "the worker stopped"
            };
            self.store
                .journal(
                    id,
                    step.step,
                    step.repo.as_str(),
                    Event::StepInterrupted,
                    detail,
                )
                .await?;
            stopped += usize::from(killed);
        }
        Ok(stopped)
    }

    /// A delivery queued again after a crash in build or test picks up at that phase with the
    /// checkouts it had, if they still hold the rebased commits; `None` (journaled) when it
    /// has to start over from the rebase.
    pub(super) async fn resume(
        &self,
        d: &DeliveryRow,
        phase: Phase,
    ) -> anyhow::Result<Option<Vec<Checkout>>> {
        let checkouts = self.intact_checkouts(d).await?;
        let (event, detail) = match checkouts {
            Some(_) => (Event::Resumed, "checkouts intact"),
            None => (
                Event::NotResumed,
                "the checkouts are gone or changed; starting over",
            ),
        };
        self.store.journal(d.id, phase, "", event, detail).await?;
        Ok(checkouts)
    }

    /// The checkouts of an interrupted delivery, if they still hold the rebased commits and
    /// nothing else.
    async fn intact_checkouts(&self, d: &DeliveryRow) -> anyhow::Result<Option<Vec<Checkout>>> {
        let rows = self.store.repos(d.id).await?;
        if rows.is_empty() || rows.iter().any(|r| r.rebased_sha.is_empty()) {
            return Ok(None);
        }
        let mut out = Vec::new();
        for row in rows {
            let Some(repo) = self.config.repo(row.repo.as_str()) else {
                return Ok(None);
            };
            let dir = self.work_dir(d.id).join(row.repo.as_str());
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

    /// After a crash in the merge phase: reads every upstream and makes them all-merged or
    /// none-merged, then records the delivery as landed or failed. Returns what happened, for
    /// the operator.
    async fn recover_merge(&self, d: &DeliveryRow) -> anyhow::Result<String> {
        let summary = match self.reconcile_merge(d).await {
            Ok(Reconciled::Merged(checkouts)) => {
                self.land(d, &checkouts, true).await?;
                super::showroom::finished(self, d, crate::domain::State::Delivered).await;
                return Ok(format!(
                    "#{} {}: was interrupted in merge; every upstream now has it: delivered",
                    d.id, d.task
                ));
            }
            Ok(Reconciled::PutBack(why)) => format!(
                "delivery failed in merge: interrupted, then {why}; every upstream was put back"
            ),
            Err(e) => format!(
                "delivery failed in merge: cannot reconcile the upstreams after a restart: {e:#}"
            ),
        };
        self.fail_recovered(d, &summary).await?;
        Ok(format!("#{} {}: {summary}", d.id, d.task))
    }

    /// Fails a delivery recovery could not finish (its task goes back), and takes down its
    /// task's showroom, as a delivery that fails under a worker does.
    async fn fail_recovered(&self, d: &DeliveryRow, summary: &str) -> anyhow::Result<()> {
        let state = self.fail(d, summary, "").await?;
        super::showroom::finished(self, d, state).await;
        Ok(())
    }

    /// Reads every upstream of a delivery interrupted in merge. When some have it and the
    /// others are where the delivery found them, the merge is finished forward (every check
    /// passed before it began); when that cannot be done, those that have it are put back.
    async fn reconcile_merge(&self, d: &DeliveryRow) -> anyhow::Result<Reconciled> {
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
                    crate::git::short(&sha)
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
                Phase::Merge,
                "",
                Event::Reconcile,
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
            return Ok(Reconciled::PutBack(moved.join(", ")));
        }
        let mut done = merged.clone();
        for c in &unmerged {
            if let Pushed::Refused(why) = self.push_upstream(d.id, c).await? {
                self.store
                    .journal(
                        d.id,
                        Phase::Merge,
                        c.row.repo.as_str(),
                        Event::PushFailed,
                        &why,
                    )
                    .await?;
                self.undo_merges(d.id, &done).await?;
                return Ok(Reconciled::PutBack(format!(
                    "the bot could not push `{}` of `{}`: {why}",
                    c.repo.upstream, c.row.repo
                )));
            }
            self.store
                .journal(
                    d.id,
                    Phase::Merge,
                    c.row.repo.as_str(),
                    Event::Pushed,
                    "after recovery",
                )
                .await?;
            done.push(c);
        }
        Ok(Reconciled::Merged(checkouts))
    }
}
