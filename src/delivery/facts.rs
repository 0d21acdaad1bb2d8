//! The facts the `on = "deliver"` and `on = "merge"` rules read: the task, who asks, the pull
//! request, the task's branches and approvals, the ecosystem.

use std::sync::Arc;

use cel::Value;

use super::{BranchFacts, PrFacts, task_branches};
use crate::config::Config;
use crate::domain::{DeliveryId, RepoName};
use crate::github::GitHub;
use crate::policy::{self, Facts, PolicySet, Stage};
use crate::tracker::Task;

/// What a delivery request (or the merge check) is judged on, besides the config.
#[derive(Debug, Clone, Copy, Default)]
pub struct Judged<'a> {
    /// The tracker's kind, for the `ecosystem` fact.
    pub tracker: &'a str,
    /// The task asked for, as the request names it.
    pub key: &'a str,
    /// The task as the tracker has it, if it does.
    pub task: Option<&'a Task>,
    pub requester: &'a str,
    /// The pull request the request came from.
    pub pr: Option<&'a PrFacts>,
    /// What [`branches_for`] found, when a rule reads it.
    pub branches: &'a [BranchFacts],
    /// The ecosystem's repositories.
    pub repos: &'a [RepoName],
    /// The delivery being judged, once it has an id.
    pub delivery: Option<DeliveryId>,
}

/// The facts of a delivery request (and of the merge check).
pub fn deliver_facts(config: &Config, judged: &Judged<'_>) -> Facts {
    let Judged {
        tracker: tracker_name,
        key,
        task,
        requester,
        pr,
        branches,
        repos,
        delivery,
    } = *judged;
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
fn teams_value(config: &Config) -> Value {
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
