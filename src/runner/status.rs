//! Commit statuses: what a CI that reports them (Jenkins, GitLab CI, GitHub Actions,
//! TeamCity, Buildkite) posts to `POST /api/statuses/<sha>` in GitHub's commit-status shape,
//! and the judgement of a step that waits for some of them on its candidate's sha.

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
    fn shas_are_full_hex_ids() {
        assert!(is_sha(&"a".repeat(40)));
        assert!(is_sha(&"0".repeat(64)));
        assert!(!is_sha("abc"));
        assert!(!is_sha(&"g".repeat(40)));
    }
}
