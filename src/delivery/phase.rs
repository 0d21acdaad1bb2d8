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

    /// The command a repository runs in this phase; `None` for a phase with no step of its
    /// own (rebase and merge are lockstep's git work; rollback runs only when undoing).
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

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_as_the_same_phase_in_line_order() {
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
            assert_eq!(p.to_string(), p.as_str());
        }
        assert!(Phase::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Phase::parse(""), None);
        assert_eq!(Phase::parse("Build"), None);
    }

    #[test]
    fn only_the_step_phases_run_a_repository_command() {
        let repo: Repo = toml::from_str(
            r#"
name = "api"
url = "api.git"
[steps]
build = "make"
test = "make test"
deploy = "deploy"
verify = "verify"
rollback = "undeploy"
"#,
        )
        .unwrap();
        let with_step: Vec<Phase> = Phase::ALL
            .into_iter()
            .filter(|p| p.step(&repo).is_some())
            .collect();
        assert_eq!(
            with_step,
            [Phase::Build, Phase::Test, Phase::Deploy, Phase::Verify]
        );
        assert_eq!(
            Phase::Test.step(&repo),
            Some(&Command::Shell("make test".into()))
        );
    }
}
