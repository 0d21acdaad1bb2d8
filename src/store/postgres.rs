//! PostgreSQL: opening the store `[store] url_env` names, and its schema (the files of
//! `migrations/postgres/`, the same versions with the same meaning as `migrations/sqlite/`).
//!
//! The URL holds a password: it is read from the environment only, and no message, log or
//! error shows it (see [`redact_url`]).

use std::str::FromStr as _;
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::sqlite::migrate_error;
use super::{Pool, Store};

/// How long a session may sit idle inside a transaction before the server ends it.
const IDLE_IN_TRANSACTION: &str = "2s";

/// The schema: `migrations/postgres/NNNN_*.sql`, embedded at build time.
pub(super) static MIGRATOR: LazyLock<Migrator> =
    LazyLock::new(|| super::embed::migrations!("postgres"));

impl Store {
    /// Opens the PostgreSQL store whose URL is in the variable `var`, and brings its schema up
    /// to date.
    pub async fn open_postgres_env(var: &str) -> anyhow::Result<Store> {
        let url = std::env::var(var).map_err(|_| {
            anyhow::anyhow!(
                "`[store] url_env` names the variable `{var}`, which is not set; set it to the \
                 store's postgres:// URL"
            )
        })?;
        Store::open_postgres(&url)
            .await
            .map_err(|e| anyhow::anyhow!("the store in `{var}`: {e:#}"))
    }

    /// Opens the PostgreSQL store at `url`, and brings its schema up to date. Errors name the
    /// store by its URL without the password.
    pub async fn open_postgres(url: &str) -> anyhow::Result<Store> {
        let shown = redact_url(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| {
                anyhow::anyhow!(
                    "`{shown}` is not a PostgreSQL URL; write it \
                     postgres://user:password@host:port/database"
                )
            })?
            // A replica frozen inside a transaction (stopped, swapped out, cut off) would hold
            // the lease row's share lock, and with it the takeover, for as long as it stays
            // frozen: the server ends such a session instead. lockstep's transactions never
            // wait on anything but the database, so this never cuts a live one short.
            .options([("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION)]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot connect to `{shown}`: {}",
                    scrub(&e.to_string(), url)
                )
            })?;
        migrate(&pool).await?;
        Ok(Store::new(Pool::Postgres(pool)))
    }
}

/// Brings the schema up to date, or refuses a store a newer lockstep has migrated further.
/// Two replicas starting at once are serialized by sqlx's advisory lock.
async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.map_err(migrate_error)
}

/// A short tag of the migrations this lockstep knows (the test template is one per tag).
#[cfg(test)]
pub(super) fn schema_tag() -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for m in MIGRATOR.iter() {
        for b in m.version.to_le_bytes().iter().chain(m.checksum.iter()) {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// A database URL fit to show: its password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(a URL that cannot be shown)".into();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or("");
            let password = if user_info.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{password}@{host}{path}")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string()
        }
        None => format!("{scheme}://{authority}{path}")
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// A driver's message with any trace of the URL's password removed.
fn scrub(message: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .and_then(|(user_info, _)| user_info.split_once(':'))
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty());
    match password {
        Some(p) => message.replace(url, &redact_url(url)).replace(p, "***"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact_url("postgres://lockstep:s3cr%40t@db.example:5432/lockstep?sslmode=require"),
            "postgres://lockstep:***@db.example:5432/lockstep"
        );
        assert_eq!(
            redact_url("postgres://db.example/lockstep"),
            "postgres://db.example/lockstep"
        );
        assert_eq!(
            redact_url("postgres://me@db/x"),
            "postgres://me@db/x",
            "no password, nothing to hide"
        );
        assert_eq!(redact_url("s3cret"), "(a URL that cannot be shown)");
    }

    #[tokio::test]
    async fn a_store_from_a_newer_lockstep_is_refused() {
        let Some(t) =
            crate::store::testing::TestStore::fresh(crate::store::Backend::Postgres).await
        else {
            return;
        };
        on_pool!(t.store, |p| {
            sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'a later table', TRUE, '\\x00', 1)"
        )
        .execute(p)
        .await
        .unwrap()
        .rows_affected()
        });
        let err = Store::open_postgres(t.postgres_url().unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "the state database is from a newer lockstep (schema 9999); upgrade lockstep"
        );
        t.finish().await;
    }

    #[tokio::test]
    async fn a_store_that_cannot_be_reached_is_named_without_its_password() {
        // Nothing listens on port 1.
        let err = Store::open_postgres("postgres://lockstep:hunter2@127.0.0.1:1/lockstep")
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.starts_with("cannot connect to `postgres://lockstep:***@127.0.0.1:1/lockstep`: "),
            "{text}"
        );
        let err = Store::open_postgres("postgres://lockstep:hunter2@127.0.0.1:notaport/x")
            .await
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "`postgres://lockstep:***@127.0.0.1:notaport/x` is not a PostgreSQL URL; write it \
             postgres://user:password@host:port/database"
        );
    }
}
