//! What GitHub knows of a commit's CI: its combined commit statuses
//! (`GET /repos/{o}/{r}/commits/{ref}/status`) and its check runs
//! (`GET /repos/{o}/{r}/commits/{ref}/check-runs`), read for a `kind = "status"` runner's
//! step, each as a [`Check`]: a context and its state.

use serde::Deserialize;

use super::endpoint::describe;
use super::{GitHub, GitHubRepo, StatusState};

/// One context GitHub reports for a commit: a commit status, or a check run by its `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub context: String,
    pub state: StatusState,
    pub target_url: Option<String>,
    pub description: Option<String>,
}

#[derive(Deserialize)]
struct CombinedJson {
    sha: String,
    #[serde(default)]
    statuses: Vec<StatusJson>,
}

#[derive(Deserialize)]
struct StatusJson {
    state: String,
    context: String,
    target_url: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct CheckRunsJson {
    #[serde(default)]
    check_runs: Vec<CheckRunJson>,
}

#[derive(Deserialize)]
struct CheckRunJson {
    name: String,
    head_sha: String,
    status: String,
    conclusion: Option<String>,
    html_url: Option<String>,
    details_url: Option<String>,
    output: Option<OutputJson>,
}

#[derive(Deserialize)]
struct OutputJson {
    title: Option<String>,
}

/// A commit status's state; `None` for a state GitHub does not define.
fn status_state(state: &str) -> Option<StatusState> {
    match state {
        "pending" => Some(StatusState::Pending),
        "success" => Some(StatusState::Success),
        "failure" => Some(StatusState::Failure),
        "error" => Some(StatusState::Error),
        _ => None,
    }
}

/// A check run's state, from its `status` and `conclusion`: a run not yet completed is
/// pending; `success` passes, and so do `neutral` and `skipped`, as they satisfy a required
/// check on GitHub; `failure`, `timed_out`, `cancelled` and `action_required` fail; `stale`
/// (left incomplete) and anything else keep the step waiting.
pub fn check_run_state(status: &str, conclusion: Option<&str>) -> StatusState {
    if status != "completed" {
        return StatusState::Pending;
    }
    match conclusion {
        Some("success" | "neutral" | "skipped") => StatusState::Success,
        Some("failure" | "timed_out" | "cancelled" | "action_required") => StatusState::Failure,
        _ => StatusState::Pending,
    }
}

impl GitHub {
    /// The commit statuses (the latest of each context) and the check runs (the latest of
    /// each name) of `sha`; a status or run GitHub reports for another commit is left out.
    /// One page of each, 100 items: more contexts than that on one commit are not read.
    pub async fn checks(&self, repo: &GitHubRepo, sha: &str) -> anyhow::Result<Vec<Check>> {
        anyhow::ensure!(
            crate::git::is_oid(sha),
            "`{sha}` is not a commit id; no checks read"
        );
        let crab = self.client(repo).await?;
        let base = format!("/repos/{}/{}/commits/{sha}", repo.owner, repo.name);
        let combined: CombinedJson = crab
            .get(format!("{base}/status?per_page=100"), None::<&()>)
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot read the statuses of {repo}@{sha}: {}", describe(&e))
            })?;
        let runs: CheckRunsJson = crab
            .get(format!("{base}/check-runs?per_page=100"), None::<&()>)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the check runs of {repo}@{sha}: {}",
                    describe(&e)
                )
            })?;
        let mut out = Vec::new();
        if combined.sha.eq_ignore_ascii_case(sha) {
            out.extend(combined.statuses.into_iter().filter_map(|s| {
                Some(Check {
                    state: status_state(&s.state)?,
                    context: s.context,
                    target_url: s.target_url.filter(|u| !u.is_empty()),
                    description: s.description.filter(|d| !d.is_empty()),
                })
            }));
        }
        // GitHub lists the latest run of each name first (`filter=latest`).
        for run in runs.check_runs {
            if !run.head_sha.eq_ignore_ascii_case(sha)
                || out.iter().any(|c: &Check| c.context == run.name)
            {
                continue;
            }
            out.push(Check {
                state: check_run_state(&run.status, run.conclusion.as_deref()),
                description: run.output.and_then(|o| o.title).filter(|t| !t.is_empty()),
                target_url: run
                    .html_url
                    .filter(|u| !u.is_empty())
                    .or(run.details_url.filter(|u| !u.is_empty())),
                context: run.name,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_run_passes_on_success_fails_on_failure_and_waits_while_running() {
        use StatusState::*;
        assert_eq!(check_run_state("queued", None), Pending);
        assert_eq!(check_run_state("in_progress", None), Pending);
        assert_eq!(check_run_state("completed", Some("success")), Success);
        assert_eq!(check_run_state("completed", Some("neutral")), Success);
        for bad in ["failure", "timed_out", "cancelled", "action_required"] {
            assert_eq!(check_run_state("completed", Some(bad)), Failure, "{bad}");
        }
        assert_eq!(check_run_state("completed", Some("stale")), Pending);
        assert_eq!(check_run_state("completed", None), Pending);
    }
}
