//! The merge phase: the merge-stage policies, compare-and-swap pushes of every upstream,
//! putting back what was moved when one push fails, and reconciling after a crash.

use super::*;

impl Engine {
    /// The `on = "merge"` rules, checked right before anything is pushed.
    pub(super) async fn merge_policies(
        &self,
        d: &DeliveryRow,
    ) -> anyhow::Result<Result<(), Failure>> {
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
        let facts = crate::delivery::deliver_facts(
            &self.config,
            self.tracker.name(),
            &d.task,
            task.as_ref(),
            &d.requester,
            None,
            &[],
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
    pub(super) async fn merge(
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
                    self.progress.step(d.id, &c.row.repo, "merge", "passed");
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
    pub(super) async fn undo_merges(
        &self,
        id: i64,
        pushed: &[&Checkout],
    ) -> anyhow::Result<Vec<String>> {
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
    pub(super) async fn cas_push(
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
    pub(super) async fn reconcile_merge(
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
