//! A delivery request from any source (a comment, a push, the tracker, the command line),
//! checked against the `on = "deliver"` rules and queued.

use anyhow::Context as _;

use super::BranchFacts;
use super::PrFacts;
use super::engine::Engine;
use super::facts::{Judged, branches_for, deliver_facts};
use crate::config::Config;
use crate::domain::{DeliveryId, RepoName, Source, TaskKey};
use crate::github::GitHub;
use crate::policy::{Decision, PolicySet, Stage};
use crate::store::{Enqueued, NewDelivery, Store};
use crate::tracker::Tracker;

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
        &Judged {
            tracker: tracker.name(),
            key: req.task.as_str(),
            task: task.as_ref(),
            requester: &req.requester,
            pr: req.pr.as_ref(),
            branches: &branches,
            repos: &repos,
            delivery: None,
        },
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
