//! Deliveries: one task, several repositories, all or nothing.
//!
//! - [`request`] checks a delivery request against the `on = "deliver"` rules and queues it.
//! - [`worker`] holds the ecosystem's worker lock, recovers after a crash, and works the queue
//!   in one loop for every edge: one delivery at a time (`[delivery] window = 1`), or as a
//!   pipeline ([`train`]): the head deploys while the deliveries behind it are built and
//!   tested on top of it (`slots` shares the step slots between them); and the jobs the edge
//!   hands it (the server's rollbacks) whenever nothing is deploying.
//! - the delivery line, rebase → build → test → deploy → verify → merge, each phase for every
//!   repository of the task before the next, all or nothing: [`Engine`] runs a delivery through its phases
//!   (the domain's [`Phase`](crate::domain::Phase)), `rebase` makes its checkouts, `run` runs their steps ([`steps`] runs one as a
//!   process), `merge` pushes the upstreams, `rollback` undoes, `recover` finishes what a
//!   killed worker left; `stop` says why a line stops; `gate` runs the metric gates of
//!   verify; `stages` deploys and verifies stage by stage (`[delivery] stages`); `watch` rolls back a watched delivery when an alert fires.
//! - [`autotest`] builds and tests a task branch's head on its own when it changes, in slots
//!   of its own beside the queue.
//! - [`contain`] is the supervisor each step runs under, which kills the step's whole process
//!   tree when it ends.

pub mod autotest;
mod branches;
mod confine;
pub mod contain;
mod engine;
mod facts;
mod gate;
mod merge;
pub mod ready;
mod rebase;
mod recover;
mod remote;
mod request;
mod rollback;
mod run;
pub mod showroom;
mod slots;
mod stages;
pub mod steps;
mod stop;
pub mod train;
mod watch;
pub mod worker;

pub use branches::{BranchFacts, PrFacts, task_branches};
pub use engine::{Engine, Progress, Watcher};
pub use gate::Trigger;
pub use rollback::Cause;
pub use stages::{StageReport, describe_stages, stages_of};

pub use facts::{Judged, branches_for, deliver_facts};
pub use request::{Request, Requested, refusal_lines, request};
