//! The decision log: every decision lockstep takes (each push a hook judges, each delivery
//! request, each merge check), one JSON line each in `decisions.jsonl` of the state folder,
//! with the policy set's revision, so that "why was this let through?" has an answer, and a
//! candidate policy set can be tried on the pushes already seen. Each line carries the hash of
//! the line before it, so that a line edited, deleted or inserted since is told.
//!
//! By concern:
//! - this file: what a line holds ([`Entry`]), and how `lockstep audit` picks and shows lines;
//! - `log`: appending under a size bound with rotation, and reading back;
//! - `chain`: the hash chain of the lines, and its check;
//! - `gaps`: decisions that could not be logged, said to the pusher and noted for `audit`;
//! - `pushers`: who pushed a branch's commits, read off the logged pushes, so that those who
//!   pushed a branch do not approve it;
//! - `replay`: a candidate policy set evaluated against the logged pushes.

mod chain;
mod gaps;
mod log;
mod pushers;
mod replay;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{DeliveryId, TaskKey};
use crate::git::short;
use crate::policy::{Decision, Stage, Verdict};
use crate::push::{PushContext, RefDecision, TaskAnswers};
use crate::text::escape;

pub use chain::Chain;
pub use gaps::{Unlogged, find as find_gaps, warnings as gap_warnings};
pub use log::{Log, append, load, read, record};
pub use pushers::{branch_pushes, pushed_one, refuse_approvals_by_pushers};
pub use replay::replay;

/// One decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub time: DateTime<Utc>,
    pub stage: Stage,
    /// The repository pushed to; "" for deliveries and merges.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repo: String,
    /// Who pushed, or who asked for the delivery; "" when unknown.
    #[serde(default)]
    pub pusher: String,
    /// The task a delivery or merge decision is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryId>,
    /// The push options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// The repository's folder, where a replay reads the pushed commits.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub git_dir: String,
    /// The tracker's name, as rules read it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tracker: String,
    /// The tracker's answers the decision read, by task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tasks: BTreeMap<String, TaskSeen>,
    /// A push's refs, each with its verdicts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<RefEntry>,
    /// A delivery's or merge's verdicts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<VerdictEntry>,
    pub accepted: bool,
    /// [`crate::policy::PolicySet::revision`] of the policies that decided.
    pub revision: String,
    /// The SHA-256 (hex) of the line before this one in the log; none on lines logged before
    /// the log was chained. Set by [`append`], whatever the entry held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
}

/// A decision as `lockstep audit --json` shows it: as logged, with whether the chain vouches
/// for its line.
#[derive(Debug, Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    entry: &'a Entry,
    verified: bool,
}

/// `lockstep audit --json`: one JSON object per decision, as logged, with `verified`.
pub fn json_lines(entries: &[(Entry, bool)]) -> serde_json::Result<String> {
    let mut s = String::new();
    for (entry, verified) in entries {
        let shown = Shown {
            entry,
            verified: *verified,
        };
        s.push_str(&serde_json::to_string(&shown)?);
        s.push('\n');
    }
    Ok(s)
}

impl Log {
    /// The repository folders the logged pushes name, each once: where gaps may be noted.
    pub fn git_dirs(&self) -> Vec<&str> {
        let mut dirs: Vec<&str> = self
            .entries
            .iter()
            .map(|(e, _)| e.git_dir.as_str())
            .collect();
        dirs.sort_unstable();
        dirs.dedup();
        dirs
    }
}

/// What `lockstep audit` says of the log besides its entries: lines it could not read, a
/// broken chain, the entries the chain cannot vouch for.
pub fn warnings(log: &Log) -> Vec<String> {
    let mut w = Vec::new();
    if log.unreadable > 0 {
        w.push(format!(
            "{} line(s) of the decision log could not be read and were skipped",
            log.unreadable
        ));
    }
    if let Some(b) = &log.chain.broken {
        w.push(format!(
            "the decision log's chain is broken: {b}; the entries from the line before it on \
             are shown unverified (`lockstep audit --verify`)"
        ));
    }
    w.extend(log.chain.notes());
    w
}

/// One ref of a push.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefEntry {
    #[serde(rename = "ref")]
    pub name: String,
    pub old: String,
    pub new: String,
    pub verdicts: Vec<VerdictEntry>,
    pub accepted: bool,
}

/// One rule's verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerdictEntry {
    pub rule: String,
    /// `pass`, `skip`, `deny`, `warn` or `error`.
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
}

/// What the tracker said about a task.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskSeen {
    pub exists: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub assignee: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// Why the tracker did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl VerdictEntry {
    fn of(v: &Verdict) -> VerdictEntry {
        VerdictEntry {
            rule: v.rule.clone(),
            verdict: v.label().to_string(),
            messages: v.messages(),
        }
    }

    /// Whether the rule fired: it refused, warned or failed to evaluate.
    fn fired(&self) -> bool {
        matches!(self.verdict.as_str(), "deny" | "warn" | "error")
    }
}

fn verdicts(d: &Decision) -> Vec<VerdictEntry> {
    d.verdicts.iter().map(VerdictEntry::of).collect()
}

impl Entry {
    /// The line of a push a hook decided.
    pub fn push(
        ctx: &PushContext,
        git_dir: &str,
        tracker: &str,
        tasks: &TaskAnswers,
        decisions: &[RefDecision],
        revision: &str,
    ) -> Entry {
        let tasks = tasks
            .iter()
            .map(|(key, answer)| {
                let seen = match answer {
                    Ok(Some(t)) => TaskSeen {
                        exists: true,
                        status: t.status.clone(),
                        title: t.title.clone(),
                        assignee: t.assignee.clone(),
                        url: t.url.clone(),
                        error: None,
                    },
                    Ok(None) => TaskSeen::default(),
                    Err(e) => TaskSeen {
                        error: Some(e.clone()),
                        ..Default::default()
                    },
                };
                (key.clone(), seen)
            })
            .collect();
        Entry {
            time: Utc::now(),
            stage: Stage::Push,
            repo: ctx.repo.clone(),
            pusher: ctx.pusher.clone(),
            task: None,
            delivery: None,
            options: ctx.options.clone(),
            git_dir: git_dir.to_string(),
            tracker: tracker.to_string(),
            tasks,
            refs: decisions
                .iter()
                .map(|d| RefEntry {
                    name: d.update.name.clone(),
                    old: d.update.old.clone(),
                    new: d.update.new.clone(),
                    verdicts: verdicts(&d.decision),
                    accepted: d.decision.accepted(),
                })
                .collect(),
            verdicts: Vec::new(),
            accepted: decisions.iter().all(|d| d.decision.accepted()),
            revision: revision.to_string(),
            prev: None,
        }
    }

    /// The line of a delivery request's or a merge check's decision.
    pub fn delivery(
        stage: Stage,
        task: &TaskKey,
        requester: &str,
        delivery: Option<DeliveryId>,
        decision: &Decision,
        revision: &str,
    ) -> Entry {
        Entry {
            time: Utc::now(),
            stage,
            repo: String::new(),
            pusher: requester.to_string(),
            task: Some(task.clone()),
            delivery,
            options: Vec::new(),
            git_dir: String::new(),
            tracker: String::new(),
            tasks: BTreeMap::new(),
            refs: Vec::new(),
            verdicts: verdicts(decision),
            accepted: decision.accepted(),
            revision: revision.to_string(),
            prev: None,
        }
    }

    fn all_verdicts(&self) -> impl Iterator<Item = &VerdictEntry> {
        self.refs
            .iter()
            .flat_map(|r| r.verdicts.iter())
            .chain(self.verdicts.iter())
    }
}

/// Which lines `lockstep audit` shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only pushes to this repository.
    pub repo: Option<String>,
    /// Only decisions taken at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only decisions in which this rule refused, warned or failed to evaluate.
    pub rule: Option<String>,
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        self.repo.as_ref().is_none_or(|r| *r == e.repo)
            && self.since.is_none_or(|t| e.time >= t)
            && self
                .rule
                .as_ref()
                .is_none_or(|rule| e.all_verdicts().any(|v| v.rule == *rule && v.fired()))
    }
}

/// The lines for people: one per decision (marked when the chain does not vouch for it), then
/// one per ref, then one per rule that fired.
pub fn render(entries: &[(Entry, bool)]) -> String {
    let mut s = String::new();
    let t = |s: &str| escape(s).into_owned();
    for (e, verified) in entries {
        let what = match e.stage {
            Stage::Push => t(&e.repo),
            _ => {
                let mut w = t(e.task.as_ref().map_or("", TaskKey::as_str));
                if let Some(id) = e.delivery {
                    let _ = write!(w, " #{id}");
                }
                w
            }
        };
        let pusher = if e.pusher.is_empty() {
            "(unknown)".to_string()
        } else {
            t(&e.pusher)
        };
        let verdict = match (e.stage, e.accepted) {
            (Stage::Push, true) => "accepted",
            (Stage::Push, false) => "rejected",
            (_, true) => "allowed",
            (_, false) => "refused",
        };
        let _ = writeln!(
            s,
            "{}  {:<7}  {what}  {pusher}  {verdict}  (policies {}){}",
            e.time.format("%Y-%m-%d %H:%M:%S"),
            e.stage.to_string(),
            t(&e.revision),
            if *verified { "" } else { "  unverified" }
        );
        for r in &e.refs {
            let _ = writeln!(
                s,
                "  {} {} → {}{}",
                t(&r.name),
                short(&r.old),
                short(&r.new),
                if r.accepted { "" } else { "  rejected" }
            );
            fired(&mut s, &r.verdicts, "    ");
        }
        fired(&mut s, &e.verdicts, "  ");
    }
    s
}

fn fired(s: &mut String, verdicts: &[VerdictEntry], indent: &str) {
    for v in verdicts.iter().filter(|v| v.fired()) {
        let messages = if v.messages.is_empty() {
            String::new()
        } else {
            format!("  {}", escape(&v.messages.join("; ")))
        };
        let _ = writeln!(
            s,
            "{indent}{:<5} [{}]{messages}",
            v.verdict,
            escape(&v.rule)
        );
    }
}

impl Chain {
    /// What `lockstep audit --verify` prints: the first broken link, or how many entries the
    /// chain vouches for and the head hash to keep elsewhere; with the notes of [`Chain::notes`].
    pub fn report(&self) -> String {
        let mut s = String::new();
        match &self.broken {
            Some(b) => {
                let _ = writeln!(s, "the decision log's chain is broken: {b}");
                let _ = writeln!(s, "{} verified before it", entries(self.verified));
            }
            None => {
                let _ = writeln!(s, "verified {} of the decision log", entries(self.verified));
                if let Some(head) = &self.head {
                    let _ = writeln!(
                        s,
                        "head {head}: keep it elsewhere; while it is the head or a later line's \
                         `prev`, the lines up to it are as they were"
                    );
                }
            }
        }
        for note in self.notes() {
            let _ = writeln!(s, "{note}");
        }
        s
    }

    /// What to say once of the lines the chain cannot vouch for although they are no break:
    /// those logged before the log was chained, and lines rotated away.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.legacy > 0 {
            notes.push(format!(
                "note: cannot be verified: the first {}, logged before the decision log was \
                 chained",
                entries(self.legacy)
            ));
        }
        if self.rotated_away {
            notes.push(
                "note: the oldest line kept follows lines rotated away past `[audit] keep`"
                    .to_string(),
            );
        }
        notes
    }
}

fn entries(n: usize) -> String {
    if n == 1 {
        "1 entry".to_string()
    } else {
        format!("{n} entries")
    }
}
