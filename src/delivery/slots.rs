//! The step slots: `[delivery] parallel` build and test steps at once, shared by every
//! delivery of the pipeline. A free slot goes to the waiting step whose delivery is nearest
//! to landing (the head first, then the candidates in queue order), so that speculation never
//! slows down the delivery that deploys next.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Where a delivery stands in the pipeline, for the slots: lower goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Rank {
    /// False for the head, true for a candidate.
    pub(super) candidate: bool,
    /// The negated priority (a higher priority goes first).
    pub(super) neg_priority: i64,
    pub(super) id: i64,
}

impl Rank {
    pub(super) fn new(candidate: bool, priority: i64, id: i64) -> Rank {
        Rank {
            candidate,
            neg_priority: priority.saturating_neg(),
            id,
        }
    }
}

/// The engine-wide pool of step slots.
#[derive(Debug)]
pub struct Slots {
    inner: Mutex<Pool>,
}

#[derive(Debug)]
struct Pool {
    free: usize,
    /// Waiting steps by rank, then by arrival.
    waiting: BTreeMap<(Rank, u64), oneshot::Sender<Slot>>,
    arrivals: u64,
}

/// A held slot, given back when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    slots: Option<Arc<Slots>>,
}

impl Slots {
    pub fn new(n: usize) -> Arc<Slots> {
        Arc::new(Slots {
            inner: Mutex::new(Pool {
                free: n.max(1),
                waiting: BTreeMap::new(),
                arrivals: 0,
            }),
        })
    }

    /// Waits for a slot. Dropping the wait gives up its place (and any slot handed to it).
    pub(super) async fn acquire(self: &Arc<Slots>, rank: Rank) -> Slot {
        let rx = {
            let mut pool = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if pool.free > 0 {
                pool.free -= 1;
                return Slot {
                    slots: Some(self.clone()),
                };
            }
            let (tx, rx) = oneshot::channel();
            let seq = pool.arrivals;
            pool.arrivals += 1;
            pool.waiting.insert((rank, seq), tx);
            rx
        };
        match rx.await {
            Ok(slot) => slot,
            // The pool went away: it cannot, as this holds it; run without a slot.
            Err(_) => Slot { slots: None },
        }
    }

    /// Hands a freed slot to the best waiting step still waiting, or puts it back.
    fn release(self: &Arc<Slots>) {
        let mut pool = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((_, tx)) = pool.waiting.pop_first() {
            let slot = Slot {
                slots: Some(self.clone()),
            };
            match tx.send(slot) {
                Ok(()) => return,
                // That step gave up waiting: the slot must not be released twice.
                Err(mut unsent) => unsent.slots = None,
            }
        }
        pool.free += 1;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_delivery_nearest_to_landing() {
        let slots = Slots::new(1);
        let first = slots.acquire(Rank::new(true, 0, 9)).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for (candidate, priority, id) in [(true, 0, 5), (true, 3, 8), (false, 0, 7)] {
            let (slots, order) = (slots.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let _slot = slots.acquire(Rank::new(candidate, priority, id)).await;
                order.lock().unwrap().push(id);
            }));
            tokio::task::yield_now().await;
        }
        // One that gives up waiting loses its place without losing the slot.
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            slots.acquire(Rank::new(false, 0, 1)),
        )
        .await;
        assert!(gave_up.is_err());
        drop(first);
        for w in waiters {
            w.await.unwrap();
        }
        // The head, then the higher priority, then the older.
        assert_eq!(*order.lock().unwrap(), [7, 8, 5]);
        assert_eq!(slots.inner.lock().unwrap().free, 1);
    }
}
