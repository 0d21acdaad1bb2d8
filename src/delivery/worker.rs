//! The worker: one per ecosystem at a time, holding the queue's lease.
//!
//! Whoever holds the lease (a `lockstep deliver`, a detached `lockstep work`, one replica of
//! `lockstep serve`) first recovers what a killed worker left behind, then works the queue
//! in the one worker loop, [`run`]: the deliveries one at a time or as a pipeline, and the
//! jobs its [`Edge`] hands it whenever nothing is deploying. The command line's edge is
//! [`work`]; the server's lives with the server. On SQLite the lease is an OS file lock in `state_dir`, released
//! the moment its holder dies, even by SIGKILL; on PostgreSQL a lease row another replica
//! takes over once it expires (see the store's `lease`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use super::autotest;
use super::train::{self, TrainWatcher};
use super::{Engine, Progress};
use crate::config::Config;
use crate::domain::{DeliveryId, State, TaskKey};
use crate::store::{DeliveryRow, Lease, Store};

pub use super::recover::recover;

/// Takes the queue's lease if no other worker holds it. While it is held, the engine's store
/// writes under its fence.
pub async fn try_lead(engine: &Engine) -> anyhow::Result<Option<Lease>> {
    Lease::try_acquire(
        &engine.store,
        &engine.config.state_dir(),
        engine.config.store.lease,
    )
    .await
}

/// Builds the engine from a config: store, policies, tracker.
pub async fn engine(config: Config, progress: Progress) -> anyhow::Result<Engine> {
    let policies = crate::policy::PolicySet::for_config(&config)?;
    let store = Store::for_config(&config).await?;
    let tracker: Arc<dyn crate::tracker::Tracker> = Arc::from(crate::tracker::open(&config)?);
    let slots = super::slots::Slots::new(config.delivery.parallel);
    Ok(Engine {
        config: Arc::new(config),
        policies: Arc::new(policies),
        store,
        slots,
        tracker,
        progress,
    })
}

/// The edge that runs the worker, and what differs between edges: whom it tells of each
/// delivery, the jobs it hands the worker besides the queue, what it does when the queue is
/// empty, and when it stops. The command line's worker prints (through the engine's
/// progress), runs no jobs and ends with the queue; the server's reports to GitHub, runs the
/// rollbacks its bot and alerts ask for, waits for more, and stops at its shutdown.
///
/// A new kind of job is a variant of the edge's [`Job`](Edge::Job) and an arm of its
/// [`run_job`](Edge::run_job): [`run`] gives it its turn whenever nothing is deploying.
#[async_trait::async_trait]
pub trait Edge: Send + Sync {
    /// What the edge hands the worker besides the queue's deliveries.
    type Job: Send;

    /// A delivery started (the serial line's, or one claimed into the pipeline).
    async fn started(&self, _d: &DeliveryRow) {}
    /// A delivery ended.
    async fn finished(&self, _d: &DeliveryRow, _state: State) {}
    /// Whether the worker stops now that delivery `id` ended. Default: no.
    fn done(&self, _id: DeliveryId, _state: State) -> bool {
        false
    }
    /// The next job waiting, if any; never waits for one.
    async fn next_job(&self) -> Option<Self::Job> {
        None
    }
    /// Runs a job. The worker turns to one only when no delivery is deploying, so that it
    /// has the shared environment to itself (a rollback, a revert).
    async fn run_job(&self, _job: Self::Job) {}
    /// The queue is empty: waits for something to do (the worker races the wait against a
    /// lost lease and the shutdown). Default: the work is done.
    async fn idle(&self) -> Idle<Self::Job> {
        Idle::Done
    }
    /// The signal that the edge is stopping, and how long a delivery deploying gets to
    /// finish then. Default: the edge never stops the worker.
    fn shutdown(&self) -> Option<(watch::Receiver<bool>, Duration)> {
        None
    }
    /// Whether the worker runs the autotests requested, beside the queue (in slots of their
    /// own, so that a delivery never waits for them). Default: yes.
    fn autotests(&self) -> bool {
        true
    }
}

/// What an idle worker was woken for.
pub enum Idle<J> {
    /// Nothing in particular (a delivery may have been queued): look at the queue again.
    Again,
    /// A job to run.
    Job(J),
    /// Nothing more: the work ends.
    Done,
}

/// How [`run`] ended.
#[derive(Debug)]
pub enum End {
    /// The queue was empty and the edge waits for nothing more, or it said stop after a
    /// delivery.
    Done,
    /// The edge is shutting down; `cut` is the delivery of the serial line stopped past the
    /// grace, its steps killed, left to the next worker's recovery (the pipeline gives its
    /// head the grace itself).
    Stopped { cut: Option<Cut> },
    /// Another worker took the lease over; `cut` is the work it stopped at once, its steps
    /// killed, left to the worker that holds the lease now.
    LeaseLost { cut: Option<Cut> },
}

/// The work a lost lease or a shutdown cut short.
#[derive(Debug)]
pub enum Cut {
    /// A delivery of the serial line.
    Delivery { id: DeliveryId, task: TaskKey },
    /// The pipeline and every delivery in it.
    Pipeline,
}

/// Works the queue while `lease` holds: the deliveries one at a time with `[delivery]
/// window = 1`, as a pipeline otherwise, and the edge's jobs whenever nothing is deploying;
/// until the edge stops it or has nothing more for it, or the lease is lost. A lost lease
/// stops the work in progress at once (dropped, its steps' process groups are killed); what
/// it journaled lets the worker that holds the lease now recover it. An error of the store
/// or the line ends the run; the edge decides whether to run again.
pub async fn run<E: Edge>(engine: &Engine, lease: &Lease, edge: &E) -> anyhow::Result<End> {
    let autotests = match edge.autotests() {
        true => Some(autotest::Pump::start(engine).await?),
        false => None,
    };
    let end = queue(engine, lease, edge, autotests.as_ref()).await;
    if let Some(autotests) = autotests {
        autotests.stop().await;
    }
    end
}

/// The loop of [`run`], with the autotests running beside it: while any runs or waits, an
/// edge with nothing more to do looks at the queue again instead of ending.
async fn queue<E: Edge>(
    engine: &Engine,
    lease: &Lease,
    edge: &E,
    autotests: Option<&autotest::Pump>,
) -> anyhow::Result<End> {
    let shutdown = edge.shutdown();
    let mut stop = shutdown.as_ref().map(|(s, _)| s.clone());
    loop {
        if stop.as_ref().is_some_and(|s| *s.borrow()) {
            return Ok(End::Stopped { cut: None });
        }
        if lease.is_lost() {
            return Ok(End::LeaseLost { cut: None });
        }
        if let Some(job) = edge.next_job().await {
            edge.run_job(job).await;
            continue;
        }
        let turn = if engine.config.delivery.window > 1 {
            pipeline(engine, lease, edge, shutdown.clone()).await?
        } else {
            serial(engine, lease, edge, shutdown.clone()).await?
        };
        match turn {
            Turn::Delivered => continue,
            Turn::Ended(end) => return Ok(end),
            Turn::Empty => {}
        }
        if stop.as_ref().is_some_and(|s| *s.borrow()) {
            return Ok(End::Stopped { cut: None });
        }
        let woke = tokio::select! {
            woke = edge.idle() => woke,
            () = lease.lost() => return Ok(End::LeaseLost { cut: None }),
            () = stopped(&mut stop) => return Ok(End::Stopped { cut: None }),
        };
        match woke {
            Idle::Again => {}
            Idle::Job(job) => edge.run_job(job).await,
            Idle::Done => match autotests {
                Some(a) if a.busy().await => {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                        () = lease.lost() => return Ok(End::LeaseLost { cut: None }),
                        () = stopped(&mut stop) => return Ok(End::Stopped { cut: None }),
                    }
                }
                _ => return Ok(End::Done),
            },
        }
    }
}

/// What one turn at the queue came to.
enum Turn {
    /// A delivery ended; the queue may hold more.
    Delivered,
    /// The queue is empty.
    Empty,
    /// The work ends.
    Ended(End),
}

/// Runs the next delivery of the queue, if any, on the serial line.
async fn serial<E: Edge>(
    engine: &Engine,
    lease: &Lease,
    edge: &E,
    shutdown: Option<(watch::Receiver<bool>, Duration)>,
) -> anyhow::Result<Turn> {
    let Some(d) = engine.store.claim_next().await? else {
        return Ok(Turn::Empty);
    };
    edge.started(&d).await;
    let (mut stop, grace) = match shutdown {
        Some((s, g)) => (Some(s), g),
        None => (None, Duration::ZERO),
    };
    // Dropping the delivery (a lost lease, a shutdown past its grace) kills its steps'
    // process groups; what it journaled so far lets the next worker recover it.
    let state = tokio::select! {
        state = engine.deliver(&d) => state?,
        () = lease.lost() => {
            return Ok(Turn::Ended(End::LeaseLost { cut: Some(cut(&d)) }));
        }
        () = async { stopped(&mut stop).await; tokio::time::sleep(grace).await } => {
            return Ok(Turn::Ended(End::Stopped { cut: Some(cut(&d)) }));
        }
    };
    super::showroom::finished(engine, &d, state).await;
    edge.finished(&d, state).await;
    Ok(if edge.done(d.id, state) {
        Turn::Ended(End::Done)
    } else {
        Turn::Delivered
    })
}

/// Runs the queue as a pipeline until it is empty, the edge says stop after a delivery, or
/// the edge shuts down (the head releasing gets the grace to finish).
async fn pipeline<E: Edge>(
    engine: &Engine,
    lease: &Lease,
    edge: &E,
    shutdown: Option<(watch::Receiver<bool>, Duration)>,
) -> anyhow::Result<Turn> {
    let mut said_done = false;
    let mut done = |id: DeliveryId, state: State| {
        said_done = edge.done(id, state);
        said_done
    };
    let until = train::Until {
        done: &mut done,
        shutdown,
    };
    let watching = Watching(edge);
    tokio::select! {
        r = train::run(engine, &watching, until) => r?,
        () = lease.lost() => {
            return Ok(Turn::Ended(End::LeaseLost { cut: Some(Cut::Pipeline) }));
        }
    }
    Ok(if said_done {
        Turn::Ended(End::Done)
    } else {
        // Empty, or shutting down: `run` looks at the shutdown signal next.
        Turn::Empty
    })
}

/// The edge as the pipeline sees it: told of each delivery that starts and ends, its jobs
/// run whenever nothing is deploying.
struct Watching<'a, E>(&'a E);

#[async_trait::async_trait]
impl<E: Edge> TrainWatcher for Watching<'_, E> {
    async fn started(&self, d: &DeliveryRow) {
        self.0.started(d).await;
    }
    async fn finished(&self, d: &DeliveryRow, state: State) {
        self.0.finished(d, state).await;
    }
    async fn between(&self) -> bool {
        let mut ran = false;
        while let Some(job) = self.0.next_job().await {
            self.0.run_job(job).await;
            ran = true;
        }
        ran
    }
}

/// Waits until the stop signal is raised (or its sender is gone); never without one.
async fn stopped(stop: &mut Option<watch::Receiver<bool>>) {
    match stop {
        Some(s) => {
            let _ = s.wait_for(|v| *v).await;
        }
        None => std::future::pending().await,
    }
}

/// The command line's worker: it runs no jobs, reports through the engine's progress, and
/// ends when the queue is empty, `done` says stop, or its shutdown flag is raised.
struct Cli<F> {
    done: F,
    shutdown: Option<(watch::Receiver<bool>, Duration)>,
    /// Whether it runs the autotests too (`lockstep work`), or only the queue (a
    /// `lockstep deliver` following its delivery).
    autotests: bool,
}

impl<F: Fn(DeliveryId, State) -> bool + Send + Sync> Edge for Cli<F> {
    type Job = std::convert::Infallible;

    fn done(&self, id: DeliveryId, state: State) -> bool {
        (self.done)(id, state)
    }

    fn shutdown(&self) -> Option<(watch::Receiver<bool>, Duration)> {
        self.shutdown.clone()
    }

    fn autotests(&self) -> bool {
        self.autotests
    }
}

/// Delivery `d`, cut short.
fn cut(d: &DeliveryRow) -> Cut {
    Cut::Delivery {
        id: d.id,
        task: d.task.clone(),
    }
}

/// Runs queued deliveries for the command line until `done` says stop (checked after each)
/// or the queue is empty (see [`run`]); autotests are left to `lockstep work`. A lost lease ends the work with an error. When
/// `shutdown` (a flag and a grace) turns true, nothing new starts and what runs gets the
/// grace to finish; what is left then is stopped and recovered by the next worker.
pub async fn work(
    engine: &Engine,
    lease: &Lease,
    done: impl Fn(DeliveryId, State) -> bool + Send + Sync,
    shutdown: Option<(watch::Receiver<bool>, Duration)>,
) -> anyhow::Result<()> {
    let edge = Cli {
        done,
        shutdown,
        autotests: false,
    };
    ended(engine, run(engine, lease, &edge).await?)
}

/// Runs the queue and the autotests for `lockstep work`, until both are done or `shutdown`
/// (see [`work`]).
pub async fn work_all(
    engine: &Engine,
    lease: &Lease,
    shutdown: Option<(watch::Receiver<bool>, Duration)>,
) -> anyhow::Result<()> {
    let edge = Cli {
        done: |_, _| false,
        shutdown,
        autotests: true,
    };
    ended(engine, run(engine, lease, &edge).await?)
}

/// What the command line says of how [`run`] ended.
fn ended(engine: &Engine, end: End) -> anyhow::Result<()> {
    match end {
        End::Done
        | End::Stopped {
            cut: None | Some(Cut::Pipeline),
        } => Ok(()),
        End::Stopped {
            cut: Some(Cut::Delivery { id, task }),
        } => {
            engine.say(&format!(
                "#{id} {task}: stopped past the shutdown grace; it is recovered at the next start"
            ));
            Ok(())
        }
        End::LeaseLost {
            cut: Some(Cut::Delivery { id, task }),
        } => Err(lost_lease().context(format!("#{id} {task}"))),
        End::LeaseLost { .. } => Err(lost_lease()),
    }
}

/// Why the work ended when the lease went to another worker.
fn lost_lease() -> anyhow::Error {
    anyhow::anyhow!(
        "this worker lost the lease of the queue; stopped, and left to the worker that holds \
         it now"
    )
}

/// Starts `lockstep work` in the background, detached from the caller (a hook must not wait
/// for a delivery, and git waits for a hook's output streams to close).
pub fn spawn_detached(config: &Config) -> anyhow::Result<()> {
    crate::runtime::spawn_lockstep(config, &["work"], "worker.log")
        .context("cannot start a background worker")
}
