//! Rows as the store returns them, and a config of two repositories, for the tests of the
//! grid and the pages.

use crate::config::Config;
use crate::domain::{DeliveryId, Phase, Source, State, StepState};
use crate::store::{DeliveryRow, RepoRow, StepRow};

/// Delivery #7 of `TASK-1`, asked for by alice from `acme/api#3`, started at 1 s, in
/// `phase` (none if empty).
pub fn delivery(state: State, phase: &str) -> DeliveryRow {
    DeliveryRow {
        id: DeliveryId(7),
        task: "TASK-1".into(),
        state,
        phase: Phase::parse(phase),
        priority: 0,
        source: Source::GitHub,
        requester: "alice".into(),
        origin: "acme/api#3".into(),
        created_at: 0,
        started_at: Some(1_000),
        finished_at: None,
        error: String::new(),
        cancel: false,
        candidate: false,
        held: String::new(),
        built_on: String::new(),
        discards: 0,
    }
}

/// `name` with its branch `feature/TASK-1-login` rebased.
pub fn repo(name: &str) -> RepoRow {
    RepoRow {
        repo: name.into(),
        position: 0,
        branch: "feature/TASK-1-login".into(),
        branch_sha: "a".repeat(40),
        base_sha: "b".repeat(40),
        rebased_sha: "c".repeat(40),
        deployed: false,
        merged: false,
        rolled_back: false,
    }
}

/// A step started at 2 s.
pub fn step(id: i64, repo: &str, step: &str, outcome: &str) -> StepRow {
    StepRow {
        id,
        repo: repo.into(),
        step: Phase::parse(step).expect("a phase"),
        started_at: 2_000,
        finished_at: None,
        exit_code: None,
        outcome: StepState::parse(outcome).expect("a step state"),
        log_path: String::new(),
        pid: None,
        runner_build: None,
    }
}

/// Both repositories built; api's test running, web's passed.
pub fn steps_while_testing() -> [StepRow; 4] {
    [
        step(1, "api", "build", "passed"),
        step(2, "web", "build", "passed"),
        step(3, "api", "test", "running"),
        step(4, "web", "test", "passed"),
    ]
}

/// `api` (build, test) and `web` (build, test, deploy).
pub fn config() -> Config {
    Config::parse_str(
        "[[repo]]\nname='api'\nurl='/a'\n[repo.steps]\nbuild='b'\ntest='t'\n\
         [[repo]]\nname='web'\nurl='/w'\n[repo.steps]\nbuild='b'\ntest='t'\ndeploy='d'\n",
    )
    .unwrap()
}

/// One tag a line, so that a snapshot's diff shows which element changed.
pub fn tags_per_line(html: &str) -> String {
    html.replace("><", ">\n<")
}
