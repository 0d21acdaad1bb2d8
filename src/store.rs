//! The durable record: the delivery queue, each delivery's repositories, and the journal.
//!
//! SQLite under `state_dir` by default (WAL mode, so readers never block the worker). The SQL
//! is kept to what PostgreSQL also speaks (`$n` parameters, no SQLite-only functions) so that a
//! Postgres backend is a matter of the pool, not of the queries.
//!
//! Every phase transition is written here *before* the worker acts on it: a worker killed at
//! any moment leaves enough behind for `recover` to finish or undo its work.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// The schema: `migrations/sqlite/NNNN_*.sql`, embedded at build time. A migration file is
/// frozen once released (sqlx keeps its checksum); a change of schema is a new file.
static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// The last version of the schema as the hand-written `schema_version` table counted it,
/// before sqlx's `_sqlx_migrations` took over. Its versions 1 to 4 are the migration files
/// 0001 to 0004, one for one.
const LAST_LEGACY_VERSION: i64 = 4;

/// The error recorded for a delivery cancelled while it was queued.
pub const CANCELLED_BEFORE_START: &str = "cancelled before it started";

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

/// One repository of a delivery.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RepoRow {
    pub repo: String,
    pub position: i64,
    pub branch: String,
    pub branch_sha: String,
    pub base_sha: String,
    pub rebased_sha: String,
    pub deployed: bool,
    pub merged: bool,
    pub rolled_back: bool,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JournalRow {
    pub at: i64,
    pub phase: String,
    pub repo: String,
    pub event: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StepRow {
    pub id: i64,
    pub repo: String,
    pub step: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i64>,
    pub outcome: String,
    pub log_path: String,
    /// The step's process (and process group) id while it runs.
    pub pid: Option<i64>,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A new delivery request.
#[derive(Debug, Clone, Default)]
pub struct NewDelivery {
    pub task: String,
    pub priority: i64,
    pub source: String,
    pub requester: String,
    pub origin: String,
}

/// Whether `enqueue` added a delivery or found one for the task already waiting or running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    New(i64),
    Existing(i64),
}

impl Enqueued {
    pub fn id(&self) -> i64 {
        match self {
            Enqueued::New(id) | Enqueued::Existing(id) => *id,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
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
    /// Opens (creating if needed) the store in `state_dir` and brings its schema up to date.
    ///
    /// Several lockstep processes may open the store at once (two `lockstep deliver`, a hook
    /// and a worker). Switching a new database to WAL and migrating it take locks SQLite does
    /// not wait for, so opening is serialized by a lock file next to the database.
    pub async fn open(state_dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create the state folder `{}`", state_dir.display()))?;
        let lock_path = state_dir.join("lockstep.db.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open `{}`", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("cannot lock `{}`", lock_path.display()))?;
        let store = Store::connect(state_dir).await;
        drop(lock);
        store
    }

    async fn connect(state_dir: &Path) -> anyhow::Result<Store> {
        let path = state_dir.join("lockstep.db");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open the state database `{}`", path.display()))?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// A transaction that reads before it writes. It takes SQLite's write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred one would try to upgrade its read lock at the first
    /// write, and under concurrent writers SQLite refuses that upgrade at once with "database
    /// is locked" instead of waiting (busy_timeout does not apply), losing the request.
    async fn write_tx(&self) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Brings the schema up to date, or refuses a store a newer lockstep has migrated further.
    async fn migrate(&self) -> anyhow::Result<()> {
        self.carry_over_schema_version().await?;
        MIGRATOR.run(&self.pool).await.map_err(migrate_error)
    }

    /// Hands a store migrated by the `schema_version` table over to sqlx's bookkeeping: its
    /// versions are recorded as applied (without running them again) and the old table is
    /// dropped, in one transaction, so this happens exactly once. The data is not touched.
    async fn carry_over_schema_version(&self) -> anyhow::Result<()> {
        let legacy: bool = sqlx::query_scalar(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
        )
        .fetch_one(&self.pool)
        .await?;
        if !legacy {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version")
            .fetch_one(&mut *tx)
            .await?;
        let version = version.unwrap_or(0);
        if version > LAST_LEGACY_VERSION {
            return Err(newer_lockstep(version));
        }
        if version > 0 {
            MIGRATOR
                .skip(&mut *tx, Some(version))
                .await
                .map_err(migrate_error)?;
        }
        sqlx::query("DROP TABLE schema_version")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Queues a delivery, unless one for the same task is already queued or running.
    pub async fn enqueue(&self, d: &NewDelivery) -> anyhow::Result<Enqueued> {
        let mut tx = self.write_tx().await?;
        let existing: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM deliveries WHERE task = $1 AND state IN ('queued', 'running') ORDER BY id LIMIT 1",
        )
        .bind(&d.task)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = existing {
            return Ok(Enqueued::Existing(id));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO deliveries (task, state, priority, source, requester, origin, created_at) \
             VALUES ($1, 'queued', $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&d.task)
        .bind(d.priority)
        .bind(&d.source)
        .bind(&d.requester)
        .bind(&d.origin)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO journal (delivery_id, at, phase, event, detail) VALUES ($1, $2, 'queue', 'queued', $3)",
        )
        .bind(id)
        .bind(now_ms())
        .bind(format!("by {} via {}", if d.requester.is_empty() { "unknown" } else { &d.requester }, d.source))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Enqueued::New(id))
    }

    pub async fn delivery(&self, id: i64) -> anyhow::Result<Option<DeliveryRow>> {
        let row = sqlx::query_as(select_deliveries!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    /// Queued deliveries in the order they will run: priority first, then age.
    pub async fn queued(&self) -> anyhow::Result<Vec<DeliveryRow>> {
        let rows = sqlx::query_as(select_deliveries!(
            "WHERE state = 'queued' ORDER BY priority DESC, id ASC"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    pub async fn running(&self) -> anyhow::Result<Vec<DeliveryRow>> {
        let rows = sqlx::query_as(select_deliveries!("WHERE state = 'running' ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    /// The most recent finished deliveries, newest first.
    pub async fn history(&self, limit: i64) -> anyhow::Result<Vec<DeliveryRow>> {
        let rows = sqlx::query_as(select_deliveries!(
            "WHERE state IN ('delivered', 'failed', 'cancelled') \
             ORDER BY finished_at DESC, id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Counts of deliveries by state.
    pub async fn counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = sqlx::query_as(
            "SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state ORDER BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Takes the next queued delivery and marks it running, atomically.
    pub async fn claim_next(&self) -> anyhow::Result<Option<DeliveryRow>> {
        let mut tx = self.write_tx().await?;
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM deliveries WHERE state = 'queued' ORDER BY priority DESC, id ASC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = next else { return Ok(None) };
        // A delivery requeued after a crash keeps the phase it resumes at.
        sqlx::query(
            "UPDATE deliveries SET state = 'running', started_at = $2, \
             phase = CASE WHEN phase = '' THEN 'rebase' ELSE phase END WHERE id = $1",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO journal (delivery_id, at, phase, event) VALUES ($1, $2, 'queue', 'started')")
            .bind(id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.delivery(id).await
    }

    /// Records a phase transition (before the phase acts).
    pub async fn set_phase(&self, id: i64, phase: &str) -> anyhow::Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE deliveries SET phase = $2 WHERE id = $1")
            .bind(id)
            .bind(phase)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO journal (delivery_id, at, phase, event) VALUES ($1, $2, $3, 'phase')",
        )
        .bind(id)
        .bind(now_ms())
        .bind(phase)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records why a delivery failed and that it is rolling back (it stays running until the
    /// rollback is done).
    pub async fn mark_failing(&self, id: i64, error: &str) -> anyhow::Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE deliveries SET phase = 'rollback', error = $2 WHERE id = $1")
            .bind(id)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO journal (delivery_id, at, phase, event, detail) VALUES ($1, $2, 'rollback', 'phase', $3)",
        )
        .bind(id)
        .bind(now_ms())
        .bind(error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends to a delivery's journal.
    pub async fn journal(
        &self,
        id: i64,
        phase: &str,
        repo: &str,
        event: &str,
        detail: &str,
    ) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO journal (delivery_id, at, phase, repo, event, detail) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id)
            .bind(now_ms())
            .bind(phase)
            .bind(repo)
            .bind(event)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn journal_of(&self, id: i64) -> anyhow::Result<Vec<JournalRow>> {
        let rows = sqlx::query_as(
            "SELECT at, phase, repo, event, detail FROM journal WHERE delivery_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Ends a delivery.
    pub async fn finish(&self, id: i64, state: State, error: &str) -> anyhow::Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE deliveries SET state = $2, error = $3, finished_at = $4 WHERE id = $1")
            .bind(id)
            .bind(state)
            .bind(error)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO journal (delivery_id, at, phase, event, detail) VALUES ($1, $2, 'done', $3, $4)")
            .bind(id)
            .bind(now_ms())
            .bind(state)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Puts a running delivery back in the queue, keeping its place (after a crash);
    /// `resume` is the phase to resume at ("" to start over).
    pub async fn requeue(&self, id: i64, resume: &str, why: &str) -> anyhow::Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE deliveries SET state = 'queued', phase = $2 WHERE id = $1")
            .bind(id)
            .bind(resume)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO journal (delivery_id, at, phase, event, detail) VALUES ($1, $2, 'queue', 'requeued', $3)",
        )
        .bind(id)
        .bind(now_ms())
        .bind(why)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Asks for a delivery to stop: a queued one is cancelled at once, a running one at its
    /// next checkpoint. Returns the state it was in.
    pub async fn cancel(&self, id: i64) -> anyhow::Result<Option<State>> {
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
        sqlx::query(
            "INSERT INTO journal (delivery_id, at, phase, event, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(now_ms())
        .bind(journal_phase)
        .bind(event)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(state))
    }

    pub async fn cancel_requested(&self, id: i64) -> anyhow::Result<bool> {
        let cancel = sqlx::query_scalar("SELECT cancel FROM deliveries WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(cancel)
    }

    /// Replaces the repositories of a delivery (the rebase phase finds them).
    pub async fn set_repos(&self, id: i64, repos: &[RepoRow]) -> anyhow::Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM delivery_repos WHERE delivery_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for r in repos {
            sqlx::query(
                "INSERT INTO delivery_repos (delivery_id, position, repo, branch, branch_sha, base_sha, rebased_sha) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(r.position)
            .bind(&r.repo)
            .bind(&r.branch)
            .bind(&r.branch_sha)
            .bind(&r.base_sha)
            .bind(&r.rebased_sha)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn repos(&self, id: i64) -> anyhow::Result<Vec<RepoRow>> {
        let rows = sqlx::query_as(
            "SELECT repo, position, branch, branch_sha, base_sha, rebased_sha, deployed, merged, rolled_back \
             FROM delivery_repos WHERE delivery_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Sets one flag (`deployed`, `merged`, `rolled_back`) of a delivery's repository.
    pub async fn set_repo_flag(
        &self,
        id: i64,
        repo: &str,
        flag: RepoFlag,
        value: bool,
    ) -> anyhow::Result<()> {
        let sql = match flag {
            RepoFlag::Deployed => {
                "UPDATE delivery_repos SET deployed = $3 WHERE delivery_id = $1 AND repo = $2"
            }
            RepoFlag::Merged => {
                "UPDATE delivery_repos SET merged = $3 WHERE delivery_id = $1 AND repo = $2"
            }
            RepoFlag::RolledBack => {
                "UPDATE delivery_repos SET rolled_back = $3 WHERE delivery_id = $1 AND repo = $2"
            }
        };
        sqlx::query(sql)
            .bind(id)
            .bind(repo)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Starts a step record; returns its id.
    pub async fn step_started(
        &self,
        id: i64,
        repo: &str,
        step: &str,
        log_path: &str,
    ) -> anyhow::Result<i64> {
        let step_id = sqlx::query_scalar(
            "INSERT INTO steps (delivery_id, repo, step, started_at, log_path) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(id)
        .bind(repo)
        .bind(step)
        .bind(now_ms())
        .bind(log_path)
        .fetch_one(&self.pool)
        .await?;
        Ok(step_id)
    }

    /// Records the process of a running step, so that a worker taking over after a crash can
    /// stop what the dead one left running.
    pub async fn step_pid(&self, step_id: i64, pid: i32) -> anyhow::Result<()> {
        sqlx::query("UPDATE steps SET pid = $2 WHERE id = $1")
            .bind(step_id)
            .bind(i64::from(pid))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn step_finished(
        &self,
        step_id: i64,
        exit_code: Option<i32>,
        outcome: &str,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE steps SET finished_at = $2, exit_code = $3, outcome = $4 WHERE id = $1",
        )
        .bind(step_id)
        .bind(now_ms())
        .bind(exit_code.map(i64::from))
        .bind(outcome)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn steps(&self, id: i64) -> anyhow::Result<Vec<StepRow>> {
        let rows = sqlx::query_as(
            "SELECT id, repo, step, started_at, finished_at, exit_code, outcome, log_path, pid \
             FROM steps WHERE delivery_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Records a webhook delivery id; false when it was already recorded (a replay).
    pub async fn remember_webhook(&self, id: &str) -> anyhow::Result<bool> {
        let done = sqlx::query(
            "INSERT INTO webhook_deliveries (id, received_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets a webhook delivery id (its handling failed, so a redelivery may retry it).
    pub async fn forget_webhook(&self, id: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM webhook_deliveries WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops webhook delivery ids received before `before_ms`.
    pub async fn prune_webhooks(&self, before_ms: i64) -> anyhow::Result<u64> {
        let done = sqlx::query("DELETE FROM webhook_deliveries WHERE received_at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The tasks the tracker poller has seen in a for-delivery status, with that status.
    pub async fn tracker_seen(&self) -> anyhow::Result<Vec<(String, String)>> {
        let rows = sqlx::query_as("SELECT task, status FROM tracker_seen ORDER BY task")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    pub async fn set_tracker_seen(&self, task: &str, status: &str) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO tracker_seen (task, status, seen_at) VALUES ($1, $2, $3) \
             ON CONFLICT (task) DO UPDATE SET status = $2, seen_at = $3",
        )
        .bind(task)
        .bind(status)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn forget_tracker_seen(&self, task: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM tracker_seen WHERE task = $1")
            .bind(task)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest delivery of a task, whatever its state.
    pub async fn latest_of_task(&self, task: &str) -> anyhow::Result<Option<DeliveryRow>> {
        let row = sqlx::query_as(select_deliveries!(
            "WHERE task = $1 ORDER BY id DESC LIMIT 1"
        ))
        .bind(task)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// Counts of deliveries by source (for the benchmark and metrics).
    pub async fn count_by_source(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = sqlx::query_as(
            "SELECT source, COUNT(*) AS n FROM deliveries GROUP BY source ORDER BY source",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}

fn newer_lockstep(version: i64) -> anyhow::Error {
    anyhow::anyhow!(
        "the state database is from a newer lockstep (schema {version}); upgrade lockstep"
    )
}

fn migrate_error(e: MigrateError) -> anyhow::Error {
    match e {
        MigrateError::VersionMissing(version) => newer_lockstep(version),
        e => anyhow::Error::new(e).context("cannot migrate the state database"),
    }
}

#[derive(Debug, Clone, Copy)]
pub enum RepoFlag {
    Deployed,
    Merged,
    RolledBack,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queue_order_dedup_and_claim() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
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
        let order: Vec<String> = s
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
            s.latest_of_task("T-1").await.unwrap().unwrap().state,
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
                    task: format!("T-{i}"),
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
    async fn a_state_is_stored_as_its_lowercase_name() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
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
            let text: String = sqlx::query_scalar("SELECT state FROM deliveries WHERE id = $1")
                .bind(id)
                .fetch_one(&s.pool)
                .await
                .unwrap();
            assert_eq!(text, state.as_str());
            assert_eq!(s.delivery(id).await.unwrap().unwrap().state, state);
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
        .fetch_one(&s.pool)
        .await
        .unwrap();
        assert_eq!(stored, (0, 1, 0, 1));
        let r = &s.repos(id).await.unwrap()[0];
        assert_eq!((r.deployed, r.merged, r.rolled_back), (false, true, false));
        assert!(s.cancel_requested(id).await.unwrap());
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
        s.set_phase(id, "test").await.unwrap();
        // The journal write fails, as it would if the process died or the disk filled up
        // between the two writes of the requeue.
        sqlx::raw_sql(
            "CREATE TRIGGER journal_fails BEFORE INSERT ON journal WHEN NEW.event = 'requeued' \
             BEGIN SELECT RAISE(ABORT, 'disk full'); END",
        )
        .execute(&s.pool)
        .await
        .unwrap();
        let resumed_at = "test";
        assert!(
            s.requeue(id, resumed_at, "the worker stopped")
                .await
                .is_err()
        );
        // Not queued without a word in the journal: still running, so `recover` sees it and
        // tries again.
        let d = s.delivery(id).await.unwrap().unwrap();
        assert_eq!((d.state, d.phase.as_str()), (State::Running, "test"));
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
        assert_eq!((d.state, d.phase.as_str()), (State::Queued, "test"));
        let last = s.journal_of(id).await.unwrap().pop().unwrap();
        assert_eq!(
            (last.event.as_str(), last.detail.as_str()),
            ("requeued", "the worker stopped")
        );
    }

    #[tokio::test]
    async fn replayed_webhooks_are_recognised_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        assert!(s.remember_webhook("d-1").await.unwrap());
        assert!(!s.remember_webhook("d-1").await.unwrap());
        let s = Store::open(dir.path()).await.unwrap();
        assert!(!s.remember_webhook("d-1").await.unwrap());
        s.forget_webhook("d-1").await.unwrap();
        assert!(s.remember_webhook("d-1").await.unwrap());
        assert_eq!(s.prune_webhooks(now_ms() + 1).await.unwrap(), 1);
        assert!(s.remember_webhook("d-1").await.unwrap());
    }

    /// The schema as the hand-written migrations wrote it (before `migrations/`), batch by
    /// batch; a batch's index + 1 was its version in `schema_version`. Kept verbatim: it is
    /// what stores in the field were built with.
    const LEGACY_BATCHES: [&str; 4] = [
        r#"
CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY,
    task        TEXT NOT NULL,
    state       TEXT NOT NULL,
    phase       TEXT NOT NULL DEFAULT '',
    priority    BIGINT NOT NULL DEFAULT 0,
    source      TEXT NOT NULL DEFAULT 'cli',
    requester   TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    started_at  BIGINT,
    finished_at BIGINT,
    error       TEXT NOT NULL DEFAULT '',
    cancel      BIGINT NOT NULL DEFAULT 0,
    origin      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX deliveries_state ON deliveries (state, priority, id);
CREATE TABLE delivery_repos (
    delivery_id  BIGINT NOT NULL REFERENCES deliveries (id),
    position     BIGINT NOT NULL,
    repo         TEXT NOT NULL,
    branch       TEXT NOT NULL,
    branch_sha   TEXT NOT NULL,
    base_sha     TEXT NOT NULL,
    rebased_sha  TEXT NOT NULL DEFAULT '',
    deployed     BIGINT NOT NULL DEFAULT 0,
    merged       BIGINT NOT NULL DEFAULT 0,
    rolled_back  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (delivery_id, repo)
);
CREATE TABLE journal (
    id          INTEGER PRIMARY KEY,
    delivery_id BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    phase       TEXT NOT NULL,
    repo        TEXT NOT NULL DEFAULT '',
    event       TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX journal_delivery ON journal (delivery_id, id);
CREATE TABLE steps (
    id          INTEGER PRIMARY KEY,
    delivery_id BIGINT NOT NULL,
    repo        TEXT NOT NULL,
    step        TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    exit_code   BIGINT,
    outcome     TEXT NOT NULL DEFAULT 'running',
    log_path    TEXT NOT NULL
);
CREATE INDEX steps_delivery ON steps (delivery_id, id);
CREATE TABLE hook_decisions (
    rule     TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    count    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (rule, outcome)
);
    "#,
        r#"
CREATE TABLE webhook_deliveries (
    id          TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_at ON webhook_deliveries (received_at);
CREATE TABLE tracker_seen (
    task     TEXT PRIMARY KEY,
    status   TEXT NOT NULL,
    seen_at  BIGINT NOT NULL
);
    "#,
        r#"
ALTER TABLE steps ADD COLUMN pid BIGINT;
    "#,
        r#"
DROP TABLE hook_decisions;
    "#,
    ];

    /// A store as a lockstep of the `schema_version` days left it, migrated to `version`.
    async fn legacy_store(dir: &Path, version: usize) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(dir.join("lockstep.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        sqlx::raw_sql("CREATE TABLE schema_version (version BIGINT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        for (i, batch) in LEGACY_BATCHES.iter().take(version).enumerate() {
            sqlx::raw_sql(*batch).execute(&pool).await.unwrap();
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(i as i64 + 1)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool
    }

    /// Every table's and index's definition, but the bookkeeping of migrations (sqlx's, and
    /// the `schema_version` table before it).
    async fn schema(pool: &SqlitePool) -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT name, sql FROM sqlite_master WHERE name NOT LIKE '\\_sqlx%' ESCAPE '\\' \
             AND name <> 'schema_version' AND sql IS NOT NULL ORDER BY name",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    }

    /// The versions sqlx counts as applied, and whether it ran them (`execution_time` is -1
    /// for a version carried over from `schema_version`).
    async fn applied(pool: &SqlitePool) -> Vec<(i64, bool)> {
        sqlx::query_as("SELECT version, execution_time >= 0 FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_store_of_the_schema_version_days_opens_with_its_data_intact() {
        let dir = tempfile::tempdir().unwrap();
        let old = legacy_store(dir.path(), 4).await;
        sqlx::raw_sql(
            "INSERT INTO deliveries (id, task, state, phase, priority, source, requester, \
                 created_at, started_at, finished_at, error, cancel, origin) VALUES \
             (1, 'T-1', 'delivered', 'merge', 0, 'cli', 'ann', 10, 11, 12, '', 0, ''), \
             (2, 'T-2', 'running', 'test', 5, 'github', 'bob', 20, 21, NULL, '', 1, 'o/r#2'), \
             (3, 'T-3', 'queued', '', 0, 'tracker', '', 30, NULL, NULL, '', 0, '');
             INSERT INTO delivery_repos (delivery_id, position, repo, branch, branch_sha, \
                 base_sha, rebased_sha, deployed, merged, rolled_back) VALUES \
             (1, 0, 'api', 'feature/T-1', 'b1', 'm1', 'r1', 1, 1, 0), \
             (2, 0, 'web', 'feature/T-2', 'b2', 'm2', '', 0, 0, 0);
             INSERT INTO journal (delivery_id, at, phase, repo, event, detail) VALUES \
             (1, 10, 'queue', '', 'queued', 'by ann via cli'), (1, 12, 'done', '', 'delivered', ''), \
             (2, 21, 'test', 'web', 'phase', '');
             INSERT INTO steps (delivery_id, repo, step, started_at, finished_at, exit_code, \
                 outcome, log_path, pid) VALUES \
             (2, 'web', 'test', 21, NULL, NULL, 'running', 'logs/2/web-test.log', 4242);
             INSERT INTO webhook_deliveries (id, received_at) VALUES ('d-1', 5);
             INSERT INTO tracker_seen (task, status, seen_at) VALUES ('T-3', 'For Delivery', 6);",
        )
        .execute(&old)
        .await
        .unwrap();
        let before = schema(&old).await;
        old.close().await;

        let s = Store::open(dir.path()).await.unwrap();
        assert_eq!(
            schema(&s.pool).await,
            before,
            "the schema is the one it had"
        );
        assert_eq!(
            applied(&s.pool).await,
            [(1, false), (2, false), (3, false), (4, false)]
        );
        let delivered = s.delivery(1).await.unwrap().unwrap();
        assert_eq!(
            (
                delivered.task.as_str(),
                delivered.state,
                delivered.finished_at
            ),
            ("T-1", State::Delivered, Some(12))
        );
        let running = s.running().await.unwrap();
        assert_eq!(running.len(), 1);
        let r = &running[0];
        assert_eq!(
            (
                r.id,
                r.phase.as_str(),
                r.priority,
                r.source.as_str(),
                r.origin.as_str(),
                r.cancel
            ),
            (2, "test", 5, "github", "o/r#2", true)
        );
        assert_eq!(s.queued().await.unwrap()[0].task, "T-3");
        let repos = s.repos(1).await.unwrap();
        assert_eq!(
            (
                repos[0].repo.as_str(),
                repos[0].deployed,
                repos[0].merged,
                repos[0].rolled_back
            ),
            ("api", true, true, false)
        );
        let journal = s.journal_of(1).await.unwrap();
        assert_eq!(
            journal.iter().map(|j| j.event.as_str()).collect::<Vec<_>>(),
            ["queued", "delivered"]
        );
        let steps = s.steps(2).await.unwrap();
        assert_eq!(
            (steps[0].outcome.as_str(), steps[0].pid),
            ("running", Some(4242))
        );
        assert!(
            !s.remember_webhook("d-1").await.unwrap(),
            "a replay is still one"
        );
        assert_eq!(
            s.tracker_seen().await.unwrap(),
            [("T-3".to_string(), "For Delivery".to_string())]
        );
        // The store works on: a new delivery takes the next id.
        let new = NewDelivery {
            task: "T-4".into(),
            ..Default::default()
        };
        assert_eq!(s.enqueue(&new).await.unwrap(), Enqueued::New(4));

        // The carry-over happened once: the old table is gone, and opening again changes
        // nothing.
        let tables: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_version'")
                .fetch_one(&s.pool)
                .await
                .unwrap();
        assert_eq!(tables, 0);
        let s = Store::open(dir.path()).await.unwrap();
        assert_eq!(
            applied(&s.pool).await,
            [(1, false), (2, false), (3, false), (4, false)]
        );
        assert_eq!(
            s.counts()
                .await
                .unwrap()
                .iter()
                .map(|(_, n)| n)
                .sum::<i64>(),
            4
        );
    }

    #[tokio::test]
    async fn a_store_part_way_through_the_old_migrations_gets_the_rest_from_the_files() {
        let dir = tempfile::tempdir().unwrap();
        legacy_store(dir.path(), 2).await.close().await;
        let s = Store::open(dir.path()).await.unwrap();
        assert_eq!(
            applied(&s.pool).await,
            [(1, false), (2, false), (3, true), (4, true)]
        );
        let fresh = tempfile::tempdir().unwrap();
        let new = Store::open(fresh.path()).await.unwrap();
        assert_eq!(schema(&s.pool).await, schema(&new.pool).await);
        assert_eq!(
            applied(&new.pool).await,
            [(1, true), (2, true), (3, true), (4, true)]
        );
    }

    #[tokio::test]
    async fn a_store_from_a_newer_lockstep_is_refused() {
        // A newer lockstep has applied a migration this one does not know.
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        let mut newer = MIGRATOR.iter().cloned().collect::<Vec<_>>();
        newer.push(sqlx::migrate::Migration::new(
            5,
            "a later table".into(),
            sqlx::migrate::MigrationType::Simple,
            sqlx::SqlStr::from_static("CREATE TABLE later (id BIGINT)"),
            false,
        ));
        Migrator::with_migrations(newer).run(&s.pool).await.unwrap();
        let err = Store::open(dir.path()).await.unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "the state database is from a newer lockstep (schema 5); upgrade lockstep"
        );

        // The same, for a store the old `schema_version` table says is newer.
        let dir = tempfile::tempdir().unwrap();
        let old = legacy_store(dir.path(), 4).await;
        sqlx::query("INSERT INTO schema_version (version) VALUES (5)")
            .execute(&old)
            .await
            .unwrap();
        old.close().await;
        let err = Store::open(dir.path()).await.unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "the state database is from a newer lockstep (schema 5); upgrade lockstep"
        );
    }

    #[tokio::test]
    async fn tracker_seen_is_remembered_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
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
