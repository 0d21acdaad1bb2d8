//! The durable record: the delivery queue, each delivery's repositories, and the journal.
//!
//! Every phase transition is written here *before* the worker acts on it: a worker killed at
//! any moment leaves enough behind for `recover` to finish or undo its work.
//!
//! # Layout
//! - `sqlite`: opening the database under `state_dir`, its write transactions, and its schema
//!   (the files of `migrations/sqlite/`, applied by `sqlx::migrate!`).
//! - `transitions`: the queue's state transitions: enqueue, claim, phase, fail, finish,
//!   requeue, cancel.
//! - `deliveries`: [`State`], [`DeliveryRow`], and the reads of the queue and its history.
//! - `journal`: what happened to a delivery, in order.
//! - `repos`: a delivery's repositories and how far each got.
//! - `steps`: the step processes run for a delivery.
//! - `webhooks`: the ids of GitHub webhook deliveries, to refuse replays.
//! - `tracker_seen`: what the tracker poller has seen.
//!
//! SQLite under `state_dir` by default (WAL mode, so readers never block the worker). The SQL
//! is kept to what PostgreSQL also speaks (`$n` parameters, no SQLite-only functions) so that a
//! Postgres backend is a matter of the pool, not of the queries.

mod deliveries;
mod journal;
mod repos;
mod sqlite;
mod steps;
mod tracker_seen;
mod transitions;
mod webhooks;

pub use deliveries::{DeliveryRow, State};
pub use journal::JournalRow;
pub use repos::{RepoFlag, RepoRow};
pub use steps::StepRow;
pub use transitions::{CANCELLED_BEFORE_START, Enqueued, NewDelivery};

/// The database the store runs on.
type Db = sqlx::Sqlite;

/// The store: a pool of connections to the database. Cloning it is cheap (the pool is shared).
#[derive(Clone, Debug)]
pub struct Store {
    pool: sqlx::Pool<Db>,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
