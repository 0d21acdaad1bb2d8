//! The HTTP routes of `lockstep serve`: the router with its security headers, and the
//! read-only endpoints (the pages, `/api/*`, step logs, `/metrics`, `/healthz`). The webhooks
//! are in `webhook`, the CIs' commit statuses in `statuses`; what the pages show is gathered in `views`; who may read them, in
//! `access`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use super::views::{self, read_log};
use super::{App, access, alertmanager, metrics, page, statuses, webhook};
use crate::domain::DeliveryId;
use crate::store::now_ms;

/// The routes.
pub fn router(app: Arc<App>, body_limit: usize) -> Router {
    let alert_limit = app
        .config()
        .alertmanager
        .as_ref()
        .map_or(body_limit, |a| a.body_limit);
    // What the server shows asks for the read token when one is set (`access`); the
    // webhooks check their own secrets, and probes reach `/healthz` without one.
    let read = Router::new()
        .route("/", get(queue_page))
        .route("/deliveries/{id}", get(delivery_page))
        .route("/deliveries/{id}/steps/{step}/log", get(step_log))
        .route("/api/queue", get(api_queue))
        .route("/api/deliveries/{id}", get(api_delivery))
        .route("/metrics", get(metrics_text))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            access::require_token,
        ));
    Router::new()
        .merge(read)
        .route("/healthz", get(healthz))
        .route("/webhooks/github", post(webhook::github))
        .route("/webhooks/tracker", post(webhook::tracker))
        .route("/api/statuses/{sha}", post(statuses::post))
        .route(
            "/webhooks/alertmanager",
            post(alertmanager::notify).layer(axum::extract::DefaultBodyLimit::max(alert_limit)),
        )
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

/// An error at the HTTP edge: a handler ends in `?`, and the client gets a 500 with an id
/// ([`internal`]).
#[derive(Debug)]
struct AppError(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for AppError {
    fn from(e: E) -> Self {
        AppError(e.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        internal(self.0)
    }
}

/// A 500 that shows the client an id and nothing more. The error's chain names files, SQL and
/// hosts, and the client may be anyone: the chain goes to the log, under the same id.
fn internal(e: anyhow::Error) -> Response {
    let id = logged(&e);
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "lockstep: internal error `{id}`; the server's log has its details under that id\n"
        ),
    )
        .into_response()
}

/// Logs an error under a new id and returns the id: the time and a count, unique across the
/// restarts of a server.
fn logged(e: &anyhow::Error) -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let id = format!("{:x}-{}", now_ms(), COUNT.fetch_add(1, Ordering::Relaxed));
    tracing::error!(error_id = %id, "{e:#}");
    id
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, Html(page::not_found_page(&what))).into_response()
}

async fn queue_page(State(app): State<Arc<App>>) -> Result<Html<String>, AppError> {
    Ok(Html(page::queue_page(&views::queue_view(&app).await?)))
}

async fn api_queue(State(app): State<Arc<App>>) -> Result<Response, AppError> {
    Ok(axum::Json(views::queue_view(&app).await?).into_response())
}

async fn delivery_page(
    State(app): State<Arc<App>>,
    Path(id): Path<DeliveryId>,
) -> Result<Response, AppError> {
    Ok(match views::delivery_view(&app, id).await? {
        Some(v) => Html(page::delivery_page(&v)).into_response(),
        None => not_found(format!("no delivery #{id}")),
    })
}

async fn api_delivery(
    State(app): State<Arc<App>>,
    Path(id): Path<DeliveryId>,
) -> Result<Response, AppError> {
    let Some(r) = views::recorded(&app, id).await? else {
        return Ok((
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": format!("no delivery #{id}") })),
        )
            .into_response());
    };
    Ok(axum::Json(serde_json::json!({
        "delivery": r.delivery, "repos": r.repos, "steps": r.steps, "journal": r.journal,
        "grid": r.grid, "url": app.delivery_url(id),
    }))
    .into_response())
}

async fn step_log(
    State(app): State<Arc<App>>,
    Path((id, step)): Path<(DeliveryId, i64)>,
) -> Result<Response, AppError> {
    let steps = app.engine.store.steps(id).await?;
    Ok(match steps.into_iter().find(|s| s.id == step) {
        Some(s) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            read_log(&app.engine.store, &s).await,
        )
            .into_response(),
        None => not_found(format!("delivery #{id} has no step {step}")),
    })
}

async fn metrics_text(State(app): State<Arc<App>>) -> Result<Response, AppError> {
    let store = &app.engine.store;
    let counts = metrics::StoreCounts {
        by_state: store.counts().await?,
        rollbacks: store.rollbacks_by_trigger().await?,
        hook_decisions: {
            // A hook may hold the counts' lock for a moment: wait off the async threads.
            let dir = app.config().state_dir();
            tokio::task::spawn_blocking(move || crate::verdict_counts::read(&dir)).await??
        },
        ecosystem: app.ecosystem(),
        leader: store.role() == crate::store::Role::Leader,
        lease: store.lease_events(),
        discards: store
            .discards_by_reason()
            .await?
            .into_iter()
            .map(|(r, n)| (r.as_str().to_string(), n))
            .collect(),
        waits: store.waits().await?,
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(&counts),
    )
        .into_response())
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let store = &app.engine.store;
    match store.counts().await {
        Ok(_) => format!(
            "ok\nrole: {}\nstore: {}\n",
            store.role().as_str(),
            store.backend().as_str()
        )
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the store does not answer; the server's log has the error under `{}`\n",
                logged(&e)
            ),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 64 * 1024)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn issue9_internal_errors_show_an_id_not_the_chain() {
        let e = || {
            anyhow::anyhow!("no such table: deliveries")
                .context("cannot read `/srv/lockstep/state/lockstep.db`")
        };
        let r = internal(e());
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let first = body(r).await;
        assert!(!first.contains("/srv"), "{first}");
        assert!(!first.contains("no such table"), "{first}");
        assert!(first.starts_with("lockstep: internal error `"), "{first}");
        let second = body(internal(e())).await;
        assert_ne!(first.split('`').nth(1), second.split('`').nth(1));
    }
}
