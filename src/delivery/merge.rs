//! The merge phase and every push to an upstream: the merge-stage policies, compare-and-swap
//! pushes of every upstream, putting back what was moved when one push fails, and deleting the
//! delivered branches once the delivery has landed.

use std::path::Path;

use super::engine::Engine;
use super::line::blocking;
use super::phase::Phase;
use super::rebase::Checkout;
use super::stop::Failure;
use crate::policy::Stage;
use crate::store::{DeliveryRow, RepoFlag};

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

    pub(super) async fn delete_branches(&self, id: i64, checkouts: &[Checkout]) {
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
