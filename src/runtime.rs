//! The one way to get a tokio runtime, and to run blocking work from async code.
//!
//! A hook runs a handful of tracker lookups and exits: a current-thread runtime starts fastest
//! and spawns no thread. The commands, the demo and the server run deliveries (step processes,
//! git, HTTP) side by side: a multi-thread runtime.

use anyhow::Context as _;
use tokio::runtime::{Builder, Runtime};

/// A runtime on the calling thread, for the hooks and other one-shot lookups.
pub fn current_thread() -> anyhow::Result<Runtime> {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A multi-thread runtime of `workers` threads (`None`: one per core), for the commands, the
/// demo and the server.
pub fn multi_thread(workers: Option<usize>) -> anyhow::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs blocking work (git, the disk) off the async threads; a panic in it is resumed here.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
