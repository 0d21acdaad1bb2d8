//! Approvals as git refs: a reviewer approves the head of a task branch by pushing it to
//! `refs/approvals/<TASK>/<their name>`, on any git server.
//!
//! The hook judges every ref under `refs/approvals/` itself, whatever the policy files say
//! (the verdict is the rule [`RULE`]): an approval is only worth something if nobody can make
//! one in someone else's name, on something that is not a task branch's head, or on their own
//! work. Whether an approval still counts (it points at the branch's current head) is read at
//! delivery time, where the `branches` fact is gathered.

use super::{PushContext, RefUpdate};
use crate::config::Config;
use crate::git::short;
use crate::git::{CommitInfo, Git};
use crate::policy::Outcome;

/// Where approvals live.
pub const PREFIX: &str = "refs/approvals/";
/// The name the hook's own verdict on approval refs carries.
pub const RULE: &str = "approvals";

/// The task and the reviewer an approval ref names: `refs/approvals/<TASK>/<name>`, both parts
/// non-empty, nothing more.
pub fn parse(refname: &str) -> Option<(&str, &str)> {
    let rest = refname.strip_prefix(PREFIX)?;
    let (task, reviewer) = rest.split_once('/')?;
    (!task.is_empty() && !reviewer.is_empty() && !reviewer.contains('/'))
        .then_some((task, reviewer))
}

/// The branches of `task` among listed refs (`refs/heads/…` and others, each with its
/// object), each with its head.
pub fn task_heads<'a>(
    config: &Config,
    refs: &'a [(String, String)],
    task: &str,
) -> Vec<(&'a str, &'a str)> {
    refs.iter()
        .filter_map(|(name, oid)| {
            let b = name.strip_prefix("refs/heads/")?;
            (config.tasks.task_of(b) == Some(task)).then_some((b, oid.as_str()))
        })
        .collect()
}

/// How to approve, for every refusal.
fn how(task: &str, who: &str) -> String {
    let who = if who.is_empty() { "<your name>" } else { who };
    format!(
        "approve the head of a task branch with `git push origin origin/<branch>:refs/approvals/{task}/{who}`"
    )
}

/// Whether a commit was written by this person: their name, their email, or the part of
/// their email before the `@` (case-insensitive).
pub fn authored_by(c: &CommitInfo, person: &str) -> bool {
    let local = c.author_email.split('@').next().unwrap_or_default();
    [c.author_name.as_str(), c.author_email.as_str(), local]
        .iter()
        .any(|s| !s.is_empty() && s.eq_ignore_ascii_case(person))
}

/// The heads of the protected branches among `heads`: a branch's own commits are those of
/// none of them.
pub fn protected_heads<'a>(config: &Config, heads: &'a [(String, String)]) -> Vec<&'a str> {
    heads
        .iter()
        .filter(|(name, _)| {
            name.strip_prefix("refs/heads/")
                .is_some_and(|b| config.policies.protected.iter().any(|p| p == b))
        })
        .map(|(_, oid)| oid.as_str())
        .collect()
}

/// Why `person` cannot approve a branch one of whose commits they pushed: the refusal.
pub fn pushed_own(person: &str, commit: &CommitInfo, task: &str) -> String {
    format!(
        "`{person}` pushed commit {} `{}` of `{task}` (the decision log says so, whoever its \
         author line names), and those who push a branch's commits do not approve it; ask \
         someone else to review it",
        short(&commit.id),
        commit.summary()
    )
}

/// The hook's verdict on a ref under `refs/approvals/`. `heads` are the repository's branches
/// and their heads (`refs/heads/…`, as [`Git::refs`] lists them).
pub fn judge(
    config: &Config,
    git: &Git,
    ctx: &PushContext,
    u: &RefUpdate,
    heads: &[(String, String)],
) -> anyhow::Result<Outcome> {
    let fail = |m: String| Ok(Outcome::Fail(vec![m]));
    let Some((task, reviewer)) = parse(&u.name) else {
        return fail(format!(
            "`{}` is not an approval: approvals are `refs/approvals/<TASK>/<name>`; {}",
            u.name,
            how("<TASK>", &ctx.pusher)
        ));
    };
    if ctx.pusher.is_empty() {
        return fail(format!(
            "lockstep cannot tell who pushes (none of `[identity] env` is set), so nobody can \
             approve here; {}",
            how(task, "")
        ));
    }
    if u.deleted() {
        if reviewer == ctx.pusher || ctx.pusher == config.bot.user {
            return Ok(Outcome::Pass);
        }
        return fail(format!(
            "only `{reviewer}` withdraws `{reviewer}`'s approval of `{task}`"
        ));
    }
    if reviewer != ctx.pusher {
        return fail(format!(
            "`{}` cannot approve in the name of `{reviewer}`; {}",
            ctx.pusher,
            how(task, &ctx.pusher)
        ));
    }
    let branches = task_heads(config, heads, task);
    let Some((branch, head)) = branches.iter().find(|(_, oid)| *oid == u.new) else {
        let names: Vec<String> = branches.iter().map(|(b, _)| format!("`{b}`")).collect();
        let known = if names.is_empty() {
            format!("`{task}` has no branch in `{}`", ctx.repo)
        } else {
            format!("the branches of `{task}` are {}", names.join(", "))
        };
        return fail(format!(
            "{} is not the head of a branch of `{task}` ({known}); fetch, review, then {}",
            short(&u.new),
            how(task, &ctx.pusher)
        ));
    };
    if config.reviews.authors_may_approve {
        return Ok(Outcome::Pass);
    }
    let commits = git.commits(head, &protected_heads(config, heads))?;
    if let Some(c) = commits.iter().find(|c| authored_by(c, &ctx.pusher)) {
        return fail(format!(
            "`{}` wrote commit {} `{}` of `{branch}`, and authors do not approve their own work; \
             ask someone else to review it",
            ctx.pusher,
            short(&c.id),
            c.summary()
        ));
    }
    Ok(Outcome::Pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_refs_name_a_task_and_one_reviewer() {
        assert_eq!(parse("refs/approvals/TASK-7/bob"), Some(("TASK-7", "bob")));
        for bad in [
            "refs/approvals/TASK-7",
            "refs/approvals/TASK-7/",
            "refs/approvals//bob",
            "refs/approvals/TASK-7/bob/extra",
            "refs/heads/TASK-7/bob",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn authors_are_known_by_name_or_email() {
        let c = CommitInfo {
            author_name: "Alice Liddell".into(),
            author_email: "alice@example.org".into(),
            ..Default::default()
        };
        assert!(authored_by(&c, "alice"));
        assert!(authored_by(&c, "ALICE@example.org"));
        assert!(authored_by(&c, "alice liddell"));
        assert!(!authored_by(&c, "bob"));
        assert!(!authored_by(&CommitInfo::default(), ""));
    }
}
