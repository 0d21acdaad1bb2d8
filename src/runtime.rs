//! The one way to get a tokio runtime, to run blocking work from async code, and to start
//! lockstep itself in the background.
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

/// Starts `lockstep --config <config> ARGS…` in its own process group, detached from the
/// caller, its output appended to `log` in `state_dir`, and without the `GIT_*` variables of
/// the hook that may have started it.
pub fn spawn_lockstep(
    config: &crate::config::Config,
    args: &[&str],
    log: &str,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the lockstep executable")?;
    let state = config.state_dir();
    std::fs::create_dir_all(&state)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.join(log))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--config")
        .arg(&config.path)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(log.try_clone()?))
        .stderr(std::process::Stdio::from(log));
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("GIT_")) {
            cmd.env_remove(k);
        }
    }
    cmd.spawn()?;
    Ok(())
}
