//! The delivery line as the rest of the crate sees it: rebase → build → test → deploy →
//! verify → merge, each phase for every repository of the task before the next phase, all or
//! nothing.
//!
//! Its parts live beside it in `delivery`: `engine` runs a delivery through the phases in
//! their order, `rebase` makes the checkouts, `run` runs the steps, `merge` pushes the
//! upstreams, `rollback` undoes, `recover` finishes what a killed worker left, and `stop` says
//! why a line stopped. The phases themselves are the domain's ([`Phase`](crate::domain::Phase)).

pub use super::engine::{Engine, Progress, Watcher, repo_url};
