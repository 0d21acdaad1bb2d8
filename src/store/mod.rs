//! The durable record: the delivery queue, each delivery's repositories, and the journal.
//!
//! Every phase transition is written here *before* the worker acts on it, with its journal
//! entry, in one transaction: a worker killed at any moment leaves enough behind for `recover`
//! to finish or undo its work.
//!
//! # Layout
//! - `sqlite`: opening the database under `state_dir`, its write transactions, and its schema
//!   (the files of `migrations/sqlite/`, applied by `sqlx::migrate!`).
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
//!
//! # SQLite now, PostgreSQL later
//! SQLite under `state_dir` (WAL mode, so readers never block the worker) is the only
//! backend. The queries of every module but `sqlite` are written to run unchanged on
//! PostgreSQL, though none has run on one yet: `$n` parameters, `RETURNING`, `ON CONFLICT`,
//! booleans bound and read as `bool` and written as `TRUE`, the domain's enums stored as text, no
//! SQLite function. What is SQLite's alone, all of it in `sqlite` but the pool's type:
//! - the schema: `migrations/sqlite/` declares ids `INTEGER PRIMARY KEY` (SQLite's rowid)
//!   and booleans `BIGINT` 0/1. PostgreSQL needs its own files (identity columns, `BOOLEAN`).
//! - the write transactions: `BEGIN IMMEDIATE` takes SQLite's single write lock up front, and
//!   the transitions that read before they write (`enqueue`'s look for a waiting delivery of
//!   the task, `claim_next`, `cancel`) rely on writers being serialized so. PostgreSQL has no
//!   such lock: there they need row locks (`SELECT … FOR UPDATE`) or a unique index.
//! - opening: the database file, the lock file that serializes opening it, and the handover
//!   of stores migrated by the hand-written `schema_version` table of earlier lockstep
//!   versions.
//! - the pool: [`Store`] holds a `Pool<Db>`, and `Db` (here) is SQLite.
//!
//! One difference is in the queries and harmless today: `ORDER BY` on text sorts by bytes in
//! SQLite and by the database's collation in PostgreSQL (the order of `tracker_seen` and of
//! the counts).

mod alerts;
mod deliveries;
mod journal;
mod repos;
mod sqlite;
mod steps;
mod tracker_seen;
mod train;
mod transitions;
mod webhooks;

#[cfg(test)]
mod scratch;

pub use deliveries::DeliveryRow;
pub use journal::JournalRow;
pub use repos::{RepoFlag, RepoRow};
pub use steps::StepRow;
pub use train::{DiscardReason, Waits};
pub use transitions::{Enqueued, NewDelivery};

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
