//! The pipeline (`[delivery] window` > 1): the head of the queue runs as the serial line does,
//! while up to `window - 1` deliveries behind it are prepared speculatively, each rebased onto
//! the results of those ahead of it, built and tested in parallel. Only the head deploys,
//! verifies and merges, one at a time.
//!
//! One coordinator owns the train and decides; preparations and the head's release run as
//! tasks that report back by events. When the train changes (the head landed or failed, a
//! delivery was cancelled or went ahead by priority, an upstream moved), every preparation is
//! judged again (`bases`): one whose base changed is discarded (its steps stopped) and
//! prepared again. A candidate's failure is held until everything ahead of it has landed on
//! the bases it used: only then is it its own, and reported as the serial line would.

mod bases;
mod prepare;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use self::bases::{Base, Used, Verdict};
use super::engine::{Ahead, Checkout, Engine, Preparation, repo_url};
use super::slots::Rank;
use super::stop::{Failure, Stop};
use crate::domain::{DeliveryId, Phase, RepoName, State};
use crate::runtime::blocking;
use crate::store::{DeliveryRow, DiscardReason};

/// How often the coordinator looks at cancels and the upstreams when nothing happens.
const TICK: Duration = Duration::from_millis(250);
/// How often the upstreams' tips are read (`git ls-remote`) while deliveries are prepared.
const TIPS_EVERY: Duration = Duration::from_secs(2);

/// Whoever wants to know when a delivery of the pipeline starts and ends, and has work for
/// the moments nothing deploys: the worker, on behalf of its edge (`worker::Edge`).
#[async_trait::async_trait]
pub trait TrainWatcher: Send + Sync {
    async fn started(&self, _d: &DeliveryRow) {}
    async fn finished(&self, _d: &DeliveryRow, _state: State) {}
    /// Nothing is deploying: work that needs the shared environment to itself (a rollback)
    /// may run now, while the candidates go on building. Returns whether any ran, so that
    /// the upstreams it may have reverted are read again.
    async fn between(&self) -> bool {
        false
    }
}

/// When the pipeline stops: a function of each delivery that ends (true: stop now), and a
/// shutdown signal with the time what runs gets to finish.
pub struct Until<'a> {
    pub done: &'a mut (dyn FnMut(DeliveryId, State) -> bool + Send),
    pub shutdown: Option<(watch::Receiver<bool>, Duration)>,
}

/// What the tasks of the pipeline report.
enum Event {
    Rebased {
        id: DeliveryId,
        generation: u64,
        checkouts: Vec<Checkout>,
    },
    Prepared {
        id: DeliveryId,
        generation: u64,
        result: Result<Vec<Checkout>, Stop>,
    },
    Released {
        id: DeliveryId,
        result: anyhow::Result<State>,
    },
}

/// A preparation under way.
struct Task {
    discard: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

enum Status {
    /// Waiting for the deliveries ahead of it to be rebased.
    Waiting,
    /// Rebasing, then building and testing (with its checkouts once rebased).
    Preparing {
        task: Task,
        checkouts: Option<Vec<Checkout>>,
    },
    /// Built and tested: ready to deploy when it is the head.
    Prepared { checkouts: Vec<Checkout> },
    /// Its preparation failed; not reported while deliveries ahead are unresolved.
    Held { stop: Stop },
    /// The head, deploying, verifying and merging.
    Releasing {
        checkouts: Vec<Checkout>,
        handle: JoinHandle<()>,
    },
}

struct Item {
    d: DeliveryRow,
    status: Status,
    /// Which preparation is current: events of older ones are ignored.
    generation: u64,
    /// The bases its current preparation used, once known.
    used: Used,
    /// The deliveries ahead its current preparation was given, per repository: the id and
    /// the rebased commit.
    on: BTreeMap<RepoName, (DeliveryId, String)>,
    /// A recovered head resumes its build or test once.
    resume: Option<Phase>,
}

impl Item {
    fn checkouts(&self) -> Option<&[Checkout]> {
        match &self.status {
            Status::Preparing {
                checkouts: Some(c), ..
            }
            | Status::Prepared { checkouts: c }
            | Status::Releasing { checkouts: c, .. } => Some(c),
            _ => None,
        }
    }

    /// What it gives those behind it.
    fn as_ahead(&self) -> bases::Ahead {
        match (&self.status, self.checkouts()) {
            (Status::Held { .. }, _) => bases::Ahead::Skipped,
            (_, Some(c)) => bases::Ahead::Rebased {
                id: self.d.id,
                repos: c
                    .iter()
                    .map(|c| (c.row.repo.clone(), c.row.rebased_sha.clone()))
                    .collect(),
            },
            (_, None) => bases::Ahead::Unknown,
        }
    }
}

/// Runs the queue as a pipeline until it is empty, `until` says stop, or a shutdown.
pub async fn run(
    engine: &Engine,
    watcher: &dyn TrainWatcher,
    until: Until<'_>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut train = Train {
        engine: engine.clone(),
        watcher,
        items: Vec::new(),
        tips: BTreeMap::new(),
        tips_read: None,
        tx,
        generations: 0,
        landed: BTreeSet::new(),
        overtakers: BTreeSet::new(),
    };
    train.drive(rx, until).await
}

struct Train<'a> {
    engine: Engine,
    watcher: &'a dyn TrainWatcher,
    items: Vec<Item>,
    tips: BTreeMap<RepoName, String>,
    tips_read: Option<Instant>,
    tx: mpsc::UnboundedSender<Event>,
    generations: u64,
    landed: BTreeSet<DeliveryId>,
    overtakers: BTreeSet<DeliveryId>,
}

/// A train dropped with work under way (its worker lost the lease, or was stopped past its
/// grace) stops that work: an aborted task drops its steps, which kills their process groups,
/// and what they journaled lets the replica that takes over recover them. Without this, the
/// spawned preparations and releases would run on, unowned.
impl Drop for Train<'_> {
    fn drop(&mut self) {
        for item in &self.items {
            match &item.status {
                Status::Preparing { task, .. } => task.handle.abort(),
                Status::Releasing { handle, .. } => handle.abort(),
                _ => {}
            }
        }
    }
}

impl Train<'_> {
    /// A delivery ended: its task's showroom follows (torn down), then the watcher is told.
    async fn ended(&self, d: &DeliveryRow, state: State) {
        crate::delivery::showroom::finished(&self.engine, d, state).await;
        self.watcher.finished(d, state).await;
    }

    async fn drive(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Event>,
        until: Until<'_>,
    ) -> anyhow::Result<()> {
        let Until { done, shutdown } = until;
        let (mut stopping, grace) = match shutdown {
            Some((s, g)) => (Some(s), g),
            None => (None, Duration::ZERO),
        };
        loop {
            if stopping.as_ref().is_some_and(|s| *s.borrow()) {
                self.shut_down(&mut rx, grace).await;
                return Ok(());
            }
            self.fill().await?;
            if self.items.is_empty() {
                return Ok(());
            }
            let ended = self.advance().await?;
            for (id, state) in &ended {
                if done(*id, *state) {
                    self.put_back(&mut rx).await?;
                    return Ok(());
                }
            }
            if !ended.is_empty() {
                continue;
            }
            let event = tokio::select! {
                e = rx.recv() => e,
                _ = tokio::time::sleep(TICK) => None,
                _ = async {
                    match stopping.as_mut() {
                        Some(s) => { let _ = s.wait_for(|v| *v).await; }
                        None => std::future::pending().await,
                    }
                } => {
                    self.shut_down(&mut rx, grace).await;
                    return Ok(());
                }
            };
            // Everything reported meanwhile, before deciding again.
            let mut events: Vec<Event> = event.into_iter().collect();
            while let Ok(e) = rx.try_recv() {
                events.push(e);
            }
            for event in events {
                if let Some((id, state)) = self.on_event(event).await?
                    && done(id, state)
                {
                    self.put_back(&mut rx).await?;
                    return Ok(());
                }
            }
        }
    }

    /// Claims deliveries until the window is full; a delivery of higher priority than the
    /// last candidate takes its place (never the head's).
    async fn fill(&mut self) -> anyhow::Result<()> {
        let window = self.engine.config.delivery.window;
        if self.items.len() >= window && window > 1 {
            let first = self.engine.store.queued().await?.into_iter().next();
            let outranked = match (&first, self.items.last()) {
                (Some(q), Some(last)) => self.items.len() > 1 && q.priority > last.d.priority,
                _ => false,
            };
            if let (true, Some(q)) = (outranked, first)
                && let Some(mut last) = self.items.pop()
            {
                self.stop_task(&mut last).await;
                let why = format!("#{} of priority {} went ahead of it", q.id, q.priority);
                self.engine
                    .store
                    .discard(last.d.id, DiscardReason::Overtaken, &why)
                    .await?;
                self.engine
                    .store
                    .requeue(last.d.id, None, &format!("{why}; back in the queue"))
                    .await?;
                self.engine.say(&format!(
                    "#{} {}: back in the queue: {why}",
                    last.d.id, last.d.task
                ));
            }
        }
        while self.items.len() < window {
            let candidate = !self.items.is_empty();
            let Some(d) = self.engine.store.claim(candidate).await? else {
                break;
            };
            self.watcher.started(&d).await;
            let at = self.place_of(&d);
            if candidate {
                self.engine.say(&format!(
                    "#{} {}: delivery started, prepared behind #{}",
                    d.id, d.task, self.items[0].d.id
                ));
                if at < self.items.len() {
                    self.overtakers.insert(d.id);
                }
            } else {
                self.engine
                    .say(&format!("#{} {}: delivery started", d.id, d.task));
            }
            let resume = Engine::resume_phase(&d);
            self.items.insert(
                at,
                Item {
                    d,
                    status: Status::Waiting,
                    generation: 0,
                    used: Used::new(),
                    on: BTreeMap::new(),
                    resume,
                },
            );
        }
        Ok(())
    }

    /// Where a newly claimed delivery goes: behind the head, in queue order.
    fn place_of(&self, d: &DeliveryRow) -> usize {
        self.items
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, x)| (x.d.priority, Reverse(x.d.id)) < (d.priority, Reverse(d.id)))
            .map_or(self.items.len(), |(i, _)| i)
    }

    /// One round of decisions: cancels, the judgement of every preparation, the head's turn,
    /// new preparations. Returns the deliveries that ended.
    async fn advance(&mut self) -> anyhow::Result<Vec<(DeliveryId, State)>> {
        let mut ended = Vec::new();
        self.refresh_rows().await?;
        // Cancels: a candidate's steps are stopped and it ends; the head's release sees the
        // cancel at its own checkpoints.
        let mut i = 0;
        while i < self.items.len() {
            let item = &self.items[i];
            if item.d.cancel && !matches!(item.status, Status::Releasing { .. }) {
                let mut item = self.items.remove(i);
                self.stop_task(&mut item).await;
                let phase = item.d.phase.unwrap_or(Phase::Rebase);
                let stop = Failure::new(phase, None, "cancelled on request").into();
                let state = self.engine.report_stop(&item.d, stop).await?;
                self.ended(&item.d, state).await;
                ended.push((item.d.id, state));
                continue;
            }
            i += 1;
        }
        let releasing = self
            .items
            .iter()
            .any(|x| matches!(x.status, Status::Releasing { .. }));
        if !releasing && self.watcher.between().await {
            self.tips_read = None;
        }
        if self.tips_read.is_none_or(|t| t.elapsed() >= TIPS_EVERY) {
            self.read_tips().await;
        }
        self.judge_all().await?;
        if let Some(e) = self.head_turn().await? {
            ended.push(e);
        }
        self.start_preparations();
        Ok(ended)
    }

    /// Re-reads the train's rows (phase, cancel, …) and makes the first one the head.
    async fn refresh_rows(&mut self) -> anyhow::Result<()> {
        let rows = self.engine.store.train().await?;
        for item in &mut self.items {
            if let Some(row) = rows.iter().find(|r| r.id == item.d.id) {
                item.d = row.clone();
            }
        }
        if let Some(head) = self.items.first_mut()
            && head.d.candidate
        {
            self.engine.store.promote(head.d.id).await?;
            head.d.candidate = false;
        }
        Ok(())
    }

    /// Reads every upstream's tip; an upstream that cannot be read keeps its last tip.
    async fn read_tips(&mut self) {
        for repo in &self.engine.config.repos {
            let url = repo_url(&self.engine.config, repo);
            let refname = format!("refs/heads/{}", repo.upstream);
            let git = crate::git::Git::new(self.engine.config.state_dir());
            let listed =
                blocking(move || git.try_run(&["ls-remote", "--end-of-options", &url, &refname]))
                    .await;
            if let Ok((true, out, _)) = listed
                && let Some(sha) = out.split_whitespace().next()
            {
                self.tips.insert(repo.name.clone(), sha.to_string());
            }
        }
        self.tips_read = Some(Instant::now());
    }

    /// Judges every preparation against the train as it is now; discards those whose base
    /// changed.
    async fn judge_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.items.len() {
            let has_bases = match &self.items[i].status {
                Status::Waiting | Status::Releasing { .. } => false,
                Status::Preparing { checkouts, .. } => checkouts.is_some(),
                Status::Prepared { .. } | Status::Held { .. } => true,
            };
            if !has_bases || self.items[i].used.is_empty() {
                continue;
            }
            let ahead: Vec<bases::Ahead> = self.items[..i].iter().map(Item::as_ahead).collect();
            let verdict = bases::judge(
                &self.items[i].used,
                &ahead,
                &self.tips,
                &self.landed,
                &self.overtakers,
            );
            if let Verdict::Changed(reason, why) = verdict {
                self.discard(i, reason, &why).await?;
            }
        }
        Ok(())
    }

    /// The head's turn: a prepared head whose bases are the upstreams' tips deploys; a held
    /// failure of the head is its own and is reported.
    async fn head_turn(&mut self) -> anyhow::Result<Option<(DeliveryId, State)>> {
        let Some(head) = self.items.first() else {
            return Ok(None);
        };
        if !matches!(head.status, Status::Prepared { .. } | Status::Held { .. }) {
            return Ok(None);
        }
        // Right before deploying, the upstreams are read again: a push by someone else
        // since means preparing again, not deploying what the merge would refuse.
        self.read_tips().await;
        let verdict = bases::judge(
            &self.items[0].used,
            &[],
            &self.tips,
            &self.landed,
            &self.overtakers,
        );
        match verdict {
            Verdict::Holds => {}
            Verdict::Changed(reason, why) => {
                self.discard(0, reason, &why).await?;
                return Ok(None);
            }
            Verdict::Pending => return Ok(None),
        }
        let mut head = self.items.remove(0);
        match std::mem::replace(&mut head.status, Status::Waiting) {
            Status::Held { stop } => {
                let state = self.engine.report_stop(&head.d, stop).await?;
                self.ended(&head.d, state).await;
                self.tips_read = None;
                Ok(Some((head.d.id, state)))
            }
            Status::Prepared { checkouts } => {
                let (engine, d, tx) = (self.engine.clone(), head.d.clone(), self.tx.clone());
                let release = checkouts.clone();
                let handle = tokio::spawn(async move {
                    let result = engine.release_and_land(&d, &release).await;
                    let _ = tx.send(Event::Released { id: d.id, result });
                });
                head.status = Status::Releasing { checkouts, handle };
                self.items.insert(0, head);
                Ok(None)
            }
            // Checked above: the head was prepared or held.
            other => {
                head.status = other;
                self.items.insert(0, head);
                Ok(None)
            }
        }
    }

    /// `until` said stop: every delivery still in the train goes back to the queue, in its
    /// place, to be prepared again by the next worker.
    async fn put_back(&mut self, rx: &mut mpsc::UnboundedReceiver<Event>) -> anyhow::Result<()> {
        // A head already releasing is let finish: it is deploying.
        while self
            .items
            .iter()
            .any(|x| matches!(x.status, Status::Releasing { .. }))
        {
            let Some(event) = rx.recv().await else { break };
            if let Event::Released { id, result } = event {
                result?;
                self.items.retain(|x| x.d.id != id);
            }
        }
        for mut item in std::mem::take(&mut self.items) {
            self.stop_task(&mut item).await;
            let store = &self.engine.store;
            store
                .discard(
                    item.d.id,
                    DiscardReason::WorkerStopped,
                    "the worker stopped",
                )
                .await?;
            store
                .requeue(item.d.id, None, "the worker stopped; it is prepared again")
                .await?;
        }
        Ok(())
    }

    /// A shutdown: nothing new starts (no delivery is claimed, prepared or released), and
    /// what runs, the head's release and every preparation under way with their steps, gets
    /// `grace` to finish, whatever the window; what ends meanwhile is taken in as usual. What
    /// still runs then is stopped (its steps get `SIGTERM`, then `SIGKILL`) and left, as
    /// journaled, to the next worker's recovery: the head resumes its build or test or has its
    /// release rolled back or reconciled, candidates start over from their rebase.
    async fn shut_down(&mut self, rx: &mut mpsc::UnboundedReceiver<Event>, grace: Duration) {
        let running = |items: &[Item]| {
            items.iter().any(|x| {
                matches!(
                    x.status,
                    Status::Preparing { .. } | Status::Releasing { .. }
                )
            })
        };
        if running(&self.items) {
            self.engine.say(&format!(
                "shutting down: the steps running get {} to finish",
                crate::config::humanize(grace)
            ));
        }
        let _ = tokio::time::timeout(grace, async {
            while running(&self.items) {
                let Some(event) = rx.recv().await else { break };
                if let Err(e) = self.on_event(event).await {
                    tracing::error!("the pipeline broke while shutting down: {e:#}");
                    break;
                }
            }
        })
        .await;
        for item in &mut self.items {
            let handle = match std::mem::replace(&mut item.status, Status::Waiting) {
                Status::Preparing { task, .. } => task.handle,
                Status::Releasing { handle, .. } => handle,
                _ => continue,
            };
            // Dropping the task's future stops its steps; the next worker recovers it.
            handle.abort();
            let _ = handle.await;
            self.engine.say(&format!(
                "#{} {}: stopped past the shutdown grace; it is recovered at the next start",
                item.d.id, item.d.task
            ));
        }
    }
}

/// The bases a delivery's rebase used (`found`: repository and base), and where each came
/// from: a delivery ahead it was given (`on`), or else the upstream.
fn used_bases<'a>(
    found: impl Iterator<Item = (&'a RepoName, &'a String)>,
    on: &BTreeMap<RepoName, (DeliveryId, String)>,
) -> Used {
    found
        .map(|(repo, base)| {
            let from = match on.get(repo) {
                Some((id, sha)) if sha == base => Base::Ahead(*id, sha.clone()),
                _ => Base::Upstream(base.clone()),
            };
            (repo.clone(), from)
        })
        .collect()
}
