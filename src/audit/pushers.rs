//! Who pushed a branch's commits, as the decision log recorded it.
//!
//! A commit's author line is written by whoever makes the commit: `--author=bob` makes bob its
//! author. What the author cannot write is the hooks' record of who pushed it: each logged push
//! holds its pusher and, for each ref, the old and the new object. A commit was pushed by a
//! person when one of their accepted ref updates brought it (it is reachable from the new
//! object, and neither from the old one nor from a protected branch). The people who cannot
//! approve a branch are its authors and those pushers.
//!
//! Cheap on purpose: the log is read only when approvals are judged (an approval pushed, or
//! the approvers of a branch counted for a delivery); when the approver never pushed to the
//! repository (the usual reviewer), nothing more is asked of git; else one `git rev-list`
//! over all their pushes, and one per push only when that finds one of the branch's commits.

use std::collections::BTreeSet;

use super::{Entry, read};
use crate::config::Config;
use crate::git::{CommitInfo, Git, is_zero};
use crate::policy::{Outcome, Stage};
use crate::push::{PushContext, RefDecision, approval};

/// The accepted ref updates `person` pushed to `repo` (approvals aside: they bring nothing),
/// as (old, new) objects, each once.
pub fn branch_pushes(entries: &[Entry], repo: &str, person: &str) -> Vec<(String, String)> {
    let mut out = BTreeSet::new();
    for e in entries {
        if e.stage != Stage::Push || e.repo != repo || e.pusher != person {
            continue;
        }
        for r in &e.refs {
            if r.accepted && !r.name.starts_with(approval::PREFIX) && !is_zero(&r.new) {
                out.insert((r.old.clone(), r.new.clone()));
            }
        }
    }
    out.into_iter().collect()
}

/// The first of `commits` that one of `pushes` brought, if any. `protected` are the heads of
/// the protected branches: what they hold is nobody's branch work.
pub fn pushed_one<'c>(
    git: &Git,
    commits: &'c [CommitInfo],
    pushes: &[(String, String)],
    protected: &[&str],
) -> anyhow::Result<Option<&'c CommitInfo>> {
    if pushes.is_empty() || commits.is_empty() {
        return Ok(None);
    }
    let reached = |tips: &[&str], hide: &[&str]| -> anyhow::Result<BTreeSet<String>> {
        let mut args = vec!["rev-list", "--ignore-missing"];
        args.extend(tips);
        args.push("--not");
        args.extend(hide);
        args.extend(protected);
        args.push("--");
        Ok(git.run(&args)?.lines().map(str::to_string).collect())
    };
    // Everything any of their pushes reaches: usually none of the branch's commits.
    let tips: Vec<&str> = pushes.iter().map(|(_, new)| new.as_str()).collect();
    let any = reached(&tips, &[])?;
    if !commits.iter().any(|c| any.contains(&c.id)) {
        return Ok(None);
    }
    for (old, new) in pushes {
        let hide: Vec<&str> = [old.as_str()].into_iter().filter(|o| !is_zero(o)).collect();
        let brought = reached(&[new.as_str()], &hide)?;
        if let Some(c) = commits.iter().find(|c| brought.contains(&c.id)) {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Refuses, among a push's decisions, the approvals whose approver pushed one of the approved
/// branch's commits (the approvals judged so far by their authors only, [`approval::judge`];
/// a delivery judges both again when it counts them). A log that cannot be read refuses the
/// approval: whoever cannot be cleared does not approve.
pub fn refuse_approvals_by_pushers(
    config: &Config,
    git: &Git,
    ctx: &PushContext,
    decisions: &mut [RefDecision],
) {
    if config.reviews.authors_may_approve || ctx.pusher.is_empty() {
        return;
    }
    let mut log: Option<anyhow::Result<Vec<Entry>>> = None;
    for d in decisions.iter_mut() {
        let u = &d.update;
        if !u.name.starts_with(approval::PREFIX) || u.deleted() {
            continue;
        }
        let Some(task) = approval::parse(&u.name).map(|(t, _)| t.to_string()) else {
            continue;
        };
        let Some(verdict) = d
            .decision
            .verdicts
            .iter_mut()
            .find(|v| v.rule == approval::RULE && v.outcome == Outcome::Pass)
        else {
            continue;
        };
        let entries = log.get_or_insert_with(|| {
            read(&config.state_dir(), config.audit.keep).map(|(entries, _)| entries)
        });
        let refused = match entries {
            Ok(entries) => {
                let pushes = branch_pushes(entries, &ctx.repo, &ctx.pusher);
                judge(config, git, &u.new, &pushes)
                    .map(|c| c.map(|c| approval::pushed_own(&ctx.pusher, &c, &task)))
            }
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
        };
        match refused {
            Ok(None) => {}
            Ok(Some(why)) => verdict.outcome = Outcome::Fail(vec![why]),
            Err(e) => {
                verdict.outcome = Outcome::Fail(vec![format!(
                    "lockstep cannot tell who pushed the commits of `{task}` ({e:#}), so it \
                     cannot clear `{}` to approve them; fix the decision log in the state \
                     folder, or ask someone else to review",
                    ctx.pusher
                )]);
            }
        }
    }
}

/// The commit of the branch whose head is `head` that one of `pushes` brought, if any.
fn judge(
    config: &Config,
    git: &Git,
    head: &str,
    pushes: &[(String, String)],
) -> anyhow::Result<Option<CommitInfo>> {
    if pushes.is_empty() {
        return Ok(None);
    }
    let heads = git.refs("refs/heads/")?;
    let protected = approval::protected_heads(config, &heads);
    let commits = git.commits(head, &protected)?;
    Ok(pushed_one(git, &commits, pushes, &protected)?.cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO: &str = "0000000000000000000000000000000000000000";

    fn entry(repo: &str, pusher: &str, name: &str, old: &str, new: &str, ok: bool) -> Entry {
        serde_json::from_str(&format!(
            r#"{{"time":"2026-01-01T00:00:00Z","stage":"push","repo":"{repo}","pusher":"{pusher}",
            "refs":[{{"ref":"{name}","old":"{old}","new":"{new}","verdicts":[],"accepted":{ok}}}],
            "accepted":{ok},"revision":"r"}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_persons_pushes_are_their_accepted_updates_of_the_repository_approvals_aside() {
        let entries = [
            entry("api", "dave", "refs/heads/feature/T-1", ZERO, "a1", true),
            entry("api", "dave", "refs/heads/feature/T-1", "a1", "b2", true),
            entry("api", "dave", "refs/heads/feature/T-1", "a1", "b2", true),
            entry("api", "dave", "refs/tags/v1", ZERO, "c3", true),
            entry("api", "dave", "refs/heads/feature/T-2", ZERO, "d4", false),
            entry("api", "dave", "refs/approvals/T-1/dave", ZERO, "b2", true),
            entry("api", "dave", "refs/heads/old", "e5", ZERO, true),
            entry("web", "dave", "refs/heads/feature/T-1", ZERO, "f6", true),
            entry("api", "bob", "refs/heads/feature/T-1", ZERO, "g7", true),
        ];
        let r = |old: &str, new: &str| (old.to_string(), new.to_string());
        assert_eq!(
            branch_pushes(&entries, "api", "dave"),
            [r(ZERO, "a1"), r(ZERO, "c3"), r("a1", "b2")]
        );
        assert!(branch_pushes(&entries, "api", "carol").is_empty());
    }
}
