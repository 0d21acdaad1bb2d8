//! The repo × phase grid of a delivery: which phase of which repository passed, failed, runs,
//! waits or has no step, worked out from what the store recorded. The pages draw it and
//! `/api/deliveries/{id}` returns it.

use serde::Serialize;

use crate::config::Config;
use crate::domain::{Event, Phase, RepoName, Stage, State, StepState};
use crate::store::{DeliveryRow, JournalRow, RepoRow, StepRow};

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
    pub repo: RepoName,
    pub branch: String,
    pub cells: Vec<(Phase, Cell)>,
}

/// Whether a repository has work in a phase of the line: rebase and merge are lockstep's own.
fn has_step(config: &Config, repo: &str, phase: Phase) -> bool {
    let Some(r) = config.repo(repo) else {
        return true;
    };
    matches!(phase, Phase::Rebase | Phase::Merge) || r.step(phase).is_some()
}

/// The repo × phase grid of a delivery, from what the store recorded.
pub fn grid(
    config: &Config,
    d: &DeliveryRow,
    repos: &[RepoRow],
    steps: &[StepRow],
    journal: &[JournalRow],
) -> Vec<GridRow> {
    let current = d.phase;
    let running = d.state == State::Running;
    let names: Vec<(RepoName, String)> = if repos.is_empty() {
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
            .any(|j| j.event == Event::Failed && j.stage == Stage::Phase(phase) && j.repo == repo)
    };
    let failed_all = |phase: Phase| {
        journal.iter().any(|j| {
            j.event == Event::Failed && j.stage == Stage::Phase(phase) && j.repo.is_empty()
        })
    };
    let mut rows = Vec::new();
    for (repo, branch) in names {
        let row = repos.iter().find(|r| r.repo == repo);
        let mut cells = Vec::new();
        // The line itself: a rollback shows in the repository's flags.
        for &phase in Phase::LINE {
            let here = current == Some(phase) && running;
            let past = current.is_some_and(|c| c > phase) || d.state == State::Delivered;
            let step = steps
                .iter()
                .rev()
                .find(|s| s.repo == repo && s.step == phase);
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
                _ => match step.map(|s| s.outcome) {
                    Some(StepState::Running) if running => Cell::Running,
                    Some(StepState::Running) => Cell::Failed,
                    Some(StepState::Passed) => Cell::Passed,
                    Some(_) => Cell::Failed,
                    None if !has_step(config, repo.as_str(), phase) => Cell::Skipped,
                    None if past => Cell::Passed,
                    None if here => Cell::Running,
                    None => Cell::Pending,
                },
            };
            if failed(phase, repo.as_str()) || (failed_all(phase) && cell != Cell::Passed) {
                cell = Cell::Failed;
            }
            if d.state.is_final() && cell == Cell::Running {
                cell = Cell::Failed;
            }
            if d.state.is_final() && cell == Cell::Pending {
                cell = Cell::NotRun;
            }
            cells.push((phase, cell));
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
            stage: Phase::Test.into(),
            repo: "api".into(),
            event: Event::Failed,
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
