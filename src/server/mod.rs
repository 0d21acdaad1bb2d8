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
//! - [`webhook`] checks and routes webhook requests.
//! - [`report`] tells GitHub how a delivery goes (commit status, final comment).
//! - [`poller`] turns tracker statuses into deliveries.
//! - [`page`] renders the HTML; [`metrics`] the Prometheus text.
//!
//! Shutdown (SIGTERM, ctrl-c): the listener stops taking requests and lets the ones in
//! flight finish; the worker takes no new delivery. A running delivery gets
//! `[server] shutdown_grace` to finish; past that it is stopped where it is (its step killed,
//! every transition so far already journaled) and `recover` finishes or undoes it at the next
//! start: build and test resume, deploy and verify are rolled back, a merge is reconciled.

pub mod bot;
pub mod command;
pub mod metrics;
pub mod page;
pub mod poller;
pub mod report;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::SecretString;
use tokio::sync::{Notify, mpsc, watch};

use crate::config::Config;
use crate::delivery::line::Engine;
use crate::delivery::worker::{self, WorkerLock};
use crate::github::{GitHub, RepoName};
use crate::store::now_ms;

/// Work the worker does besides the queue, between deliveries.
#[derive(Debug)]
pub enum Job {
    /// `/rollback`: run the rollback steps of a finished delivery, then report on the PR.
    Rollback {
        id: i64,
        requester: String,
        repo: RepoName,
        number: u64,
    },
}

/// What every handler shares.
pub struct App {
    pub engine: Engine,
    pub github: Option<GitHub>,
    pub metrics: metrics::Metrics,
    pub tracker_secret: Option<SecretString>,
    /// Wakes the worker when a delivery was queued.
    pub wake: Notify,
    /// Serialises tracker polls (the timer and `/webhooks/tracker`).
    pub poll_lock: tokio::sync::Mutex<()>,
    pub jobs: mpsc::UnboundedSender<Job>,
    pub public_url: String,
}

impl App {
    pub fn config(&self) -> &Config {
        &self.engine.config
    }

    /// The page of a delivery, for links in comments and statuses.
    pub fn delivery_url(&self, id: i64) -> String {
        format!("{}/deliveries/{id}", self.public_url)
    }
}

/// Runs the bot until `shutdown` completes: the worker, the tracker poller and the HTTP
/// server on `listener`.
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let prepared = prepare(config, &listener).await?;
    run(prepared, listener, shutdown).await
}

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
        Some(gh) => Some(GitHub::from_config(&config, gh)?),
        None => None,
    };
    let tracker_secret = match &config.server.tracker_secret_env {
        Some(var) => Some(
            crate::github::secret_from_env(var)
                .context("the tracker webhook secret is missing (`server.tracker_secret_env`)")?,
        ),
        None => None,
    };
    let public_url = match &config.server.public_url {
        Some(_) => config.server.public_url(),
        None => format!("http://{}", listener.local_addr()?),
    };
    let progress: crate::delivery::line::Progress =
        Arc::new(|line: &str| tracing::info!(target: "lockstep::delivery", "{line}"));
    let mut engine = worker::engine(config, progress).await?;
    engine.tracker = crate::tracker::Cached::wrap(engine.tracker, engine.config.tracker.cache);
    let (jobs, jobs_rx) = mpsc::unbounded_channel();
    let app = Arc::new(App {
        engine,
        github,
        metrics: metrics::Metrics::default(),
        tracker_secret,
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
    let (body_limit, grace, poll_every) = (
        config.server.body_limit,
        config.server.shutdown_grace,
        config.tracker.poll,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = tokio::spawn(worker_loop(app.clone(), jobs, stop_rx.clone(), grace));
    let poller = tokio::spawn(poller::run(app.clone(), poll_every, stop_rx.clone()));
    let pruner = tokio::spawn(prune_loop(app.clone(), stop_rx.clone()));

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

/// The routes.
pub fn router(app: Arc<App>, body_limit: usize) -> Router {
    Router::new()
        .route("/", get(queue_page))
        .route("/deliveries/{id}", get(delivery_page))
        .route("/deliveries/{id}/steps/{step}/log", get(step_log))
        .route("/api/queue", get(api_queue))
        .route("/api/deliveries/{id}", get(api_delivery))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/webhooks/github", post(webhook::github))
        .route("/webhooks/tracker", post(webhook::tracker))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    r
}

/// Waits until the stop flag is raised.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Holds the worker lock and runs the queue, one delivery at a time, reporting to GitHub.
async fn worker_loop(
    app: Arc<App>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let state_dir = app.config().state_dir();
    let mut told = false;
    let _lock = loop {
        match WorkerLock::try_acquire(&state_dir) {
            Ok(Some(lock)) => break lock,
            Ok(None) if !told => {
                tracing::warn!("another worker holds the queue; waiting for it to finish");
                told = true;
            }
            Ok(None) => {}
            Err(e) => tracing::error!("cannot take the worker lock: {e:#}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopped(&mut stop) => return,
        }
    };
    match worker::recover(&app.engine).await {
        Ok(lines) => {
            for l in lines {
                tracing::warn!("recovered: {l}");
            }
        }
        Err(e) => tracing::error!("recovery failed: {e:#}"),
    }
    loop {
        if *stop.borrow() {
            return;
        }
        if let Ok(job) = jobs.try_recv() {
            run_job(&app, job).await;
            continue;
        }
        let next = match app.engine.store.claim_next().await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("cannot read the queue: {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(d) = next else {
            tokio::select! {
                _ = app.wake.notified() => {}
                job = jobs.recv() => if let Some(job) = job { run_job(&app, job).await },
                // Deliveries queued by other processes (`git push -o deliver`, the CLI).
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopped(&mut stop) => return,
            }
            continue;
        };
        report::started(&app, &d).await;
        let delivering = app.engine.deliver(&d);
        tokio::pin!(delivering);
        let mut stop_seen = stop.clone();
        let outcome = tokio::select! {
            r = &mut delivering => Some(r),
            _ = async { stopped(&mut stop_seen).await; tokio::time::sleep(grace).await } => None,
        };
        match outcome {
            Some(Ok(state)) => report::finished(&app, &d, state).await,
            Some(Err(e)) => {
                // The line could not even journal its failure (the store is gone?).
                tracing::error!(delivery = d.id, task = %d.task, "the delivery broke: {e:#}");
            }
            None => {
                tracing::warn!(
                    delivery = d.id,
                    task = %d.task,
                    "stopped during shutdown; it is recovered at the next start"
                );
                return;
            }
        }
    }
}

async fn run_job(app: &App, job: Job) {
    match job {
        Job::Rollback {
            id,
            requester,
            repo,
            number,
        } => {
            let result = match app.engine.store.delivery(id).await {
                Ok(Some(d)) if d.state.is_final() => {
                    app.engine.rollback_finished(&d, false).await.map(|_| d)
                }
                Ok(Some(d)) => Err(anyhow::anyhow!(
                    "#{id} is {} again; nothing was rolled back",
                    d.state.as_str()
                )),
                Ok(None) => Err(anyhow::anyhow!("no delivery #{id}")),
                Err(e) => Err(e),
            };
            let body = bot::rollback_outcome(app, id, &requester, &result);
            if let Some(gh) = &app.github
                && let Err(e) = gh.comment(&repo, number, &body).await
            {
                tracing::warn!("cannot report the rollback of #{id}: {e:#}");
            }
        }
    }
}

/// Forgets webhook delivery ids after a week (GitHub redelivers for a few days at most).
async fn prune_loop(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    const KEEP: i64 = 7 * 24 * 3600 * 1000;
    loop {
        if let Err(e) = app.engine.store.prune_webhooks(now_ms() - KEEP).await {
            tracing::warn!("cannot prune webhook ids: {e:#}");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

fn internal(e: anyhow::Error) -> Response {
    tracing::error!("{e:#}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("lockstep: {e:#}\n"),
    )
        .into_response()
}

fn not_found(what: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(format!(
            "<!doctype html><title>not found</title><p>{}</p><p><a href=\"/\">the queue</a></p>",
            page::esc(&what)
        )),
    )
        .into_response()
}

async fn in_flight(app: &App, d: crate::store::DeliveryRow) -> anyhow::Result<page::InFlight> {
    let store = &app.engine.store;
    let repos = store.repos(d.id).await?;
    let steps = store.steps(d.id).await?;
    let journal = store.journal_of(d.id).await?;
    let grid = page::grid(app.config(), &d, &repos, &steps, &journal);
    let current = steps
        .into_iter()
        .filter(|s| s.outcome == "running")
        .collect();
    Ok(page::InFlight {
        delivery: d,
        grid,
        current,
    })
}

async fn queue_view(app: &App) -> anyhow::Result<page::QueueView> {
    let store = &app.engine.store;
    let mut running = Vec::new();
    for d in store.running().await? {
        running.push(in_flight(app, d).await?);
    }
    Ok(page::QueueView {
        repos: app.config().repos.iter().map(|r| r.name.clone()).collect(),
        running,
        queued: store.queued().await?,
        recent: store.history(20).await?,
        now_ms: now_ms(),
        refresh_secs: app.config().server.refresh.as_secs().max(1),
    })
}

async fn queue_page(State(app): State<Arc<App>>) -> Response {
    match queue_view(&app).await {
        Ok(v) => Html(page::queue_page(&v)).into_response(),
        Err(e) => internal(e),
    }
}

async fn api_queue(State(app): State<Arc<App>>) -> Response {
    match queue_view(&app).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => internal(e),
    }
}

/// The last 256 KiB of a log, as text.
fn read_log(path: &str) -> String {
    use std::io::{Read as _, Seek as _, SeekFrom};
    const MAX: u64 = 256 * 1024;
    let Ok(mut f) = std::fs::File::open(path) else {
        return "(no log)".into();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut prefix = String::new();
    if len > MAX {
        let _ = f.seek(SeekFrom::Start(len - MAX));
        prefix = format!("(… the first {} bytes are left out)\n", len - MAX);
    }
    let mut buf = Vec::new();
    let _ = f.take(MAX).read_to_end(&mut buf);
    prefix + &String::from_utf8_lossy(&buf)
}

async fn delivery_view(app: &App, id: i64) -> anyhow::Result<Option<page::DeliveryView>> {
    let store = &app.engine.store;
    let Some(d) = store.delivery(id).await? else {
        return Ok(None);
    };
    let repos = store.repos(id).await?;
    let steps = store.steps(id).await?;
    let journal = store.journal_of(id).await?;
    let grid = page::grid(app.config(), &d, &repos, &steps, &journal);
    let steps = steps
        .into_iter()
        .map(|s| page::StepLog {
            log: read_log(&s.log_path),
            step: s,
        })
        .collect();
    Ok(Some(page::DeliveryView {
        repos_all: app.config().repos.iter().map(|r| r.name.clone()).collect(),
        delivery: d,
        repos,
        grid,
        steps,
        journal,
        now_ms: now_ms(),
        refresh_secs: app.config().server.refresh.as_secs().max(1),
    }))
}

async fn delivery_page(State(app): State<Arc<App>>, Path(id): Path<i64>) -> Response {
    match delivery_view(&app, id).await {
        Ok(Some(v)) => Html(page::delivery_page(&v)).into_response(),
        Ok(None) => not_found(format!("no delivery #{id}")),
        Err(e) => internal(e),
    }
}

async fn api_delivery(State(app): State<Arc<App>>, Path(id): Path<i64>) -> Response {
    let store = &app.engine.store;
    let gather = async {
        let Some(d) = store.delivery(id).await? else {
            return Ok(None);
        };
        let repos = store.repos(id).await?;
        let steps = store.steps(id).await?;
        let journal = store.journal_of(id).await?;
        let grid = page::grid(app.config(), &d, &repos, &steps, &journal);
        anyhow::Ok(Some(serde_json::json!({
            "delivery": d, "repos": repos, "steps": steps, "journal": journal, "grid": grid,
            "url": app.delivery_url(id),
        })))
    };
    match gather.await {
        Ok(Some(v)) => axum::Json(v).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": format!("no delivery #{id}") })),
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

async fn step_log(State(app): State<Arc<App>>, Path((id, step)): Path<(i64, i64)>) -> Response {
    match app.engine.store.steps(id).await {
        Ok(steps) => match steps.into_iter().find(|s| s.id == step) {
            Some(s) => (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                read_log(&s.log_path),
            )
                .into_response(),
            None => not_found(format!("delivery #{id} has no step {step}")),
        },
        Err(e) => internal(e),
    }
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let store = &app.engine.store;
    let counts = async {
        anyhow::Ok(metrics::StoreCounts {
            by_state: store.counts().await?,
            hook_decisions: {
                // A hook may hold the counts' lock for a moment: wait off the async threads.
                let dir = app.config().state_dir();
                tokio::task::spawn_blocking(move || crate::verdict_counts::read(&dir)).await??
            },
        })
    };
    match counts.await {
        Ok(c) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            app.metrics.render(&c),
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    match app.engine.store.counts().await {
        Ok(_) => "ok\n".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store does not answer: {e:#}\n"),
        )
            .into_response(),
    }
}

/// `lockstep serve`: binds the address, serves until SIGTERM or ctrl-c.
pub fn run_cli(at: &crate::commands::ConfigAt, listen: Option<&str>) -> anyhow::Result<i32> {
    let config = Config::load_from(&at.0, at.1)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
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
        anyhow::Ok(0)
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
