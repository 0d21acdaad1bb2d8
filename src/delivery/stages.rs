//! Stages (`[delivery] stages`): deploy then verify in one environment after the other, each
//! stage for every repository before the next; and what a staged delivery deployed where,
//! read back from its journal, for the rollback (the latest stage first) and for whoever shows
//! the delivery.
//!
//! A delivery with one stage (the default: `[delivery] environment`) journals no stage of its
//! own and is rolled back from its repositories' `deployed` flags, as it always was.

use std::collections::BTreeSet;

use serde::Serialize;

use super::engine::{Checkout, Engine};
use super::stop::Stop;
use crate::domain::{Event, Phase, RepoName, StageState};
use crate::store::{DeliveryRow, JournalRow, RepoRow};

impl Engine {
    /// Deploy and verify (steps and gates), stage by stage; the first failure stops the line
    /// (and the stages after it never start).
    pub(super) async fn deploy_and_verify(
        &self,
        d: &DeliveryRow,
        checkouts: &[Checkout],
    ) -> Result<(), Stop> {
        let staged = self.config.delivery.staged();
        let stages = self.config.delivery.stages();
        for (i, stage) in stages.iter().enumerate() {
            if staged {
                self.checkpoint(d.id, Phase::Deploy).await?;
                self.store
                    .journal(d.id, Phase::Deploy, "", Event::StageStarted, stage)
                    .await?;
                self.progress.stage(d.id, &stages, i);
                self.say(&format!(
                    "#{} {}: stage    {stage} ({} of {})",
                    d.id,
                    d.task,
                    i + 1,
                    stages.len()
                ));
            }
            self.enter(d.id, Phase::Deploy).await?;
            self.serial_phase(d, Phase::Deploy, checkouts, stage)
                .await?;
            self.enter(d.id, Phase::Verify).await?;
            self.verify_phase(d, checkouts, stage).await?;
            if staged {
                self.store
                    .journal(d.id, Phase::Verify, "", Event::StagePassed, stage)
                    .await?;
            }
        }
        Ok(())
    }
}

/// One repository deployed to one stage, and not rolled back yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Deployed {
    pub(super) stage: String,
    pub(super) repo: RepoName,
    /// Whether the journal recorded it (a staged delivery): its rollback is journaled too.
    pub(super) staged: bool,
}

/// What a delivery still has deployed, in the order to undo it: the latest stage first, and
/// within a stage the last deployed repository first. A repository the journal names in no
/// stage (a single-stage delivery, or a store written before stages) was deployed to
/// `default`, as its `deployed` flag says.
pub(super) fn to_roll_back(
    journal: &[JournalRow],
    rows: &[RepoRow],
    default: &str,
) -> Vec<Deployed> {
    let pending: Vec<&RepoRow> = rows
        .iter()
        .filter(|r| r.deployed && !r.rolled_back)
        .collect();
    let rolled: BTreeSet<(&str, &str)> = journal
        .iter()
        .filter(|j| j.event == Event::RolledBack)
        .map(|j| (j.detail.as_str(), j.repo.as_str()))
        .collect();
    let mut deployed: Vec<(&str, &str)> = Vec::new();
    for j in journal.iter().filter(|j| j.event == Event::Deploying) {
        let at = (j.detail.as_str(), j.repo.as_str());
        if !deployed.contains(&at) {
            deployed.push(at);
        }
    }
    let mut out: Vec<Deployed> = deployed
        .iter()
        .rev()
        .filter(|at| !rolled.contains(at) && pending.iter().any(|r| r.repo == at.1))
        .map(|(stage, repo)| Deployed {
            stage: stage.to_string(),
            repo: RepoName::new(*repo),
            staged: true,
        })
        .collect();
    out.extend(
        pending
            .iter()
            .rev()
            .filter(|r| !deployed.iter().any(|(_, repo)| r.repo == *repo))
            .map(|r| Deployed {
                stage: default.to_string(),
                repo: r.repo.clone(),
                staged: false,
            }),
    );
    out
}

/// One stage of a staged delivery, as its journal tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageReport {
    pub stage: String,
    pub state: StageState,
}

/// The stages a delivery went through, in order, and where each stands; empty for a delivery
/// of one stage (which journals none).
pub fn stages_of(journal: &[JournalRow]) -> Vec<StageReport> {
    let mut out: Vec<StageReport> = Vec::new();
    let mut deployed: Vec<(&str, &str)> = Vec::new();
    let mut rolled: BTreeSet<(&str, &str)> = BTreeSet::new();
    for j in journal {
        match &j.event {
            Event::StageStarted => out.push(StageReport {
                stage: j.detail.clone(),
                state: StageState::Running,
            }),
            Event::StagePassed => {
                if let Some(s) = out.iter_mut().rev().find(|s| s.stage == j.detail) {
                    s.state = StageState::Passed;
                }
            }
            Event::Deploying => deployed.push((&j.detail, &j.repo)),
            Event::RolledBack => {
                rolled.insert((&j.detail, &j.repo));
            }
            Event::Failed | Event::Recovered
                if matches!(j.stage.phase(), Some(Phase::Deploy | Phase::Verify)) =>
            {
                if let Some(s) = out.last_mut().filter(|s| s.state == StageState::Running) {
                    s.state = StageState::Failed;
                }
            }
            _ => {}
        }
    }
    for s in &mut out {
        let mut of_stage = deployed
            .iter()
            .filter(|(stage, _)| *stage == s.stage)
            .peekable();
        if of_stage.peek().is_some() && of_stage.all(|at| rolled.contains(at)) {
            s.state = StageState::RolledBack;
        }
    }
    out
}

/// `staging passed, production rolled back`: the stages in one line.
pub fn describe_stages(stages: &[StageReport]) -> String {
    stages
        .iter()
        .map(|s| format!("{} {}", s.stage, s.state))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Stage;

    fn entry(phase: Phase, repo: &str, event: Event, detail: &str) -> JournalRow {
        JournalRow {
            at: 0,
            stage: Stage::Phase(phase),
            repo: repo.into(),
            event,
            detail: detail.into(),
        }
    }

    fn row(repo: &str, deployed: bool) -> RepoRow {
        RepoRow {
            repo: repo.into(),
            deployed,
            ..RepoRow::default()
        }
    }

    #[test]
    fn the_latest_stage_is_rolled_back_first_then_the_last_repository() {
        let journal = [
            entry(Phase::Deploy, "", Event::StageStarted, "staging"),
            entry(Phase::Deploy, "api", Event::Deploying, "staging"),
            entry(Phase::Deploy, "web", Event::Deploying, "staging"),
            entry(Phase::Verify, "", Event::StagePassed, "staging"),
            entry(Phase::Deploy, "", Event::StageStarted, "production"),
            entry(Phase::Deploy, "api", Event::Deploying, "production"),
            entry(Phase::Deploy, "web", Event::Deploying, "production"),
            entry(Phase::Verify, "web", Event::Failed, "smoke test"),
            entry(Phase::Rollback, "web", Event::RolledBack, "production"),
        ];
        let rows = [row("api", true), row("web", true), row("db", false)];
        let plan: Vec<(String, String)> = to_roll_back(&journal, &rows, "production")
            .into_iter()
            .map(|d| (d.stage, d.repo.to_string()))
            .collect();
        assert_eq!(
            plan,
            [
                ("production".into(), "api".into()),
                ("staging".into(), "web".into()),
                ("staging".into(), "api".into()),
            ]
        );
        let stages = stages_of(&journal);
        assert_eq!(
            describe_stages(&stages),
            "staging passed, production failed"
        );
    }

    #[test]
    fn a_single_stage_delivery_is_rolled_back_from_its_flags() {
        let rows = [row("api", true), row("web", true), row("db", false)];
        let plan = to_roll_back(&[], &rows, "production");
        assert_eq!(
            plan,
            [
                Deployed {
                    stage: "production".into(),
                    repo: "web".into(),
                    staged: false
                },
                Deployed {
                    stage: "production".into(),
                    repo: "api".into(),
                    staged: false
                },
            ]
        );
        assert!(stages_of(&[]).is_empty());
    }

    #[test]
    fn a_stage_whose_every_deploy_is_undone_reads_rolled_back() {
        let journal = [
            entry(Phase::Deploy, "", Event::StageStarted, "staging"),
            entry(Phase::Deploy, "api", Event::Deploying, "staging"),
            entry(Phase::Deploy, "api", Event::Failed, "deploy failed"),
            entry(Phase::Rollback, "api", Event::RolledBack, "staging"),
        ];
        assert_eq!(describe_stages(&stages_of(&journal)), "staging rolled back");
        let mut done = row("api", true);
        done.rolled_back = true;
        assert!(to_roll_back(&journal, &[done], "production").is_empty());
    }
}
