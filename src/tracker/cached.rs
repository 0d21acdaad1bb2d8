//! A short-lived cache in front of a tracker, for the long-running server: a burst of
//! requests about the same task (a push of many refs, a queue re-checking its items) asks
//! the tracker once per task and time-to-live.
//!
//! Only answers are kept (a task, or "no such task"), never errors. A move through the cache
//! forgets the task, so the next read sees the new status. Listing always asks the tracker
//! and refreshes what it lists.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Task, Tracker, TrackerError};

/// Past this many entries, expired ones are dropped on the next insert.
const SWEEP_ABOVE: usize = 1024;

pub struct Cached {
    inner: Box<dyn Tracker>,
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Option<Task>)>>,
}

impl Cached {
    /// Keeps each answer of `inner` for `ttl`.
    pub fn new(inner: Box<dyn Tracker>, ttl: Duration) -> Cached {
        Cached {
            inner,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets what is known about a task (e.g. after a tracker webhook said it changed).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Option<Task>)>> {
        // A panic while holding the lock leaves a map that is still valid: keep using it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self, key: &str, task: Option<Task>) {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() > SWEEP_ABOVE {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| now.duration_since(*at) < ttl);
        }
        entries.insert(key.to_string(), (now, task));
    }
}

#[async_trait]
impl Tracker for Cached {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn task(&self, key: &str) -> Result<Option<Task>, TrackerError> {
        if let Some((at, task)) = self.lock().get(key)
            && at.elapsed() < self.ttl
        {
            return Ok(task.clone());
        }
        let answer = self.inner.task(key).await?;
        self.store(key, answer.clone());
        Ok(answer)
    }

    async fn move_to(&self, key: &str, status: &str, note: &str) -> Result<(), TrackerError> {
        let result = self.inner.move_to(key, status, note).await;
        self.forget(key);
        result
    }

    async fn in_statuses(&self, statuses: &[String]) -> Result<Vec<Task>, TrackerError> {
        let tasks = self.inner.in_statuses(statuses).await?;
        for t in &tasks {
            self.store(&t.key, Some(t.clone()));
        }
        Ok(tasks)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
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
        async fn task(&self, key: &str) -> Result<Option<Task>, TrackerError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok((key != "GONE-1").then(|| Task {
                key: key.into(),
                status: self.status.lock().unwrap().clone(),
                ..Task::default()
            }))
        }
        async fn move_to(&self, _: &str, status: &str, _: &str) -> Result<(), TrackerError> {
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

    fn cached() -> (Cached, Arc<AtomicUsize>) {
        let reads = Arc::new(AtomicUsize::new(0));
        let inner = Counting {
            reads: reads.clone(),
            status: Arc::new(Mutex::new("In Progress".into())),
        };
        (Cached::new(Box::new(inner), Duration::from_secs(5)), reads)
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_kept_for_the_ttl() {
        let (c, reads) = cached();
        for _ in 0..3 {
            assert_eq!(c.task("T-1").await.unwrap().unwrap().status, "In Progress");
            assert_eq!(c.task("GONE-1").await.unwrap(), None);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(6)).await;
        c.task("T-1").await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_move_is_seen_at_once() {
        let (c, reads) = cached();
        c.task("T-1").await.unwrap();
        c.move_to("T-1", "For Delivery", "ready").await.unwrap();
        assert_eq!(c.task("T-1").await.unwrap().unwrap().status, "For Delivery");
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_listing_refreshes_what_it_lists() {
        let (c, reads) = cached();
        assert_eq!(
            c.in_statuses(&["In Progress".into()]).await.unwrap().len(),
            1
        );
        assert_eq!(c.task("T-2").await.unwrap().unwrap().status, "In Progress");
        assert_eq!(reads.load(Ordering::SeqCst), 0);
    }
}
