//! SQLite: opening the database under `state_dir`, its write transactions, and its schema.
//!
//! The schema is the files of `migrations/sqlite/`, embedded by `store/embed.rs` and counted
//! in sqlx's `_sqlx_migrations` table. Stores written before that counted their versions in a
//! hand-written `schema_version` table; opening one hands its count over to sqlx once.
//!
//! A store records that it exists in a marker beside it, `lockstep.db.id` (an identity and
//! the time it was made). A marker, not a row: a row lives in the file it would vouch for,
//! and a file truncated to nothing, or deleted, takes the row with it, so that opening it
//! would look like a first start and make a new, empty store without a word. With the marker,
//! an empty or missing database where a store existed is an error that says how to go on.

use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::{Pool, Store};

/// The schema: `migrations/sqlite/NNNN_*.sql`, embedded at build time. A migration file is
/// frozen once released (sqlx keeps its checksum); a change of schema is a new file.
pub(super) static MIGRATOR: LazyLock<Migrator> =
    LazyLock::new(|| super::embed::migrations!("sqlite"));

/// The last version of the schema as the hand-written `schema_version` table counted it,
/// before sqlx's `_sqlx_migrations` took over. Its versions 1 to 4 are the migration files
/// 0001 to 0004, one for one.
const LAST_LEGACY_VERSION: i64 = 4;

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
        let marker = state_dir.join(MARKER);
        lost_store(&path, &marker)?;
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
        migrate(&pool).await?;
        // A new store, or one made before stores were marked.
        if !marker.exists() {
            std::fs::write(&marker, identity())
                .with_context(|| format!("cannot write `{}`", marker.display()))?;
        }
        Ok(Store::new(Pool::Sqlite(pool)))
    }

    /// The SQLite pool of a store that runs on SQLite (tests reading its tables).
    #[cfg(test)]
    pub(crate) fn sqlite_pool(&self) -> &SqlitePool {
        match &self.pool {
            Pool::Sqlite(p) => p,
            Pool::Postgres(_) => panic!("this store runs on PostgreSQL"),
        }
    }
}

/// The marker of a store, beside `lockstep.db` in the state folder.
const MARKER: &str = "lockstep.db.id";

/// What the marker says: an identity for this store, and when it was made.
fn identity() -> String {
    let now = super::now_ms();
    format!(
        "lockstep store {:x}-{:x}\ncreated {}\n",
        now,
        std::process::id(),
        chrono::DateTime::from_timestamp_millis(now)
            .map_or_else(|| now.to_string(), |t| t.to_rfc3339())
    )
}

/// Refuses a database file that is missing or empty where the marker says a store was made:
/// its history is gone, and starting afresh would hide that.
fn lost_store(path: &Path, marker: &Path) -> anyhow::Result<()> {
    let empty = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
    if !empty {
        return Ok(());
    }
    let Ok(made) = std::fs::read_to_string(marker) else {
        return Ok(());
    };
    let made = crate::text::escape(made.lines().collect::<Vec<_>>().join(", ").trim()).into_owned();
    let what = if path.exists() {
        "is empty"
    } else {
        "is missing"
    };
    anyhow::bail!(
        "the state database `{}` {what}, yet `{}` says a store was made here ({made}): its \
         queue and journal are gone. Restore `{}` from a backup, or, to start afresh with an \
         empty store, remove `{}`",
        path.display(),
        marker.display(),
        path.display(),
        marker.display()
    )
}

/// A write transaction, for every state transition. It takes SQLite's write lock up front
/// (`BEGIN IMMEDIATE`): a deferred one would try to upgrade its read lock at the first write,
/// and under concurrent writers SQLite refuses that upgrade at once with "database is locked"
/// instead of waiting (busy_timeout does not apply), losing the request.
pub(super) async fn begin(
    pool: &SqlitePool,
) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

/// Brings the schema up to date, or refuses a store a newer lockstep has migrated further.
async fn migrate(pool: &SqlitePool) -> anyhow::Result<()> {
    carry_over_schema_version(pool).await?;
    MIGRATOR.run(pool).await.map_err(migrate_error)
}

/// Hands a store migrated by the `schema_version` table over to sqlx's bookkeeping: its
/// versions are recorded as applied (without running them again) and the old table is
/// dropped, in one transaction, so this happens exactly once. The data is not touched.
async fn carry_over_schema_version(pool: &SqlitePool) -> anyhow::Result<()> {
    let legacy: bool = sqlx::query_scalar(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
    )
    .fetch_one(pool)
    .await?;
    if !legacy {
        return Ok(());
    }
    let mut tx = begin(pool).await?;
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

/// The refusal of a store some newer lockstep has migrated beyond what this one knows.
pub(super) fn newer_lockstep(version: i64) -> anyhow::Error {
    anyhow::anyhow!(
        "the state database is from a newer lockstep (schema {version}); upgrade lockstep"
    )
}

pub(super) fn migrate_error(e: MigrateError) -> anyhow::Error {
    match e {
        MigrateError::VersionMissing(version) => newer_lockstep(version),
        e => anyhow::Error::new(e).context("cannot migrate the state database"),
    }
}

#[cfg(test)]
mod tests {
    use sqlx::sqlite::SqlitePool;

    use super::*;
    use crate::domain::{DeliveryId, Phase, State};
    use crate::store::{Enqueued, NewDelivery};

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
    /// Every version this lockstep knows, each with whether its file ran (`false`: carried
    /// over from `schema_version`, which had versions 1 to `carried`).
    fn today(carried: i64) -> Vec<(i64, bool)> {
        MIGRATOR
            .iter()
            .map(|m| (m.version, m.version > carried))
            .collect()
    }

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
        // The schema is the one it had, plus the migrations that came after version 4.
        let fresh = tempfile::tempdir().unwrap();
        let new = Store::open(fresh.path()).await.unwrap();
        let after = schema(s.sqlite_pool()).await;
        assert_eq!(after, schema(new.sqlite_pool()).await);
        // Later migrations changed `steps` and `deliveries`; every other table is as it was.
        let kept = |(name, _): &(String, String)| name != "steps" && name != "deliveries";
        assert!(
            before.iter().filter(|t| kept(t)).all(|t| after.contains(t)),
            "{before:?}"
        );
        assert_eq!(applied(s.sqlite_pool()).await, today(4));
        let delivered = s.delivery(DeliveryId(1)).await.unwrap().unwrap();
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
                r.id.0,
                r.phase.map_or("", Phase::as_str),
                r.priority,
                r.source.as_str(),
                r.origin.as_str(),
                r.cancel
            ),
            (2, "test", 5, "github", "o/r#2", true)
        );
        assert_eq!(s.queued().await.unwrap()[0].task, "T-3");
        let repos = s.repos(DeliveryId(1)).await.unwrap();
        assert_eq!(
            (
                repos[0].repo.as_str(),
                repos[0].deployed,
                repos[0].merged,
                repos[0].rolled_back
            ),
            ("api", true, true, false)
        );
        let journal = s.journal_of(DeliveryId(1)).await.unwrap();
        assert_eq!(
            journal.iter().map(|j| j.event.as_str()).collect::<Vec<_>>(),
            ["queued", "delivered"]
        );
        let steps = s.steps(DeliveryId(2)).await.unwrap();
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
        assert_eq!(s.enqueue(&new).await.unwrap(), Enqueued::New(DeliveryId(4)));

        // The carry-over happened once: the old table is gone, and opening again changes
        // nothing.
        let tables: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_version'")
                .fetch_one(s.sqlite_pool())
                .await
                .unwrap();
        assert_eq!(tables, 0);
        let s = Store::open(dir.path()).await.unwrap();
        assert_eq!(applied(s.sqlite_pool()).await, today(4));
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
        assert_eq!(applied(s.sqlite_pool()).await, today(2));
        let fresh = tempfile::tempdir().unwrap();
        let new = Store::open(fresh.path()).await.unwrap();
        assert_eq!(
            schema(s.sqlite_pool()).await,
            schema(new.sqlite_pool()).await
        );
        assert_eq!(applied(new.sqlite_pool()).await, today(0));
    }

    #[tokio::test]
    async fn a_store_from_a_newer_lockstep_is_refused() {
        // A newer lockstep has applied a migration this one does not know.
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        let mut newer = MIGRATOR.iter().cloned().collect::<Vec<_>>();
        newer.push(sqlx::migrate::Migration::new(
            9999,
            "a later table".into(),
            sqlx::migrate::MigrationType::Simple,
            sqlx::SqlStr::from_static("CREATE TABLE later (id BIGINT)"),
            false,
        ));
        Migrator::with_migrations(newer)
            .run(s.sqlite_pool())
            .await
            .unwrap();
        let err = Store::open(dir.path()).await.unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "the state database is from a newer lockstep (schema 9999); upgrade lockstep"
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

    /// Issue 22: a store truncated to nothing, or deleted, is not taken for a first start; the
    /// error names the file and the two ways on. A first start, and a store made before
    /// stores were marked, open as before.
    #[tokio::test]
    async fn issue22_a_truncated_store_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let (db, marker) = (dir.path().join("lockstep.db"), dir.path().join(MARKER));
        let s = Store::open(dir.path()).await.unwrap();
        assert!(marker.exists(), "a new store is marked");
        s.enqueue(&crate::store::scratch::request("T-1", 0))
            .await
            .unwrap();
        s.close().await;
        for f in ["lockstep.db-wal", "lockstep.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        std::fs::File::create(&db).unwrap(); // truncated to 0 bytes
        let e = format!("{:#}", Store::open(dir.path()).await.err().unwrap());
        assert!(e.starts_with(&format!("the state database `{}` is empty, yet `{}` says a store was made here (lockstep store ", db.display(), marker.display())), "{e}");
        assert!(
            e.ends_with(&format!(
                "its queue and journal are gone. Restore `{}` from a backup, or, to start \
                 afresh with an empty store, remove `{}`",
                db.display(),
                marker.display()
            )),
            "{e}"
        );
        assert_eq!(
            std::fs::metadata(&db).unwrap().len(),
            0,
            "nothing was written"
        );
        std::fs::remove_file(&db).unwrap();
        let e = format!("{:#}", Store::open(dir.path()).await.err().unwrap());
        assert!(e.contains("` is missing, yet `"), "{e}");
        assert!(!db.exists());

        // The marker removed: a new, empty store, marked again.
        std::fs::remove_file(&marker).unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        assert!(s.queued().await.unwrap().is_empty());
        assert!(marker.exists());
        s.close().await;

        // A store made before the marker: it is marked when opened, its data kept.
        std::fs::remove_file(&marker).unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        assert!(marker.exists());
        s.close().await;
    }
}
