//! `POST /api/statuses/<sha>`: a commit status from a CI, in GitHub's shape
//! (`{state, context, target_url, description}`), for the steps on a `kind = "status"`
//! runner. The bearer token is one of those runners' `token_env` (constant time; missing or
//! wrong → 401, and the status counts for nothing); a body that is not a status → 400.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::App;
use super::webhook::{Rejection, header, token_matches};
use crate::config::RunnerKind;
use crate::runner::status::{CommitStatus, is_sha};

/// Records one status of `sha`.
pub async fn post(
    State(app): State<Arc<App>>,
    Path(sha): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match record(&app, &sha, &headers, &body).await {
        Ok(text) => (StatusCode::CREATED, format!("{text}\n")).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn record(
    app: &App,
    sha: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, Rejection> {
    let vars: Vec<&str> = app
        .config()
        .runners
        .values()
        .filter(|r| r.kind == RunnerKind::Status)
        .filter_map(|r| r.token_env.as_deref())
        .collect();
    if vars.is_empty() {
        return Err(Rejection::NotConfigured(
            "lockstep: no status runner is declared; add a `[runners.<name>]` with \
             `kind = \"status\"`"
                .into(),
        ));
    }
    let presented = header(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let known = vars.iter().any(|var| {
        std::env::var(var)
            .ok()
            .filter(|t| !t.is_empty())
            .is_some_and(|t| token_matches(&t, presented))
    });
    if presented.is_empty() || !known {
        tracing::warn!("commit status refused: missing or wrong bearer token");
        return Err(Rejection::Unauthorized(format!(
            "lockstep: missing or wrong `Authorization: Bearer` token; the CI sends the one in \
             `{}`",
            vars.join("` or `")
        )));
    }
    let sha = sha.to_ascii_lowercase();
    if !is_sha(&sha) {
        return Err(Rejection::BadRequest(
            "lockstep: the path names no commit; post to /api/statuses/<the full sha>".into(),
        ));
    }
    let status: CommitStatus = serde_json::from_slice(body).map_err(|e| {
        Rejection::BadRequest(format!(
            "lockstep: not a commit status ({e}); send {{\"state\": \"success\", \"context\": \
             \"ci/test\", \"target_url\": \"…\", \"description\": \"…\"}}"
        ))
    })?;
    app.engine
        .store
        .set_commit_status(&sha, &status)
        .await
        .map_err(|e| {
            tracing::error!("cannot record a commit status: {e:#}");
            Rejection::Unavailable("lockstep: the store does not answer; post it again".into())
        })?;
    Ok(format!(
        "lockstep: `{}` of {sha} is `{}`",
        crate::text::escape(&status.context),
        status.state.as_str()
    ))
}
