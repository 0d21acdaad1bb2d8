//! The delivery line as the rest of the crate sees it: rebase → build → test → deploy →
//! verify → merge, each phase for every repository of the task before the next phase, all or
//! nothing.
//!
//! Its parts live beside it in `delivery`: `engine` runs a delivery through the phases in
//! their order, `rebase` makes the checkouts, `run` runs the steps, `merge` pushes the
//! upstreams, `rollback` undoes, `recover` finishes what a killed worker left, `phase` names
//! the phases and `stop` says why a line stopped.

pub use super::engine::{Engine, Progress, Watcher, repo_url};
pub use super::phase::Phase;
pub use super::stop::Failure;

/// Runs blocking work (git) off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
