//! The phases of the delivery line, in their order, with the names the journal, the board and
//! the reports use, and the step of a repository each phase runs.

use crate::config::{Command, Repo};

/// The phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Rebase,
    Build,
    Test,
    Deploy,
    Verify,
    Merge,
    /// The delivery failed and what it deployed is being rolled back.
    Rollback,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Rebase,
        Phase::Build,
        Phase::Test,
        Phase::Deploy,
        Phase::Verify,
        Phase::Merge,
        Phase::Rollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Rebase => "rebase",
            Phase::Build => "build",
            Phase::Test => "test",
            Phase::Deploy => "deploy",
            Phase::Verify => "verify",
            Phase::Merge => "merge",
            Phase::Rollback => "rollback",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub(super) fn step(self, repo: &Repo) -> Option<&Command> {
        match self {
            Phase::Build => repo.steps.build.as_ref(),
            Phase::Test => repo.steps.test.as_ref(),
            Phase::Deploy => repo.steps.deploy.as_ref(),
            Phase::Verify => repo.steps.verify.as_ref(),
            Phase::Rebase | Phase::Merge | Phase::Rollback => None,
        }
    }
}
