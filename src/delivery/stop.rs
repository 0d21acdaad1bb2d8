//! Why the delivery line stops short of landing: the one error type of the line.
//!
//! A delivery either fails (a step, a conflict, a policy, a cancel: a [`Failure`], reported
//! to the task and the pull request) or lockstep itself cannot go on (the store, the disk, a
//! git that will not run: an [`anyhow::Error`]). Both stop the line the same way; the engine
//! reports the second as a failure of the phase the delivery was in. `?` turns either into a
//! [`Stop`].

use crate::domain::{Phase, RepoName};

/// Why a delivery stopped.
#[derive(Debug, Clone)]
pub struct Failure {
    pub phase: Phase,
    /// The repository it stopped in; none when it is the delivery's as a whole.
    pub repo: Option<RepoName>,
    pub message: String,
    /// The last lines of the failed step's log, if a step failed.
    pub log_tail: String,
}

impl Failure {
    pub(super) fn new(
        phase: Phase,
        repo: Option<&RepoName>,
        message: impl Into<String>,
    ) -> Failure {
        Failure {
            phase,
            repo: repo.cloned(),
            message: message.into(),
            log_tail: String::new(),
        }
    }

    /// One line for the journal, the tracker note and the PR comment.
    pub fn summary(&self) -> String {
        match &self.repo {
            None => format!("delivery failed in {}: {}", self.phase, self.message),
            Some(repo) => format!(
                "delivery failed in {} ({repo}): {}",
                self.phase, self.message
            ),
        }
    }
}

/// What stops the line: the delivery failed, or lockstep could not go on.
#[derive(Debug)]
pub(super) enum Stop {
    Failed(Failure),
    Broken(anyhow::Error),
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Stop {
        Stop::Failed(f)
    }
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Stop {
        Stop::Broken(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_the_phase_and_the_repository_when_there_is_one() {
        let f = Failure::new(Phase::Test, Some(&"db".into()), "`test` exited with 1");
        assert_eq!(
            f.summary(),
            "delivery failed in test (db): `test` exited with 1"
        );
        let f = Failure::new(
            Phase::Merge,
            None,
            "merge refused by policy: [freeze] frozen",
        );
        assert_eq!(
            f.summary(),
            "delivery failed in merge: merge refused by policy: [freeze] frozen"
        );
    }
}
