//! The step processes run for a delivery: when each started and ended, how, where its log is,
//! and its process while it runs (so that `recover` can stop what a dead worker left).

use serde::Serialize;

use super::{Store, now_ms};
use crate::domain::{DeliveryId, Phase, RepoName, StepState};

/// One step process of a delivery.
#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    pub id: i64,
    pub repo: RepoName,
    /// The phase the step ran in.
    pub step: Phase,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i64>,
    pub outcome: StepState,
    pub log_path: String,
    /// The step's process (and process group) id while it runs.
    pub pid: Option<i64>,
    /// For a step on a runner, the build it waits for: `<runner> <build request> <sha>`.
    pub runner_build: Option<String>,
}

impl StepRow {
    /// The runner the step ran on, if it was not a process on this host.
    pub fn runner(&self) -> Option<&str> {
        self.runner_build.as_deref()?.split(' ').next()
    }
}

impl Store {
    /// Starts a step record; returns its id.
    pub async fn step_started(
        &self,
        id: DeliveryId,
        repo: &RepoName,
        step: Phase,
        log_path: &str,
    ) -> anyhow::Result<i64> {
        let step_id = write_tx!(self, fenced, |tx| {
            sqlx::query_scalar(
            "INSERT INTO steps (delivery_id, repo, step, started_at, log_path) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(id)
        .bind(repo)
        .bind(step)
        .bind(now_ms())
        .bind(log_path)
        .fetch_one(&mut *tx)
        .await?
        });
        Ok(step_id)
    }

    /// Records the process of a running step, so that a worker taking over after a crash can
    /// stop what the dead one left running.
    pub async fn step_pid(&self, step_id: i64, pid: i32) -> anyhow::Result<()> {
        write_tx!(self, fenced, |tx| sqlx::query(
            "UPDATE steps SET pid = $2 WHERE id = $1"
        )
        .bind(step_id)
        .bind(i64::from(pid))
        .execute(&mut *tx)
        .await?
        .rows_affected());
        Ok(())
    }

    pub async fn step_finished(
        &self,
        step_id: i64,
        exit_code: Option<i32>,
        outcome: StepState,
    ) -> anyhow::Result<()> {
        write_tx!(self, fenced, |tx| sqlx::query(
            "UPDATE steps SET finished_at = $2, exit_code = $3, outcome = $4 WHERE id = $1",
        )
        .bind(step_id)
        .bind(now_ms())
        .bind(exit_code.map(i64::from))
        .bind(outcome)
        .execute(&mut *tx)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Records the build a step on a runner waits for (`<runner> <build request> <sha>`), so
    /// that a worker resuming after a crash follows it instead of forcing another.
    pub async fn step_runner_build(&self, step_id: i64, build: &str) -> anyhow::Result<()> {
        write_tx!(self, fenced, |tx| sqlx::query(
            "UPDATE steps SET runner_build = $2 WHERE id = $1"
        )
        .bind(step_id)
        .bind(build)
        .execute(&mut *tx)
        .await?
        .rows_affected());
        Ok(())
    }

    /// The build the latest step of a delivery's repository in a phase waited for, if it was
    /// on a runner, with how that step ended.
    pub async fn last_runner_build(
        &self,
        id: DeliveryId,
        repo: &RepoName,
        step: Phase,
    ) -> anyhow::Result<Option<(StepState, String)>> {
        let row: Option<(StepState, Option<String>)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT outcome, runner_build FROM steps \
             WHERE delivery_id = $1 AND repo = $2 AND step = $3 ORDER BY id DESC LIMIT 1",
        )
        .bind(id)
        .bind(repo)
        .bind(step)
        .fetch_optional(pool)
        .await?);
        Ok(row.and_then(|(state, build)| Some((state, build?))))
    }

    /// Keeps a copy of the end of a step's log (fenced: the worker running the step writes it),
    /// for the replicas that do not have its file.
    pub async fn set_step_log(&self, step_id: i64, log: &str) -> anyhow::Result<()> {
        write_tx!(self, fenced, |tx| sqlx::query(
            "UPDATE steps SET log = $2 WHERE id = $1"
        )
        .bind(step_id)
        .bind(log)
        .execute(&mut *tx)
        .await?
        .rows_affected());
        Ok(())
    }

    /// The copy of a step's log kept by [`Store::set_step_log`], if any.
    pub async fn step_log(&self, step_id: i64) -> anyhow::Result<Option<String>> {
        let log: Option<Option<String>> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT log FROM steps WHERE id = $1"
        )
        .bind(step_id)
        .fetch_optional(pool)
        .await?);
        Ok(log.flatten())
    }

    pub async fn steps(&self, id: DeliveryId) -> anyhow::Result<Vec<StepRow>> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT id, repo, step, started_at, finished_at, exit_code, outcome, log_path, pid, \
             runner_build FROM steps WHERE delivery_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(pool)
        .await?
        });
        Ok(rows)
    }
}
