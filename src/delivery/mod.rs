//! Deliveries: one task, several repositories, all or nothing.
//!
//! - [`request`] checks a delivery request against the `on = "deliver"` rules and queues it.
//! - [`worker`] holds the ecosystem's worker lock, recovers after a crash, and works the queue:
//!   one delivery at a time (`[delivery] window = 1`), or as a pipeline ([`train`]): the head
//!   deploys while the deliveries behind it are built and tested on top of it (`slots` shares
//!   the step slots between them).
//! - [`line`](mod@line) is the delivery line: `engine` runs a delivery through its phases
//!   (the domain's [`Phase`](crate::domain::Phase)), `rebase` makes its checkouts, `run` runs their steps ([`steps`] runs one as a
//!   process), `merge` pushes the upstreams, `rollback` undoes, `recover` finishes what a
//!   killed worker left; `stop` says why a line stops; `gate` runs the metric gates of
//!   verify; `watch` rolls back a watched delivery when an alert fires.
//! - [`contain`] is the supervisor each step runs under, which kills the step's whole process
//!   tree when it ends.

pub mod contain;
mod engine;
mod gate;
pub mod line;
mod merge;
mod rebase;
mod recover;
mod rollback;
mod run;
mod slots;
pub mod steps;
mod stop;
pub mod train;
mod watch;
pub mod worker;

pub use gate::Trigger;
pub use rollback::Cause;

use std::sync::Arc;

use cel::Value;

use anyhow::Context as _;

use self::engine::Engine;
use crate::config::Config;
use crate::domain::{DeliveryId, RepoName, Source, TaskKey};
use crate::github::{self, GitHub, GitHubRepo};
use crate::policy::{self, Decision, Facts, PolicySet, Stage};
use crate::store::{Enqueued, NewDelivery, Store};
use crate::tracker::{Task, Tracker};

/// What a pull request adds to the facts of a delivery request.
#[derive(Debug, Clone, Default)]
pub struct PrFacts {
    /// `owner/name` on GitHub.
    pub repo: String,
    pub number: u64,
    pub author: String,
    pub head: String,
    /// The latest review state per reviewer (`APPROVED`, `CHANGES_REQUESTED`, …).
    pub reviews: Vec<(String, String)>,
}

impl PrFacts {
    /// Approvals by people other than the author, counting each reviewer's latest review.
    pub fn approvals(&self) -> i64 {
        self.reviews
            .iter()
            .filter(|(user, state)| state == "APPROVED" && *user != self.author)
            .count() as i64
    }
}

/// A branch of the task in a repository on GitHub, and its open pull request.
#[derive(Debug, Clone)]
pub struct BranchFacts {
    /// The repository's name in `lockstep.toml`.
    pub repo: String,
    /// `owner/name` on GitHub.
    pub github: String,
    pub branch: String,
    /// The open pull request whose head is this branch of this repository (not a fork's).
    pub pr: Option<PrFacts>,
}

impl BranchFacts {
    fn value(&self) -> Value {
        let pr = self.pr.as_ref().map_or(Value::Null, |pr| {
            policy::map([
                ("number", (pr.number as i64).into()),
                ("author", pr.author.as_str().into()),
                ("approvals", pr.approvals().into()),
            ])
        });
        policy::map([
            ("repo", self.repo.as_str().into()),
            ("github", self.github.as_str().into()),
            ("branch", self.branch.as_str().into()),
            ("pr", pr),
        ])
    }
}

/// The task's branches in the repositories on GitHub (`github = "owner/name"`, with a
/// `[github]` section: without one, lockstep does not talk to GitHub and there are none), each
/// with its open pull request and that pull request's reviews. Without a client at hand (the
/// command line, a hook), one is built from `[github]`.
pub async fn task_branches_on_github(
    config: &Config,
    client: Option<&GitHub>,
    key: &str,
) -> anyhow::Result<Vec<BranchFacts>> {
    let Some(gh_config) = &config.github else {
        return Ok(Vec::new());
    };
    let on_github: Vec<(&crate::config::Repo, GitHubRepo)> = config
        .repos
        .iter()
        .filter_map(|r| Some((r, GitHubRepo::parse(r.github.as_deref()?)?)))
        .collect();
    if on_github.is_empty() {
        return Ok(Vec::new());
    }
    let built;
    let gh = match client {
        Some(gh) => gh,
        None => {
            built = GitHub::api_only(config, gh_config)?;
            &built
        }
    };
    let mut out = Vec::new();
    for (repo, name) in on_github {
        let branches = task_branches(config, repo, key).await?;
        if branches.is_empty() {
            continue;
        }
        let pulls = gh.open_pulls(&name).await?;
        let full = name.to_string();
        for branch in branches {
            let pull = pulls
                .iter()
                .find(|p| p.head_ref == branch && p.head_repo.eq_ignore_ascii_case(&full));
            let pr = match pull {
                Some(p) => Some(PrFacts {
                    repo: full.clone(),
                    number: p.number,
                    author: p.author.clone(),
                    head: p.head_ref.clone(),
                    reviews: github::latest_reviews(&gh.reviews(&name, p.number).await?),
                }),
                None => None,
            };
            out.push(BranchFacts {
                repo: repo.name.to_string(),
                github: full.clone(),
                branch,
                pr,
            });
        }
    }
    Ok(out)
}

/// The branches of a repository that name the task (`git ls-remote --heads`).
async fn task_branches(
    config: &Config,
    repo: &crate::config::Repo,
    key: &str,
) -> anyhow::Result<Vec<String>> {
    let url = line::repo_url(config, repo);
    let git = crate::git::Git::new(config.resolve(std::path::Path::new(".")));
    let listed = {
        let url = url.clone();
        crate::runtime::blocking(move || {
            git.try_run(&["ls-remote", "--heads", "--end-of-options", &url])
        })
        .await?
    };
    let (ok, out, err) = listed;
    if !ok {
        anyhow::bail!("cannot list the branches of `{url}`: {}", err.trim());
    }
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('\t')?.1.strip_prefix("refs/heads/"))
        .filter(|b| config.tasks.task_of(b) == Some(key))
        .map(String::from)
        .collect())
}

/// The facts of a delivery request (and of the merge check). `branches` is what
/// [`task_branches_on_github`] found, when a rule reads it.
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
    let mut branches = if policies.needs(Stage::Deliver, "branches") {
        task_branches_on_github(config, github, &req.task)
            .await
            .with_context(|| {
                format!(
                    "cannot read the pull requests of `{}`, which the delivery rules need; \
                     the delivery was not queued",
                    req.task
                )
            })?
    } else {
        Vec::new()
    };
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
            pr: Some(pr.clone()),
        });
    }
    let repos: Vec<RepoName> = config.repos.iter().map(|r| r.name.clone()).collect();
    let facts = deliver_facts(
        config,
        tracker.name(),
        &req.task,
        task.as_ref(),
        &req.requester,
        req.pr.as_ref(),
        &branches,
        &repos,
        None,
    );
    let decision = policies.evaluate(Stage::Deliver, &facts);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approvals_count_others_only() {
        let pr = PrFacts {
            repo: "acme/api".into(),
            number: 1,
            author: "alice".into(),
            head: "feature/T-1".into(),
            reviews: vec![
                ("alice".into(), "APPROVED".into()),
                ("bob".into(), "APPROVED".into()),
                ("carol".into(), "CHANGES_REQUESTED".into()),
                ("dave".into(), "DISMISSED".into()),
            ],
        };
        assert_eq!(pr.approvals(), 1);
    }
}
