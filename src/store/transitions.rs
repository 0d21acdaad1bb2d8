//! The queue's state transitions: enqueue, claim, phase, fail, finish, requeue, cancel. Each
//! is one write transaction, with its journal entry: a worker that dies between two of them
//! leaves a delivery in one state or the next, never half-way.

use super::deliveries::phase_text;
use super::journal::append;
use super::{DeliveryRow, Store, now_ms};
use crate::domain::{DeliveryId, Phase, Source, State, TaskKey};

/// The error recorded for a delivery cancelled while it was queued.
pub const CANCELLED_BEFORE_START: &str = "cancelled before it started";

/// A new delivery request.
#[derive(Debug, Clone, Default)]
pub struct NewDelivery {
    pub task: TaskKey,
    pub priority: i64,
    pub source: Source,
    pub requester: String,
    pub origin: String,
}

/// Whether `enqueue` added a delivery or found one for the task already waiting or running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    New(DeliveryId),
    Existing(DeliveryId),
}

impl Enqueued {
    pub fn id(&self) -> DeliveryId {
        match self {
            Enqueued::New(id) | Enqueued::Existing(id) => *id,
        }
    }
}

impl Store {
    /// Queues a delivery, unless one for the same task is already queued or running.
    pub async fn enqueue(&self, d: &NewDelivery) -> anyhow::Result<Enqueued> {
        let mut tx = self.write_tx().await?;
        let existing: Option<DeliveryId> = sqlx::query_scalar(
            "SELECT id FROM deliveries WHERE task = $1 AND state IN ('queued', 'running') \
             ORDER BY id LIMIT 1",
        )
        .bind(&d.task)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = existing {
            return Ok(Enqueued::Existing(id));
        }
        let id: DeliveryId = sqlx::query_scalar(
            "INSERT INTO deliveries (task, state, priority, source, requester, origin, created_at) \
             VALUES ($1, 'queued', $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&d.task)
        .bind(d.priority)
        .bind(d.source)
        .bind(&d.requester)
        .bind(&d.origin)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        let requester = if d.requester.is_empty() {
            "unknown"
        } else {
            &d.requester
        };
        let detail = format!("by {requester} via {}", d.source);
        append(&mut *tx, id, "queue", "", "queued", &detail).await?;
        tx.commit().await?;
        Ok(Enqueued::New(id))
    }

    /// Takes the next queued delivery and marks it running, atomically.
    pub async fn claim_next(&self) -> anyhow::Result<Option<DeliveryRow>> {
        self.claim(false).await
    }

    /// Records a phase transition (before the phase acts).
    pub async fn set_phase(&self, id: DeliveryId, phase: Phase) -> anyhow::Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE deliveries SET phase = $2 WHERE id = $1")
            .bind(id)
            .bind(phase)
            .execute(&mut *tx)
            .await?;
        append(&mut *tx, id, phase.as_str(), "", "phase", "").await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records why a delivery failed and that it is rolling back (it stays running until the
    /// rollback is done).
    pub async fn mark_failing(&self, id: DeliveryId, error: &str) -> anyhow::Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE deliveries SET phase = 'rollback', error = $2 WHERE id = $1")
            .bind(id)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        append(&mut *tx, id, "rollback", "", "phase", error).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a delivery.
    pub async fn finish(&self, id: DeliveryId, state: State, error: &str) -> anyhow::Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE deliveries SET state = $2, error = $3, finished_at = $4 WHERE id = $1")
            .bind(id)
            .bind(state)
            .bind(error)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        append(&mut *tx, id, "done", "", state.as_str(), error).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Notes on a finished delivery what became of it since (a landed delivery rolled back):
    /// the queue page and `lockstep show` give it as the delivery's `error`.
    pub async fn note_after(&self, id: DeliveryId, note: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE deliveries SET error = $2 WHERE id = $1")
            .bind(id)
            .bind(note)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Puts a running delivery back in the queue, keeping its place (after a crash);
    /// `resume` is the phase to resume at (none to start over).
    pub async fn requeue(
        &self,
        id: DeliveryId,
        resume: Option<Phase>,
        why: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE deliveries SET state = 'queued', phase = $2, candidate = FALSE, held = '', \
             built_on = '' WHERE id = $1",
        )
        .bind(id)
        .bind(phase_text(resume))
        .execute(&mut *tx)
        .await?;
        append(&mut *tx, id, "queue", "", "requeued", why).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Asks for a delivery to stop: a queued one is cancelled at once, a running one at its
    /// next checkpoint. Returns the state it was in.
    pub async fn cancel(&self, id: DeliveryId) -> anyhow::Result<Option<State>> {
        // One transaction: a worker claiming the delivery meanwhile must not run a delivery
        // that was just marked cancelled.
        let mut tx = self.write_tx().await?;
        let row: Option<(State, String)> =
            sqlx::query_as("SELECT state, phase FROM deliveries WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((state, phase)) = row else {
            return Ok(None);
        };
        let (journal_phase, event, detail) = match state {
            State::Queued => {
                sqlx::query(
                    "UPDATE deliveries SET state = 'cancelled', error = $2, finished_at = $3 \
                     WHERE id = $1",
                )
                .bind(id)
                .bind(CANCELLED_BEFORE_START)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                ("done", "cancelled", CANCELLED_BEFORE_START)
            }
            State::Running => {
                sqlx::query("UPDATE deliveries SET cancel = TRUE WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                (phase.as_str(), "cancel requested", "")
            }
            _ => return Ok(Some(state)),
        };
        append(&mut *tx, id, journal_phase, "", event, detail).await?;
        tx.commit().await?;
        Ok(Some(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queue_order_dedup_and_claim() {
        let (dir, s) = crate::store::scratch::store().await;
        let new = crate::store::scratch::request;
        let a = s.enqueue(&new("T-1", 0)).await.unwrap();
        let b = s.enqueue(&new("T-2", 5)).await.unwrap();
        assert_eq!(
            s.enqueue(&new("T-1", 9)).await.unwrap(),
            Enqueued::Existing(a.id())
        );
        let order: Vec<TaskKey> = s
            .queued()
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.task)
            .collect();
        assert_eq!(order, ["T-2", "T-1"]);
        let first = s.claim_next().await.unwrap().unwrap();
        assert_eq!((first.id, first.state), (b.id(), State::Running));
        s.finish(first.id, State::Delivered, "").await.unwrap();
        // Re-opening keeps everything (and does not re-run the migration).
        let s = Store::open(dir.path()).await.unwrap();
        assert_eq!(
            s.delivery(b.id()).await.unwrap().unwrap().state,
            State::Delivered
        );
        assert_eq!(s.queued().await.unwrap().len(), 1);
        assert_eq!(s.cancel(a.id()).await.unwrap(), Some(State::Queued));
        assert!(s.claim_next().await.unwrap().is_none());
        assert_eq!(
            s.latest_of_task(&"T-1".into())
                .await
                .unwrap()
                .unwrap()
                .state,
            State::Cancelled
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_enqueues_and_claims_are_never_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.remember_webhook(&format!("d-{i}")).await?;
                let new = NewDelivery {
                    task: format!("T-{i}").into(),
                    ..Default::default()
                };
                s.enqueue(&new).await?;
                if i % 4 == 0 {
                    s.claim_next().await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let counts = s.counts().await.unwrap();
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<i64>(), 200);
    }

    #[tokio::test]
    async fn a_requeue_that_cannot_be_journaled_leaves_the_delivery_running() {
        let (_dir, s) = crate::store::scratch::store().await;
        let new = crate::store::scratch::request("T-1", 0);
        let id = s.enqueue(&new).await.unwrap().id();
        s.claim_next().await.unwrap().unwrap();
        s.set_phase(id, Phase::Test).await.unwrap();
        // The journal write fails, as it would if the process died or the disk filled up
        // between the two writes of the requeue.
        sqlx::raw_sql(
            "CREATE TRIGGER journal_fails BEFORE INSERT ON journal WHEN NEW.event = 'requeued' \
             BEGIN SELECT RAISE(ABORT, 'disk full'); END",
        )
        .execute(&s.pool)
        .await
        .unwrap();
        let resumed_at = Some(Phase::Test);
        assert!(
            s.requeue(id, resumed_at, "the worker stopped")
                .await
                .is_err()
        );
        // Not queued without a word in the journal: still running, so `recover` sees it and
        // tries again.
        let d = s.delivery(id).await.unwrap().unwrap();
        assert_eq!((d.state, d.phase), (State::Running, Some(Phase::Test)));
        assert_eq!(s.running().await.unwrap().len(), 1);
        assert!(s.queued().await.unwrap().is_empty());
        sqlx::raw_sql("DROP TRIGGER journal_fails")
            .execute(&s.pool)
            .await
            .unwrap();
        s.requeue(id, resumed_at, "the worker stopped")
            .await
            .unwrap();
        let d = s.delivery(id).await.unwrap().unwrap();
        assert_eq!((d.state, d.phase), (State::Queued, Some(Phase::Test)));
        let last = s.journal_of(id).await.unwrap().pop().unwrap();
        assert_eq!(
            (last.event.as_str(), last.detail.as_str()),
            ("requeued", "the worker stopped")
        );
    }
}
