//! The `branches` fact of a delivery: the task's branch in each repository, who approved its
//! current head and which files it changes.
//!
//! One source of truth per repository: a repository on GitHub (`github = "owner/name"` with a
//! `[github]` section) takes its approvals from the open pull request's reviews; any other
//! takes them from its approval refs (`refs/approvals/<TASK>/<name>`, see
//! [`crate::push::approval`]), counting only those that point at the branch's current head. So
//! "two approvals" means the same on GitHub and on a plain git server.

use std::path::Path;

use cel::Value;

use super::engine::repo_url;
use crate::audit;
use crate::config::{Config, Repo};
use crate::domain::GitHubRepo;
use crate::git::Git;
use crate::github::{self, GitHub};
use crate::policy;
use crate::push::approval;
use crate::runtime::blocking;

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
    /// The people who approved, other than the author, by each reviewer's latest review.
    pub fn approvers(&self) -> Vec<String> {
        self.reviews
            .iter()
            .filter(|(user, state)| state == "APPROVED" && *user != self.author)
            .map(|(user, _)| user.clone())
            .collect()
    }

    /// Approvals by people other than the author, counting each reviewer's latest review.
    pub fn approvals(&self) -> i64 {
        self.approvers().len() as i64
    }
}

/// A branch of the task in one repository.
#[derive(Debug, Clone, Default)]
pub struct BranchFacts {
    /// The repository's name in `lockstep.toml`.
    pub repo: String,
    /// `owner/name` on GitHub, "" when the repository's approvals are git refs.
    pub github: String,
    pub branch: String,
    /// The branch's head ("" when unknown, e.g. a pull request from a fork).
    pub head: String,
    /// The open pull request whose head is this branch of this repository (not a fork's).
    pub pr: Option<PrFacts>,
    /// Who approved the branch: on GitHub, the pull request's approving reviewers other than
    /// its author; elsewhere, the approval refs that point at the branch's current head.
    pub approvers: Vec<String>,
    /// The paths the branch changes against the repository's upstream branch (listed only
    /// when a rule mentions `files`).
    pub files: Vec<String>,
}

impl BranchFacts {
    /// The element of the `branches` fact.
    pub fn value(&self) -> Value {
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
            ("head", self.head.as_str().into()),
            ("pr", pr),
            ("approvals", (self.approvers.len() as i64).into()),
            ("approvers", Value::from(self.approvers.clone())),
            ("files", Value::from(self.files.clone())),
        ])
    }
}

/// The task's branches in every repository of the ecosystem, each with its approvers (from
/// GitHub or from git, see the module's note) and, with `with_files`, the files it changes.
/// Without a client at hand (the command line, a hook), one is built from `[github]`.
pub async fn task_branches(
    config: &Config,
    client: Option<&GitHub>,
    key: &str,
    with_files: bool,
) -> anyhow::Result<Vec<BranchFacts>> {
    let built;
    let gh = match (client, &config.github) {
        (Some(gh), _) => Some(gh),
        (None, Some(gh_config)) if config.repos.iter().any(|r| r.github.is_some()) => {
            built = GitHub::api_only(config, gh_config)?;
            Some(&built)
        }
        _ => None,
    };
    let mut out = Vec::new();
    for repo in &config.repos {
        let listed = list_refs(config, repo).await?;
        let branches = approval::task_heads(config, &listed, key);
        if branches.is_empty() {
            continue;
        }
        let on_github = gh.zip(repo.github.as_deref().and_then(GitHubRepo::parse));
        let pulls = match &on_github {
            Some((gh, name)) => gh.open_pulls(name).await?,
            None => Vec::new(),
        };
        for (branch, head) in branches {
            let mut facts = BranchFacts {
                repo: repo.name.to_string(),
                branch: branch.to_string(),
                head: head.to_string(),
                ..Default::default()
            };
            match &on_github {
                Some((gh, name)) => {
                    let full = name.to_string();
                    let pull = pulls
                        .iter()
                        .find(|p| p.head_ref == branch && p.head_repo.eq_ignore_ascii_case(&full));
                    if let Some(p) = pull {
                        let pr = PrFacts {
                            repo: full.clone(),
                            number: p.number,
                            author: p.author.clone(),
                            head: p.head_ref.clone(),
                            reviews: github::latest_reviews(&gh.reviews(name, p.number).await?),
                        };
                        facts.approvers = pr.approvers();
                        facts.pr = Some(pr);
                    }
                    facts.github = full;
                }
                None => {
                    let approvers = git_approvers(&listed, key, head);
                    facts.approvers = cleared(config, repo, &listed, head, approvers).await?;
                }
            }
            if with_files {
                let upstream = format!("refs/heads/{}", repo.upstream);
                let base = listed.iter().find(|(n, _)| *n == upstream);
                if let Some((_, base)) = base {
                    facts.files = changed_files(config, repo, base, branch).await?;
                }
            }
            out.push(facts);
        }
    }
    Ok(out)
}

/// The reviewers whose approval ref of the task points at `head`, sorted.
fn git_approvers(listed: &[(String, String)], key: &str, head: &str) -> Vec<String> {
    let mut names: Vec<String> = listed
        .iter()
        .filter(|(_, oid)| oid == head)
        .filter_map(|(name, _)| approval::parse(name))
        .filter(|(task, _)| *task == key)
        .map(|(_, reviewer)| reviewer.to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Those of `approvers` of a branch who neither wrote nor pushed any of its commits, in a
/// repository on this machine (whose hooks keep their decision log in this state folder). The
/// hooks judged each approval so when it was pushed; here an approval ref written behind
/// their back, or judged before the pushers' rule, is judged again. A repository elsewhere
/// keeps its log on its own server: its approvals count as its hooks let them through.
async fn cleared(
    config: &Config,
    repo: &Repo,
    listed: &[(String, String)],
    head: &str,
    approvers: Vec<String>,
) -> anyhow::Result<Vec<String>> {
    let url = repo_url(config, repo);
    if approvers.is_empty() || config.reviews.authors_may_approve || !Path::new(&url).is_dir() {
        return Ok(approvers);
    }
    let protected: Vec<String> = approval::protected_heads(config, listed)
        .into_iter()
        .map(String::from)
        .collect();
    let (state_dir, keep) = (config.state_dir(), config.audit.keep);
    let (name, head) = (repo.name.to_string(), head.to_string());
    blocking(move || -> anyhow::Result<Vec<String>> {
        let git = Git::new(&url);
        let hide: Vec<&str> = protected.iter().map(String::as_str).collect();
        let commits = git.commits(&head, &hide)?;
        let (entries, _) = audit::read(&state_dir, keep)?;
        let mut kept = Vec::new();
        for a in approvers {
            let pushes = audit::branch_pushes(&entries, &name, &a);
            if !commits.iter().any(|c| approval::authored_by(c, &a))
                && audit::pushed_one(&git, &commits, &pushes, &hide)?.is_none()
            {
                kept.push(a);
            }
        }
        Ok(kept)
    })
    .await
}

/// A repository's branches and approval refs (`git ls-remote`), as (ref, object) pairs.
async fn list_refs(config: &Config, repo: &Repo) -> anyhow::Result<Vec<(String, String)>> {
    let url = repo_url(config, repo);
    let git = Git::new(config.resolve(Path::new(".")));
    let listed = {
        let url = url.clone();
        blocking(move || {
            git.try_run(&[
                "ls-remote",
                "--end-of-options",
                &url,
                "refs/heads/*",
                "refs/approvals/*",
            ])
        })
        .await?
    };
    let (ok, out, err) = listed;
    if !ok {
        anyhow::bail!("cannot list the branches of `{url}`: {}", err.trim());
    }
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(oid, name)| (name.to_string(), oid.to_string()))
        .collect())
}

/// The paths `branch` changes since it left the upstream whose head is `base`: read in the
/// repository itself when it is on this machine, else in a scratch fetch without file contents.
async fn changed_files(
    config: &Config,
    repo: &Repo,
    base: &str,
    branch: &str,
) -> anyhow::Result<Vec<String>> {
    let url = repo_url(config, repo);
    let (base, branch) = (base.to_string(), branch.to_string());
    blocking(move || -> anyhow::Result<Vec<String>> {
        let scratch;
        let (git, tip) = if Path::new(&url).is_dir() {
            (Git::new(&url), format!("refs/heads/{branch}"))
        } else {
            scratch = tempfile::tempdir()?;
            let git = Git::new(scratch.path());
            git.run(&["init", "--quiet", "--bare"])?;
            let spec = format!("refs/heads/{branch}:refs/lockstep/tip");
            git.run(&[
                "fetch",
                "--quiet",
                "--filter=blob:none",
                "--end-of-options",
                &url,
                &spec,
                &base,
            ])?;
            (git, "refs/lockstep/tip".to_string())
        };
        let out = git.run(&[
            "diff",
            "--name-only",
            "-z",
            "--end-of-options",
            &format!("{base}...{tip}"),
        ])?;
        Ok(out
            .split('\0')
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect())
    })
    .await
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
        assert_eq!(pr.approvers(), ["bob"]);
    }

    /// The example path rule, on the facts of a delivery: it asks for a dba only when a
    /// branch changes `db/`, and names the team's people.
    #[test]
    fn the_example_path_rule_asks_the_right_team() {
        use crate::policy::{PolicySet, Stage};
        let policies = PolicySet::parse_sources([(
            Path::new("db-needs-dba.toml"),
            include_str!("../../examples/policies/db-needs-dba.toml"),
        )])
        .unwrap();
        assert!(policies.mentions(Stage::Deliver, "files"));
        let decide = |config: &Config, files: &[&str], approvers: &[&str]| {
            let branch = BranchFacts {
                repo: "api".into(),
                branch: "feature/T-1-x".into(),
                files: files.iter().map(|f| f.to_string()).collect(),
                approvers: approvers.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            };
            let branches = [branch];
            let facts = super::super::deliver_facts(
                config,
                &super::super::Judged {
                    tracker: "file",
                    key: "T-1",
                    requester: "bob",
                    branches: &branches,
                    ..Default::default()
                },
            );
            policies.evaluate(Stage::Deliver, &facts)
        };
        let config = Config::parse_str("[teams]\ndba = [\"dana\", \"dmitri\"]\n").unwrap();
        assert!(decide(&config, &["src/a.rs"], &["bob"]).accepted());
        assert!(decide(&config, &["db/x.sql"], &["bob", "dana"]).accepted());
        let refused = decide(&config, &["db/x.sql", "src/a.rs"], &["bob", "carol"]);
        assert_eq!(
            crate::delivery::refusal_lines(&refused),
            [
                "[db-needs-dba] `feature/T-1-x` of api changes db/x.sql without an approval from \
              the dba team; ask dana or dmitri to review it"
            ]
        );
        let no_team = Config::parse_str("").unwrap();
        let d = decide(&no_team, &["db/x.sql"], &[]);
        assert!(
            crate::delivery::refusal_lines(&d)[0]
                .ends_with("ask the dba team (name it in `[teams]`) to review it"),
            "{d:?}"
        );
    }

    #[test]
    fn only_approvals_of_the_current_head_count() {
        let r = |name: &str, oid: &str| (name.to_string(), oid.to_string());
        let listed = [
            r("refs/heads/feature/T-1-x", "h2"),
            r("refs/approvals/T-1/carol", "h2"),
            r("refs/approvals/T-1/bob", "h1"),
            r("refs/approvals/T-2/dave", "h2"),
            r("refs/approvals/T-1/erin/extra", "h2"),
            r("refs/approvals/T-1/alice", "h2"),
        ];
        assert_eq!(git_approvers(&listed, "T-1", "h2"), ["alice", "carol"]);
        assert!(git_approvers(&listed, "T-3", "h2").is_empty());
    }
}
