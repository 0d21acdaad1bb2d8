//! Commit statuses: what a CI that reports them (Jenkins, GitLab CI, GitHub Actions,
//! TeamCity, Buildkite) posts to `POST /api/statuses/<sha>` in GitHub's commit-status shape,
//! and the judgement of a step that waits for some of them on its candidate's sha. For a
//! repository on GitHub, the statuses and check runs GitHub has for the sha count too.

use serde::Deserialize;

/// The state of one status, as GitHub names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitState {
    Pending,
    Success,
    Failure,
    Error,
}

impl CommitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CommitState::Pending => "pending",
            CommitState::Success => "success",
            CommitState::Failure => "failure",
            CommitState::Error => "error",
        }
    }

    /// Reads stored text; `None` for a text no version wrote.
    pub fn parse(s: &str) -> Option<CommitState> {
        match s {
            "pending" => Some(CommitState::Pending),
            "success" => Some(CommitState::Success),
            "failure" => Some(CommitState::Failure),
            "error" => Some(CommitState::Error),
            _ => None,
        }
    }
}

/// One status of a commit: GitHub's body `{state, context, target_url, description}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CommitStatus {
    pub state: CommitState,
    /// GitHub's default context.
    #[serde(default = "default_context")]
    pub context: String,
    #[serde(default)]
    pub target_url: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

fn default_context() -> String {
    "default".into()
}

/// Where a step that waits for `contexts` stands, given the latest status of each context of
/// its sha.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every context is `success`.
    Passed,
    /// A context is `failure` or `error` (the first, in the step's order).
    Failed(CommitStatus),
    /// Some context is missing or `pending`; `seen` when any status at all arrived for the
    /// sha (the CI started).
    Waiting { seen: bool },
}

/// Judges the latest statuses of a sha against the contexts a step waits for. A status of
/// a context the step does not list counts for nothing but showing that the CI started.
pub fn judge(contexts: &[String], statuses: &[CommitStatus]) -> Verdict {
    let of = |c: &String| statuses.iter().find(|s| &s.context == c);
    if let Some(failed) = contexts
        .iter()
        .filter_map(of)
        .find(|s| matches!(s.state, CommitState::Failure | CommitState::Error))
    {
        return Verdict::Failed(failed.clone());
    }
    if !contexts.is_empty()
        && contexts
            .iter()
            .all(|c| of(c).is_some_and(|s| s.state == CommitState::Success))
    {
        return Verdict::Passed;
    }
    Verdict::Waiting {
        seen: !statuses.is_empty(),
    }
}

/// GitHub's statuses and check runs of a sha, as commit statuses: a check run's `name` is
/// its context, its page (`html_url`, else `details_url`) its target URL.
pub fn from_github(checks: Vec<crate::github::Check>) -> Vec<CommitStatus> {
    use crate::github::StatusState;
    checks
        .into_iter()
        .map(|c| CommitStatus {
            state: match c.state {
                StatusState::Pending => CommitState::Pending,
                StatusState::Success => CommitState::Success,
                StatusState::Failure => CommitState::Failure,
                StatusState::Error => CommitState::Error,
            },
            context: c.context,
            target_url: c.target_url,
            description: c.description,
        })
        .collect()
}

/// The statuses posted to lockstep, then those of `more` (GitHub's) whose context none of
/// them has: what a CI posted to lockstep is its latest word on that context.
pub fn merge(mut posted: Vec<CommitStatus>, more: &[CommitStatus]) -> Vec<CommitStatus> {
    for s in more {
        if !posted.iter().any(|p| p.context == s.context) {
            posted.push(s.clone());
        }
    }
    posted
}

/// Whether `sha` is a full commit id (40 or 64 hex digits).
pub fn is_sha(sha: &str) -> bool {
    matches!(sha.len(), 40 | 64) && sha.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(context: &str, state: CommitState) -> CommitStatus {
        CommitStatus {
            state,
            context: context.into(),
            target_url: None,
            description: None,
        }
    }

    #[test]
    fn every_context_must_succeed_and_a_failure_or_error_fails() {
        let contexts = vec!["ci/build".to_string(), "ci/test".to_string()];
        use CommitState::*;
        assert_eq!(judge(&contexts, &[]), Verdict::Waiting { seen: false });
        let other = [status("lint", Success)];
        assert_eq!(judge(&contexts, &other), Verdict::Waiting { seen: true });
        let half = [status("ci/build", Success), status("ci/test", Pending)];
        assert_eq!(judge(&contexts, &half), Verdict::Waiting { seen: true });
        let all = [status("ci/test", Success), status("ci/build", Success)];
        assert_eq!(judge(&contexts, &all), Verdict::Passed);
        for bad in [Failure, Error] {
            let failed = [status("ci/build", Pending), status("ci/test", bad)];
            assert_eq!(
                judge(&contexts, &failed),
                Verdict::Failed(status("ci/test", bad))
            );
        }
        // Nothing to wait for never passes.
        assert_eq!(judge(&[], &all), Verdict::Waiting { seen: true });
    }

    #[test]
    fn a_posted_status_wins_over_githubs_of_the_same_context() {
        use CommitState::*;
        let posted = vec![status("ci/test", Success)];
        let github = [status("ci/test", Failure), status("ci/lint", Pending)];
        assert_eq!(
            merge(posted, &github),
            [status("ci/test", Success), status("ci/lint", Pending)]
        );
    }

    #[test]
    fn shas_are_full_hex_ids() {
        assert!(is_sha(&"a".repeat(40)));
        assert!(is_sha(&"0".repeat(64)));
        assert!(!is_sha("abc"));
        assert!(!is_sha(&"g".repeat(40)));
    }
}
