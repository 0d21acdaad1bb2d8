//! The queue's state transitions: enqueue, claim, phase, fail, finish, requeue, cancel. Each
//! is one write transaction, with its journal entry: a worker that dies between two of them
//! leaves a delivery in one state or the next, never half-way.

use super::deliveries::phase_text;
use super::journal::append;
use super::{DeliveryRow, Store, now_ms};
use crate::domain::{DeliveryId, Event, Phase, Source, Stage, State, TaskKey};

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
    /// Queues a delivery, unless one for the same task is already queued or running. Safe
    /// across processes and replicas: the unique index `deliveries_active_task` admits one
    /// waiting or running delivery per task, so of two requests at once one inserts and the
    /// other finds it.
    pub async fn enqueue(&self, d: &NewDelivery) -> anyhow::Result<Enqueued> {
        let requester = if d.requester.is_empty() {
            "unknown"
        } else {
            &d.requester
        };
        let detail = format!("by {requester} via {}", d.source);
        // The delivery found in conflict may end between the two statements (PostgreSQL runs
        // transactions side by side): then the task is free again, and the insert is tried
        // once more.
        for _ in 0..3 {
            let enqueued = write_tx!(self, |tx| {
                let id: Option<DeliveryId> = sqlx::query_scalar(
                    "INSERT INTO deliveries (task, state, priority, source, requester, origin, created_at) \
                     VALUES ($1, 'queued', $2, $3, $4, $5, $6) \
                     ON CONFLICT (task) WHERE state IN ('queued', 'running') DO NOTHING RETURNING id",
                )
                .bind(&d.task)
                .bind(d.priority)
                .bind(d.source)
                .bind(&d.requester)
                .bind(&d.origin)
                .bind(now_ms())
                .fetch_optional(&mut *tx)
                .await?;
                match id {
                    Some(id) => {
                        append!(&mut *tx, id, Stage::Queue, "", Event::Queued, &detail);
                        Some(Enqueued::New(id))
                    }
                    // Committed by the other request (PostgreSQL waited for it to commit
                    // before it found the conflict), so visible to this statement.
                    None => sqlx::query_scalar(
                        "SELECT id FROM deliveries WHERE task = $1 \
                         AND state IN ('queued', 'running') ORDER BY id LIMIT 1",
                    )
                    .bind(&d.task)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(Enqueued::Existing),
                }
            });
            if let Some(enqueued) = enqueued {
                return Ok(enqueued);
            }
        }
        anyhow::bail!(
            "cannot queue `{}`: its deliveries keep changing; try again",
            d.task
        )
    }

    /// Takes the next queued delivery and marks it running, atomically.
    pub async fn claim_next(&self) -> anyhow::Result<Option<DeliveryRow>> {
        self.claim(false).await
    }

    /// Records a phase transition (before the phase acts).
    pub async fn set_phase(&self, id: DeliveryId, phase: Phase) -> anyhow::Result<()> {
        write_tx!(self, fenced, |tx| {
            sqlx::query("UPDATE deliveries SET phase = $2 WHERE id = $1")
                .bind(id)
                .bind(phase)
                .execute(&mut *tx)
                .await?;
            append!(&mut *tx, id, phase, "", Event::Phase, "");
        });
        Ok(())
    }

    /// Records why a delivery failed and that it is rolling back (it stays running until the
    /// rollback is done).
    pub async fn mark_failing(&self, id: DeliveryId, error: &str) -> anyhow::Result<()> {
        write_tx!(self, fenced, |tx| {
            sqlx::query("UPDATE deliveries SET phase = 'rollback', error = $2 WHERE id = $1")
                .bind(id)
                .bind(error)
                .execute(&mut *tx)
                .await?;
            append!(&mut *tx, id, Phase::Rollback, "", Event::Phase, error);
        });
        Ok(())
    }

    /// Ends a delivery in a final state (delivered, failed, cancelled), the journal's `done` entry.
    pub async fn finish(&self, id: DeliveryId, state: State, error: &str) -> anyhow::Result<()> {
        let event = match state {
            State::Delivered => Event::Delivered,
            State::Failed => Event::Failed,
            State::Cancelled => Event::Cancelled,
            State::Queued | State::Running => {
                anyhow::bail!("#{id} cannot finish as {state}: that is not a final state")
            }
        };
        write_tx!(self, fenced, |tx| {
            sqlx::query(
                "UPDATE deliveries SET state = $2, error = $3, finished_at = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(state.as_str())
            .bind(error)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            append!(&mut *tx, id, Stage::Done, "", event, error);
        });
        Ok(())
    }

    /// Notes on a finished delivery what became of it since (a landed delivery rolled back):
    /// the queue page and `lockstep show` give it as the delivery's `error`.
    pub async fn note_after(&self, id: DeliveryId, note: &str) -> anyhow::Result<()> {
        write_tx!(self, fenced, |tx| sqlx::query(
            "UPDATE deliveries SET error = $2 WHERE id = $1"
        )
        .bind(id)
        .bind(note)
        .execute(&mut *tx)
        .await?
        .rows_affected());
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
        write_tx!(self, fenced, |tx| {
            sqlx::query(
                "UPDATE deliveries SET state = 'queued', phase = $2, candidate = FALSE, \
                 held = '', built_on = '' WHERE id = $1",
            )
            .bind(id)
            .bind(phase_text(resume))
            .execute(&mut *tx)
            .await?;
            append!(&mut *tx, id, Stage::Queue, "", Event::Requeued, why);
        });
        Ok(())
    }

    /// Asks for a delivery to stop: a queued one is cancelled at once, a running one at its
    /// next checkpoint. Returns the state it was in.
    pub async fn cancel(&self, id: DeliveryId) -> anyhow::Result<Option<State>> {
        // Each update checks the state it changes from: a worker claiming the delivery
        // meanwhile must not run a delivery that was just marked cancelled, and the cancel of
        // a delivery just claimed becomes a request to stop it.
        let state = write_tx!(self, |tx| {
            let cancelled = sqlx::query(
                "UPDATE deliveries SET state = 'cancelled', error = $2, finished_at = $3 \
                 WHERE id = $1 AND state = 'queued'",
            )
            .bind(id)
            .bind(CANCELLED_BEFORE_START)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            if cancelled.rows_affected() == 1 {
                append!(
                    &mut *tx,
                    id,
                    Stage::Done,
                    "",
                    Event::Cancelled,
                    CANCELLED_BEFORE_START
                );
                Some(State::Queued)
            } else {
                // The phase is empty (NULL here) between two preparations of a candidate.
                let phase: Option<Option<Phase>> = sqlx::query_scalar(
                    "UPDATE deliveries SET cancel = TRUE WHERE id = $1 AND state = 'running' \
                     RETURNING NULLIF(phase, '')",
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                match phase {
                    Some(phase) => {
                        append!(&mut *tx, id, phase, "", Event::CancelRequested, "");
                        Some(State::Running)
                    }
                    None => {
                        let state: Option<State> =
                            sqlx::query_scalar("SELECT state FROM deliveries WHERE id = $1")
                                .bind(id)
                                .fetch_optional(&mut *tx)
                                .await?;
                        state
                    }
                }
            }
        });
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;

    both_backends! {
    async fn queue_order_dedup_and_claim(t) {
        let s = &t.store;
        let new = |task: &str, priority| NewDelivery {
            task: task.into(),
            priority,
            ..Default::default()
        };
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
        let s = t.reopen().await;
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

    async fn concurrent_enqueues_and_claims_are_never_refused(t) {
        let s = &t.store;
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

    async fn one_task_is_queued_once_by_many_stores_at_once(t) {
        // As many replicas asking at once: each with its own pool, all for the same tasks.
        let mut stores = vec![t.store.clone()];
        for _ in 0..3 {
            stores.push(t.reopen().await);
        }
        let mut requests = tokio::task::JoinSet::new();
        for round in 0..10 {
            for (i, s) in stores.iter().enumerate() {
                let s = s.clone();
                requests.spawn(async move {
                    let new = NewDelivery {
                        task: format!("T-{round}").into(),
                        requester: format!("replica-{i}"),
                        ..Default::default()
                    };
                    s.enqueue(&new).await.unwrap()
                });
            }
        }
        let mut new = 0;
        while let Some(e) = requests.join_next().await {
            new += usize::from(matches!(e.unwrap(), Enqueued::New(_)));
        }
        assert_eq!(new, 10, "one new delivery per task");
        assert_eq!(t.store.queued().await.unwrap().len(), 10);
        // Once one ends, the task may be queued again.
        let first = t.store.claim_next().await.unwrap().unwrap();
        t.store.finish(first.id, State::Failed, "").await.unwrap();
        let again = NewDelivery {
            task: first.task.clone(),
            ..Default::default()
        };
        assert!(matches!(t.store.enqueue(&again).await.unwrap(), Enqueued::New(_)));
    }

    async fn a_cancel_and_a_claim_at_once_never_run_a_cancelled_delivery(t) {
        let s = &t.store;
        let other = t.reopen().await;
        for i in 0..20 {
            let new = NewDelivery {
                task: format!("T-{i}").into(),
                ..Default::default()
            };
            let id = s.enqueue(&new).await.unwrap().id();
            let (cancelled, claimed) = tokio::join!(other.cancel(id), s.claim_next());
            let d = s.delivery(id).await.unwrap().unwrap();
            match (cancelled.unwrap(), claimed.unwrap()) {
                (Some(State::Queued), None) => assert_eq!(d.state, State::Cancelled),
                (Some(State::Running), Some(c)) => {
                    assert_eq!(c.id, id);
                    assert!(d.cancel, "the running delivery is asked to stop");
                    s.finish(id, State::Cancelled, "").await.unwrap();
                }
                other => panic!("#{id}: {other:?}"),
            }
        }
    }
    }

    #[tokio::test]
    async fn a_requeue_that_cannot_be_journaled_leaves_the_delivery_running() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        let new = NewDelivery {
            task: "T-1".into(),
            ..Default::default()
        };
        let id = s.enqueue(&new).await.unwrap().id();
        s.claim_next().await.unwrap().unwrap();
        s.set_phase(id, Phase::Test).await.unwrap();
        // The journal write fails, as it would if the process died or the disk filled up
        // between the two writes of the requeue.
        sqlx::raw_sql(
            "CREATE TRIGGER journal_fails BEFORE INSERT ON journal WHEN NEW.event = 'requeued' \
             BEGIN SELECT RAISE(ABORT, 'disk full'); END",
        )
        .execute(s.sqlite_pool())
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
            .execute(s.sqlite_pool())
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
