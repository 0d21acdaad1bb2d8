//! `[autotest] statuses`: a task in one of them has every branch tested, as each repository
//! holds it now; when all pass it moves to `[autotest] passed`, and when one fails back to
//! `[tasks] returned` with a note naming the repository, the step and the log's end. Polled
//! by `lockstep serve` with the tracker; the worker runs the autotests asked for.

use std::time::Duration;

use super::super::engine::Engine;
use crate::domain::{AutotestState, RepoName, Source, TaskKey};
use crate::store::AutotestRow;

/// Where a task's branches stand.
enum Standing {
    /// Some branch is still being tested (or was just asked for).
    Testing,
    /// Every branch passed.
    Passed(Vec<AutotestRow>),
    /// This one failed.
    Failed(Box<AutotestRow>),
    /// The task has no branch to test.
    NoBranch,
}

/// One poll: asks for what is untested, moves the tasks whose branches all have a verdict.
/// Returns what it did, one line per task moved.
pub async fn poll(engine: &Engine) -> anyhow::Result<Vec<String>> {
    let config = &engine.config;
    if config.autotest.statuses.is_empty() {
        return Ok(Vec::new());
    }
    let tasks = tokio::time::timeout(
        config.tracker.timeout.max(Duration::from_secs(5)),
        engine.tracker.in_statuses(&config.autotest.statuses),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the tracker did not answer in time"))?
    .map_err(|err| anyhow::anyhow!("{err}"))?;
    let mut said = Vec::new();
    for task in tasks {
        let key = TaskKey::new(task.key.as_str());
        let (to, note) = match standing(engine, &key).await? {
            Standing::Testing => continue,
            Standing::Passed(runs) => {
                let Some(to) = &config.autotest.passed else {
                    continue;
                };
                let heads: Vec<String> = runs
                    .iter()
                    .map(|a| format!("{} {}", a.repo, crate::git::short(&a.sha)))
                    .collect();
                (
                    to.clone(),
                    format!("autotests passed: {}", heads.join(", ")),
                )
            }
            Standing::Failed(a) => (config.tasks.returned.clone(), super::failure_note(&a)),
            Standing::NoBranch => (
                config.tasks.returned.clone(),
                format!("no autotest: `{key}` has no branch in any repository"),
            ),
        };
        engine
            .tracker
            .move_to(&key, &to, &crate::text::note(&note))
            .await
            .map_err(|e| anyhow::anyhow!("cannot move `{key}` to {to}: {e}"))?;
        said.push(format!("{key} was {}: {note}; moved to {to}", task.status));
    }
    Ok(said)
}

/// Where the branches of `key` stand, asking for an autotest of each head not yet tested.
async fn standing(engine: &Engine, key: &TaskKey) -> anyhow::Result<Standing> {
    let branches = super::super::task_branches(&engine.config, None, key.as_str(), false).await?;
    if branches.is_empty() {
        return Ok(Standing::NoBranch);
    }
    let runs = engine.store.autotests(Some(key), 200).await?;
    let mut passed = Vec::new();
    let mut testing = false;
    for b in branches {
        let repo = RepoName::new(&b.repo);
        // The newest run of this very head: an interrupted one was asked for again.
        let latest = runs
            .iter()
            .find(|a| a.repo == repo && a.branch == b.branch && a.sha == b.head);
        match latest.map(|a| a.state) {
            Some(AutotestState::Passed) => passed.extend(latest.cloned()),
            Some(AutotestState::Failed) => {
                let failed = latest.cloned().map(Box::new);
                return Ok(failed.map_or(Standing::Testing, Standing::Failed));
            }
            Some(AutotestState::Queued | AutotestState::Running) => testing = true,
            Some(AutotestState::Superseded | AutotestState::Interrupted) | None => {
                let requester = engine.config.bot.user.clone();
                super::request(
                    &engine.store,
                    key,
                    &repo,
                    &b.branch,
                    &b.head,
                    Source::Tracker,
                    &requester,
                )
                .await?;
                testing = true;
            }
        }
    }
    Ok(if testing {
        Standing::Testing
    } else {
        Standing::Passed(passed)
    })
}
