//! Why the delivery line stops short of landing.

use super::phase::Phase;

/// Why a delivery stopped.
#[derive(Debug, Clone)]
pub struct Failure {
    pub phase: String,
    pub repo: String,
    pub message: String,
    pub log_tail: String,
}

impl Failure {
    pub(super) fn new(phase: Phase, repo: &str, message: impl Into<String>) -> Failure {
        Failure {
            phase: phase.as_str().into(),
            repo: repo.into(),
            message: message.into(),
            log_tail: String::new(),
        }
    }

    /// One line for the journal, the tracker note and the PR comment.
    pub fn summary(&self) -> String {
        if self.repo.is_empty() {
            format!("delivery failed in {}: {}", self.phase, self.message)
        } else {
            format!(
                "delivery failed in {} ({}): {}",
                self.phase, self.repo, self.message
            )
        }
    }
}
