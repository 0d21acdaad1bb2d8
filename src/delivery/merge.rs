//! The merge phase and every push to an upstream: the merge-stage policies, compare-and-swap
//! pushes of every upstream, putting back what was moved when one push fails, and deleting the
//! delivered branches once the delivery has landed.

use super::engine::{Checkout, Engine};
use super::stop::{Failure, Stop};
use crate::domain::{DeliveryId, Event, Phase, RepoName, Stage as JournalStage};
use crate::policy::Stage;
use crate::runtime::blocking;
use crate::store::{DeliveryRow, RepoFlag};

/// What became of a compare-and-swap push.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    /// The ref moved.
    Moved,
    /// The server refused it, or the ref was not where it was expected: why, in a line.
    Refused(String),
}

impl Engine {
    /// The `on = "merge"` rules, checked right before anything is pushed.
    pub(super) async fn merge_policies(&self, d: &DeliveryRow) -> Result<(), Stop> {
        if self.policies.rules_for(Stage::Merge).next().is_none() {
            return Ok(());
        }
        let task = self
            .tracker
            .task(&d.task)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let repos: Vec<RepoName> = self
            .store
            .repos(d.id)
            .await?
            .into_iter()
            .map(|r| r.repo)
            .collect();
        let facts = crate::delivery::deliver_facts(
            &self.config,
            &crate::delivery::Judged {
                tracker: self.tracker.name(),
                key: d.task.as_str(),
                task: task.as_ref(),
                requester: &d.requester,
                repos: &repos,
                delivery: Some(d.id),
                ..Default::default()
            },
        );
        let decision = self.policies.evaluate(Stage::Merge, &facts);
        crate::audit::record(
            &self.config,
            &crate::audit::Entry::delivery(
                Stage::Merge,
                &d.task,
                &d.requester,
                Some(d.id),
                &decision,
                &self.policies.revision,
            ),
        );
        if decision.accepted() {
            return Ok(());
        }
        let why: Vec<String> = decision
            .violations()
            .map(|v| format!("[{}] {}", v.rule, v.messages().join("; ")))
            .collect();
        let message = format!("merge refused by policy: {}", why.join("; "));
        Err(Failure::new(Phase::Merge, None, message).into())
    }

    /// Moves every upstream to its rebased head, one compare-and-swap push each; if one fails,
    /// the upstreams already moved are put back (compare-and-swap again).
    pub(super) async fn merge(&self, d: &DeliveryRow, checkouts: &[Checkout]) -> Result<(), Stop> {
        let mut pushed: Vec<&Checkout> = Vec::new();
        for c in checkouts {
            self.store
                .journal(
                    d.id,
                    Phase::Merge,
                    c.row.repo.as_str(),
                    Event::Push,
                    &format!(
                        "{} {} → {}",
                        c.repo.upstream, c.row.base_sha, c.row.rebased_sha
                    ),
                )
                .await?;
            if let Pushed::Refused(why) = self.push_upstream(d.id, c).await? {
                let mut message = format!(
                    "the bot could not push `{}` of `{}`: {why}",
                    c.repo.upstream, c.row.repo
                );
                let undone = self.undo_merges(d.id, &pushed).await?;
                if !undone.is_empty() {
                    message.push_str(&format!("; put back {}", undone.join(", ")));
                }
                return Err(Failure::new(Phase::Merge, Some(&c.row.repo), message).into());
            }
            self.store
                .journal(
                    d.id,
                    Phase::Merge,
                    c.row.repo.as_str(),
                    Event::Pushed,
                    &c.row.rebased_sha,
                )
                .await?;
            let sha = crate::git::short(&c.row.rebased_sha);
            self.passed(d, &c.row.repo, Phase::Merge, sha, &c.repo.upstream);
            pushed.push(c);
        }
        Ok(())
    }

    /// Puts back upstreams this delivery moved. Returns the repos put back.
    pub(super) async fn undo_merges(
        &self,
        id: DeliveryId,
        pushed: &[&Checkout],
    ) -> anyhow::Result<Vec<String>> {
        let mut undone = Vec::new();
        for c in pushed.iter().rev() {
            self.store
                .journal(
                    id,
                    Phase::Merge,
                    c.row.repo.as_str(),
                    Event::Undo,
                    &format!(
                        "{} {} → {}",
                        c.repo.upstream, c.row.rebased_sha, c.row.base_sha
                    ),
                )
                .await?;
            if let Pushed::Refused(why) = self.put_back(id, c).await? {
                self.store
                    .journal(
                        id,
                        Phase::Merge,
                        c.row.repo.as_str(),
                        Event::UndoFailed,
                        &why,
                    )
                    .await?;
                anyhow::bail!(
                    "`{}` of `{}` was advanced and could not be put back ({why}); \
                     reset it to {} by hand",
                    c.repo.upstream,
                    c.row.repo,
                    c.row.base_sha
                );
            }
            undone.push(c.row.repo.to_string());
        }
        Ok(undone)
    }

    /// Moves a checkout's upstream from where the delivery found it to its rebased head, and
    /// records the repository merged if it moved.
    pub(super) async fn push_upstream(
        &self,
        id: DeliveryId,
        c: &Checkout,
    ) -> anyhow::Result<Pushed> {
        let pushed = self
            .cas_push(c, &c.row.base_sha, &c.row.rebased_sha, false)
            .await?;
        if pushed == Pushed::Moved {
            self.store
                .set_repo_flag(id, &c.row.repo, RepoFlag::Merged, true)
                .await?;
        }
        Ok(pushed)
    }

    /// Moves a checkout's upstream back from its rebased head to where the delivery found it,
    /// and records the repository not merged if it moved.
    async fn put_back(&self, id: DeliveryId, c: &Checkout) -> anyhow::Result<Pushed> {
        let pushed = self
            .cas_push(c, &c.row.rebased_sha, &c.row.base_sha, true)
            .await?;
        if pushed == Pushed::Moved {
            self.store
                .set_repo_flag(id, &c.row.repo, RepoFlag::Merged, false)
                .await?;
        }
        Ok(pushed)
    }

    /// `git push --force-with-lease=<ref>:<expect> origin <new>:<ref>` of a checkout's
    /// upstream: moves the ref only if it still points at `expect`.
    pub(super) async fn cas_push(
        &self,
        c: &Checkout,
        expect: &str,
        new: &str,
        undo: bool,
    ) -> anyhow::Result<Pushed> {
        let git = self.bot_git(&c.dir);
        let refname = format!("refs/heads/{}", c.repo.upstream);
        let lease = format!("--force-with-lease={refname}:{expect}");
        let spec = format!("{new}:{refname}");
        blocking(move || {
            let mut args = vec!["push", "--porcelain", "--quiet", lease.as_str()];
            if undo {
                args.extend(["-o", "lockstep-undo"]);
            }
            args.extend(["origin", spec.as_str()]);
            let (mut ok, mut out, mut err) = git.try_run(&args)?;
            if !ok && undo && err.contains("does not support push options") {
                // A server without lockstep's hooks: nothing to tell, push without the option.
                (ok, out, err) =
                    git.try_run(&["push", "--porcelain", "--quiet", &lease, "origin", &spec])?;
            }
            Ok(if ok {
                Pushed::Moved
            } else {
                Pushed::Refused(push_error(&out, &err))
            })
        })
        .await
    }

    /// Deletes the delivered branches (`[delivery] delete_branches`), each only if it still
    /// points where the delivery found it; what happened is journaled, nothing stops.
    pub(super) async fn delete_branches(&self, id: DeliveryId, checkouts: &[Checkout]) {
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
                    JournalStage::Report,
                    c.row.repo.as_str(),
                    Event::Branch,
                    &format!("{}: {detail}", c.row.branch),
                )
                .await;
        }
    }
}

impl Engine {
    /// Deletes the task's approval refs (`refs/approvals/<TASK>/…`) in every repository the
    /// delivery landed in: they approved heads that are now upstream, and would otherwise
    /// pile up. What happened is journaled; nothing stops.
    pub(super) async fn delete_approvals(&self, d: &DeliveryRow, checkouts: &[Checkout]) {
        for c in checkouts {
            let git = self.bot_git(&c.dir);
            let prefix = format!("{}{}/", crate::push::approval::PREFIX, d.task);
            let r = blocking(move || -> anyhow::Result<Vec<String>> {
                let pattern = format!("{prefix}*");
                let listed = git.run(&["ls-remote", "origin", &pattern])?;
                let refs: Vec<String> = listed
                    .lines()
                    .filter_map(|l| l.split_once('\t'))
                    .map(|(_, name)| name.to_string())
                    .filter(|name| name.starts_with(&prefix))
                    .collect();
                if refs.is_empty() {
                    return Ok(refs);
                }
                let mut args = vec!["push".to_string(), "--quiet".into(), "origin".into()];
                args.extend(refs.iter().map(|r| format!(":{r}")));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                match git.try_run(&args)? {
                    (true, _, _) => Ok(refs),
                    (false, out, err) => anyhow::bail!("{}", push_error(&out, &err)),
                }
            })
            .await;
            let detail = match r {
                Ok(refs) if refs.is_empty() => continue,
                Ok(refs) => format!("deleted {}", refs.join(", ")),
                Err(e) => format!("not deleted: {e:#}"),
            };
            let _ = self
                .store
                .journal(
                    d.id,
                    JournalStage::Report,
                    c.row.repo.as_str(),
                    Event::Approvals,
                    &detail,
                )
                .await;
        }
    }
}

/// The useful part of a failed push: the server's rejection lines, else git's error.
pub(super) fn push_error(stdout: &str, stderr: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_error_prefers_the_servers_lines_then_the_rejected_refs_then_gits_last_word() {
        let hook = "remote: \nremote: lockstep: `db` is frozen for the release\nremote: \n\
                    To /srv/db.git\nerror: failed to push some refs to '/srv/db.git'\n";
        assert_eq!(
            push_error("", hook),
            "lockstep: `db` is frozen for the release"
        );
        let out = "To /srv/api.git\n!\tabc:refs/heads/master\t[rejected] (stale info)\nDone\n";
        let err = "error: failed to push some refs to '/srv/api.git'\n";
        assert_eq!(
            push_error(out, err),
            "!\tabc:refs/heads/master\t[rejected] (stale info)"
        );
        assert_eq!(
            push_error("", "fatal: could not read from remote\n\n"),
            "fatal: could not read from remote"
        );
        assert_eq!(push_error("", ""), "git push failed");
    }
}
