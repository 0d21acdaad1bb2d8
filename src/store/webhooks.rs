//! What GitHub webhooks lockstep already acted on, so that a replay is refused, across
//! restarts and across replicas: the delivery ids (for a week), and the events themselves
//! (for good).
//!
//! The delivery id (`X-GitHub-Delivery`) is outside the signature: a captured body sent again
//! under a fresh id passes the signature check. What the signature covers is the body, and in
//! it the id of the comment, review or pull request: those are remembered as event keys and
//! never pruned.

use super::{Store, now_ms};

impl Store {
    /// Records a webhook delivery id; false when it was already recorded (a replay).
    pub async fn remember_webhook(&self, id: &str) -> anyhow::Result<bool> {
        let done = on_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO webhook_deliveries (id, received_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(now_ms())
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok(done == 1)
    }

    /// Forgets a webhook delivery id (its handling failed, so a redelivery may retry it).
    pub async fn forget_webhook(&self, id: &str) -> anyhow::Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "DELETE FROM webhook_deliveries WHERE id = $1"
        )
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Records an event key (`issue_comment:<comment id>:created`, …); false when it was
    /// already recorded (a replay, whatever its delivery id, whichever replica it reached).
    pub async fn remember_event(&self, key: &str) -> anyhow::Result<bool> {
        let done = on_pool!(self, |pool| sqlx::query(
            "INSERT INTO webhook_events (key, received_at) VALUES ($1, $2) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(now_ms())
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// Forgets an event key (its handling failed, so a redelivery may retry it).
    pub async fn forget_event(&self, key: &str) -> anyhow::Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "DELETE FROM webhook_events WHERE key = $1"
        )
        .bind(key)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Drops webhook delivery ids received before `before_ms` (event keys are kept).
    pub async fn prune_webhooks(&self, before_ms: i64) -> anyhow::Result<u64> {
        let done = on_pool!(self, |pool| sqlx::query(
            "DELETE FROM webhook_deliveries WHERE received_at < $1"
        )
        .bind(before_ms)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;

    both_backends! {
    async fn replayed_webhooks_are_recognised_across_restarts(t) {
        let s = &t.store;
        assert!(s.remember_webhook("d-1").await.unwrap());
        assert!(!s.remember_webhook("d-1").await.unwrap());
        let s = t.reopen().await;
        assert!(!s.remember_webhook("d-1").await.unwrap());
        s.forget_webhook("d-1").await.unwrap();
        assert!(s.remember_webhook("d-1").await.unwrap());
        assert_eq!(s.prune_webhooks(now_ms() + 1).await.unwrap(), 1);
        assert!(s.remember_webhook("d-1").await.unwrap());
    }

    async fn a_webhook_sent_to_several_replicas_at_once_is_taken_once(t) {
        let mut replicas = Vec::new();
        for _ in 0..4 {
            let s = t.reopen().await;
            replicas.push(tokio::spawn(async move { s.remember_webhook("d-9").await.unwrap() }));
        }
        let mut taken = 0;
        for r in replicas {
            taken += usize::from(r.await.unwrap());
        }
        assert_eq!(taken, 1);
    }

    async fn issue10_events_are_remembered_for_good(t) {
        let s = &t.store;
        let key = "issue_comment:1624211474:created";
        assert!(s.remember_event(key).await.unwrap());
        assert!(!s.remember_event(key).await.unwrap());
        s.prune_webhooks(now_ms() + 1).await.unwrap();
        let s = t.reopen().await;
        assert!(!s.remember_event(key).await.unwrap());
        s.forget_event(key).await.unwrap();
        assert!(s.remember_event(key).await.unwrap());
    }
    }
}
