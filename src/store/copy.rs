//! `lockstep store copy`: a whole store (the queue, the history, the journal, the step
//! records, the replay ids and the tracker poller's memory) copied into an empty PostgreSQL
//! store, ids kept, so that a team grows from the embedded default without losing anything.

use super::deliveries::phase_text;
use super::{DeliveryRow, Pool, Store};

/// What a copy carried over, table by table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    pub deliveries: usize,
    pub repos: usize,
    pub journal: usize,
    pub steps: usize,
    pub webhooks: usize,
    /// The webhook events acted on (comment, review and pull request ids).
    pub events: usize,
    pub tracker_seen: usize,
    /// The alerts Alertmanager reported.
    pub alerts: usize,
    /// The showrooms, whatever their state.
    pub showrooms: usize,
    /// The autotests, whatever their state.
    pub autotests: usize,
}

type RepoRecord = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
    bool,
    bool,
    bool,
);
type AlertRecord = (String, String, i64, String, Option<i64>, String);
type JournalRecord = (i64, i64, i64, String, String, String, String);
type StepRecord = (
    i64,
    i64,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// Everything a store holds, read in one go.
struct Everything {
    deliveries: Vec<DeliveryRow>,
    repos: Vec<RepoRecord>,
    journal: Vec<JournalRecord>,
    steps: Vec<StepRecord>,
    webhooks: Vec<(String, i64)>,
    events: Vec<(String, i64)>,
    tracker_seen: Vec<(String, String, i64)>,
    alerts: Vec<AlertRecord>,
}

impl Store {
    /// Copies everything in this store into `target`, a PostgreSQL store that holds nothing
    /// yet, in one transaction: all of it or none. The ids stay what they were, and the
    /// target's id sequences go on after them.
    pub async fn copy_to(&self, target: &Store) -> anyhow::Result<Copied> {
        let Pool::Postgres(pool) = &target.pool else {
            anyhow::bail!(
                "the copy goes into a PostgreSQL store; name its variable with `--to-env`"
            );
        };
        let all = self.everything().await?;
        let mut tx = pool.begin().await?;
        lock_empty_target(&mut tx).await?;
        insert_deliveries(&mut tx, &all.deliveries).await?;
        insert_repos(&mut tx, &all.repos).await?;
        insert_journal(&mut tx, &all.journal).await?;
        insert_steps(&mut tx, &all.steps).await?;
        insert_replay_ids(&mut tx, &all).await?;
        insert_alerts(&mut tx, &all.alerts).await?;
        let showrooms = self.copy_showrooms(&mut tx).await?;
        let autotests = self.copy_autotests(&mut tx).await?;
        continue_sequences(&mut tx).await?;
        tx.commit().await?;
        Ok(Copied {
            deliveries: all.deliveries.len(),
            repos: all.repos.len(),
            journal: all.journal.len(),
            steps: all.steps.len(),
            webhooks: all.webhooks.len(),
            events: all.events.len(),
            tracker_seen: all.tracker_seen.len(),
            alerts: all.alerts.len(),
            showrooms,
            autotests,
        })
    }

    /// Reads every table the copy carries, in one transaction of this store.
    async fn everything(&self) -> anyhow::Result<Everything> {
        Ok(on_pool!(self, |pool| {
            let mut conn = pool.begin().await?;
            Everything {
                deliveries: sqlx::query_as(
                    "SELECT id, task, state, NULLIF(phase, '') AS phase, priority, source, \
                     requester, origin, created_at, started_at, finished_at, error, cancel, \
                     candidate, held, built_on, discards FROM deliveries ORDER BY id",
                )
                .fetch_all(&mut *conn)
                .await?,
                repos: sqlx::query_as(
                    "SELECT delivery_id, position, repo, branch, branch_sha, base_sha, \
                     rebased_sha, deployed, merged, rolled_back FROM delivery_repos \
                     ORDER BY delivery_id, position",
                )
                .fetch_all(&mut *conn)
                .await?,
                journal: sqlx::query_as(
                    "SELECT id, delivery_id, at, phase, repo, event, detail FROM journal ORDER BY id",
                )
                .fetch_all(&mut *conn)
                .await?,
                steps: sqlx::query_as(
                    "SELECT id, delivery_id, repo, step, started_at, finished_at, exit_code, \
                     outcome, log_path, pid, log, runner_build FROM steps ORDER BY id",
                )
                .fetch_all(&mut *conn)
                .await?,
                webhooks: sqlx::query_as(
                    "SELECT id, received_at FROM webhook_deliveries ORDER BY id",
                )
                .fetch_all(&mut *conn)
                .await?,
                events: sqlx::query_as(
                    "SELECT key, received_at FROM webhook_events ORDER BY key",
                )
                .fetch_all(&mut *conn)
                .await?,
                tracker_seen: sqlx::query_as(
                    "SELECT task, status, seen_at FROM tracker_seen ORDER BY task",
                )
                .fetch_all(&mut *conn)
                .await?,
                alerts: sqlx::query_as(
                    "SELECT fingerprint, starts_at, received_at, name, delivery_id, outcome \
                     FROM alerts ORDER BY received_at",
                )
                .fetch_all(&mut *conn)
                .await?,
            }
        }))
    }
}

/// Locks the target's tables, so that nobody else writes to them meanwhile, and refuses a
/// target that holds anything already.
async fn lock_empty_target(tx: &mut sqlx::PgConnection) -> anyhow::Result<()> {
    sqlx::query(
        "LOCK TABLE deliveries, delivery_repos, journal, steps, webhook_deliveries, \
         tracker_seen IN EXCLUSIVE MODE",
    )
    .execute(&mut *tx)
    .await?;
    let used: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM deliveries) + (SELECT COUNT(*) FROM journal) \
         + (SELECT COUNT(*) FROM webhook_deliveries) + (SELECT COUNT(*) FROM webhook_events) \
         + (SELECT COUNT(*) FROM tracker_seen) + (SELECT COUNT(*) FROM alerts)",
    )
    .fetch_one(&mut *tx)
    .await?;
    if used > 0 {
        anyhow::bail!(
            "the target store is not empty ({used} rows); copy into a new database, or \
             empty this one first"
        );
    }
    Ok(())
}

/// Inserts the deliveries, ids kept.
async fn insert_deliveries(
    tx: &mut sqlx::PgConnection,
    deliveries: &[DeliveryRow],
) -> anyhow::Result<()> {
    for d in deliveries {
        sqlx::query(
            "INSERT INTO deliveries (id, task, state, phase, priority, source, requester, \
             origin, created_at, started_at, finished_at, error, cancel, candidate, held, \
             built_on, discards) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17)",
        )
        .bind(d.id)
        .bind(&d.task)
        .bind(d.state.as_str())
        .bind(phase_text(d.phase))
        .bind(d.priority)
        .bind(d.source)
        .bind(&d.requester)
        .bind(&d.origin)
        .bind(d.created_at)
        .bind(d.started_at)
        .bind(d.finished_at)
        .bind(&d.error)
        .bind(d.cancel)
        .bind(d.candidate)
        .bind(&d.held)
        .bind(&d.built_on)
        .bind(d.discards)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Inserts the repositories of each delivery.
async fn insert_repos(tx: &mut sqlx::PgConnection, repos: &[RepoRecord]) -> anyhow::Result<()> {
    for r in repos {
        sqlx::query(
            "INSERT INTO delivery_repos (delivery_id, position, repo, branch, branch_sha, \
             base_sha, rebased_sha, deployed, merged, rolled_back) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(r.0)
        .bind(r.1)
        .bind(&r.2)
        .bind(&r.3)
        .bind(&r.4)
        .bind(&r.5)
        .bind(&r.6)
        .bind(r.7)
        .bind(r.8)
        .bind(r.9)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Inserts the journal, ids kept.
async fn insert_journal(
    tx: &mut sqlx::PgConnection,
    journal: &[JournalRecord],
) -> anyhow::Result<()> {
    for j in journal {
        sqlx::query(
            "INSERT INTO journal (id, delivery_id, at, phase, repo, event, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(j.0)
        .bind(j.1)
        .bind(j.2)
        .bind(&j.3)
        .bind(&j.4)
        .bind(&j.5)
        .bind(&j.6)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Inserts the step records, ids and logs kept.
async fn insert_steps(tx: &mut sqlx::PgConnection, steps: &[StepRecord]) -> anyhow::Result<()> {
    for s in steps {
        sqlx::query(
            "INSERT INTO steps (id, delivery_id, repo, step, started_at, finished_at, \
             exit_code, outcome, log_path, pid, log, runner_build) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(s.0)
        .bind(s.1)
        .bind(&s.2)
        .bind(&s.3)
        .bind(s.4)
        .bind(s.5)
        .bind(s.6)
        .bind(&s.7)
        .bind(&s.8)
        .bind(s.9)
        .bind(&s.10)
        .bind(&s.11)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Inserts what makes a replay recognised: the webhook deliveries and events acted on, and
/// the tracker poller's memory.
async fn insert_replay_ids(tx: &mut sqlx::PgConnection, all: &Everything) -> anyhow::Result<()> {
    for (id, at) in &all.webhooks {
        sqlx::query("INSERT INTO webhook_deliveries (id, received_at) VALUES ($1, $2)")
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
    }
    for (key, at) in &all.events {
        sqlx::query("INSERT INTO webhook_events (key, received_at) VALUES ($1, $2)")
            .bind(key)
            .bind(at)
            .execute(&mut *tx)
            .await?;
    }
    for (task, status, at) in &all.tracker_seen {
        sqlx::query("INSERT INTO tracker_seen (task, status, seen_at) VALUES ($1, $2, $3)")
            .bind(task)
            .bind(status)
            .bind(at)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Inserts the alerts Alertmanager reported.
async fn insert_alerts(tx: &mut sqlx::PgConnection, alerts: &[AlertRecord]) -> anyhow::Result<()> {
    for a in alerts {
        sqlx::query(
            "INSERT INTO alerts (fingerprint, starts_at, received_at, name, delivery_id, \
             outcome) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&a.0)
        .bind(&a.1)
        .bind(a.2)
        .bind(&a.3)
        .bind(a.4)
        .bind(&a.5)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// The identity columns were given their values: their sequences go on after them.
async fn continue_sequences(tx: &mut sqlx::PgConnection) -> anyhow::Result<()> {
    for table in ["deliveries", "journal", "steps", "autotests"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
             COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
        )))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DeliveryId, Phase, State, StepState};
    use crate::store::testing::TestStore;
    use crate::store::{Backend, NewDelivery, RepoRow};

    #[tokio::test]
    async fn a_sqlite_store_is_copied_whole_into_an_empty_postgresql_one() {
        let Some(target) = TestStore::fresh(Backend::Postgres).await else {
            return;
        };
        let source = TestStore::fresh(Backend::Sqlite).await.unwrap();
        let s = &source.store;
        for task in ["T-1", "T-2", "T-3"] {
            let new = NewDelivery {
                task: task.into(),
                requester: "ann".into(),
                ..Default::default()
            };
            s.enqueue(&new).await.unwrap();
        }
        let d = s.claim_next().await.unwrap().unwrap();
        s.set_repos(
            d.id,
            &[RepoRow {
                repo: "api".into(),
                position: 0,
                branch: "feature/T-1".into(),
                branch_sha: "b".into(),
                base_sha: "m".into(),
                rebased_sha: "r".into(),
                deployed: true,
                merged: false,
                rolled_back: false,
            }],
        )
        .await
        .unwrap();
        let step = s
            .step_started(d.id, &"api".into(), Phase::Test, "logs/1/api.test.log")
            .await
            .unwrap();
        s.step_finished(step, Some(0), StepState::Passed)
            .await
            .unwrap();
        s.set_step_log(step, "ok\n").await.unwrap();
        s.finish(d.id, State::Delivered, "").await.unwrap();
        s.cancel(DeliveryId(3)).await.unwrap();
        s.remember_webhook("d-1").await.unwrap();
        s.remember_event("issue_comment:7:created").await.unwrap();
        s.set_tracker_seen("T-9", "For Delivery").await.unwrap();
        s.remember_alert("fp1", "2026-11-30T08:50:01Z", "HighErrorRate")
            .await
            .unwrap();
        s.showroom_deploying("T-1", "t-1", "https://t-1.show", "ann", Some("In QA"))
            .await
            .unwrap();
        s.request_autotest(&crate::store::NewAutotest {
            task: "T-1".into(),
            repo: "api".into(),
            branch: "feature/T-1".into(),
            sha: "a".repeat(40),
            source: crate::domain::Source::Push,
            requester: "ann".into(),
        })
        .await
        .unwrap();

        let copied = s.copy_to(&target.store).await.unwrap();
        assert_eq!(
            copied,
            Copied {
                deliveries: 3,
                repos: 1,
                journal: 6,
                steps: 1,
                webhooks: 1,
                events: 1,
                tracker_seen: 1,
                alerts: 1,
                showrooms: 1,
                autotests: 1,
            }
        );
        let t = &target.store;
        let json = |rows: Vec<DeliveryRow>| serde_json::to_value(rows).unwrap();
        assert_eq!(
            json(t.history(10).await.unwrap()),
            json(s.history(10).await.unwrap())
        );
        assert_eq!(
            json(t.queued().await.unwrap()),
            json(s.queued().await.unwrap())
        );
        assert_eq!(
            serde_json::to_value(t.journal_of(d.id).await.unwrap()).unwrap(),
            serde_json::to_value(s.journal_of(d.id).await.unwrap()).unwrap()
        );
        assert_eq!(
            serde_json::to_value(t.repos(d.id).await.unwrap()).unwrap(),
            serde_json::to_value(s.repos(d.id).await.unwrap()).unwrap()
        );
        assert_eq!(t.step_log(step).await.unwrap().as_deref(), Some("ok\n"));
        assert!(
            !t.remember_webhook("d-1").await.unwrap(),
            "a replay is still one"
        );
        assert!(
            !t.remember_event("issue_comment:7:created").await.unwrap(),
            "so is a replayed event"
        );
        assert_eq!(t.tracker_seen().await.unwrap().len(), 1);
        assert_eq!(
            serde_json::to_value(t.showrooms().await.unwrap()).unwrap(),
            serde_json::to_value(s.showrooms().await.unwrap()).unwrap()
        );
        assert_eq!(
            serde_json::to_value(t.autotests(None, 10).await.unwrap()).unwrap(),
            serde_json::to_value(s.autotests(None, 10).await.unwrap()).unwrap()
        );
        assert!(
            !t.remember_alert("fp1", "2026-11-30T08:50:01Z", "HighErrorRate")
                .await
                .unwrap(),
            "a repeated alert is still one"
        );
        // New ids go on after the copied ones.
        let new = NewDelivery {
            task: "T-4".into(),
            ..Default::default()
        };
        assert_eq!(t.enqueue(&new).await.unwrap().id(), DeliveryId(4));

        // A second copy would mix two histories: refused, nothing changed.
        let err = s.copy_to(t).await.unwrap_err();
        assert!(
            format!("{err:#}").starts_with("the target store is not empty ("),
            "{err:#}"
        );
        assert_eq!(
            t.counts()
                .await
                .unwrap()
                .iter()
                .map(|(_, n)| n)
                .sum::<i64>(),
            4
        );
        source.finish().await;
        target.finish().await;
    }
}
