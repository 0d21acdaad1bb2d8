//! The durable record: the delivery queue, each delivery's repositories, and the journal.
//!
//! Every phase transition is written here *before* the worker acts on it, with its journal
//! entry, in one transaction: a worker killed at any moment leaves enough behind for `recover`
//! to finish or undo its work.
//!
//! # Layout
//! - `sqlite`: opening the database under `state_dir`, its write transactions, and its schema
//!   (the files of `migrations/sqlite/`, embedded by `embed.rs`).
//! - `transitions`: the queue's state transitions: enqueue, claim, phase, fail, finish,
//!   requeue, cancel.
//! - `train`: the pipeline's: claim a candidate, promote it to head, hold its failure, record
//!   what it is built on, discard a preparation whose base changed.
//! - `deliveries`: [`DeliveryRow`], and the reads of the queue and its history.
//! - `journal`: what happened to a delivery, in order.
//! - `repos`: a delivery's repositories and how far each got.
//! - `steps`: the step processes run for a delivery.
//! - `webhooks`: the ids of GitHub webhook deliveries, to refuse replays.
//! - `alerts`: the alerts Alertmanager reported, to act once on each; rollbacks by trigger.
//! - `tracker_seen`: what the tracker poller has seen.
//! - `autotests`: the autotests of task branches' heads, requested, run and judged.
//! - `showrooms`: a showroom per task, beside the delivery line, and where each stands.
//! - `copy`: `lockstep store copy`, a whole store into an empty PostgreSQL one.
//! - `lease`: who works the queue: the lease and its fencing epoch.
//! - `postgres`: opening a PostgreSQL store named by `[store] url_env`, and its schema (the
//!   files of `migrations/postgres/`).
//!
//! # Two backends, one set of queries
//! SQLite under `state_dir` (WAL mode, so readers never block the worker) is the embedded
//! default; PostgreSQL, when `[store] url_env` names a variable holding its URL, lets several
//! `lockstep serve` replicas share one queue. [`Store`] holds a pool of either, and each query
//! is written once: the macros `on_pool!` and `write_tx!` compile its body once per backend
//! (no `Any` driver: its values are converted at run time, and SQLite stays as fast as it was).
//! The queries are portable: `$n` parameters, `RETURNING`, `ON CONFLICT`, booleans bound and
//! read as `bool` and written as `TRUE`, the domain's enums stored as text, no function of one
//! database only. What differs is in `sqlite`, `postgres` and the `lease`:
//! - the schema: `migrations/sqlite/` declares ids `INTEGER PRIMARY KEY` (SQLite's rowid)
//!   and booleans `BIGINT` 0/1; `migrations/postgres/` identity columns and `BOOLEAN`. Both
//!   folders have the same versions, with the same meaning.
//! - the write transactions: SQLite's `BEGIN IMMEDIATE` takes its single write lock up front;
//!   PostgreSQL's transactions run side by side, so no transition reads and then writes on
//!   what it read: each is one conditional statement (`UPDATE … WHERE state = 'queued'`), or
//!   leans on a unique index (one waiting or running delivery per task).
//! - who works the queue: see `lease`.
//!
//! # Fencing
//! A worker writes only while it holds the lease, and every write it makes (transitions,
//! journal, steps, repositories) checks the lease's epoch in the same transaction: once
//! another worker has taken the lease over, a late write of the old one changes nothing and
//! fails with [`Fenced`].
//!
//! One difference is in the queries and harmless today: `ORDER BY` on text sorts by bytes in
//! SQLite and by the database's collation in PostgreSQL (the order of `tracker_seen` and of
//! the counts).

/// Runs `$body` with `$pool` bound to the store's pool, whichever the backend: the body is
/// compiled once for each.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` in a write transaction `$tx` of the store and commits it when the body ends
/// without `return` or `?` (which roll it back). The body is compiled once for each backend.
/// `fenced` (the worker's writes) first checks the lease this process holds, if any: see
/// `lease`.
macro_rules! write_tx {
    ($store:expr, |$tx:ident| $body:expr) => {
        write_tx!(@run $store, None::<$crate::store::Fence>, |$tx| $body)
    };
    ($store:expr, fenced, |$tx:ident| $body:expr) => {
        write_tx!(@run $store, $store.fence(), |$tx| $body)
    };
    (@run $store:expr, $fence:expr, |$tx:ident| $body:expr) => {{
        let fence = $fence;
        match &$store.pool {
            $crate::store::Pool::Sqlite(pool) => {
                let mut $tx = $crate::store::sqlite::begin(pool).await?;
                $crate::store::lease::check_fence!(&mut *$tx, fence.as_ref(), "");
                let value = $body;
                $tx.commit().await?;
                value
            }
            $crate::store::Pool::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                $crate::store::lease::check_fence!(&mut *$tx, fence.as_ref(), " FOR SHARE");
                let value = $body;
                $tx.commit().await?;
                value
            }
        }
    }};
}

mod alerts;
mod autotests;
mod codec;
mod copy;
mod deliveries;
mod embed;
mod journal;
mod lease;
mod postgres;
mod repos;
mod showrooms;
mod sqlite;
mod statuses;
mod steps;
#[cfg(test)]
pub(crate) mod testing;
mod tracker_seen;
mod train;
mod transitions;
mod webhooks;

use std::sync::Arc;

use serde::Serialize;

use crate::config::Config;

#[cfg(test)]
mod scratch;

pub use autotests::{AutotestEnd, AutotestRow, NewAutotest};
pub use deliveries::DeliveryRow;
pub use journal::JournalRow;
pub use repos::{RepoFlag, RepoRow};
pub use showrooms::{ShowroomRow, ShowroomState};
pub use steps::StepRow;
pub use train::{DiscardReason, Waits};
pub use transitions::{Enqueued, NewDelivery};

pub use lease::{Fence, Fenced, Lease, LeaseEvents, Role};

/// The pool of whichever database the store runs on.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Which database a store runs on, for `/healthz` and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The store: a pool of connections to the database, and the fencing epoch of the lease this
/// process holds, if any. Cloning it is cheap (both are shared).
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    lease: Arc<lease::Held>,
}

impl Store {
    fn new(pool: Pool) -> Store {
        Store {
            pool,
            lease: Arc::default(),
        }
    }

    /// Opens the store `config` names: PostgreSQL when `[store] url_env` is set, else SQLite
    /// in `state_dir`.
    pub async fn for_config(config: &Config) -> anyhow::Result<Store> {
        match &config.store.url_env {
            Some(var) => Store::open_postgres_env(var).await,
            None => Store::open(&config.state_dir()).await,
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes the pool's connections (a process about to end, a test about to drop its
    /// database).
    pub async fn close(&self) {
        on_pool!(self, |p| p.close().await)
    }

    /// The rows of a `SELECT label, COUNT(*) … GROUP BY label` query, for the metrics.
    async fn counted(&self, sql: &'static str) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = on_pool!(self, |pool| sqlx::query_as(sql).fetch_all(pool).await?);
        Ok(rows)
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
