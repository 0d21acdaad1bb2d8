//! `lockstep serve`: the bot in person.
//!
//! One process that holds the ecosystem's worker lock and runs the queue one delivery at a
//! time, reporting each to GitHub; takes commands from pull request comments
//! (`POST /webhooks/github`); queues the tasks the tracker marks ready (a poller, and
//! `POST /webhooks/tracker` to poll at once); and shows the queue (`GET /`, `/deliveries/{id}`,
//! `/api/*`, `/metrics`, `/healthz`).
//!
//! - [`command`] parses the commands of a comment (pure).
//! - [`bot`] acts on them and words the replies.
//! - [`webhook`] checks and routes webhook requests; `alertmanager` takes Alertmanager's
//!   notifications and queues the rollbacks of the watched deliveries they name.
//! - [`report`] tells GitHub how a delivery goes (commit status, final comment).
//! - [`poller`] turns tracker statuses into deliveries.
//! - `worker_loop` runs the queue, the jobs the bot hands it, and the pruner.
//! - `routes` has the router and the read-only endpoints; `views` gathers what they show.
//! - `grid` works out a delivery's repo × phase grid.
//! - `origin` names the pull request a delivery was asked for from; untrusted text in
//!   comments is set by `crate::text::markdown`.
//! - [`page`] renders the HTML; [`metrics`] the Prometheus text.
//! - `access` asks for the read token (`[server] read_token_env`) on every route but the
//!   webhooks and `/healthz`.
//! - `connections` caps the connections held and closes those of slow clients
//!   (`[server] header_timeout`, `idle_timeout`, `max_connections`).
//!
//! `app` holds what every part shares ([`App`], [`Job`], [`Handled`]); this file starts the
//! whole: [`serve`], [`run_cli`].
//!
//! Shutdown (SIGTERM, ctrl-c): the listener stops taking requests and lets the ones in
//! flight finish (a connection that has not sent a whole request head is closed); the worker
//! takes no new delivery. What runs (the delivery, or with a pipeline the head's release and
//! every candidate's preparation) gets `[server] shutdown_grace` to finish; past that it is
//! stopped where it is (its steps stopped, every transition so far already journaled) and
//! `recover` finishes or undoes it at the next start: build and test resume (a candidate's
//! from its rebase), deploy and verify are rolled back, a merge is reconciled.

mod access;
mod alertmanager;
mod app;
pub mod bot;
pub mod command;
mod connections;
#[cfg(test)]
mod fixtures;
mod grid;
pub mod metrics;
mod origin;
pub mod page;
pub mod poller;
pub mod report;
mod routes;
mod statuses;
mod views;
pub mod webhook;
mod worker_loop;

pub use app::{App, Handled, Job};
pub use routes::router;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::{Notify, mpsc, watch};

use crate::config::{Config, Located};
use crate::delivery::worker;
use crate::github::GitHub;

/// The bot, ready to run: its secrets read, its store open.
pub struct Prepared {
    app: Arc<App>,
    jobs: mpsc::UnboundedReceiver<Job>,
}

/// Reads the secrets and opens the store; fails before anything runs if one is missing.
pub async fn prepare(
    config: Config,
    listener: &tokio::net::TcpListener,
) -> anyhow::Result<Prepared> {
    let github = match &config.github {
        Some(gh) => Some(Arc::new(GitHub::from_config(&config, gh)?)),
        None => None,
    };
    let tracker_secret = match &config.server.tracker_secret_env {
        Some(var) => Some(
            crate::github::secret_from_env(var)
                .context("the tracker webhook secret is missing (`server.tracker_secret_env`)")?,
        ),
        None => None,
    };
    let alertmanager_token = match &config.alertmanager {
        Some(am) => Some(
            crate::github::secret_from_env(&am.token_env)
                .context("the Alertmanager webhook token is missing (`alertmanager.token_env`)")?,
        ),
        None => None,
    };
    let read_token = match &config.server.read_token_env {
        Some(var) => Some(
            crate::github::secret_from_env(var)
                .context("the read token is missing (`server.read_token_env`)")?,
        ),
        None => None,
    };
    let public_url = match &config.server.public_url {
        Some(_) => config.server.public_url(),
        None => format!("http://{}", listener.local_addr()?),
    };
    let progress: crate::delivery::Progress =
        Arc::new(|line: &str| tracing::info!(target: "lockstep::delivery", "{line}"));
    let mut engine = worker::engine(config, progress).await?;
    engine.tracker = crate::tracker::Cached::wrap(engine.tracker, engine.config.tracker.cache);
    let (jobs, jobs_rx) = mpsc::unbounded_channel();
    let app = Arc::new(App {
        engine,
        github,
        metrics: metrics::Metrics::default(),
        tracker_secret,
        alertmanager_token,
        read_token,
        wake: Notify::new(),
        poll_lock: tokio::sync::Mutex::new(()),
        jobs,
        public_url,
    });
    Ok(Prepared { app, jobs: jobs_rx })
}

/// Runs a prepared bot until `shutdown` completes.
pub async fn run(
    prepared: Prepared,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Prepared { app, jobs } = prepared;
    let config = app.config();
    let (body_limit, grace, poll_every, limits) = (
        config.server.body_limit,
        config.server.shutdown_grace,
        config.tracker.poll,
        connections::Limits::of(&config.server),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = tokio::spawn(worker_loop::worker_loop(
        app.clone(),
        jobs,
        stop_rx.clone(),
        grace,
    ));
    let poller = tokio::spawn(poller::run(app.clone(), poll_every, stop_rx.clone()));
    let pruner = tokio::spawn(worker_loop::prune_loop(app.clone(), stop_rx.clone()));

    if app.read_token.is_none() {
        tracing::warn!(
            "the queue page, step logs, /api/* and /metrics are public: anyone who reaches \
             this port reads them; set `server.read_token_env` to ask for a token"
        );
    }
    tracing::info!(
        address = %listener.local_addr()?,
        public_url = %app.public_url,
        github = app.github.is_some(),
        "lockstep serve is up"
    );
    let router = router(app.clone(), body_limit);
    let stop_on_shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: no new work; finishing requests in flight");
        let _ = stop_tx.send(true);
    };
    let listener = connections::Guarded::new(listener, limits, stop_rx.clone());
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(stop_on_shutdown)
        .await;
    for task in [worker, poller, pruner] {
        if let Err(e) = task.await
            && e.is_panic()
        {
            tracing::error!("a background task panicked: {e}");
        }
    }
    tracing::info!("lockstep serve stopped");
    served.context("the HTTP server failed")
}

/// Waits until the stop flag is raised.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// `lockstep serve`: binds the address, serves until SIGTERM or ctrl-c.
pub fn run_cli(at: &Located, listen: Option<&str>) -> anyhow::Result<crate::exit::Exit> {
    let config = at.load()?;
    let runtime = crate::runtime::multi_thread(None)?;
    runtime.block_on(async move {
        let address = listen.unwrap_or(&config.server.listen).to_string();
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| {
                format!("cannot listen on `{address}`; set `server.listen` or `--listen`")
            })?;
        let prepared = prepare(config, &listener).await?;
        // The bound address, for whoever started us with port 0, once startup can no longer
        // fail for want of a secret or a store.
        println!("lockstep: serving on http://{}", listener.local_addr()?);
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        run(prepared, listener, shutdown_signal()).await?;
        anyhow::Ok(crate::exit::Exit::Success)
    })
}

/// Completes on SIGTERM or ctrl-c (SIGINT).
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("ctrl-c received"),
    }
}
