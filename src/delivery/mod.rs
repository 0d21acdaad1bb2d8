//! Deliveries: one task, several repositories, all or nothing.
//!
//! - [`request`] checks a delivery request against the `on = "deliver"` rules and queues it.
//! - [`worker`] holds the ecosystem's worker lock, recovers after a crash, and works the queue
//!   in one loop for every edge: one delivery at a time (`[delivery] window = 1`), or as a
//!   pipeline ([`train`]): the head deploys while the deliveries behind it are built and
//!   tested on top of it (`slots` shares the step slots between them); and the jobs the edge
//!   hands it (the server's rollbacks) whenever nothing is deploying.
//! - [`line`](mod@line) is the delivery line: `engine` runs a delivery through its phases
//!   (the domain's [`Phase`](crate::domain::Phase)), `rebase` makes its checkouts, `run` runs their steps ([`steps`] runs one as a
//!   process), `merge` pushes the upstreams, `rollback` undoes, `recover` finishes what a
//!   killed worker left; `stop` says why a line stops; `gate` runs the metric gates of
//!   verify; `watch` rolls back a watched delivery when an alert fires.
//! - [`contain`] is the supervisor each step runs under, which kills the step's whole process
//!   tree when it ends.

mod branches;
mod confine;
pub mod contain;
mod engine;
mod gate;
pub mod line;
mod merge;
pub mod ready;
mod rebase;
mod recover;
mod rollback;
mod run;
pub mod showroom;
mod slots;
pub mod steps;
mod stop;
pub mod train;
mod watch;
pub mod worker;

pub use branches::{BranchFacts, PrFacts, task_branches};
pub use gate::Trigger;
pub use rollback::Cause;

use std::sync::Arc;

use cel::Value;

use anyhow::Context as _;

use self::engine::Engine;
use crate::config::Config;
use crate::domain::{DeliveryId, RepoName, Source, TaskKey};
use crate::github::GitHub;
use crate::policy::{self, Decision, Facts, PolicySet, Stage};
use crate::store::{Enqueued, NewDelivery, Store};
use crate::tracker::{Task, Tracker};

/// The facts of a delivery request (and of the merge check). `branches` is what
/// [`branches_for`] found, when a rule reads it.
#[allow(clippy::too_many_arguments)]
pub fn deliver_facts(
    config: &Config,
    tracker_name: &str,
    key: &str,
    task: Option<&Task>,
    requester: &str,
    pr: Option<&PrFacts>,
    branches: &[BranchFacts],
    repos: &[RepoName],
    delivery: Option<DeliveryId>,
) -> Facts {
    let mut f = Facts::default();
    let task = match task {
        Some(t) => policy::task_value(&t.key, true, &t.status, &t.title, &t.assignee, &t.url),
        None => policy::task_value(key, false, "", "", "", ""),
    };
    f.set("task", task)
        .set("requester", requester)
        .set_ecosystem(config, tracker_name)
        .set(
            "repos",
            repos.iter().map(RepoName::to_string).collect::<Vec<_>>(),
        )
        .set("teams", teams_value(config))
        .set(
            "branches",
            Value::List(Arc::new(branches.iter().map(BranchFacts::value).collect())),
        )
        .set("now", Value::Timestamp(chrono::Utc::now().fixed_offset()));
    match pr {
        Some(pr) => {
            let reviews: Vec<Value> = pr
                .reviews
                .iter()
                .map(|(u, s)| {
                    policy::map([("user", u.as_str().into()), ("state", s.as_str().into())])
                })
                .collect();
            f.set(
                "pr",
                policy::map([
                    ("number", (pr.number as i64).into()),
                    ("author", pr.author.as_str().into()),
                    ("head", pr.head.as_str().into()),
                ]),
            )
            .set("approvals", pr.approvals())
            .set("reviews", Value::List(Arc::new(reviews)));
        }
        None => {
            f.set("pr", Value::Null)
                .set("approvals", 0i64)
                .set("reviews", Value::List(Arc::new(Vec::new())));
        }
    }
    f.set(
        "delivery",
        delivery.map_or(Value::Null, |id| policy::map([("id", id.0.into())])),
    );
    f
}

/// The `teams` fact: `[teams]` as a map of lists.
pub fn teams_value(config: &Config) -> Value {
    let teams: std::collections::HashMap<String, Value> = config
        .teams
        .iter()
        .map(|(name, people)| (name.clone(), Value::from(people.clone())))
        .collect();
    Value::from(teams)
}

/// The task's branches for the `on = "deliver"` rules: none unless a rule reads `branches`;
/// the files they change only if a rule mentions `files`.
pub async fn branches_for(
    config: &Config,
    policies: &PolicySet,
    github: Option<&GitHub>,
    key: &str,
) -> anyhow::Result<Vec<BranchFacts>> {
    if !policies.needs(Stage::Deliver, "branches") {
        return Ok(Vec::new());
    }
    let with_files = policies.mentions(Stage::Deliver, "files");
    task_branches(config, github, key, with_files).await
}

/// A delivery request from any source.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub task: TaskKey,
    pub priority: i64,
    pub source: Source,
    pub requester: String,
    /// Where it came from, for links back (e.g. `owner/repo#12`).
    pub origin: String,
    pub pr: Option<PrFacts>,
}

/// What became of a request.
#[derive(Debug)]
pub enum Requested {
    Queued { id: DeliveryId, position: usize },
    AlreadyQueued { id: DeliveryId },
    Refused(Decision),
}

/// Checks a request against the `on = "deliver"` rules and queues it. `github` is the
/// client to read pull requests with, if the caller has one.
pub async fn request(
    config: &Config,
    policies: &PolicySet,
    tracker: &dyn Tracker,
    github: Option<&GitHub>,
    store: &Store,
    req: &Request,
) -> anyhow::Result<Requested> {
    let task = crate::tracker::task_with_timeout(tracker, &req.task, config.tracker.timeout)
        .await
        .map_err(|e| anyhow::anyhow!("{e}; the delivery of `{}` was not queued", req.task))?;
    let mut branches = branches_for(config, policies, github, req.task.as_str())
        .await
        .with_context(|| {
            format!(
                "cannot read the branches and approvals of `{}`, which the delivery rules \
                 need; the delivery was not queued",
                req.task
            )
        })?;
    // The pull request the request came from is judged even if its branch was not found
    // (a fork's, or one deleted since): asking from it must not skip its reviews.
    if let Some(pr) = &req.pr
        && !branches
            .iter()
            .any(|b| b.github.eq_ignore_ascii_case(&pr.repo) && b.branch == pr.head)
    {
        let repo = config
            .repos
            .iter()
            .find(|r| {
                r.github
                    .as_deref()
                    .is_some_and(|g| g.eq_ignore_ascii_case(&pr.repo))
            })
            .map_or_else(|| pr.repo.clone(), |r| r.name.to_string());
        branches.push(BranchFacts {
            repo,
            github: pr.repo.clone(),
            branch: pr.head.clone(),
            approvers: pr.approvers(),
            pr: Some(pr.clone()),
            ..Default::default()
        });
    }
    let repos: Vec<RepoName> = config.repos.iter().map(|r| r.name.clone()).collect();
    let facts = deliver_facts(
        config,
        tracker.name(),
        req.task.as_str(),
        task.as_ref(),
        &req.requester,
        req.pr.as_ref(),
        &branches,
        &repos,
        None,
    );
    let decision = policies.evaluate(Stage::Deliver, &facts);
    crate::audit::record(
        config,
        &crate::audit::Entry::delivery(
            Stage::Deliver,
            &req.task,
            &req.requester,
            None,
            &decision,
            &policies.revision,
        ),
    );
    if !decision.accepted() {
        return Ok(Requested::Refused(decision));
    }
    let new = NewDelivery {
        task: req.task.clone(),
        priority: req.priority,
        source: req.source,
        requester: req.requester.clone(),
        origin: req.origin.clone(),
    };
    Ok(match store.enqueue(&new).await? {
        Enqueued::New(id) => {
            let position = store
                .queued()
                .await?
                .iter()
                .position(|d| d.id == id)
                .map_or(0, |p| p + 1);
            Requested::Queued { id, position }
        }
        Enqueued::Existing(id) => Requested::AlreadyQueued { id },
    })
}

impl Engine {
    /// Checks a request against the `on = "deliver"` rules and queues it, with no GitHub
    /// client (the command line and the demo).
    pub async fn request(&self, req: &Request) -> anyhow::Result<Requested> {
        request(
            &self.config,
            &self.policies,
            self.tracker.as_ref(),
            None,
            &self.store,
            req,
        )
        .await
    }
}

/// Lines explaining a refusal, one per failed rule.
pub fn refusal_lines(decision: &Decision) -> Vec<String> {
    decision
        .violations()
        .flat_map(|v| {
            v.messages()
                .into_iter()
                .map(move |m| format!("[{}] {m}", v.rule))
        })
        .collect()
}
