//! PostgreSQL stores for the sandboxes: a database of its own per sandbox, on the server of
//! `scripts/postgres.sh` (its admin URL in `LOCKSTEP_TEST_ADMIN_DATABASE_URL`).
//!
//! The sandbox's config names a variable of its own (`url_env`), which the commands and
//! servers the tests start get (`Env::command`, `ServeProc`), and the bare repositories'
//! hooks export (as a git server gives its hooks the variable).

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection as _;

thread_local! {
    /// Set while [`on_postgres`] runs a test on this thread.
    static ON_POSTGRES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the sandboxes made on this thread keep their store in PostgreSQL: inside
/// [`on_postgres`], or for the whole suite with `LOCKSTEP_TEST_BACKEND=postgres`.
pub fn suite_on_postgres() -> bool {
    ON_POSTGRES.with(std::cell::Cell::get)
        || std::env::var("LOCKSTEP_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// Runs a test written for the default store with every sandbox it makes on PostgreSQL;
/// skipped when there is no PostgreSQL to test with (a failure when `CI` is set).
pub fn on_postgres(test: fn()) {
    if admin_url("a test on PostgreSQL").is_none() {
        return;
    }
    ON_POSTGRES.with(|on| on.set(true));
    test();
    ON_POSTGRES.with(|on| on.set(false));
}

/// The admin URL, if there is a PostgreSQL to test with; panics when `CI` is set and there
/// is none.
pub fn admin_url(test: &str) -> Option<String> {
    match std::env::var("LOCKSTEP_TEST_ADMIN_DATABASE_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            super::skip(
                test,
                "PostgreSQL (LOCKSTEP_TEST_ADMIN_DATABASE_URL)",
                "run `scripts/postgres.sh start`, then \
                 `set -a; . \"$(scripts/postgres.sh env)\"; set +a`",
            );
            None
        }
    }
}

/// A database of one sandbox, dropped with it.
pub struct Database {
    /// The variable holding its URL (set in this process).
    pub var: String,
    pub url: String,
    name: String,
    admin: String,
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    let base = &base[..base.rfind('/').unwrap_or(base.len())];
    format!("{base}/{name}")
}

impl Database {
    /// A new, empty database (lockstep migrates it when it opens it).
    pub fn create(admin: &str) -> Database {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("lockstep_it_{}_{n}", std::process::id());
        block_on(async {
            let mut c = sqlx::PgConnection::connect(admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut c)
            .await
            .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut c)
                .await
                .unwrap();
        });
        let var = format!("LOCKSTEP_TEST_DATABASE_URL_{}_{n}", std::process::id());
        let url = with_database(admin, &name);
        Database {
            var,
            url,
            name,
            admin: admin.to_string(),
        }
    }
}

impl Database {
    /// Runs one statement on the database, as an operator (or a fault) would.
    pub fn execute(&self, sql: &str) -> u64 {
        let (url, sql) = (self.url.clone(), sql.to_string());
        std::thread::spawn(move || {
            block_on(async {
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut c)
                    .await
                    .unwrap()
                    .rows_affected()
            })
        })
        .join()
        .unwrap()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Off this thread's runtime, if it has one.
        let _ = std::thread::spawn(move || {
            block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut c)
                    .await;
                }
            })
        })
        .join();
    }
}
