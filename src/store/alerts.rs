//! The alerts Alertmanager reported, one row per alert (fingerprint and start), so that the
//! notifications Alertmanager repeats act once, across restarts; and what became of each.

use super::{Store, now_ms};
use crate::domain::{DeliveryId, Event};

impl Store {
    /// Records an alert; false when it was already recorded (a repeated notification).
    pub async fn remember_alert(
        &self,
        fingerprint: &str,
        starts_at: &str,
        name: &str,
    ) -> anyhow::Result<bool> {
        let done = on_pool!(self, |pool| sqlx::query(
            "INSERT INTO alerts (fingerprint, starts_at, received_at, name) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (fingerprint, starts_at) DO NOTHING",
        )
        .bind(fingerprint)
        .bind(starts_at)
        .bind(now_ms())
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// Records what became of an alert: the delivery it rolls back, if any, and why.
    pub async fn alert_outcome(
        &self,
        fingerprint: &str,
        starts_at: &str,
        delivery: Option<DeliveryId>,
        outcome: &str,
    ) -> anyhow::Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE alerts SET delivery_id = $1, outcome = $2 \
             WHERE fingerprint = $3 AND starts_at = $4",
        )
        .bind(delivery)
        .bind(outcome)
        .bind(fingerprint)
        .bind(starts_at)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Forgets an alert (acting on it failed, so the next notification may try again).
    pub async fn forget_alert(&self, fingerprint: &str, starts_at: &str) -> anyhow::Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "DELETE FROM alerts WHERE fingerprint = $1 AND starts_at = $2"
        )
        .bind(fingerprint)
        .bind(starts_at)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// The recorded alerts, newest first: (name, delivery, outcome).
    pub async fn alerts(
        &self,
        limit: i64,
    ) -> anyhow::Result<Vec<(String, Option<DeliveryId>, String)>> {
        let rows = on_pool!(self, |pool| sqlx::query_as(
            "SELECT name, delivery_id, outcome FROM alerts ORDER BY received_at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await?);
        Ok(rows)
    }

    /// Drops alerts received before `before_ms`.
    pub async fn prune_alerts(&self, before_ms: i64) -> anyhow::Result<u64> {
        let done = on_pool!(self, |pool| sqlx::query(
            "DELETE FROM alerts WHERE received_at < $1"
        )
        .bind(before_ms)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done)
    }

    /// How many rollbacks each trigger started (`gate`, `alert`, `manual`), from the journal.
    pub async fn rollbacks_by_trigger(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = on_pool!(self, |pool| sqlx::query_as(
            "SELECT detail, COUNT(*) AS n FROM journal WHERE event = $1 \
             GROUP BY detail ORDER BY detail",
        )
        .bind(Event::RollbackTriggered)
        .fetch_all(pool)
        .await?);
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;

    both_backends! {
    async fn a_repeated_alert_is_recognised_across_restarts(t) {
        let s = &t.store;
        let at = "2026-11-30T08:50:01Z";
        assert!(s.remember_alert("fp1", at, "HighErrorRate").await.unwrap());
        assert!(!s.remember_alert("fp1", at, "HighErrorRate").await.unwrap());
        // The same alert firing again later is a new one.
        assert!(
            s.remember_alert("fp1", "2026-11-30T09:50:01Z", "HighErrorRate")
                .await
                .unwrap()
        );
        s.alert_outcome("fp1", at, Some(DeliveryId(3)), "rolling back #3")
            .await
            .unwrap();
        let s = t.reopen().await;
        assert!(!s.remember_alert("fp1", at, "HighErrorRate").await.unwrap());
        assert!(s.alerts(10).await.unwrap().contains(&(
            "HighErrorRate".into(),
            Some(DeliveryId(3)),
            "rolling back #3".into()
        )));
        s.forget_alert("fp1", at).await.unwrap();
        assert!(s.remember_alert("fp1", at, "HighErrorRate").await.unwrap());
        assert_eq!(s.prune_alerts(now_ms() + 1).await.unwrap(), 2);
    }
    }
}
