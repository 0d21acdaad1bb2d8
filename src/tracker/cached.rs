//! A short-lived cache in front of a tracker, for the long-running server: a burst of
//! requests about the same task (a push of many refs, a queue re-checking its items) asks
//! the tracker once per task and time-to-live.
//!
//! Only answers are kept (a task, or "no such task"), never errors. A move through the cache
//! forgets the task, so the next read sees the new status. Listing always asks the tracker
//! and refreshes what it lists; a task kept in one of the listed statuses that the listing
//! no longer has has left them, so it is forgotten too.
//!
//! `serve` wraps its tracker in one ([`Cached::wrap`]) for `[tracker] cache`; the hooks do
//! not, as each runs once and asks once per task anyway.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Task, Tracker, TrackerError};
use crate::domain::TaskKey;

/// Past this many entries, expired ones are dropped on the next insert.
const SWEEP_ABOVE: usize = 1024;

/// A tracker whose answers are kept for a time-to-live.
pub struct Cached {
    inner: Arc<dyn Tracker>,
    ttl: Duration,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// Each task's answer and when it was read.
    tasks: HashMap<String, (Instant, Option<Task>)>,
    /// How many times a task was forgotten. An answer asked for before a forget may predate
    /// the move that caused it, so it is not kept.
    forgets: u64,
}

impl Cached {
    /// Keeps each answer of `inner` for `ttl`.
    pub fn new(inner: Arc<dyn Tracker>, ttl: Duration) -> Cached {
        Cached {
            inner,
            ttl,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// `inner` behind a cache of `ttl`, or `inner` itself when `ttl` is zero (no caching).
    pub fn wrap(inner: Arc<dyn Tracker>, ttl: Duration) -> Arc<dyn Tracker> {
        if ttl.is_zero() {
            inner
        } else {
            Arc::new(Cached::new(inner, ttl))
        }
    }

    /// Forgets what is known about a task (e.g. after a tracker webhook said it changed).
    pub fn forget(&self, key: &str) {
        let mut entries = self.lock();
        entries.tasks.remove(key);
        entries.forgets += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves a map that is still valid: keep using it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps answers read since `forgets` was `asked_at`, unless a task was forgotten since.
    fn store(&self, asked_at: u64, answers: impl IntoIterator<Item = (String, Option<Task>)>) {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.forgets != asked_at {
            return;
        }
        if entries.tasks.len() > SWEEP_ABOVE {
            let ttl = self.ttl;
            entries
                .tasks
                .retain(|_, (at, _)| now.duration_since(*at) < ttl);
        }
        for (key, task) in answers {
            entries.tasks.insert(key, (now, task));
        }
    }
}

#[async_trait]
impl Tracker for Cached {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn task(&self, key: &TaskKey) -> Result<Option<Task>, TrackerError> {
        let asked_at = {
            let entries = self.lock();
            if let Some((at, task)) = entries.tasks.get(key.as_str())
                && at.elapsed() < self.ttl
            {
                return Ok(task.clone());
            }
            entries.forgets
        };
        let answer = self.inner.task(key).await?;
        self.store(asked_at, [(key.to_string(), answer.clone())]);
        Ok(answer)
    }

    async fn move_to(&self, key: &TaskKey, status: &str, note: &str) -> Result<(), TrackerError> {
        let result = self.inner.move_to(key, status, note).await;
        self.forget(key.as_str());
        result
    }

    async fn in_statuses(&self, statuses: &[String]) -> Result<Vec<Task>, TrackerError> {
        let asked_at = self.lock().forgets;
        let tasks = self.inner.in_statuses(statuses).await?;
        let listed: HashSet<&str> = tasks.iter().map(|t| t.key.as_str()).collect();
        self.lock().tasks.retain(|key, (_, task)| match task {
            Some(t) if statuses.contains(&t.status) => listed.contains(key.as_str()),
            _ => true,
        });
        self.store(
            asked_at,
            tasks.iter().map(|t| (t.key.clone(), Some(t.clone()))),
        );
        Ok(tasks)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A tracker that counts the reads it answers.
    struct Counting {
        reads: Arc<AtomicUsize>,
        status: Arc<Mutex<String>>,
    }

    #[async_trait]
    impl Tracker for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        async fn task(&self, key: &TaskKey) -> Result<Option<Task>, TrackerError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok((key != "GONE-1").then(|| Task {
                key: key.to_string(),
                status: self.status.lock().unwrap().clone(),
                ..Task::default()
            }))
        }
        async fn move_to(&self, _: &TaskKey, status: &str, _: &str) -> Result<(), TrackerError> {
            *self.status.lock().unwrap() = status.into();
            Ok(())
        }
        async fn in_statuses(&self, _: &[String]) -> Result<Vec<Task>, TrackerError> {
            Ok(vec![Task {
                key: "T-2".into(),
                status: self.status.lock().unwrap().clone(),
                ..Task::default()
            }])
        }
    }

    fn counting() -> (Arc<dyn Tracker>, Arc<AtomicUsize>) {
        let reads = Arc::new(AtomicUsize::new(0));
        let inner = Counting {
            reads: reads.clone(),
            status: Arc::new(Mutex::new("In Progress".into())),
        };
        (Arc::new(inner), reads)
    }

    fn cached() -> (Cached, Arc<AtomicUsize>) {
        let (inner, reads) = counting();
        (Cached::new(inner, Duration::from_secs(5)), reads)
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_kept_for_the_ttl() {
        let (c, reads) = cached();
        for _ in 0..3 {
            assert_eq!(
                c.task(&"T-1".into()).await.unwrap().unwrap().status,
                "In Progress"
            );
            assert_eq!(c.task(&"GONE-1".into()).await.unwrap(), None);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(6)).await;
        c.task(&"T-1".into()).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_move_is_seen_at_once() {
        let (c, reads) = cached();
        c.task(&"T-1".into()).await.unwrap();
        c.move_to(&"T-1".into(), "For Delivery", "ready")
            .await
            .unwrap();
        assert_eq!(
            c.task(&"T-1".into()).await.unwrap().unwrap().status,
            "For Delivery"
        );
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_listing_refreshes_what_it_lists() {
        let (c, reads) = cached();
        assert_eq!(
            c.in_statuses(&["In Progress".into()]).await.unwrap().len(),
            1
        );
        assert_eq!(
            c.task(&"T-2".into()).await.unwrap().unwrap().status,
            "In Progress"
        );
        assert_eq!(reads.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_listing_forgets_what_left_its_statuses() {
        let (c, reads) = cached();
        assert_eq!(
            c.task(&"T-1".into()).await.unwrap().unwrap().status,
            "In Progress"
        );
        assert_eq!(c.task(&"GONE-1".into()).await.unwrap(), None);
        // T-1 was In Progress; a listing of In Progress without it means it moved on.
        c.in_statuses(&["In Progress".into()]).await.unwrap();
        c.task(&"T-1".into()).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 3);
        // A listing of other statuses says nothing about T-1, nor about a missing task.
        c.in_statuses(&["Closed".into()]).await.unwrap();
        c.task(&"T-1".into()).await.unwrap();
        c.task(&"GONE-1".into()).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn wrapped_with_a_zero_ttl_every_read_asks() {
        for (ttl, asked) in [(Duration::ZERO, 2), (Duration::from_secs(1), 1)] {
            let (inner, reads) = counting();
            let t = Cached::wrap(inner, ttl);
            t.task(&"T-1".into()).await.unwrap();
            t.task(&"T-1".into()).await.unwrap();
            assert_eq!(reads.load(Ordering::SeqCst), asked, "{ttl:?}");
        }
    }

    /// A tracker whose reads wait for `go`, answering the status they saw when asked.
    struct Gated {
        reads: Arc<AtomicUsize>,
        status: Arc<Mutex<String>>,
        go: Arc<tokio::sync::Notify>,
    }

    #[async_trait]
    impl Tracker for Gated {
        fn name(&self) -> &'static str {
            "gated"
        }
        async fn task(&self, key: &TaskKey) -> Result<Option<Task>, TrackerError> {
            let status = self.status.lock().unwrap().clone();
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.go.notified().await;
            Ok(Some(Task {
                key: key.to_string(),
                status,
                ..Task::default()
            }))
        }
        async fn move_to(&self, _: &TaskKey, status: &str, _: &str) -> Result<(), TrackerError> {
            *self.status.lock().unwrap() = status.into();
            Ok(())
        }
        async fn in_statuses(&self, _: &[String]) -> Result<Vec<Task>, TrackerError> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn an_answer_read_across_a_move_is_not_kept() {
        let reads = Arc::new(AtomicUsize::new(0));
        let go = Arc::new(tokio::sync::Notify::new());
        let inner = Gated {
            reads: reads.clone(),
            status: Arc::new(Mutex::new("In Progress".into())),
            go: go.clone(),
        };
        let c = Arc::new(Cached::new(Arc::new(inner), Duration::from_secs(3600)));
        let read = tokio::spawn({
            let c = c.clone();
            async move { c.task(&"T-1".into()).await }
        });
        while reads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        c.move_to(&"T-1".into(), "For Delivery", "ready")
            .await
            .unwrap();
        go.notify_one();
        // The read in flight answers what it saw, but that answer predates the move.
        let before = read.await.unwrap().unwrap().unwrap();
        assert_eq!(before.status, "In Progress");
        go.notify_one();
        assert_eq!(
            c.task(&"T-1".into()).await.unwrap().unwrap().status,
            "For Delivery"
        );
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }
}
