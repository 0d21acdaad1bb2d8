//! The webhook endpoints: `POST /webhooks/github` and `POST /webhooks/tracker`, and what every
//! webhook's intake shares: the [`Rejection`] of a request turned away before its handler runs.
//!
//! GitHub's requests are checked by the [`GitHubWebhook`] extractor before anything is read
//! from them: the signature first (`X-Hub-Signature-256`, constant time; missing or wrong →
//! 401), then the headers, then the JSON (malformed → 400 with the reason). Only
//! `issue_comment`, `pull_request` and `pull_request_review` are acted on; every other event is
//! answered 202 and ignored. For those three, what the signature covers is remembered in the
//! store: the id of the comment, the review or the pull request the event is about
//! ([`event_key`]). A replay is answered and ignored, whatever `X-GitHub-Delivery` it comes
//! with (that header is outside the signature). The handler receives a verified, new event and
//! only acts on it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use octocrab::models::webhook_events::payload::{
    IssueCommentWebhookEventAction, PullRequestReviewWebhookEventAction,
    PullRequestWebhookEventAction,
};
use octocrab::models::webhook_events::{WebhookEvent, WebhookEventPayload};
use secrecy::ExposeSecret as _;
use subtle::ConstantTimeEq as _;

use super::{App, Handled, bot};
use crate::domain::PrState;
use crate::github::{self, GitHubRepo};

/// The events lockstep acts on.
const HANDLED: &[&str] = &["issue_comment", "pull_request", "pull_request_review"];

/// Why a webhook request was answered before its handler ran. Each kind knows its status and
/// its `result` label in `lockstep_webhook_requests_total`; the text is the answer's body.
#[derive(Debug)]
pub enum Rejection {
    /// The endpoint is off (a section or a secret is missing): 404, `not_configured`.
    NotConfigured(String),
    /// A missing or wrong signature or token: 401, `unauthorized`.
    Unauthorized(String),
    /// Unusable headers or body: 400, `bad_request`.
    BadRequest(String),
    /// The body could not be read (over `body_limit`: 413): axum's own answer, not counted,
    /// since no webhook was read.
    Body(BytesRejection),
    /// Nothing for lockstep to do: a `ping` (200) or an event it does not act on (202);
    /// `ignored`.
    Ignored(StatusCode, String),
    /// What the signature covers was handled already: 200, `replayed`.
    Replayed(String),
    /// The store does not answer, so a replay cannot be told apart: 503, `error`; the sender
    /// retries.
    Unavailable(String),
}

impl Rejection {
    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::NotConfigured(_) => StatusCode::NOT_FOUND,
            Rejection::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Rejection::BadRequest(_) => StatusCode::BAD_REQUEST,
            Rejection::Body(r) => r.status(),
            Rejection::Ignored(status, _) => *status,
            Rejection::Replayed(_) => StatusCode::OK,
            Rejection::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Its `result` label in the metrics; `None` for a body that was never read.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            Rejection::NotConfigured(_) => Some("not_configured"),
            Rejection::Unauthorized(_) => Some("unauthorized"),
            Rejection::BadRequest(_) => Some("bad_request"),
            Rejection::Body(_) => None,
            Rejection::Ignored(..) => Some("ignored"),
            Rejection::Replayed(_) => Some("replayed"),
            Rejection::Unavailable(_) => Some("error"),
        }
    }

    /// Counts the rejection of a request to `source` (`github`, `tracker`, `alertmanager`).
    pub fn counted(self, app: &App, source: &str) -> Rejection {
        if let Some(label) = self.label() {
            app.metrics.webhook(source, label);
        }
        self
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            Rejection::Body(r) => r.into_response(),
            Rejection::NotConfigured(text)
            | Rejection::Unauthorized(text)
            | Rejection::BadRequest(text)
            | Rejection::Ignored(_, text)
            | Rejection::Replayed(text)
            | Rejection::Unavailable(text) => (status, format!("{text}\n")).into_response(),
        }
    }
}

/// A handler's answer to a webhook, counted under `source` and `result`.
pub(super) fn reply(
    app: &App,
    source: &str,
    result: &str,
    status: StatusCode,
    text: String,
) -> Response {
    app.metrics.webhook(source, result);
    (status, format!("{text}\n")).into_response()
}

/// A header's value, when it is text.
pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A GitHub webhook that passed every check: signed with the webhook secret, with usable
/// headers, a payload lockstep acts on, and not handled before (its delivery id and its
/// [`event_key`] are now remembered in the store).
pub struct GitHubWebhook {
    pub gh: Arc<github::GitHub>,
    /// `X-GitHub-Delivery`.
    pub delivery: String,
    /// `X-GitHub-Event`.
    pub event: String,
    pub parsed: WebhookEvent,
    /// What the signature covers, remembered against replays.
    pub key: Option<String>,
}

impl FromRequest<Arc<App>> for GitHubWebhook {
    type Rejection = Rejection;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, Rejection> {
        GitHubWebhook::check(req, app)
            .await
            .map_err(|r| r.counted(app, "github"))
    }
}

impl GitHubWebhook {
    /// The checks, in order: configuration, signature, headers, body, replay.
    async fn check(req: Request, app: &App) -> Result<GitHubWebhook, Rejection> {
        let headers = &req.headers().clone();
        let body = Bytes::from_request(req, &())
            .await
            .map_err(Rejection::Body)?;
        let Some(gh) = app.github.clone() else {
            return Err(Rejection::NotConfigured(
                "lockstep: GitHub is not configured; add a `[github]` section to lockstep.toml"
                    .into(),
            ));
        };
        let Some(secret) = &gh.webhook_secret else {
            return Err(Rejection::NotConfigured(
                "lockstep: no GitHub webhook secret; set `github.webhook_secret_env`".into(),
            ));
        };
        if let Err(e) =
            github::check_signature(secret, header(headers, "x-hub-signature-256"), &body)
        {
            tracing::warn!("webhook refused: {e}");
            return Err(Rejection::Unauthorized(format!("lockstep: {e}")));
        }
        let delivery = header(headers, "x-github-delivery")
            .filter(|d| !d.is_empty() && d.len() <= 100 && d.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                Rejection::BadRequest("lockstep: no usable `X-GitHub-Delivery` header".into())
            })?
            .to_string();
        let event = header(headers, "x-github-event")
            .filter(|e| {
                !e.is_empty()
                    && e.len() <= 64
                    && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .ok_or_else(|| {
                Rejection::BadRequest("lockstep: no usable `X-GitHub-Event` header".into())
            })?
            .to_string();
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            return Err(Rejection::BadRequest(format!(
                "lockstep: the body is not JSON: {e}"
            )));
        }
        if event == "ping" {
            return Err(Rejection::Ignored(StatusCode::OK, "lockstep: pong".into()));
        }
        // Nothing is done for other events, so there is nothing to replay either.
        if !HANDLED.contains(&event.as_str()) {
            return Err(Rejection::Ignored(
                StatusCode::ACCEPTED,
                format!("lockstep: `{event}` events are ignored"),
            ));
        }
        let parsed = WebhookEvent::try_from_header_and_body(&event, &body).map_err(|e| {
            Rejection::BadRequest(format!("lockstep: malformed `{event}` payload: {e}"))
        })?;
        // The delivery id catches GitHub's own redeliveries for a week; the event key, inside
        // the signed body, catches a captured body sent again under a fresh id, for good.
        let key = event_key(&event, &parsed);
        let store = &app.engine.store;
        let remembered = async {
            if !store.remember_webhook(&delivery).await? {
                return anyhow::Ok(Some(format!("delivery `{delivery}`")));
            }
            if let Some(key) = &key
                && !store.remember_event(key).await?
            {
                return Ok(Some(format!("`{key}`")));
            }
            Ok(None)
        };
        match remembered.await {
            Ok(None) => Ok(GitHubWebhook {
                gh,
                delivery,
                event,
                parsed,
                key,
            }),
            Ok(Some(what)) => {
                tracing::info!(delivery = %delivery, event = %event, "replayed webhook ignored: {what}");
                Err(Rejection::Replayed(format!(
                    "lockstep: {what} was already handled; ignored"
                )))
            }
            Err(e) => {
                tracing::error!("cannot record webhook `{delivery}`: {e:#}");
                Err(Rejection::Unavailable(
                    "lockstep: the store does not answer; redeliver later".into(),
                ))
            }
        }
    }
}

/// `POST /webhooks/github`: acts on a verified event.
pub async fn github(State(app): State<Arc<App>>, hook: GitHubWebhook) -> Response {
    let GitHubWebhook {
        gh,
        delivery,
        event,
        parsed,
        key,
    } = hook;
    match dispatch(&app, &gh, parsed).await {
        Ok(Handled::Acted(what)) => {
            tracing::info!(delivery = %delivery, event = %event, "{what}");
            reply(
                &app,
                "github",
                "accepted",
                StatusCode::OK,
                format!("lockstep: {what}"),
            )
        }
        Ok(Handled::Ignored(why)) => {
            tracing::debug!(delivery = %delivery, event = %event, "ignored: {why}");
            reply(
                &app,
                "github",
                "ignored",
                StatusCode::ACCEPTED,
                format!("lockstep: ignored: {why}"),
            )
        }
        Err(e) => {
            // Let GitHub's redelivery try again.
            let store = &app.engine.store;
            let _ = store.forget_webhook(&delivery).await;
            if let Some(key) = &key {
                let _ = store.forget_event(key).await;
            }
            tracing::error!(delivery = %delivery, event = %event, "webhook failed: {e:#}");
            reply(
                &app,
                "github",
                "error",
                StatusCode::BAD_GATEWAY,
                format!("lockstep: {e:#}"),
            )
        }
    }
}

/// What makes an event the one it is, inside the signed body: the comment, review or pull
/// request it is about and what happened to it. `None` for events lockstep does not act on.
pub fn event_key(event: &str, parsed: &WebhookEvent) -> Option<String> {
    match &parsed.specific {
        WebhookEventPayload::IssueComment(c) => {
            Some(format!("{event}:{}:{:?}", c.comment.id, c.action))
        }
        WebhookEventPayload::PullRequestReview(r) => {
            Some(format!("{event}:{}:{:?}", r.review.id, r.action))
        }
        // A pull request may be closed, reopened and closed again: each close is its own.
        WebhookEventPayload::PullRequest(p) => Some(format!(
            "{event}:{}:{:?}:{}",
            p.pull_request.id,
            p.action,
            p.pull_request
                .updated_at
                .map(|t| t.timestamp_millis())
                .unwrap_or_default()
        )),
        _ => None,
    }
}

/// The repository of an event, if it is one of the ecosystem's.
fn ecosystem_repo(app: &App, event: &WebhookEvent) -> Result<GitHubRepo, String> {
    let full = event
        .repository
        .as_ref()
        .and_then(|r| {
            r.full_name
                .clone()
                .or_else(|| r.owner.as_ref().map(|o| format!("{}/{}", o.login, r.name)))
        })
        .ok_or("the event names no repository")?;
    if app.config().repo_by_github(&full).is_none() {
        return Err(format!(
            "`{full}` is not a repository of lockstep.toml (`[[repo]] github`)"
        ));
    }
    GitHubRepo::parse(&full).ok_or_else(|| format!("`{full}` is not `owner/name`"))
}

async fn dispatch(app: &App, gh: &github::GitHub, event: WebhookEvent) -> anyhow::Result<Handled> {
    let repo = match ecosystem_repo(app, &event) {
        Ok(r) => r,
        Err(why) => return Ok(Handled::Ignored(why)),
    };
    if let Some(inst) = &event.installation {
        gh.remember_installation(&repo, inst.id().0);
    }
    // Who acted: for a review, who submitted or dismissed it.
    let sender = event.sender.as_ref().map(|s| s.login.clone());
    match event.specific {
        WebhookEventPayload::IssueComment(c) => {
            if c.action != IssueCommentWebhookEventAction::Created {
                return Ok(Handled::Ignored("only new comments are read".into()));
            }
            if c.issue.pull_request.is_none() {
                return Ok(Handled::Ignored(
                    "a comment on an issue, not a pull request".into(),
                ));
            }
            let user = &c.comment.user;
            if user.r#type == "Bot" || user.login.eq_ignore_ascii_case(&app.config().bot.user) {
                return Ok(Handled::Ignored("a comment by a bot".into()));
            }
            let body = c.comment.body.clone().unwrap_or_default();
            bot::on_comment(app, gh, &repo, c.issue.number, &user.login, &body).await
        }
        WebhookEventPayload::PullRequest(p) => match p.action {
            PullRequestWebhookEventAction::Closed => {
                bot::on_closed(app, gh, &repo, &pull_of(&p.pull_request)).await
            }
            _ => Ok(Handled::Ignored(
                "nothing to do for this pull request action".into(),
            )),
        },
        WebhookEventPayload::PullRequestReview(r) => match r.action {
            PullRequestReviewWebhookEventAction::Dismissed
            | PullRequestReviewWebhookEventAction::Submitted => {
                let change = bot::ReviewChange {
                    by: sender,
                    dismissed: r.action == PullRequestReviewWebhookEventAction::Dismissed,
                };
                bot::on_review(app, gh, &repo, &pull_of(&r.pull_request), &change).await
            }
            _ => Ok(Handled::Ignored(
                "nothing to do for this review action".into(),
            )),
        },
        _ => Ok(Handled::Ignored("not an event lockstep acts on".into())),
    }
}

/// The parts of a webhook's pull request lockstep reads.
fn pull_of(p: &octocrab::models::pulls::PullRequest) -> github::Pull {
    github::Pull {
        number: p.number,
        author: p.user.as_ref().map(|u| u.login.clone()).unwrap_or_default(),
        head_ref: p.head.ref_field.clone(),
        head_sha: p.head.sha.clone(),
        head_repo: p
            .head
            .repo
            .as_ref()
            .and_then(|r| r.full_name.clone())
            .unwrap_or_default(),
        state: match p.state {
            Some(octocrab::models::IssueState::Closed) => PrState::Closed,
            _ => PrState::Open,
        },
    }
}

/// Compares a presented token with the secret in constant time (both are hashed first, so
/// their lengths do not show either).
pub fn token_matches(secret: &str, presented: &str) -> bool {
    use sha2::Digest as _;
    let a = sha2::Sha256::digest(secret.as_bytes());
    let b = sha2::Sha256::digest(presented.as_bytes());
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// A request to `POST /webhooks/tracker` that carries the shared secret (`X-Lockstep-Token`,
/// compared in constant time).
pub struct TrackerToken;

impl FromRequestParts<Arc<App>> for TrackerToken {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Rejection> {
        let checked = || {
            let Some(secret) = &app.tracker_secret else {
                return Err(Rejection::NotConfigured(
                    "lockstep: the tracker webhook is off; set `server.tracker_secret_env`".into(),
                ));
            };
            let presented = header(&parts.headers, "x-lockstep-token").unwrap_or_default();
            if presented.is_empty() || !token_matches(secret.expose_secret(), presented) {
                return Err(Rejection::Unauthorized(
                    "lockstep: missing or wrong `X-Lockstep-Token`".into(),
                ));
            }
            Ok(TrackerToken)
        };
        checked().map_err(|r| r.counted(app, "tracker"))
    }
}

/// `POST /webhooks/tracker`: the tracker says something changed; poll it now.
pub async fn tracker(State(app): State<Arc<App>>, _: TrackerToken) -> Response {
    match super::poller::poll_once(&app).await {
        Ok(lines) => {
            let text = if lines.is_empty() {
                "lockstep: polled; nothing new for delivery".to_string()
            } else {
                format!("lockstep: polled\n{}", lines.join("\n"))
            };
            reply(&app, "tracker", "accepted", StatusCode::OK, text)
        }
        Err(e) => reply(
            &app,
            "tracker",
            "error",
            StatusCode::BAD_GATEWAY,
            format!("lockstep: cannot poll the tracker: {e:#}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name);
        std::fs::read(path).unwrap()
    }

    /// Issue 10: replays are recognised by what the signature covers.
    #[test]
    fn issue10_event_keys_name_the_comment_review_or_pull_request() {
        let key = |event: &str, file: &str| {
            let parsed = WebhookEvent::try_from_header_and_body(event, &sample(file)).unwrap();
            event_key(event, &parsed)
        };
        let comment = key("issue_comment", "issue_comment.created.json").unwrap();
        assert!(
            comment.starts_with("issue_comment:") && comment.ends_with(":Created"),
            "{comment}"
        );
        let review = key("pull_request_review", "pull_request_review.submitted.json").unwrap();
        assert!(review.ends_with(":Submitted"), "{review}");
        let closed = key("pull_request", "pull_request.closed.json").unwrap();
        assert!(
            closed.starts_with("pull_request:") && closed.contains(":Closed:"),
            "{closed}"
        );
        assert_eq!(key("push", "push.json"), None);
        // Another comment is another key.
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample("issue_comment.created.json")).unwrap();
        v["comment"]["id"] = 1.into();
        let other = WebhookEvent::try_from_header_and_body(
            "issue_comment",
            &serde_json::to_vec(&v).unwrap(),
        )
        .unwrap();
        assert_ne!(event_key("issue_comment", &other).unwrap(), comment);
    }

    #[tokio::test]
    async fn rejections_know_their_status_and_label() {
        let text = || "lockstep: why".to_string();
        for (r, status, label) in [
            (
                Rejection::NotConfigured(text()),
                404,
                Some("not_configured"),
            ),
            (Rejection::Unauthorized(text()), 401, Some("unauthorized")),
            (Rejection::BadRequest(text()), 400, Some("bad_request")),
            (
                Rejection::Ignored(StatusCode::OK, text()),
                200,
                Some("ignored"),
            ),
            (
                Rejection::Ignored(StatusCode::ACCEPTED, text()),
                202,
                Some("ignored"),
            ),
            (Rejection::Replayed(text()), 200, Some("replayed")),
            (Rejection::Unavailable(text()), 503, Some("error")),
        ] {
            assert_eq!((r.status().as_u16(), r.label()), (status, label));
            let response = r.into_response();
            assert_eq!(response.status().as_u16(), status);
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            assert_eq!(body, "lockstep: why\n");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cret", "s3cre"));
        assert!(!token_matches("s3cret", "s3cret "));
        assert!(!token_matches("s3cret", ""));
    }
}
