//! Autotests: a task branch's head built and tested on its own when it changes (a push with
//! `[autotest] on_push`, `git push -o autotest`, `lockstep autotest`), before anyone asks
//! for a delivery.
//!
//! - this file: requesting autotests, and the [`Pump`] the worker runs beside its queue:
//!   it claims the autotests waiting and runs up to `[autotest] parallel` of them at once,
//!   in slots of their own, so that they never hold up a delivery; a restart re-runs what a
//!   stopped worker left running.
//! - `fact`: the `autotest` fact of the deliver rules.
//! - `push`: the autotests a push asks for (the post-receive hook).
//! - `run`: one autotest, from its clone to its verdict.
//! - `status`: the commit status `lockstep/autotest` on GitHub.
//! - `statuses`: `[autotest] statuses`, the tasks whose branches are all tested, moved on.

mod fact;
mod push;
mod run;
mod status;
mod statuses;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::engine::Engine;
use super::steps;
use crate::config::Config;
use crate::domain::{AutotestState, Phase, RepoName, Source, TaskKey};
use crate::store::{AutotestEnd, AutotestRow, NewAutotest, Store};

pub use fact::fact;
pub use push::after_push;
pub use statuses::poll;

/// What the pump's set of running autotests holds while it claims one.
const CLAIMING: i64 = 0;

/// How often an idle pump looks for autotests requested meanwhile.
const POLL: Duration = Duration::from_millis(250);

/// The steps an autotest runs, in their order.
pub const STEPS: [Phase; 2] = [Phase::Build, Phase::Test];

/// Where the log of `phase` of autotest `id` of `repo` is kept on the host that ran it:
/// `<state_dir>/logs/autotests/<id>/<repo>.<phase>.log` (`run` writes it, `lockstep logs
/// --autotest` reads it).
pub fn step_log(config: &Config, id: i64, repo: &RepoName, phase: Phase) -> std::path::PathBuf {
    config
        .state_dir()
        .join("logs")
        .join("autotests")
        .join(id.to_string())
        .join(format!("{repo}.{phase}.log"))
}

/// Records an autotest request of a task branch's head; returns its id, and false when that
/// head already waits or runs. An older request for the branch is superseded.
pub async fn request(
    store: &Store,
    task: &TaskKey,
    repo: &RepoName,
    branch: &str,
    sha: &str,
    source: Source,
    requester: &str,
) -> anyhow::Result<(i64, bool)> {
    store
        .request_autotest(&NewAutotest {
            task: task.clone(),
            repo: repo.clone(),
            branch: branch.to_string(),
            sha: sha.to_string(),
            source,
            requester: requester.to_string(),
        })
        .await
}

/// Requests an autotest of every branch of a task (of the one in `only`, when given), as
/// each repository has it now: `(repo, branch, id)` per request.
pub async fn request_task(
    config: &Config,
    store: &Store,
    task: &TaskKey,
    only: Option<&RepoName>,
    source: Source,
    requester: &str,
) -> anyhow::Result<Vec<(RepoName, String, i64)>> {
    let branches = super::task_branches(config, None, task.as_str(), false).await?;
    let mut out = Vec::new();
    for b in branches {
        let repo = RepoName::new(&b.repo);
        if only.is_some_and(|o| *o != repo) {
            continue;
        }
        let (id, _) = request(store, task, &repo, &b.branch, &b.head, source, requester).await?;
        out.push((repo, b.branch, id));
    }
    Ok(out)
}

/// The autotests running beside a worker's queue; dropped, it stops them (their steps'
/// process trees are killed), and [`Pump::stop`] records them `interrupted` and asks for
/// them again.
pub struct Pump {
    engine: Engine,
    task: tokio::task::JoinHandle<()>,
    running: Arc<Mutex<BTreeSet<i64>>>,
}

impl Pump {
    /// Re-runs what a stopped worker left `running`, then starts claiming autotests.
    pub async fn start(engine: &Engine) -> anyhow::Result<Pump> {
        recover(engine).await?;
        let running = Arc::new(Mutex::new(BTreeSet::new()));
        let task = tokio::spawn(pump(engine.clone(), running.clone()));
        Ok(Pump {
            engine: engine.clone(),
            task,
            running,
        })
    }

    /// Whether autotests run or wait. The store is read first: an autotest claimed after it
    /// was read is by then in the pump's set (it is added before the claim).
    pub async fn busy(&self) -> bool {
        match self.engine.store.autotests_in(AutotestState::Queued).await {
            Ok(waiting) if !waiting.is_empty() => return true,
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read the autotests waiting: {e:#}"),
        }
        !self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Stops the autotests running (their steps killed), records them `interrupted`, and asks
    /// for each again, for the next worker.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
        let ids: Vec<i64> =
            std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        for id in ids {
            if let Ok(Some(a)) = self.engine.store.autotest(id).await
                && let Err(e) = interrupt(&self.engine, &a, "the worker stopped").await
            {
                tracing::warn!("autotest #{id}: {e:#}");
            }
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Claims autotests while slots are free and runs each in a task of its own.
async fn pump(engine: Engine, running: Arc<Mutex<BTreeSet<i64>>>) {
    let slots = Arc::new(Semaphore::new(engine.config.autotest.parallel.max(1)));
    let mut tests = tokio::task::JoinSet::new();
    loop {
        while tests.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Marked busy (id 0 is no autotest's) before the claim, so that [`Pump::busy`] never
        // misses one claimed but not yet in the set.
        let set = |f: &dyn Fn(&mut BTreeSet<i64>)| {
            f(&mut running.lock().unwrap_or_else(|e| e.into_inner()))
        };
        set(&|r| {
            r.insert(CLAIMING);
        });
        let claimed = match engine.store.claim_autotest().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot claim an autotest: {e:#}");
                None
            }
        };
        let id = claimed.as_ref().map(|a| a.id);
        set(&|r| {
            r.extend(id);
            r.remove(&CLAIMING);
        });
        let Some(a) = claimed else {
            drop(slot);
            tokio::time::sleep(POLL).await;
            continue;
        };
        let (engine, running) = (engine.clone(), running.clone());
        tests.spawn(async move {
            let _slot = slot;
            if let Err(e) = run::run(&engine, &a).await {
                tracing::warn!("autotest #{}: {e:#}", a.id);
                let end = AutotestEnd {
                    reason: format!("{e:#}"),
                    ..AutotestEnd::default()
                };
                let _ = engine
                    .store
                    .finish_autotest(a.id, AutotestState::Failed, &end)
                    .await;
            }
            running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&a.id);
        });
    }
}

/// What a worker killed while autotests ran left: each is recorded `interrupted`, what is
/// left of its steps is stopped, and it is asked for again. Only the worker holding the
/// queue calls this, so nothing else runs them.
async fn recover(engine: &Engine) -> anyhow::Result<()> {
    for a in engine.store.autotests_in(AutotestState::Running).await? {
        interrupt(engine, &a, "the worker stopped while it ran").await?;
    }
    Ok(())
}

/// Records a running autotest `interrupted`, stops what is left of its step, and asks for it
/// again.
async fn interrupt(engine: &Engine, a: &AutotestRow, why: &str) -> anyhow::Result<()> {
    if let Some(pid) = a.pid.and_then(|p| i32::try_from(p).ok()) {
        let marker = format!("{}={}", run::MARKER_VAR, a.id);
        steps::kill_leftover(pid, &marker, Duration::from_secs(10)).await;
    }
    run::clear_left(engine, a).await;
    let end = AutotestEnd {
        reason: why.to_string(),
        log: a.log.clone(),
        ..AutotestEnd::default()
    };
    if engine
        .store
        .finish_autotest(a.id, AutotestState::Interrupted, &end)
        .await?
    {
        let again = request(
            &engine.store,
            &a.task,
            &a.repo,
            &a.branch,
            &a.sha,
            a.source,
            &a.requester,
        )
        .await?;
        engine.say(&format!(
            "autotest #{} {} {}: interrupted ({why}); run again as #{}",
            a.id, a.task, a.repo, again.0
        ));
    }
    Ok(())
}

/// The note a failed autotest leaves on its task: the repository, the step, why, the log's
/// end.
fn failure_note(a: &AutotestRow) -> String {
    run::failure_note(
        a,
        &AutotestEnd {
            step: a.step.clone(),
            reason: a.reason.clone(),
            log: a.log.clone(),
        },
    )
}
