//! The tasks the tracker poller has seen in a for-delivery status, so that it queues each
//! once per arrival in that status, across restarts.

use super::{Store, now_ms};

impl Store {
    /// The tasks the tracker poller has seen in a for-delivery status, with that status.
    pub async fn tracker_seen(&self) -> anyhow::Result<Vec<(String, String)>> {
        let rows = on_pool!(self, |pool| sqlx::query_as(
            "SELECT task, status FROM tracker_seen ORDER BY task"
        )
        .fetch_all(pool)
        .await?);
        Ok(rows)
    }

    pub async fn set_tracker_seen(&self, task: &str, status: &str) -> anyhow::Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO tracker_seen (task, status, seen_at) VALUES ($1, $2, $3) \
             ON CONFLICT (task) DO UPDATE SET status = $2, seen_at = $3",
        )
        .bind(task)
        .bind(status)
        .bind(now_ms())
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    pub async fn forget_tracker_seen(&self, task: &str) -> anyhow::Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "DELETE FROM tracker_seen WHERE task = $1"
        )
        .bind(task)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::both_backends;

    both_backends! {
    async fn tracker_seen_is_remembered_and_forgotten(t) {
        let s = &t.store;
        s.set_tracker_seen("T-1", "For Delivery").await.unwrap();
        s.set_tracker_seen("T-1", "Ready").await.unwrap();
        assert_eq!(
            s.tracker_seen().await.unwrap(),
            [("T-1".to_string(), "Ready".to_string())]
        );
        s.forget_tracker_seen("T-1").await.unwrap();
        assert!(s.tracker_seen().await.unwrap().is_empty());
    }
    }
}
