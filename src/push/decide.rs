//! Deciding a push: the facts of each ref gathered (the new commits, the tracker's answer
//! about its task, ...) as far as the loaded rules read them, then the push rules evaluated.

use std::collections::HashMap;

use cel::Value;

use super::{PushContext, RefUpdate, approval, deliver_ref};
use crate::config::{Config, OnError};
use crate::domain::TaskKey;
use crate::git::{CommitInfo, Git, PendingCommits};
use crate::policy::{self, Decision, Facts, PolicySet, Stage};
use crate::tracker::{self, Task, Tracker};

/// How the new commits of a ref are told apart from what the repository already has.
#[derive(Debug, Clone, Copy)]
pub enum NewCommits<'a> {
    /// In a hook: everything not reachable from any existing ref; the listings started
    /// early are taken from `Early`.
    NotOnAnyRef(&'a Early),
    /// In a dry run or a replay: everything not reachable from `old` or from refs other than
    /// this one (approvals aside).
    AsIfPushedNow,
}

/// The new commits of a push, listed ahead of the decision: a hook starts `git rev-list` for
/// each pushed tip first thing, so that git walks while lockstep loads its config, compiles
/// the policies and asks the tracker (none of which changes what is new). When no rule turns
/// out to read `commits`, the listings are dropped unread.
#[derive(Debug, Default)]
pub struct Early(std::sync::Mutex<HashMap<String, PendingCommits>>);

impl Early {
    /// At most this many tips are listed early; the rest are listed when decided.
    const MAX: usize = 8;

    /// Starts listing the new commits of the pushed tips (not of deletions), each on a thread
    /// that starts git itself, so that the hook goes on loading while the kernel starts git.
    /// A listing that cannot start says so when the decision waits for it.
    pub fn start(git: &Git, updates: &[RefUpdate]) -> Early {
        let mut started = HashMap::new();
        for u in updates.iter().filter(|u| !u.deleted()) {
            if started.len() == Early::MAX {
                break;
            }
            if !started.contains_key(&u.new)
                && let Ok(pending) = git.start_commits_in_background(&u.new, &["--all"])
            {
                started.insert(u.new.clone(), pending);
            }
        }
        Early(std::sync::Mutex::new(started))
    }

    fn take(&self, new: &str) -> Option<PendingCommits> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(new)
    }
}

/// The verdicts on one ref.
#[derive(Debug, Clone)]
pub struct RefDecision {
    pub update: RefUpdate,
    pub decision: Decision,
}

/// The tracker's answers for the tasks a push names, fetched once per task.
pub type TaskAnswers = HashMap<String, Result<Option<Task>, String>>;

/// The task keys the refs name (only if some push rule reads `task`).
pub fn task_keys(config: &Config, policies: &PolicySet, updates: &[RefUpdate]) -> Vec<String> {
    if !policies.needs(Stage::Push, "task") {
        return Vec::new();
    }
    let mut keys: Vec<String> = updates
        .iter()
        .filter_map(|u| config.tasks.task_of(u.branch()).map(String::from))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Asks the tracker about each task, concurrently, each under the tracker timeout.
pub async fn fetch_tasks(config: &Config, tracker: &dyn Tracker, keys: &[String]) -> TaskAnswers {
    let timeout = config.tracker.timeout;
    let answers = keys.iter().map(|k| async move {
        let r = tracker::task_with_timeout(tracker, &TaskKey::new(k.as_str()), timeout)
            .await
            .map_err(|e| e.to_string());
        (k.clone(), r)
    });
    futures::future::join_all(answers)
        .await
        .into_iter()
        .collect()
}

/// What a push is judged on: who pushes which updates, and what the tracker said of the
/// tasks they name.
#[derive(Debug, Clone, Copy)]
pub struct Pushed<'a> {
    pub ctx: &'a PushContext,
    pub updates: &'a [RefUpdate],
    /// The tracker's kind, for the `ecosystem` fact.
    pub tracker: &'a str,
    pub tasks: &'a TaskAnswers,
}

/// Evaluates the push rules for every ref.
pub fn decide(
    config: &Config,
    policies: &PolicySet,
    git: &Git,
    pushed: &Pushed<'_>,
    mode: NewCommits<'_>,
) -> anyhow::Result<Vec<RefDecision>> {
    let Pushed {
        ctx,
        updates,
        tracker: tracker_name,
        tasks,
    } = *pushed;
    let needs = Needs {
        commits: policies.needs(Stage::Push, "commits"),
        fast_forward: policies.needs(Stage::Push, "fast_forward"),
        rewind: policies.needs(Stage::Push, "rewind"),
    };
    let now = Value::Timestamp(chrono::Utc::now().fixed_offset());
    let mut out = Vec::with_capacity(updates.len());
    let mut own = OwnRules {
        config,
        git,
        ctx,
        heads: None,
        // A push that asks the bot for something must say who asks.
        anonymous: deliver_ref::judge_options(config, ctx),
    };
    for u in updates {
        let mut facts = Facts::default();
        facts
            .set("repo", ctx.repo.as_str())
            .set("ref", u.name.as_str())
            .set("branch", u.branch())
            .set("tag", u.tag())
            .set("old", u.old.as_str())
            .set("new", u.new.as_str())
            .set("created", u.created())
            .set("deleted", u.deleted())
            .set("pusher", ctx.pusher.as_str())
            .set_ecosystem(config, tracker_name)
            .set("push_options", ctx.options.clone())
            .set("now", now.clone());
        set_history(&mut facts, git, u, needs)?;
        let commits = new_commits(git, u, mode, needs.commits)?;
        facts.set_commits(commits);
        crate::timings::mark("git-walk");
        let (task, unavailable) = task_fact(config, tasks, u);
        facts.set("task", task);
        let mut decision = policies.evaluate(Stage::Push, &facts);
        crate::timings::mark("rules");
        facts.drop_in_background();
        if let Some(reason) = unavailable {
            mark_unavailable(policies, &mut decision, &reason, config.tracker.on_error);
        }
        own.judge(u, &mut decision)?;
        out.push(RefDecision {
            update: u.clone(),
            decision,
        });
    }
    Ok(out)
}

/// Which of the costly facts the push rules read.
#[derive(Debug, Clone, Copy)]
struct Needs {
    commits: bool,
    fast_forward: bool,
    rewind: bool,
}

/// Sets `fast_forward` and `rewind`, asking git only when a rule reads them.
fn set_history(facts: &mut Facts, git: &Git, u: &RefUpdate, needs: Needs) -> anyhow::Result<()> {
    let ff = if needs.fast_forward && !u.created() && !u.deleted() {
        git.is_ancestor(&u.old, &u.new)?
    } else {
        !u.deleted()
    };
    facts.set("fast_forward", ff);
    let rewind =
        needs.rewind && !ff && !u.created() && !u.deleted() && git.is_ancestor(&u.new, &u.old)?;
    facts.set("rewind", rewind);
    Ok(())
}

/// The new commits of a ref (none when no rule reads `commits`): the early listing when
/// there is one, else listed now as `mode` says.
fn new_commits(
    git: &Git,
    u: &RefUpdate,
    mode: NewCommits<'_>,
    needed: bool,
) -> anyhow::Result<Vec<CommitInfo>> {
    let early = match mode {
        NewCommits::NotOnAnyRef(early) if needed && !u.deleted() => early.take(&u.new),
        _ => None,
    };
    crate::timings::mark("facts");
    if let Some(pending) = early {
        return pending.wait();
    }
    if !needed || u.deleted() {
        return Ok(Vec::new());
    }
    let excluded;
    let hide: Vec<&str> = match mode {
        NewCommits::NotOnAnyRef(_) => vec!["--all"],
        NewCommits::AsIfPushedNow => {
            // Every ref but this one. Not `--all`: it adds `HEAD`, which in a clone often is
            // this very branch and would hide every new commit. Nor the approvals, which
            // point at branch heads.
            excluded = format!("--exclude={}", u.name);
            let mut h = vec![
                excluded.as_str(),
                "--exclude=refs/approvals/*",
                "--glob=refs/*",
            ];
            if !u.created() {
                h.push(u.old.as_str());
            }
            h
        }
    };
    git.commits(&u.new, &hide)
}

/// The `task` fact of a ref, from the tracker's answers, and why the tracker could not
/// answer, if it could not.
fn task_fact(config: &Config, tasks: &TaskAnswers, u: &RefUpdate) -> (Value, Option<String>) {
    let Some(key) = config.tasks.task_of(u.branch()) else {
        return (Value::Null, None);
    };
    match tasks.get(key) {
        Some(Ok(Some(t))) => (
            policy::task_value(&t.key, true, &t.status, &t.title, &t.assignee, &t.url),
            None,
        ),
        Some(Ok(None)) | None => (policy::task_value(key, false, "", "", "", ""), None),
        Some(Err(e)) => (
            policy::task_value(key, false, "", "", "", ""),
            Some(e.clone()),
        ),
    }
}

/// The rules lockstep itself holds a push to: who may approve, who may ask for a delivery,
/// and that such a request names who asks.
struct OwnRules<'a> {
    config: &'a Config,
    git: &'a Git,
    ctx: &'a PushContext,
    /// The repository's branches, listed once if the push brings an approval.
    heads: Option<Vec<(String, String)>>,
    /// The verdict on a push that asks the bot for something and names nobody.
    anonymous: Option<policy::Outcome>,
}

impl OwnRules<'_> {
    /// Adds lockstep's own verdicts on `u` to its decision.
    fn judge(&mut self, u: &RefUpdate, decision: &mut Decision) -> anyhow::Result<()> {
        let own = |rule: &str, outcome| policy::Verdict {
            rule: rule.to_string(),
            enforcement: policy::Enforcement::Deny,
            outcome,
        };
        if u.name.starts_with(approval::PREFIX) || u.name.starts_with(deliver_ref::PREFIX) {
            if self.heads.is_none() {
                self.heads = Some(self.git.refs("refs/heads/")?);
            }
            let heads = self.heads.as_deref().unwrap_or_default();
            decision
                .verdicts
                .push(if u.name.starts_with(approval::PREFIX) {
                    let outcome = approval::judge(self.config, self.git, self.ctx, u, heads)?;
                    own(approval::RULE, outcome)
                } else {
                    own(
                        deliver_ref::RULE,
                        deliver_ref::judge(self.config, self.ctx, u, heads),
                    )
                });
        }
        if let Some(outcome) = &self.anonymous {
            decision
                .verdicts
                .push(own(deliver_ref::IDENTITY_RULE, outcome.clone()));
        }
        Ok(())
    }
}

/// Rules that read `task` cannot be trusted when the tracker did not answer: they become
/// errors (or warnings under `[tracker] on_error = "allow"`) that say so.
fn mark_unavailable(
    policies: &PolicySet,
    decision: &mut Decision,
    reason: &str,
    on_error: OnError,
) {
    for v in &mut decision.verdicts {
        let uses_task = policies
            .rules
            .iter()
            .any(|r| r.name == v.rule && r.uses("task"));
        if !uses_task || v.outcome == policy::Outcome::NotApplicable {
            continue;
        }
        if on_error == OnError::Allow {
            v.enforcement = policy::Enforcement::Warn;
        }
        // A rule that only warns never rejects, whatever `on_error` says.
        let verb = match v.enforcement {
            policy::Enforcement::Deny => "push rejected",
            policy::Enforcement::Warn => "push accepted without this check",
        };
        v.outcome = policy::Outcome::Error(format!("{reason}; {verb} (rule {})", v.rule));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_down_never_makes_a_warning_claim_a_rejection() {
        let policies = PolicySet::parse_sources([(
            std::path::Path::new("p.toml"),
            "[[rule]]\nname='deny'\non=['push']\nrequire='task.exists'\nmessage='m'\n\
             [[rule]]\nname='warn'\non=['push']\nrequire='task.key != \"\"'\nmessage='m'\n\
             enforcement='warn'\n",
        )])
        .unwrap();
        let verdict = |rule: &str, enforcement| policy::Verdict {
            rule: rule.into(),
            enforcement,
            outcome: policy::Outcome::Pass,
        };
        let fresh = || Decision {
            verdicts: vec![
                verdict("deny", policy::Enforcement::Deny),
                verdict("warn", policy::Enforcement::Warn),
            ],
        };
        let mut d = fresh();
        mark_unavailable(&policies, &mut d, "down", OnError::Reject);
        assert!(!d.accepted());
        assert_eq!(
            d.verdicts[0].messages(),
            ["down; push rejected (rule deny)"]
        );
        assert_eq!(
            d.verdicts[1].messages(),
            ["down; push accepted without this check (rule warn)"]
        );
        let mut d = fresh();
        mark_unavailable(&policies, &mut d, "down", OnError::Allow);
        assert!(d.accepted());
        assert_eq!(
            d.verdicts[0].messages(),
            ["down; push accepted without this check (rule deny)"]
        );
    }
}
