//! Who may read what `lockstep serve` shows. The port GitHub's webhooks reach also serves the
//! queue page, the step logs (build and deploy output), `/api/*` and `/metrics`; with
//! `[server] read_token_env` set, every one of those asks for the token, as
//! `Authorization: Bearer <token>` (scripts, Prometheus) or as HTTP Basic auth with any user
//! name and the token as password (a browser asks for it). Never in the URL: a query string
//! ends up in proxies' and browsers' logs. The webhooks check their own secrets, and
//! `/healthz` stays open for probes.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use secrecy::ExposeSecret as _;

use super::App;
use super::webhook::token_matches;

/// The middleware of the read routes: without a token configured it lets every request
/// through; with one, only those that present it.
pub async fn require_token(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let Some(token) = &app.read_token else {
        return next.run(request).await;
    };
    match presented(request.headers()) {
        Some(p) if token_matches(token.expose_secret(), &p) => next.run(request).await,
        _ => unauthorized(),
    }
}

/// The token a request presents: a bearer token, or the password of HTTP Basic auth.
fn presented(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then(|| rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return (!password.is_empty()).then(|| password.to_string());
    }
    None
}

/// What a request without the token gets: 401, and what to send.
fn unauthorized() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        "lockstep: this server asks for its read token: send `Authorization: Bearer <token>`, \
         or sign in with any user name and the token as password\n",
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"lockstep\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_and_basic_present_the_token() {
        assert_eq!(presented(&with("Bearer s3cret")).as_deref(), Some("s3cret"));
        assert_eq!(
            presented(&with("bearer  s3cret ")).as_deref(),
            Some("s3cret")
        );
        // `anyone:s3cret`, and a password that holds a colon.
        assert_eq!(
            presented(&with("Basic YW55b25lOnMzY3JldA==")).as_deref(),
            Some("s3cret")
        );
        assert_eq!(presented(&with("Basic dTphOmI=")).as_deref(), Some("a:b"));
        assert_eq!(presented(&HeaderMap::new()), None);
        assert_eq!(presented(&with("Bearer")), None);
        assert_eq!(presented(&with("Bearer ")), None);
        assert_eq!(presented(&with("Basic not base64!")), None);
        // `user` alone, and `user:` with no password.
        assert_eq!(presented(&with("Basic dXNlcg==")), None);
        assert_eq!(presented(&with("Basic dXNlcjo=")), None);
        assert_eq!(presented(&with("Token s3cret")), None);
    }

    #[tokio::test]
    async fn the_refusal_says_what_to_send() {
        let r = unauthorized();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"lockstep\""
        );
        let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("Authorization: Bearer <token>"), "{text}");
    }
}
