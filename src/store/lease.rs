//! Who works the queue: the lease, and the fencing epoch every write of its holder carries.
//!
//! One row of `leases` per queue: its holder, an epoch counting the times it changed hands,
//! and (PostgreSQL) when it expires, by the database's clock. Taking the lease raises the
//! epoch; the holder's writes check, in their own transaction, that the epoch is still the
//! one it took (`write_tx!`'s fenced form). So a worker that paused, lost the network or lost
//! the lease in any other way can write nothing once another has taken over: its late writes
//! fail with [`Fenced`] (Kleppmann's fencing token).
//!
//! - PostgreSQL: a lease row renewed every third of `[store] lease` by
//!   `UPDATE … WHERE holder = me AND epoch = mine`, taken over by another replica once
//!   expired (`expires_at` below the database's clock). The holder gives up on its own when
//!   it has not renewed for a whole lease (it may be cut off from the database), which is
//!   before any other replica can take over, since the database sets the expiry after the
//!   holder sent its renewal. A lease row, not a session advisory lock: the lease survives a
//!   dropped connection (the pool reconnects), its holder and age are visible in the table,
//!   and it does not depend on the server noticing a dead client (TCP keepalives) to move.
//! - SQLite: one host, so the OS file lock `worker.lock` in `state_dir` decides at once
//!   (released the moment its holder dies, even by SIGKILL); taking it raises the epoch in the
//!   same row, so the fencing is one code path for both.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::watch;

use super::{Pool, Store};

/// The name of the queue's lease (one database holds one ecosystem's queue).
const QUEUE: &str = "queue";

/// The database's clock in milliseconds since the epoch (PostgreSQL).
macro_rules! pg_now_ms {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
    };
}

/// A lease's fencing token: the epoch its holder took it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub epoch: i64,
}

/// A write refused because the lease it was made under was lost or taken over.
#[derive(Debug, thiserror::Error)]
#[error(
    "this worker lost the lease `{name}` (epoch {epoch}); its write was refused and the \
     worker that holds it now carries on"
)]
pub struct Fenced {
    pub name: String,
    pub epoch: i64,
}

/// A replica's part in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It holds the lease and works the queue.
    Leader,
    /// Another holds the lease (or none does yet); it takes requests and waits.
    Standby,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Standby => "standby",
        }
    }
}

/// What the store knows of the lease this process holds, shared by its clones.
#[derive(Debug, Default)]
pub(super) struct Held {
    fence: Mutex<Option<Fence>>,
    lost: AtomicBool,
    renewals: AtomicU64,
    losses: AtomicU64,
}

/// Counts for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseEvents {
    pub renewals: u64,
    pub losses: u64,
}

impl Store {
    /// The fence this process's worker writes under: `None` when it holds no lease (the CLI
    /// reading, a replica taking requests), `Some` while it leads; a lost lease gives a fence
    /// no epoch matches, so every fenced write is refused.
    pub(super) fn fence(&self) -> Option<Fence> {
        let fence = self.lease.fence.lock().unwrap_or_else(|e| e.into_inner());
        fence.clone().map(|mut f| {
            if self.lease.lost.load(Ordering::SeqCst) {
                f.epoch = -1;
            }
            f
        })
    }

    /// Whether this process holds the queue's lease.
    pub fn role(&self) -> Role {
        let leads = self
            .lease
            .fence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
            && !self.lease.lost.load(Ordering::SeqCst);
        if leads { Role::Leader } else { Role::Standby }
    }

    pub fn lease_events(&self) -> LeaseEvents {
        LeaseEvents {
            renewals: self.lease.renewals.load(Ordering::Relaxed),
            losses: self.lease.losses.load(Ordering::Relaxed),
        }
    }
}

/// PostgreSQL's `lock_not_available`: a `lock_timeout` ran out.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Checks, in a write transaction, that the fence still holds: the lease's epoch is the one
/// it was taken at. `$lock` is PostgreSQL's ` FOR SHARE` (a takeover waits for the write to
/// commit) or nothing (SQLite's writers are serialized anyway).
macro_rules! check_fence {
    ($conn:expr, $fence:expr, $lock:literal) => {
        if let Some(fence) = $fence {
            let epoch: Option<i64> =
                sqlx::query_scalar(concat!("SELECT epoch FROM leases WHERE name = $1", $lock))
                    .bind(&fence.name)
                    .fetch_optional($conn)
                    .await?;
            if epoch != Some(fence.epoch) || fence.epoch < 0 {
                return Err($crate::store::Fenced {
                    name: fence.name.clone(),
                    epoch: fence.epoch,
                }
                .into());
            }
        }
    };
}
pub(super) use check_fence;

/// The queue's lease, held while this value lives. Dropping it lets it go (SQLite at once;
/// PostgreSQL when it expires, or at once through [`Lease::release`]).
pub struct Lease {
    store: Store,
    fence: Fence,
    holder: String,
    lost: watch::Receiver<bool>,
    renewer: Option<tokio::task::JoinHandle<()>>,
    _file: Option<File>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("fence", &self.fence)
            .field("holder", &self.holder)
            .finish()
    }
}

impl Lease {
    /// Takes the queue's lease if nobody holds it: SQLite's file lock in `state_dir`, or
    /// PostgreSQL's lease row (kept for `lease`, renewed every third of it). While it is held,
    /// the store's fenced writes carry its epoch.
    pub async fn try_acquire(
        store: &Store,
        state_dir: &Path,
        lease: Duration,
    ) -> anyhow::Result<Option<Lease>> {
        let holder = holder_id();
        let (epoch, file) = match &store.pool {
            Pool::Sqlite(pool) => {
                let Some(file) = lock_file(state_dir)? else {
                    return Ok(None);
                };
                let epoch: i64 = sqlx::query_scalar(
                    "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, 0) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                     epoch = leases.epoch + 1 RETURNING epoch",
                )
                .bind(QUEUE)
                .bind(&holder)
                .fetch_one(pool)
                .await?;
                (epoch, Some(file))
            }
            Pool::Postgres(pool) => {
                // A standby never waits on the row: a holder writing under it (or frozen in
                // the middle of a write) makes this try fail, and the next one succeed.
                let mut tx = pool.begin().await?;
                sqlx::query("SET LOCAL lock_timeout = '500ms'")
                    .execute(&mut *tx)
                    .await?;
                let taken: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(concat!(
                    "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, ",
                    pg_now_ms!(),
                    " + $3) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                     epoch = leases.epoch + 1, expires_at = excluded.expires_at \
                     WHERE leases.expires_at < ",
                    pg_now_ms!(),
                    " RETURNING epoch"
                ))
                .bind(QUEUE)
                .bind(&holder)
                .bind(millis(lease))
                .fetch_optional(&mut *tx)
                .await;
                let epoch = match taken {
                    Err(sqlx::Error::Database(e))
                        if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) =>
                    {
                        return Ok(None);
                    }
                    taken => taken?,
                };
                tx.commit().await?;
                match epoch {
                    Some(e) => (e, None),
                    None => return Ok(None),
                }
            }
        };
        let fence = Fence {
            name: QUEUE.into(),
            epoch,
        };
        *store.lease.fence.lock().unwrap_or_else(|e| e.into_inner()) = Some(fence.clone());
        store.lease.lost.store(false, Ordering::SeqCst);
        let (lost_tx, lost) = watch::channel(false);
        let renewer = match &store.pool {
            Pool::Sqlite(_) => {
                // The file lock is held until dropped: nothing to renew, never lost (`lost`
                // waits forever once the sender is gone).
                drop(lost_tx);
                None
            }
            Pool::Postgres(pool) => Some(tokio::spawn(renew(
                store.clone(),
                pool.clone(),
                fence.clone(),
                holder.clone(),
                lease,
                lost_tx,
            ))),
        };
        Ok(Some(Lease {
            store: store.clone(),
            fence,
            holder,
            lost,
            renewer,
            _file: file,
        }))
    }

    pub fn epoch(&self) -> i64 {
        self.fence.epoch
    }

    /// Resolves when the lease is lost (taken over, or not renewed for a whole lease); never
    /// for SQLite's file lock.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        if lost.wait_for(|l| *l).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Lets the lease go at once, so that a standby takes over without waiting for it to
    /// expire (a clean shutdown).
    pub async fn release(self) {
        if let Pool::Postgres(pool) = &self.store.pool {
            let released = sqlx::query(
                "UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2 AND epoch = $3",
            )
            .bind(&self.fence.name)
            .bind(&self.holder)
            .bind(self.fence.epoch)
            .execute(pool)
            .await;
            if let Err(e) = released {
                tracing::warn!("cannot release the lease; it expires by itself: {e}");
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        let mut fence = self
            .store
            .lease
            .fence
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if fence.as_ref() == Some(&self.fence) {
            *fence = None;
        }
    }
}

/// Keeps the lease: renews it every third of `lease`, and marks it lost (refusing every
/// fenced write from then on) when another holds it or when a whole lease went by without a
/// renewal.
async fn renew(
    store: Store,
    pool: sqlx::PgPool,
    fence: Fence,
    holder: String,
    lease: Duration,
    lost: watch::Sender<bool>,
) {
    let every = lease / 3;
    // The lease runs out a whole lease after the renewal that last succeeded was *sent*: the
    // database set its expiry later than that.
    let mut valid_until = Instant::now() + lease;
    loop {
        let next = tokio::time::Instant::now() + every;
        let sent = Instant::now();
        let renewed = tokio::time::timeout(
            every,
            sqlx::query(concat!(
                "UPDATE leases SET expires_at = ",
                pg_now_ms!(),
                " + $4 WHERE name = $1 AND holder = $2 AND epoch = $3"
            ))
            .bind(&fence.name)
            .bind(&holder)
            .bind(fence.epoch)
            .bind(millis(lease))
            .execute(&pool),
        )
        .await;
        let why = match renewed {
            Ok(Ok(done)) if done.rows_affected() == 1 => {
                store.lease.renewals.fetch_add(1, Ordering::Relaxed);
                valid_until = sent + lease;
                None
            }
            Ok(Ok(_)) => Some("another replica took it over".to_string()),
            Ok(Err(e)) if Instant::now() >= valid_until => {
                Some(format!("it could not be renewed for a whole lease: {e}"))
            }
            Err(_) if Instant::now() >= valid_until => {
                Some("it could not be renewed for a whole lease".to_string())
            }
            Ok(Err(e)) => {
                tracing::warn!("cannot renew the lease (retrying): {e}");
                None
            }
            Err(_) => None,
        };
        if let Some(why) = why {
            store.lease.lost.store(true, Ordering::SeqCst);
            store.lease.losses.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                epoch = fence.epoch,
                "lost the lease of the queue: {why}; stopping the delivery in progress"
            );
            let _ = lost.send(true);
            return;
        }
        // Never sleep past the moment the lease would run out.
        let deadline = tokio::time::Instant::from_std(valid_until);
        tokio::time::sleep_until(next.min(deadline)).await;
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Who holds a lease, for the table and the logs: the host, the process and when it started.
fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("{host}:{}:{}", std::process::id(), super::now_ms())
}

/// SQLite's worker lock: an OS file lock on `worker.lock` in `state_dir`, holding the
/// holder's process id.
fn lock_file(state_dir: &Path) -> anyhow::Result<Option<File>> {
    std::fs::create_dir_all(state_dir)?;
    let path = state_dir.join("worker.lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open `{}`", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            writeln!(file, "{}", std::process::id())?;
            Ok(Some(file))
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock `{}`", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Event, Phase, State};
    use crate::store::NewDelivery;
    use crate::store::testing::both_backends;

    both_backends! {
    async fn one_worker_holds_the_lease_and_a_late_writer_is_refused(t) {
        let lease = Duration::from_secs(1);
        let a = t.store.clone();
        let b = t.reopen().await;
        let held = Lease::try_acquire(&a, &t.state_dir(), lease).await.unwrap().unwrap();
        assert_eq!((a.role(), b.role()), (Role::Leader, Role::Standby));
        assert!(Lease::try_acquire(&b, &t.state_dir(), lease).await.unwrap().is_none());
        let new = NewDelivery { task: "T-1".into(), ..Default::default() };
        let id = a.enqueue(&new).await.unwrap().id();
        a.claim_next().await.unwrap().unwrap();
        a.set_phase(id, Phase::Test).await.unwrap();

        // Another worker takes over while `a` still believes it leads (a long pause, a cut
        // network): PostgreSQL's lease expires; SQLite's epoch moves on.
        let taken = match t.store.backend() {
            Backend::Postgres => {
                on_pool!(b, |p| sqlx::query("UPDATE leases SET expires_at = 0, holder = ''").execute(p).await.unwrap().rows_affected());
                let taken = Lease::try_acquire(&b, &t.state_dir(), lease).await.unwrap().unwrap();
                assert_eq!(taken.epoch(), held.epoch() + 1);
                Some(taken)
            }
            Backend::Sqlite => {
                on_pool!(b, |p| sqlx::query("UPDATE leases SET epoch = epoch + 1").execute(p).await.unwrap().rows_affected());
                None
            }
        };
        for refused in [
            a.set_phase(id, Phase::Deploy).await,
            a.journal(id, Phase::Test, "api", Event::StepFinished, "passed").await,
            a.finish(id, State::Delivered, "").await,
            a.step_started(id, &"api".into(), Phase::Deploy, "x.log").await.map(|_| ()),
        ] {
            let e = refused.unwrap_err();
            assert!(e.downcast_ref::<Fenced>().is_some(), "{e:#}");
        }
        let d = b.delivery(id).await.unwrap().unwrap();
        assert_eq!((d.state, d.phase), (State::Running, Some(Phase::Test)));
        assert_eq!(b.journal_of(id).await.unwrap().len(), 3, "queued, started, test");
        // Requests are not the worker's: any replica takes them, lease or not.
        let other = NewDelivery { task: "T-2".into(), ..Default::default() };
        assert!(matches!(a.enqueue(&other).await.unwrap(), crate::store::Enqueued::New(_)));

        if let Some(taken) = taken {
            // The renewer finds the lease gone and says so.
            tokio::time::timeout(Duration::from_secs(3), held.lost()).await.unwrap();
            assert_eq!(a.role(), Role::Standby);
            assert_eq!(a.lease_events().losses, 1);
            // The new holder writes.
            b.set_phase(id, Phase::Deploy).await.unwrap();
            // A clean shutdown lets the lease go at once.
            taken.release().await;
            assert!(Lease::try_acquire(&a, &t.state_dir(), lease).await.unwrap().is_some());
        }
    }

    async fn the_holder_renews_its_lease(t) {
        let held = Lease::try_acquire(&t.store, &t.state_dir(), Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!held.is_lost());
        let other = t.reopen().await;
        let again = Lease::try_acquire(&other, &t.state_dir(), Duration::from_secs(1)).await;
        assert!(
            again.unwrap().is_none(),
            "still held after more than twice its length"
        );
        if t.store.backend() == Backend::Postgres {
            assert!(t.store.lease_events().renewals >= 5, "{:?}", t.store.lease_events());
        }
    }
    }
}
