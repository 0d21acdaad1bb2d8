//! The pipeline's transitions: claiming a candidate, making it the head, holding its failure,
//! recording what it is built on, and discarding a preparation whose base changed. Each is one
//! write transaction with its journal entry, like the queue's own (`transitions`).

use super::journal::append;
use super::{DeliveryRow, Store, now_ms};
use crate::domain::{DeliveryId, Event, Phase, Stage};

/// Why a candidate's preparation was thrown away; the label of
/// `lockstep_candidates_discarded_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardReason {
    /// A delivery ahead of it failed, was cancelled, or was prepared again.
    AheadChanged,
    /// Someone else moved an upstream it was rebased onto.
    UpstreamMoved,
    /// A delivery of higher priority went ahead of it.
    Overtaken,
    /// The worker stopped (the delivery went back to the queue).
    WorkerStopped,
}

impl DiscardReason {
    pub const ALL: [DiscardReason; 4] = [
        DiscardReason::AheadChanged,
        DiscardReason::UpstreamMoved,
        DiscardReason::Overtaken,
        DiscardReason::WorkerStopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::AheadChanged => "ahead_changed",
            DiscardReason::UpstreamMoved => "upstream_moved",
            DiscardReason::Overtaken => "overtaken",
            DiscardReason::WorkerStopped => "worker_stopped",
        }
    }
}

/// How long deliveries waited and took, for the metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Waits {
    /// Seconds from request to start, per delivery that started.
    pub queue_wait: Vec<f64>,
    /// Seconds from request to landed, per delivery that landed.
    pub lead_time: Vec<f64>,
}

impl Store {
    /// Takes the next queued delivery as a candidate of the pipeline (`candidate`) or as its
    /// head, and marks it running, atomically.
    pub async fn claim(&self, candidate: bool) -> anyhow::Result<Option<DeliveryRow>> {
        let claimed: Option<DeliveryId> = write_tx!(self, fenced, |tx| {
            // A delivery requeued after a crash keeps the phase it resumes at. The state is
            // checked again by the update itself: a cancel may have come in between.
            let id: Option<DeliveryId> = sqlx::query_scalar(
                "UPDATE deliveries SET state = 'running', started_at = $1, candidate = $2, \
                 held = '', built_on = '', \
                 phase = CASE WHEN phase = '' THEN 'rebase' ELSE phase END \
                 WHERE id = (SELECT id FROM deliveries WHERE state = 'queued' \
                             ORDER BY priority DESC, id ASC LIMIT 1) \
                 AND state = 'queued' RETURNING id",
            )
            .bind(now_ms())
            .bind(candidate)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = id {
                let detail = if candidate { "as a candidate" } else { "" };
                append!(&mut *tx, id, Stage::Queue, "", Event::Started, detail);
            }
            id
        });
        match claimed {
            Some(id) => self.delivery(id).await,
            None => Ok(None),
        }
    }

    /// A candidate becomes the head of the pipeline: the next to deploy.
    pub async fn promote(&self, id: DeliveryId) -> anyhow::Result<()> {
        write_tx!(self, fenced, |tx| {
            sqlx::query("UPDATE deliveries SET candidate = FALSE WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            append!(
                &mut *tx,
                id,
                Stage::Queue,
                "",
                Event::Head,
                "next to deploy"
            );
        });
        Ok(())
    }

    /// Holds a candidate's failure unreported until the deliveries ahead of it are resolved.
    pub async fn hold(&self, id: DeliveryId, phase: Phase, summary: &str) -> anyhow::Result<()> {
        write_tx!(self, fenced, |tx| {
            sqlx::query("UPDATE deliveries SET held = $2 WHERE id = $1")
                .bind(id)
                .bind(summary)
                .execute(&mut *tx)
                .await?;
            append!(&mut *tx, id, phase, "", Event::Held, summary);
        });
        Ok(())
    }

    /// Records the deliveries ahead whose commits a delivery's bases contain.
    pub async fn set_built_on(&self, id: DeliveryId, built_on: &str) -> anyhow::Result<()> {
        let detail = if built_on.is_empty() {
            "the upstreams alone"
        } else {
            built_on
        };
        write_tx!(self, fenced, |tx| {
            sqlx::query("UPDATE deliveries SET built_on = $2 WHERE id = $1")
                .bind(id)
                .bind(built_on)
                .execute(&mut *tx)
                .await?;
            append!(&mut *tx, id, Phase::Rebase, "", Event::BuiltOn, detail);
        });
        Ok(())
    }

    /// Throws away a delivery's preparation (its base changed): it waits to be prepared again,
    /// still running, in its place.
    pub async fn discard(
        &self,
        id: DeliveryId,
        reason: DiscardReason,
        why: &str,
    ) -> anyhow::Result<()> {
        let detail = format!("{}: {why}", reason.as_str());
        write_tx!(self, fenced, |tx| {
            sqlx::query(
                "UPDATE deliveries SET phase = '', held = '', built_on = '', \
                 discards = discards + 1 WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            append!(&mut *tx, id, Stage::Queue, "", Event::Discarded, &detail);
        });
        Ok(())
    }

    /// Discarded preparations by reason, from the journal (it survives restarts).
    pub async fn discards_by_reason(&self) -> anyhow::Result<Vec<(DiscardReason, i64)>> {
        let details: Vec<String> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT detail FROM journal WHERE event = $1"
        )
        .bind(Event::Discarded)
        .fetch_all(pool)
        .await?);
        Ok(DiscardReason::ALL
            .into_iter()
            .map(|r| {
                let prefix = format!("{}:", r.as_str());
                let n = details.iter().filter(|d| d.starts_with(&prefix)).count();
                (r, n as i64)
            })
            .collect())
    }

    /// How long deliveries waited in the queue and took to land, in seconds.
    pub async fn waits(&self) -> anyhow::Result<Waits> {
        let rows: Vec<(i64, Option<i64>, Option<i64>, String)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT created_at, started_at, finished_at, state FROM deliveries \
                 WHERE started_at IS NOT NULL",
            )
            .fetch_all(pool)
            .await?
        });
        let secs = |from: i64, to: i64| (to - from).max(0) as f64 / 1000.0;
        let mut w = Waits::default();
        for (created, started, finished, state) in rows {
            if let Some(started) = started {
                w.queue_wait.push(secs(created, started));
            }
            if let (Some(finished), "delivered") = (finished, state.as_str()) {
                w.lead_time.push(secs(created, finished));
            }
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::State;
    use crate::store::testing::both_backends;

    both_backends! {
    async fn candidates_are_claimed_promoted_held_and_discarded(t) {
        let s = &t.store;
        let new = crate::store::scratch::request;
        let a = s.enqueue(&new("T-1", 0)).await.unwrap().id();
        let b = s.enqueue(&new("T-2", 0)).await.unwrap().id();
        let c = s.enqueue(&new("T-3", 5)).await.unwrap().id();
        assert_eq!(s.claim(false).await.unwrap().unwrap().id, c);
        let head = s.claim(true).await.unwrap().unwrap();
        assert_eq!((head.id, head.candidate), (a, true));
        s.claim(true).await.unwrap().unwrap();
        // The head first, then the candidates in queue order.
        let order: Vec<DeliveryId> = s.train().await.unwrap().iter().map(|d| d.id).collect();
        assert_eq!(order, [c, a, b]);
        s.finish(c, State::Delivered, "").await.unwrap();
        s.promote(a).await.unwrap();
        s.set_built_on(b, "#1").await.unwrap();
        s.hold(b, Phase::Test, "delivery failed in test (api): no")
            .await
            .unwrap();
        let d = s.delivery(b).await.unwrap().unwrap();
        assert_eq!(
            (d.built_on.as_str(), d.held.as_str()),
            ("#1", "delivery failed in test (api): no")
        );
        s.discard(b, DiscardReason::AheadChanged, "#1 failed")
            .await
            .unwrap();
        let d = s.delivery(b).await.unwrap().unwrap();
        assert_eq!(
            (
                d.phase,
                d.held.as_str(),
                d.built_on.as_str(),
                d.discards,
                d.candidate
            ),
            (None, "", "", 1, true)
        );
        assert!(!s.delivery(a).await.unwrap().unwrap().candidate);
        let by_reason = s.discards_by_reason().await.unwrap();
        assert!(by_reason.contains(&(DiscardReason::AheadChanged, 1)));
        assert!(by_reason.contains(&(DiscardReason::UpstreamMoved, 0)));
        let waits = s.waits().await.unwrap();
        assert_eq!((waits.queue_wait.len(), waits.lead_time.len()), (3, 1));
    }
    }
}
