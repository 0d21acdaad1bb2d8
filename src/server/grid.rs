//! The repo × phase grid of a delivery: which phase of which repository passed, failed, runs,
//! waits or has no step, worked out from what the store recorded. The pages draw it and
//! `/api/deliveries/{id}` returns it.

use serde::Serialize;

use crate::config::Config;
use crate::delivery::line::Phase;
use crate::store::{DeliveryRow, JournalRow, RepoRow, State, StepRow};

/// One cell of the repo × phase grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cell {
    Pending,
    Running,
    Passed,
    Failed,
    /// The repository has no step for this phase.
    Skipped,
    /// The delivery ended before this phase.
    NotRun,
}

impl Cell {
    pub fn label(self) -> &'static str {
        match self {
            Cell::Pending => "pending",
            Cell::Running => "running",
            Cell::Passed => "passed",
            Cell::Failed => "failed",
            Cell::Skipped => "no step",
            Cell::NotRun => "not run",
        }
    }
    pub fn class(self) -> &'static str {
        match self {
            Cell::Pending => "pending",
            Cell::Running => "running",
            Cell::Passed => "passed",
            Cell::Failed => "failed",
            Cell::Skipped | Cell::NotRun => "skipped",
        }
    }
}

/// A repository's row of the grid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GridRow {
    pub repo: String,
    pub branch: String,
    pub cells: Vec<(String, Cell)>,
}

/// The phases of the grid: the line itself (a rollback shows in the repository's flags).
pub const LINE: [Phase; 6] = [
    Phase::Rebase,
    Phase::Build,
    Phase::Test,
    Phase::Deploy,
    Phase::Verify,
    Phase::Merge,
];

fn has_step(config: &Config, repo: &str, phase: Phase) -> bool {
    let Some(r) = config.repo(repo) else {
        return true;
    };
    match phase {
        Phase::Build => r.steps.build.is_some(),
        Phase::Test => r.steps.test.is_some(),
        Phase::Deploy => r.steps.deploy.is_some(),
        Phase::Verify => r.steps.verify.is_some(),
        Phase::Rollback => r.steps.rollback.is_some(),
        Phase::Rebase | Phase::Merge => true,
    }
}

/// The repo × phase grid of a delivery, from what the store recorded.
pub fn grid(
    config: &Config,
    d: &DeliveryRow,
    repos: &[RepoRow],
    steps: &[StepRow],
    journal: &[JournalRow],
) -> Vec<GridRow> {
    let current = Phase::parse(&d.phase);
    let running = d.state == State::Running;
    let names: Vec<(String, String)> = if repos.is_empty() {
        config
            .repos
            .iter()
            .map(|r| (r.name.clone(), String::new()))
            .collect()
    } else {
        repos
            .iter()
            .map(|r| (r.repo.clone(), r.branch.clone()))
            .collect()
    };
    let failed = |phase: Phase, repo: &str| {
        journal
            .iter()
            .any(|j| j.event == "failed" && j.phase == phase.as_str() && j.repo == repo)
    };
    let failed_all = |phase: Phase| {
        journal
            .iter()
            .any(|j| j.event == "failed" && j.phase == phase.as_str() && j.repo.is_empty())
    };
    let mut rows = Vec::new();
    for (repo, branch) in names {
        let row = repos.iter().find(|r| r.repo == repo);
        let mut cells = Vec::new();
        for phase in LINE {
            let here = current == Some(phase) && running;
            let past = current.is_some_and(|c| c > phase) || d.state == State::Delivered;
            let step = steps
                .iter()
                .rev()
                .find(|s| s.repo == repo && s.step == phase.as_str());
            let mut cell = match phase {
                Phase::Rebase => {
                    if row.is_some_and(|r| !r.rebased_sha.is_empty()) {
                        Cell::Passed
                    } else if here {
                        Cell::Running
                    } else {
                        Cell::Pending
                    }
                }
                Phase::Merge => {
                    if row.is_some_and(|r| r.merged) || d.state == State::Delivered {
                        Cell::Passed
                    } else if here {
                        Cell::Running
                    } else {
                        Cell::Pending
                    }
                }
                _ => match step.map(|s| s.outcome.as_str()) {
                    Some("running") if running => Cell::Running,
                    Some("running") => Cell::Failed,
                    Some("passed") => Cell::Passed,
                    Some(_) => Cell::Failed,
                    None if !has_step(config, &repo, phase) => Cell::Skipped,
                    None if past => Cell::Passed,
                    None if here => Cell::Running,
                    None => Cell::Pending,
                },
            };
            if failed(phase, &repo) || (failed_all(phase) && cell != Cell::Passed) {
                cell = Cell::Failed;
            }
            if d.state.is_final() && cell == Cell::Running {
                cell = Cell::Failed;
            }
            if d.state.is_final() && cell == Cell::Pending {
                cell = Cell::NotRun;
            }
            cells.push((phase.as_str().to_string(), cell));
        }
        rows.push(GridRow {
            repo,
            branch,
            cells,
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fixtures::{config, delivery, repo, step, steps_while_testing};

    fn states(row: &GridRow) -> Vec<Cell> {
        row.cells.iter().map(|(_, c)| *c).collect()
    }

    #[test]
    fn grid_while_testing() {
        use Cell::*;
        let c = config();
        let d = delivery(State::Running, "test");
        let repos = [repo("api"), repo("web")];
        let steps = steps_while_testing();
        let g = grid(&c, &d, &repos, &steps, &[]);
        assert_eq!(
            states(&g[0]),
            [Passed, Passed, Running, Skipped, Skipped, Pending]
        );
        assert_eq!(
            states(&g[1]),
            [Passed, Passed, Passed, Pending, Skipped, Pending]
        );
    }

    #[test]
    fn grid_before_and_after() {
        use Cell::*;
        let c = config();
        let g = grid(&c, &delivery(State::Running, "rebase"), &[], &[], &[]);
        assert_eq!(g.len(), 2);
        assert_eq!(states(&g[0])[0], Running);
        let mut d = delivery(State::Failed, "test");
        d.error = "delivery failed in test (api)".into();
        let steps = [
            step(1, "api", "build", "passed"),
            step(3, "api", "test", "failed"),
        ];
        let journal = [JournalRow {
            at: 0,
            phase: "test".into(),
            repo: "api".into(),
            event: "failed".into(),
            detail: String::new(),
        }];
        let g = grid(&c, &d, &[repo("api")], &steps, &journal);
        assert_eq!(
            states(&g[0]),
            [Passed, Passed, Failed, Skipped, Skipped, NotRun]
        );
        let g = grid(
            &c,
            &delivery(State::Delivered, "merge"),
            &[repo("web")],
            &[],
            &[],
        );
        assert_eq!(
            states(&g[0]),
            [Passed, Passed, Passed, Passed, Skipped, Passed]
        );
    }
}
