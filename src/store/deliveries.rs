//! Deliveries as recorded: [`DeliveryRow`], and the reads of the queue and its
//! history. What changes a delivery's state is in `transitions`.

use serde::{Serialize, Serializer};

use super::Store;
use crate::domain::{DeliveryId, Phase, Source, State, TaskKey};

/// One delivery, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRow {
    pub id: DeliveryId,
    pub task: TaskKey,
    pub state: State,
    /// The phase it is in or resumes at; none before it first starts (stored, and shown,
    /// as the empty text).
    #[serde(serialize_with = "phase_or_empty")]
    pub phase: Option<Phase>,
    pub priority: i64,
    pub source: Source,
    pub requester: String,
    /// Where the request came from in the requester's world (e.g. `owner/repo#12`).
    pub origin: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: String,
    pub cancel: bool,
    /// A candidate of the pipeline: prepared speculatively behind the head, never deployed.
    /// The one running delivery that is not a candidate is the head.
    pub candidate: bool,
    /// A candidate's preparation failure, held unreported while deliveries ahead of it are
    /// unresolved ("" when none).
    pub held: String,
    /// The deliveries ahead whose commits its bases contain, e.g. `#12, #11` ("" when none).
    pub built_on: String,
    /// How many of its preparations were discarded because a base changed.
    pub discards: i64,
}

/// A delivery's phase as stored: its name, or the empty text before it first starts.
pub(super) fn phase_text(phase: Option<Phase>) -> &'static str {
    phase.map_or("", Phase::as_str)
}

fn phase_or_empty<S: Serializer>(phase: &Option<Phase>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(phase_text(*phase))
}

/// A `SELECT` of every column of a [`DeliveryRow`], followed by `$rest`: one string built at
/// compile time, so no query is spliced together at run time. The phase is read as NULL before
/// a delivery first starts.
macro_rules! select_deliveries {
    ($rest:literal) => {
        concat!(
            "SELECT id, task, state, NULLIF(phase, '') AS phase, priority, source, requester, \
             origin, created_at, started_at, finished_at, error, cancel, candidate, held, \
             built_on, discards FROM deliveries ",
            $rest
        )
    };
}

impl Store {
    pub async fn delivery(&self, id: DeliveryId) -> anyhow::Result<Option<DeliveryRow>> {
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

    /// The line as it stands: the running deliveries ([`Store::train`]) and those waiting
    /// ([`Store::queued`]). Read in the order a delivery moves (waiting, then running), so
    /// that one the worker claims meanwhile is seen, where it went, and never missed; a
    /// history read after these sees any that finished meanwhile.
    pub async fn line(&self) -> anyhow::Result<(Vec<DeliveryRow>, Vec<DeliveryRow>)> {
        let mut queued = self.queued().await?;
        let running = self.train().await?;
        queued.retain(|q| !running.iter().any(|r| r.id == q.id));
        Ok((running, queued))
    }

    /// The running deliveries in the pipeline's order: the head first, then the candidates
    /// in queue order (priority first, then age).
    pub async fn train(&self) -> anyhow::Result<Vec<DeliveryRow>> {
        let rows = on_pool!(self, |pool| sqlx::query_as(select_deliveries!(
            "WHERE state = 'running' ORDER BY candidate, priority DESC, id ASC"
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
        self.counted("SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state ORDER BY state")
            .await
    }

    pub async fn cancel_requested(&self, id: DeliveryId) -> anyhow::Result<bool> {
        let cancel = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT cancel FROM deliveries WHERE id = $1"
        )
        .bind(id)
        .fetch_one(pool)
        .await?);
        Ok(cancel)
    }

    /// The newest delivery of a task, whatever its state.
    pub async fn latest_of_task(&self, task: &TaskKey) -> anyhow::Result<Option<DeliveryRow>> {
        let row = on_pool!(self, |pool| sqlx::query_as(select_deliveries!(
            "WHERE task = $1 ORDER BY id DESC LIMIT 1"
        ))
        .bind(task)
        .fetch_optional(pool)
        .await?);
        Ok(row)
    }

    /// The deliveries of a task, newest first (at most `limit`).
    pub async fn deliveries_of_task(
        &self,
        task: &TaskKey,
        limit: i64,
    ) -> anyhow::Result<Vec<DeliveryRow>> {
        let rows = on_pool!(self, |pool| sqlx::query_as(select_deliveries!(
            "WHERE task = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(task)
        .bind(limit)
        .fetch_all(pool)
        .await?);
        Ok(rows)
    }

    /// Deliveries that landed at or after `since_ms`, newest first: those still watched.
    pub async fn delivered_since(&self, since_ms: i64) -> anyhow::Result<Vec<DeliveryRow>> {
        let rows = on_pool!(self, |pool| sqlx::query_as(select_deliveries!(
            "WHERE state = 'delivered' AND finished_at >= $1 ORDER BY finished_at DESC, id DESC"
        ))
        .bind(since_ms)
        .fetch_all(pool)
        .await?);
        Ok(rows)
    }

    /// Counts of deliveries by source (for the benchmark and metrics).
    pub async fn count_by_source(&self) -> anyhow::Result<Vec<(String, i64)>> {
        self.counted("SELECT source, COUNT(*) AS n FROM deliveries GROUP BY source ORDER BY source")
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;
    use crate::store::{RepoFlag, RepoRow};

    both_backends! {
    async fn a_state_is_stored_as_its_lowercase_name(t) {
        let s = &t.store;
        let new = crate::store::scratch::request("T-1", 0);
        let id = s.enqueue(&new).await.unwrap().id();
        for state in [
            State::Queued,
            State::Running,
            State::Delivered,
            State::Failed,
            State::Cancelled,
        ] {
            match state {
                State::Queued => {}
                State::Running => {
                    s.claim_next().await.unwrap();
                }
                _ => s.finish(id, state, "").await.unwrap(),
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

    both_backends! {
    async fn a_tasks_deliveries_are_read_newest_first(t) {
        let s = &t.store;
        let mut ids = Vec::new();
        for task in ["T-1", "T-2", "T-1"] {
            let new = crate::store::scratch::request(task, 0);
            let id = s.enqueue(&new).await.unwrap().id();
            // One delivery of a task at a time: each ends before the next is asked for.
            s.finish(id, State::Failed, "").await.unwrap();
            ids.push(id);
        }
        let mine: Vec<DeliveryId> = s
            .deliveries_of_task(&TaskKey::new("T-1"), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(mine, [ids[2], ids[0]]);
        assert_eq!(s.deliveries_of_task(&TaskKey::new("T-1"), 1).await.unwrap().len(), 1);
        assert!(s.deliveries_of_task(&TaskKey::new("T-3"), 10).await.unwrap().is_empty());
    }
    }

    #[tokio::test]
    async fn flags_are_stored_as_1_and_0() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        let new = crate::store::scratch::request("T-1", 0);
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
        s.set_repo_flag(id, &"api".into(), RepoFlag::Merged, true)
            .await
            .unwrap();
        s.set_repo_flag(id, &"api".into(), RepoFlag::RolledBack, true)
            .await
            .unwrap();
        s.set_repo_flag(id, &"api".into(), RepoFlag::RolledBack, false)
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
