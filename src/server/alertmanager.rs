//! `POST /webhooks/alertmanager`: Alertmanager's notifications (payload version 4).
//!
//! Checked by the [`AlertmanagerNotification`] extractor before anything is read: the bearer
//! token of `[alertmanager] token_env` (constant time; missing or wrong → 401), then the body
//! (not a version 4 notification → 400 with the reason); the handler receives the
//! notification. Each firing alert that names a repository (`[alertmanager] repo_label`, or a
//! `[[alertmanager.match]]`) rolls back the latest watched delivery of it: the worker runs
//! its rollback steps and reverts every upstream, then the pull request hears of it. Resolved
//! alerts do nothing; an alert is acted on once (its fingerprint and start are remembered), and
//! whatever became of each is answered, with 200, in one line per alert.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use secrecy::ExposeSecret as _;

use super::webhook::{Rejection, header, reply, token_matches};
use super::{App, Job};
use crate::domain::DeliveryId;
use crate::monitor::alert::{self, Alert, AlertStatus, Notification};

/// A notification from Alertmanager that passed every check: the webhook is on, the bearer
/// token is right, and the body is a version 4 notification.
pub struct AlertmanagerNotification(pub Notification);

impl FromRequest<Arc<App>> for AlertmanagerNotification {
    type Rejection = Rejection;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, Rejection> {
        AlertmanagerNotification::check(req, app)
            .await
            .map_err(|r| r.counted(app, "alertmanager"))
    }
}

impl AlertmanagerNotification {
    /// The checks, in order: configuration, token, body.
    async fn check(req: Request, app: &App) -> Result<AlertmanagerNotification, Rejection> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, &())
            .await
            .map_err(Rejection::Body)?;
        let (Some(config), Some(token)) = (&app.config().alertmanager, &app.alertmanager_token)
        else {
            return Err(Rejection::NotConfigured(
                "lockstep: the Alertmanager webhook is off; add an `[alertmanager]` section".into(),
            ));
        };
        let presented = header(&headers, "authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if presented.is_empty() || !token_matches(token.expose_secret(), presented) {
            tracing::warn!("alertmanager notification refused: missing or wrong bearer token");
            return Err(Rejection::Unauthorized(format!(
                "lockstep: missing or wrong `Authorization: Bearer` token; Alertmanager sends \
                 the one in `{}` with `http_config.authorization`",
                config.token_env
            )));
        }
        let notification =
            alert::parse(&body).map_err(|e| Rejection::BadRequest(format!("lockstep: {e}")))?;
        Ok(AlertmanagerNotification(notification))
    }
}

/// `POST /webhooks/alertmanager`: acts on each alert of a checked notification.
pub async fn notify(
    State(app): State<Arc<App>>,
    AlertmanagerNotification(notification): AlertmanagerNotification,
) -> Response {
    let mut lines = Vec::new();
    let mut acted = false;
    // Several alerts of one notification may name the same delivery: it is rolled back once.
    let mut queued: Vec<DeliveryId> = Vec::new();
    for a in &notification.alerts {
        match on_alert(&app, a, &mut queued).await {
            Ok((did, line)) => {
                acted |= did;
                lines.push(line);
            }
            Err(e) => {
                // Alertmanager retries a failed notification: let it.
                tracing::error!("cannot act on an alert: {e:#}");
                return reply(
                    &app,
                    "alertmanager",
                    "error",
                    StatusCode::SERVICE_UNAVAILABLE,
                    "lockstep: the store does not answer; Alertmanager will retry".into(),
                );
            }
        }
    }
    if lines.is_empty() {
        lines.push("the notification holds no alert".into());
    }
    let result = if acted { "accepted" } else { "ignored" };
    reply(
        &app,
        "alertmanager",
        result,
        StatusCode::OK,
        format!("lockstep: {}", lines.join("\nlockstep: ")),
    )
}

/// Acts on one alert; says what became of it (true when a rollback was queued).
async fn on_alert(
    app: &App,
    a: &Alert,
    queued: &mut Vec<DeliveryId>,
) -> anyhow::Result<(bool, String)> {
    let quote = a.quote();
    if a.status == AlertStatus::Resolved {
        return Ok((false, format!("{quote} resolved; nothing to do")));
    }
    let store = &app.engine.store;
    if !store
        .remember_alert(&a.fingerprint, &a.starts_at, a.name())
        .await?
    {
        return Ok((false, format!("{quote} was already handled; nothing to do")));
    }
    let Some(config) = &app.config().alertmanager else {
        return Ok((false, String::new()));
    };
    let repos: Vec<_> = config
        .repos_of(&a.labels)
        .into_iter()
        .filter(|r| app.config().repo(r).is_some())
        .map(crate::domain::RepoName::new)
        .collect();
    let outcome = if repos.is_empty() {
        Err(format!(
            "it names no repository of lockstep.toml (label `{}`, or `[[alertmanager.match]]`)",
            alert::escape(&config.repo_label, 60)
        ))
    } else {
        app.engine.watched_delivery(&repos, a.started_ms()).await?
    };
    let d = match outcome {
        Ok(d) => d,
        Err(why) => {
            store
                .alert_outcome(&a.fingerprint, &a.starts_at, None, &why)
                .await?;
            tracing::info!("{quote}: nothing rolled back: {why}");
            return Ok((false, format!("{quote}: nothing rolled back: {why}")));
        }
    };
    if queued.contains(&d.id) {
        let line = format!("#{} is already being rolled back", d.id);
        store
            .alert_outcome(&a.fingerprint, &a.starts_at, Some(d.id), &line)
            .await?;
        return Ok((false, format!("{quote}: {line}")));
    }
    let line = format!(
        "rolling back #{} of `{}`: its rollback steps, then a revert in every repository",
        d.id, d.task
    );
    store
        .alert_outcome(&a.fingerprint, &a.starts_at, Some(d.id), &line)
        .await?;
    if app
        .jobs
        .send(Job::AlertRollback {
            id: d.id,
            quote: quote.clone(),
            fired_ms: a.started_ms(),
        })
        .is_err()
    {
        store.forget_alert(&a.fingerprint, &a.starts_at).await?;
        anyhow::bail!("the worker is gone");
    }
    app.wake.notify_one();
    queued.push(d.id);
    tracing::warn!("{quote}: {line}");
    Ok((true, format!("{quote}: {line}")))
}
