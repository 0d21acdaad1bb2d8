//! Stores for tests, on either backend: SQLite in a temporary folder, or a PostgreSQL database
//! of its own, cloned from a migrated template (`scripts/postgres.sh` gives the admin URL in
//! `LOCKSTEP_TEST_ADMIN_DATABASE_URL`). Without that variable the PostgreSQL variant of a test
//! is skipped, unless `CI` is set: then it fails.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use super::{Backend, Store};

/// A store made for one test; [`TestStore::finish`] drops its database.
pub(crate) struct TestStore {
    pub(crate) store: Store,
    /// The SQLite store's folder.
    dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database's URL and name.
    database: Option<(String, String)>,
}

impl TestStore {
    /// A fresh, empty store on `backend`; `None` when PostgreSQL is not available (and `CI` is
    /// not set).
    pub(crate) async fn fresh(backend: Backend) -> Option<TestStore> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(dir.path()).await.unwrap();
                Some(TestStore {
                    store,
                    dir: Some(dir),
                    database: None,
                })
            }
            Backend::Postgres => {
                let (url, name) = fresh_database().await?;
                let store = Store::open_postgres(&url).await.unwrap();
                Some(TestStore {
                    store,
                    dir: None,
                    database: Some((url, name)),
                })
            }
        }
    }

    /// The same store opened again, as a restarted lockstep (or another replica) would.
    pub(crate) async fn reopen(&self) -> Store {
        match (&self.dir, &self.database) {
            (Some(dir), _) => Store::open(dir.path()).await.unwrap(),
            (None, Some((url, _))) => Store::open_postgres(url).await.unwrap(),
            (None, None) => unreachable!("a test store has a folder or a database"),
        }
    }

    /// The PostgreSQL store's URL.
    pub(crate) fn postgres_url(&self) -> Option<&str> {
        self.database.as_ref().map(|(url, _)| url.as_str())
    }

    /// Where a SQLite store's worker lock lives (any folder for PostgreSQL).
    pub(crate) fn state_dir(&self) -> std::path::PathBuf {
        match &self.dir {
            Some(dir) => dir.path().to_path_buf(),
            None => std::env::temp_dir(),
        }
    }

    /// Drops the test's database.
    pub(crate) async fn finish(self) {
        self.store.close().await;
        if let Some((_, name)) = self.database {
            let mut admin = admin().await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await
            .unwrap();
        }
    }
}

/// Runs a test body against a fresh store of each backend, as two tests: `sqlite` and
/// `postgres`.
macro_rules! both_backends {
    ($(
        $(#[$attr:meta])*
        async fn $name:ident($t:ident) $body:block
    )*) => {$(
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::store::testing::TestStore;
            use $crate::store::Backend;

            async fn run($t: &TestStore) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let t = TestStore::fresh(Backend::Sqlite).await.unwrap();
                run(&t).await;
                t.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(t) = TestStore::fresh(Backend::Postgres).await else {
                    return;
                };
                run(&t).await;
                t.finish().await;
            }
        }
    )*};
}
pub(crate) use both_backends;

/// The admin URL, if the tests have a PostgreSQL; panics when `CI` is set and they do not.
pub(crate) fn admin_url() -> Option<String> {
    match std::env::var("LOCKSTEP_TEST_ADMIN_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CI").is_some() => panic!(
            "CI is set but LOCKSTEP_TEST_ADMIN_DATABASE_URL is not: run `scripts/postgres.sh \
             start` and load `scripts/postgres.sh env`"
        ),
        Err(_) => {
            eprintln!("skipped: no PostgreSQL (LOCKSTEP_TEST_ADMIN_DATABASE_URL is not set)");
            None
        }
    }
}

async fn admin() -> Option<PgConnection> {
    let url = admin_url()?;
    Some(PgConnection::connect(&url).await.unwrap())
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let base = &base[..base.rfind('/').unwrap_or(base.len())];
    if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    }
}

/// A new database for one test, cloned from a template migrated once (per version of the
/// migrations) and kept between runs. Returns its URL and name.
async fn fresh_database() -> Option<(String, String)> {
    static N: AtomicU64 = AtomicU64::new(0);
    let admin_url = admin_url()?;
    let mut admin = PgConnection::connect(&admin_url).await.unwrap();
    // One creation at a time, across test processes: a template must have no session open
    // while it is copied.
    sqlx::query("SELECT pg_advisory_lock(74612012)")
        .execute(&mut admin)
        .await
        .unwrap();
    let template = format!("lockstep_tpl_{}", super::postgres::schema_tag());
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&template)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    if !exists {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {template}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let store = Store::open_postgres(&with_database(&admin_url, &template))
            .await
            .unwrap();
        store.close().await;
    }
    let name = format!(
        "lockstep_t_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE {template}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_advisory_unlock(74612012)")
        .execute(&mut admin)
        .await
        .unwrap();
    Some((with_database(&admin_url, &name), name))
}
