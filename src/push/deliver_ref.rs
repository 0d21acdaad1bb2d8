//! Delivery asked for by a push, on any git server: `git push -o deliver` on a task branch or
//! on an approval, or a push to `refs/deliver/<TASK>` that changes no branch (for a branch
//! that is already pushed and approved, where a push of the branch would update nothing, or
//! invalidate its approvals with a new commit).
//!
//! The hook judges every ref under `refs/deliver/` itself, whatever the policy files say (the
//! verdict is the rule [`RULE`]): such a ref names one task, points at the head of one of its
//! branches, and is pushed by someone the server names. `post-receive` queues the delivery
//! and deletes the ref, so none stays behind. A push that asks the bot for something (a ref
//! under `refs/deliver/`, `-o deliver`) without a pusher identity is refused (the rule
//! [`IDENTITY_RULE`]): a delivery moves the task and merges in someone's name.

use super::{PushContext, RefUpdate, approval};
use crate::config::Config;
use crate::git::short;
use crate::policy::Outcome;

/// Where delivery requests are pushed.
pub const PREFIX: &str = "refs/deliver/";
/// The name the hook's own verdict on `refs/deliver/` refs carries.
pub const RULE: &str = "deliver-ref";
/// The name of the hook's verdict on a push that asks the bot for something anonymously.
pub const IDENTITY_RULE: &str = "pusher-identity";

/// The task a delivery request ref names: `refs/deliver/<TASK>`, one non-empty part.
pub fn parse(refname: &str) -> Option<&str> {
    let task = refname.strip_prefix(PREFIX)?;
    (!task.is_empty() && !task.contains('/')).then_some(task)
}

/// How to ask for a delivery by push, for every refusal.
fn how(task: &str) -> String {
    format!(
        "ask for a delivery with `git push origin <branch>:refs/deliver/{task}` (the branch's \
         pushed head), or `git push -o deliver` of the branch"
    )
}

/// The refusal of a push that asks for `what` when the server names no pusher: says which
/// variables lockstep reads and where the server's side is explained.
pub fn no_identity(config: &Config, what: &str) -> String {
    let vars: Vec<String> = config
        .identity
        .env
        .iter()
        .map(|v| format!("`{v}`"))
        .collect();
    format!(
        "no pusher identity: none of {} is set, so lockstep cannot tell who pushes and nobody \
         can {what} with an anonymous push; have the git server authenticate pushers and set \
         one of them (see docs/install.md#who-is-pushing)",
        vars.join(", ")
    )
}

/// The push options that ask the bot for something: `deliver`, `deliver=<priority>`.
pub fn bot_options(options: &[String]) -> Vec<&str> {
    options
        .iter()
        .map(String::as_str)
        .filter(|o| *o == "deliver" || o.starts_with("deliver="))
        .collect()
}

/// The hook's verdict on a push's options, when they ask the bot for something and the
/// pusher is unknown.
pub fn judge_options(config: &Config, ctx: &PushContext) -> Option<Outcome> {
    let asked = bot_options(&ctx.options);
    if !ctx.pusher.is_empty() || asked.is_empty() {
        return None;
    }
    let what = asked
        .iter()
        .map(|o| format!("`-o {o}`"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(Outcome::Fail(vec![no_identity(
        config,
        &format!("ask for a delivery ({what})"),
    )]))
}

/// The hook's verdict on a ref under `refs/deliver/`. `heads` are the repository's branches
/// and their heads (`refs/heads/…`).
pub fn judge(
    config: &Config,
    ctx: &PushContext,
    u: &RefUpdate,
    heads: &[(String, String)],
) -> Outcome {
    let fail = |m: String| Outcome::Fail(vec![m]);
    let Some(task) = parse(&u.name).filter(|t| config.tasks.task_of(t) == Some(*t)) else {
        return fail(format!(
            "`{}` is not a delivery request: they are `refs/deliver/<TASK>`, and lockstep \
             deletes them once queued; {}",
            u.name,
            how("<TASK>")
        ));
    };
    if u.deleted() {
        if ctx.pusher == config.bot.user {
            return Outcome::Pass;
        }
        return fail(format!(
            "`{}` is removed by lockstep once the delivery is queued; nothing to delete",
            u.name
        ));
    }
    if ctx.pusher.is_empty() {
        return fail(no_identity(
            config,
            &format!("ask for the delivery of `{task}`"),
        ));
    }
    let branches = approval::task_heads(config, heads, task);
    if !branches.iter().any(|(_, oid)| *oid == u.new) {
        let names: Vec<String> = branches.iter().map(|(b, _)| format!("`{b}`")).collect();
        let known = if names.is_empty() {
            format!("`{task}` has no branch in `{}`", ctx.repo)
        } else {
            format!("the branches of `{task}` are {}", names.join(", "))
        };
        return fail(format!(
            "{} is not the head of a branch of `{task}` ({known}); push the branch first, then \
             {}",
            short(&u.new),
            how(task)
        ));
    }
    Outcome::Pass
}

/// The tasks a push asks to deliver, each once, in the order of the push: those named by its
/// `refs/deliver/<TASK>` refs, and with `-o deliver` (`deliver_option`) those of its task
/// branches and of its approvals (`refs/approvals/<TASK>/<name>`, the approval that completes
/// the rule). Deletions ask for nothing.
pub fn tasks_asked<'a>(
    config: &Config,
    updates: &'a [RefUpdate],
    deliver_option: bool,
) -> Vec<&'a str> {
    let mut keys: Vec<&str> = Vec::new();
    for u in updates.iter().filter(|u| !u.deleted()) {
        let key = if let Some(task) = parse(&u.name) {
            config.tasks.task_of(task).filter(|t| *t == task)
        } else if !deliver_option {
            None
        } else if let Some((task, _)) = approval::parse(&u.name) {
            config.tasks.task_of(task).filter(|t| *t == task)
        } else {
            config.tasks.task_of(u.branch())
        };
        if let Some(key) = key
            && !keys.contains(&key)
        {
            keys.push(key);
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn updates(refs: &[(&str, bool)]) -> Vec<RefUpdate> {
        let z = "0".repeat(40);
        let a = "1".repeat(40);
        refs.iter()
            .map(|(name, deleted)| RefUpdate {
                old: if *deleted { a.clone() } else { z.clone() },
                new: if *deleted { z.clone() } else { a.clone() },
                name: name.to_string(),
            })
            .collect()
    }

    #[test]
    fn delivery_refs_name_one_task() {
        assert_eq!(parse("refs/deliver/TASK-7"), Some("TASK-7"));
        for bad in [
            "refs/deliver/",
            "refs/deliver/TASK-7/x",
            "refs/heads/TASK-7",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_tasks_asked_for_each_once_in_push_order() {
        let config = Config::parse_str("").unwrap();
        let u = updates(&[
            ("refs/heads/bugfix/TASK-2-a", false),
            ("refs/deliver/TASK-5", false),
            ("refs/approvals/TASK-1/bob", false),
            ("refs/heads/hotfix/TASK-2-c", false),
            ("refs/heads/feature/TASK-3-gone", true),
            ("refs/deliver/TASK-6", true),
            ("refs/deliver/not-a-task", false),
            ("refs/tags/TASK-4", false),
        ]);
        assert_eq!(
            tasks_asked(&config, &u, true),
            ["TASK-2", "TASK-5", "TASK-1"]
        );
        // Without `-o deliver`, only the delivery refs ask.
        assert_eq!(tasks_asked(&config, &u, false), ["TASK-5"]);
    }

    #[test]
    fn anonymous_pushes_ask_the_bot_for_nothing() {
        let config = Config::parse_str("").unwrap();
        let mut ctx = PushContext {
            options: vec!["ci.skip".into(), "deliver=3".into()],
            ..Default::default()
        };
        let Some(Outcome::Fail(m)) = judge_options(&config, &ctx) else {
            panic!("an anonymous `-o deliver` passed");
        };
        assert!(
            m[0].starts_with("no pusher identity: none of `GL_USER`"),
            "{m:?}"
        );
        assert!(m[0].contains("`-o deliver=3`"), "{m:?}");
        assert!(m[0].contains("docs/install.md#who-is-pushing"), "{m:?}");
        ctx.pusher = "alice".into();
        assert_eq!(judge_options(&config, &ctx), None);
        ctx.pusher.clear();
        ctx.options = vec!["ci.skip".into()];
        assert_eq!(judge_options(&config, &ctx), None);
    }
}
