//! Deliveries as recorded: [`State`], [`DeliveryRow`], and the reads of the queue and its
//! history. What changes a delivery's state is in `transitions`.

use std::str::FromStr;

use serde::Serialize;

use super::Store;

/// Where a delivery is in its life; stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum State {
    Queued,
    Running,
    Delivered,
    Failed,
    Cancelled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Delivered => "delivered",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }
    pub fn is_final(self) -> bool {
        matches!(self, State::Delivered | State::Failed | State::Cancelled)
    }
}

impl FromStr for State {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<State> {
        Ok(match s {
            "queued" => State::Queued,
            "running" => State::Running,
            "delivered" => State::Delivered,
            "failed" => State::Failed,
            "cancelled" => State::Cancelled,
            other => anyhow::bail!("unknown delivery state `{other}` in the store"),
        })
    }
}

/// One delivery, as recorded.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub task: String,
    pub state: State,
    pub phase: String,
    pub priority: i64,
    pub source: String,
    pub requester: String,
    /// Where the request came from in the requester's world (e.g. `owner/repo#12`).
    pub origin: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: String,
    pub cancel: bool,
}

/// A `SELECT` of every column of a [`DeliveryRow`], followed by `$rest`: one string built at
/// compile time, so no query is spliced together at run time.
macro_rules! select_deliveries {
    ($rest:literal) => {
        concat!(
            "SELECT id, task, state, phase, priority, source, requester, origin, created_at, \
             started_at, finished_at, error, cancel FROM deliveries ",
            $rest
        )
    };
}

impl Store {
    pub async fn delivery(&self, id: i64) -> anyhow::Result<Option<DeliveryRow>> {
        let row = on_pool!(self, |pool| sqlx::query_as(select_deliveries!(
            "WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(pool)
        .await?);
        Ok(row)
    }

    /// Queued deliveries in the order they will run: priority first, then age.
    pub async fn queued(&self) -> anyhow::Result<Vec<DeliveryRow>> {
        let rows = on_pool!(self, |pool| sqlx::query_as(select_deliveries!(
            "WHERE state = 'queued' ORDER BY priority DESC, id ASC"
        ))
        .fetch_all(pool)
        .await?);
        Ok(rows)
    }

    pub async fn running(&self) -> anyhow::Result<Vec<DeliveryRow>> {
        let rows = on_pool!(self, |pool| sqlx::query_as(select_deliveries!(
            "WHERE state = 'running' ORDER BY id"
        ))
        .fetch_all(pool)
        .await?);
        Ok(rows)
    }

    /// The most recent finished deliveries, newest first.
    pub async fn history(&self, limit: i64) -> anyhow::Result<Vec<DeliveryRow>> {
        let rows = on_pool!(self, |pool| sqlx::query_as(select_deliveries!(
            "WHERE state IN ('delivered', 'failed', 'cancelled') \
             ORDER BY finished_at DESC, id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(pool)
        .await?);
        Ok(rows)
    }

    /// Counts of deliveries by state.
    pub async fn counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = on_pool!(self, |pool| sqlx::query_as(
            "SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state ORDER BY state",
        )
        .fetch_all(pool)
        .await?);
        Ok(rows)
    }

    pub async fn cancel_requested(&self, id: i64) -> anyhow::Result<bool> {
        let cancel = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT cancel FROM deliveries WHERE id = $1"
        )
        .bind(id)
        .fetch_one(pool)
        .await?);
        Ok(cancel)
    }

    /// The newest delivery of a task, whatever its state.
    pub async fn latest_of_task(&self, task: &str) -> anyhow::Result<Option<DeliveryRow>> {
        let row = on_pool!(self, |pool| sqlx::query_as(select_deliveries!(
            "WHERE task = $1 ORDER BY id DESC LIMIT 1"
        ))
        .bind(task)
        .fetch_optional(pool)
        .await?);
        Ok(row)
    }

    /// Counts of deliveries by source (for the benchmark and metrics).
    pub async fn count_by_source(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = on_pool!(self, |pool| sqlx::query_as(
            "SELECT source, COUNT(*) AS n FROM deliveries GROUP BY source ORDER BY source",
        )
        .fetch_all(pool)
        .await?);
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;
    use crate::store::{NewDelivery, RepoFlag, RepoRow};

    both_backends! {
    async fn a_state_is_stored_as_its_lowercase_name(t) {
        let s = &t.store;
        let new = NewDelivery {
            task: "T-1".into(),
            ..Default::default()
        };
        let id = s.enqueue(&new).await.unwrap().id();
        for state in [
            State::Queued,
            State::Running,
            State::Delivered,
            State::Failed,
            State::Cancelled,
        ] {
            if state != State::Queued {
                s.finish(id, state, "").await.unwrap();
            }
            let text: String = on_pool!(s, |pool| sqlx::query_scalar(
                "SELECT state FROM deliveries WHERE id = $1"
            )
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap());
            assert_eq!(text, state.as_str());
            assert_eq!(s.delivery(id).await.unwrap().unwrap().state, state);
        }
    }
    }

    #[tokio::test]
    async fn flags_are_stored_as_1_and_0() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        let new = NewDelivery {
            task: "T-1".into(),
            ..Default::default()
        };
        let id = s.enqueue(&new).await.unwrap().id();
        s.claim_next().await.unwrap().unwrap();
        let repo = RepoRow {
            repo: "api".into(),
            position: 0,
            branch: "feature/T-1".into(),
            branch_sha: "b".into(),
            base_sha: "m".into(),
            rebased_sha: String::new(),
            deployed: false,
            merged: false,
            rolled_back: false,
        };
        s.set_repos(id, &[repo]).await.unwrap();
        s.set_repo_flag(id, "api", RepoFlag::Merged, true)
            .await
            .unwrap();
        s.set_repo_flag(id, "api", RepoFlag::RolledBack, true)
            .await
            .unwrap();
        s.set_repo_flag(id, "api", RepoFlag::RolledBack, false)
            .await
            .unwrap();
        s.cancel(id).await.unwrap();
        let stored: (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT r.deployed, r.merged, r.rolled_back, d.cancel \
             FROM delivery_repos r JOIN deliveries d ON d.id = r.delivery_id",
        )
        .fetch_one(s.sqlite_pool())
        .await
        .unwrap();
        assert_eq!(stored, (0, 1, 0, 1));
        let r = &s.repos(id).await.unwrap()[0];
        assert_eq!((r.deployed, r.merged, r.rolled_back), (false, true, false));
        assert!(s.cancel_requested(id).await.unwrap());
    }
}
