//! The delivery's checkouts: cloning every repository, finding the task's branch in each,
//! rebasing it onto its upstream (with a merge commit on top in `merge-commit` mode), and
//! finding the checkouts again from the store after a crash or for `lockstep rollback`.

use std::path::Path;

use anyhow::Context as _;

use super::engine::{Ahead, Checkout, Engine, repo_url};
use super::stop::{Failure, Stop};
use crate::config::{MergeMode, Repo};
use crate::domain::{DeliveryId, Event, Phase};
use crate::runtime::blocking;
use crate::store::{DeliveryRow, RepoRow};

/// How a branch's rebase went.
pub(super) enum Rebased {
    Clean,
    /// The files git could not merge (none when git named none).
    Conflicts(Vec<String>),
}

impl Engine {
    /// Finds the task's branch in every repository and rebases each onto its base: the
    /// upstream, or in the pipeline the rebased result of the nearest delivery `ahead` that
    /// touches the same repository (each of those already contains everything ahead of it).
    pub(super) async fn rebase(
        &self,
        d: &DeliveryRow,
        ahead: &[Ahead],
    ) -> Result<Vec<Checkout>, Stop> {
        self.store.set_phase(d.id, Phase::Rebase).await?;
        let work = self.work_dir(d.id);
        if work.exists() {
            std::fs::remove_dir_all(&work)
                .with_context(|| format!("cannot clear `{}`", work.display()))?;
        }
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create `{}`", work.display()))?;
        // What an earlier attempt found is not this one's.
        self.store.set_repos(d.id, &[]).await?;
        let mut found = Vec::new();
        for (position, repo) in self.config.repos.iter().enumerate() {
            let on = ahead
                .iter()
                .rev()
                .find_map(|a| a.checkouts.iter().find(|c| c.row.repo == repo.name));
            found.extend(self.find_branch(d, &work, position, repo, on).await?);
        }
        if found.is_empty() {
            let names: Vec<&str> = self.config.repos.iter().map(|r| r.name.as_str()).collect();
            return Err(Failure::new(
                Phase::Rebase,
                None,
                format!(
                    "task `{}` has no branch in any repository (looked in {})",
                    d.task,
                    names.join(", ")
                ),
            )
            .into());
        }
        let rows: Vec<RepoRow> = found.iter().map(|c| c.row.clone()).collect();
        self.store.set_repos(d.id, &rows).await?;
        if d.candidate || !ahead.is_empty() {
            self.store
                .set_built_on(d.id, &built_on(ahead, &rows))
                .await?;
        }
        for c in &mut found {
            self.rebase_checkout(d, c).await?;
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
                .journal(
                    d.id,
                    Phase::Rebase,
                    "",
                    Event::LeftAlone,
                    &skipped.join(", "),
                )
                .await?;
        }
        Ok(found)
    }

    /// Clones a repository into the delivery's work folder and finds the task's branch in it:
    /// `None` when it has none (the repository is left alone), a failure when it has several.
    /// The base is the upstream's tip, or the rebased commit of `on` (a delivery ahead),
    /// fetched from its checkout.
    async fn find_branch(
        &self,
        d: &DeliveryRow,
        work: &Path,
        position: usize,
        repo: &Repo,
        on: Option<&Checkout>,
    ) -> Result<Option<Checkout>, Stop> {
        let dir = match self.clone_into(work, repo).await? {
            Ok(dir) => dir,
            Err(why) => return Err(Failure::new(Phase::Rebase, Some(&repo.name), why).into()),
        };
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
        let branch = match mine.as_slice() {
            [] => return Ok(None),
            [branch] => *branch,
            several => {
                let names: Vec<String> = several.iter().map(|b| format!("`{b}`")).collect();
                return Err(Failure::new(
                    Phase::Rebase,
                    Some(&repo.name),
                    format!(
                        "`{}` has {} branches for `{}`: {}; delete all but one",
                        repo.name,
                        several.len(),
                        d.task,
                        names.join(", ")
                    ),
                )
                .into());
            }
        };
        let base = git.resolve(&format!("refs/remotes/origin/{}", repo.upstream))?;
        let Some(mut base) = base else {
            let message = format!(
                "`{}` has no branch `{}` to deliver onto; fix `upstream` in lockstep.toml",
                repo.name, repo.upstream
            );
            return Err(Failure::new(Phase::Rebase, Some(&repo.name), message).into());
        };
        if let Some(on) = on {
            base = self.fetch_ahead(&git, on).await?;
        }
        let branch_sha = git
            .resolve(&format!("refs/remotes/origin/{branch}"))?
            .unwrap_or_default();
        Ok(Some(Checkout {
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
        }))
    }

    /// Rebases one checkout's branch onto its upstream (and merges it there in `merge-commit`
    /// mode); records the commit that is to land in `rebased_sha`.
    async fn rebase_checkout(&self, d: &DeliveryRow, c: &mut Checkout) -> Result<(), Stop> {
        let git = self.bot_git(&c.dir);
        let (branch_sha, base) = (c.row.branch_sha.clone(), c.row.base_sha.clone());
        let g = git.clone();
        let rebased = blocking(move || rebase_onto(&g, &branch_sha, &base)).await?;
        if let Rebased::Conflicts(files) = rebased {
            let message = conflicts(&c.row.branch, &c.repo.upstream, &files);
            return Err(Failure::new(Phase::Rebase, Some(&c.row.repo), message).into());
        }
        if self.config.delivery.merge == MergeMode::MergeCommit {
            let message = format!(
                "Deliver {} ({})\n\nMerged by lockstep, delivery #{}.",
                d.task, c.row.branch, d.id
            );
            let (base, g) = (c.row.base_sha.clone(), git.clone());
            blocking(move || -> anyhow::Result<()> {
                g.run(&["checkout", "--quiet", "-B", "lockstep-merge", &base])?;
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
                Phase::Rebase,
                c.row.repo.as_str(),
                Event::Rebased,
                &format!(
                    "{} {} onto {} {}",
                    c.row.branch, c.row.branch_sha, c.repo.upstream, c.row.base_sha
                ),
            )
            .await?;
        let (from, to) = (&c.row.branch_sha, &c.row.rebased_sha);
        let (from, to) = (crate::git::short(from), crate::git::short(to));
        self.passed(d, &c.row.repo, Phase::Rebase, from, to);
        Ok(())
    }

    /// Brings the rebased commit of a delivery ahead into a checkout: from that delivery's own
    /// checkout, or from the upstream if it has landed meanwhile (its folder is gone then).
    /// Returns the commit.
    async fn fetch_ahead(&self, git: &crate::git::Git, on: &Checkout) -> Result<String, Stop> {
        let (g, sha) = (git.clone(), on.row.rebased_sha.clone());
        let dir = on.dir.to_string_lossy().into_owned();
        let fetched = blocking(move || -> anyhow::Result<bool> {
            for from in [dir.as_str(), "origin"] {
                let (ok, _, _) = g.try_run(&["fetch", "--quiet", "--no-tags", from, &sha])?;
                if ok && g.resolve("FETCH_HEAD")?.as_deref() == Some(sha.as_str()) {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await?;
        if !fetched {
            let message = format!(
                "cannot fetch {} of `{}`, the result of the delivery ahead it builds on",
                on.row.rebased_sha, on.row.repo
            );
            return Err(Failure::new(Phase::Rebase, Some(&on.row.repo), message).into());
        }
        Ok(on.row.rebased_sha.clone())
    }

    /// Makes sure the checkout exists (after a crash, or for `lockstep rollback` later).
    pub(super) async fn ensure_checkout(&self, c: &Checkout) -> anyhow::Result<()> {
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
            // A commit gone from the remote leaves the clone where it is: it is still where
            // the rollback steps run.
            if !sha.is_empty() {
                inner.try_run(&["checkout", "--quiet", "--detach", &sha])?;
            }
            Ok(())
        })
        .await
    }

    /// Rebuilds the checkouts of a delivery from the store (for recovery and rollback).
    pub(super) async fn checkouts_of(&self, id: DeliveryId) -> anyhow::Result<Vec<Checkout>> {
        let mut out = Vec::new();
        for row in self.store.repos(id).await? {
            let repo = self
                .config
                .repo(row.repo.as_str())
                .with_context(|| format!("repo `{}` is no longer in lockstep.toml", row.repo))?;
            let dir = self.work_dir(id).join(row.repo.as_str());
            out.push(Checkout {
                repo: repo.clone(),
                row,
                dir,
            });
        }
        Ok(out)
    }
}

/// Checks out `branch_sha` on the branch `lockstep-delivery` and rebases it onto `base`, as
/// a delivery does (and an autotest, which tests what a delivery would build). Blocking.
pub(super) fn rebase_onto(
    g: &crate::git::Git,
    branch_sha: &str,
    base: &str,
) -> anyhow::Result<Rebased> {
    g.run(&["checkout", "--quiet", "-B", "lockstep-delivery", branch_sha])?;
    let (ok, _, _) = g.try_run(&["rebase", "--quiet", base])?;
    if ok {
        return Ok(Rebased::Clean);
    }
    let files = g
        .run(&["diff", "--name-only", "--diff-filter=U"])
        .unwrap_or_default();
    let _ = g.try_run(&["rebase", "--abort"]);
    Ok(Rebased::Conflicts(
        files.lines().map(String::from).collect(),
    ))
}

/// Why a branch does not rebase onto its upstream, naming the files in conflict.
pub(super) fn conflicts(branch: &str, upstream: &str, files: &[String]) -> String {
    let list = if files.is_empty() {
        "(git named no file)".to_string()
    } else {
        files.join(", ")
    };
    format!(
        "`{branch}` does not rebase onto `{upstream}`: conflicts in {list}; \
         rebase it by hand and push again"
    )
}

/// The deliveries ahead whose commits bases on them contain: every one ahead touching a
/// repository the delivery touches (each is in that repository's chain), nearest first,
/// e.g. `#12, #11`.
fn built_on(ahead: &[Ahead], rows: &[RepoRow]) -> String {
    let ids: Vec<String> = ahead
        .iter()
        .rev()
        .filter(|a| {
            a.checkouts
                .iter()
                .any(|c| rows.iter().any(|r| r.repo == c.row.repo))
        })
        .map(|a| format!("#{}", a.id))
        .collect();
    ids.join(", ")
}
