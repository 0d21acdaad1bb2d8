//! What the HTTP trackers (Redmine, Jira) share: one client whose every request is bounded
//! by the tracker timeout, URLs built segment by segment (so a task key cannot add a path or
//! a query), and one mapping from HTTP answers to [`TrackerError`]s.
//!
//! Secrets travel only in headers marked sensitive; error texts name the variable that holds
//! them, never their value, and never the base URL's host part beyond its name.

use std::time::Duration;

use anyhow::bail;
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::TrackerError;

pub(crate) struct Http {
    pub tracker: &'static str,
    pub client: reqwest::Client,
    pub base: Url,
    pub timeout: Duration,
    /// The variable the credentials came from, for [`TrackerError::Auth`].
    pub credential_var: String,
}

impl Http {
    /// A client for the tracker at `url` (the value of `tracker.{key}`).
    pub fn new(
        tracker: &'static str,
        key: &str,
        url: &str,
        timeout: Duration,
        credential_var: &str,
        headers: HeaderMap,
    ) -> anyhow::Result<Http> {
        let base = parse_base_url(key, url)?;
        let client = crate::tls::http_client(timeout)
            .default_headers(headers)
            .build()
            .map_err(|e| {
                anyhow::anyhow!("tracker `{tracker}`: cannot build an HTTP client: {e}")
            })?;
        Ok(Http {
            tracker,
            client,
            base,
            timeout,
            credential_var: credential_var.to_string(),
        })
    }

    /// The base URL with `segments` appended, each percent-encoded as one path segment.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked at construction: an http(s) URL has a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// Sends a request; a transport failure becomes `Timeout` or `Other`.
    pub async fn send(&self, req: RequestBuilder) -> Result<Response, TrackerError> {
        req.send().await.map_err(|e| self.transport(e))
    }

    fn transport(&self, e: reqwest::Error) -> TrackerError {
        if e.is_timeout() {
            return TrackerError::Timeout {
                tracker: self.tracker,
                after: self.timeout,
            };
        }
        let host = self.base.host_str().unwrap_or("?");
        TrackerError::Other {
            tracker: self.tracker,
            message: format!("cannot reach `{host}`: {}", chain(&e.without_url())),
        }
    }

    /// Reads a successful answer's JSON body.
    pub async fn read<T: DeserializeOwned>(
        &self,
        resp: Response,
        what: &str,
    ) -> Result<T, TrackerError> {
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes).map_err(|e| TrackerError::Other {
            tracker: self.tracker,
            message: format!("unexpected answer to {what}: {e}"),
        })
    }

    /// The error an unsuccessful answer stands for: `Auth` for 401 (who are you?),
    /// `Forbidden` for 403 (not you), else `Other` with the tracker's own words.
    pub async fn failure(&self, resp: Response, what: &str) -> TrackerError {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return TrackerError::Auth {
                tracker: self.tracker,
                var: self.credential_var.clone(),
            };
        }
        if status == StatusCode::FORBIDDEN {
            return TrackerError::Forbidden {
                tracker: self.tracker,
                var: self.credential_var.clone(),
                what: what.to_string(),
            };
        }
        let body = resp.text().await.unwrap_or_default();
        let said = error_text(&body);
        TrackerError::Other {
            tracker: self.tracker,
            message: if said.is_empty() {
                format!("{what} answered {status}")
            } else {
                format!("{what} answered {status}: {said}")
            },
        }
    }

    /// The tracker's own explanation in an error body, for `Refused` texts.
    pub async fn reason(resp: Response) -> String {
        let status = resp.status();
        let said = error_text(&resp.text().await.unwrap_or_default());
        if said.is_empty() {
            format!("the tracker answered {status}")
        } else {
            said
        }
    }
}

/// Checks a tracker base URL: http(s), no credentials in it.
pub(crate) fn parse_base_url(key: &str, url: &str) -> anyhow::Result<Url> {
    let base = match Url::parse(url.trim()) {
        Ok(u) => u,
        Err(e) => {
            bail!("`tracker.{key}` is not a URL ({e}); write it like `https://tracker.example.com`")
        }
    };
    if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
        bail!("`tracker.{key}` must be an http(s) URL like `https://tracker.example.com`");
    }
    if !base.username().is_empty() || base.password().is_some() {
        bail!(
            "`tracker.{key}` carries credentials; remove them and put the secret in the variable \
             the tracker reads"
        );
    }
    if base.query().is_some() || base.fragment().is_some() {
        bail!("`tracker.{key}` must not have a query or a fragment");
    }
    Ok(base)
}

/// An error and its causes, on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// What a tracker says in an error body: Jira's `errorMessages` and `errors`, Redmine's
/// `errors`, GitHub's `message`; else the first line of a short text body.
pub(crate) fn error_text(body: &str) -> String {
    let mut said: Vec<String> = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let mut take = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) if !s.is_empty() => said.push(s.clone()),
            serde_json::Value::Array(a) => said.extend(
                a.iter()
                    .filter_map(|x| x.as_str())
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            serde_json::Value::Object(o) => said.extend(
                o.iter()
                    .filter_map(|(k, x)| x.as_str().map(|s| format!("{k}: {s}"))),
            ),
            _ => {}
        };
        for key in ["errorMessages", "errors", "message"] {
            if let Some(x) = v.get(key) {
                take(x);
            }
        }
    } else {
        let line = body.trim().lines().next().unwrap_or("").trim();
        if !line.starts_with('<') {
            said.push(line.chars().take(200).collect());
        }
    }
    said.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_each_tracker() {
        assert_eq!(
            error_text(r#"{"errors":["Subject cannot be blank"]}"#),
            "Subject cannot be blank"
        );
        assert_eq!(
            error_text(
                r#"{"errorMessages":["Issue does not exist"],"errors":{"resolution":"required"}}"#
            ),
            "Issue does not exist; resolution: required"
        );
        assert_eq!(
            error_text(r#"{"message":"Bad credentials"}"#),
            "Bad credentials"
        );
        assert_eq!(error_text("<html><body>Bad Gateway"), "");
        assert_eq!(
            error_text("  database is locked\nat ...  "),
            "database is locked"
        );
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(parse_base_url("url", "https://redmine.example.com/redmine").is_ok());
        let e = parse_base_url("url", "https://me:hunter2@redmine.example.com")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("carries credentials") && !e.contains("hunter2"),
            "{e}"
        );
        assert!(parse_base_url("url", "redmine.example.com").is_err());
        assert!(parse_base_url("url", "ftp://x").is_err());
    }

    #[test]
    fn segments_are_encoded() {
        let http = Http::new(
            "redmine",
            "url",
            "https://x.example/redmine/",
            Duration::from_secs(1),
            "V",
            HeaderMap::new(),
        )
        .unwrap();
        assert_eq!(
            http.url(&["issues", "../a?b#c.json"]).as_str(),
            "https://x.example/redmine/issues/..%2Fa%3Fb%23c.json"
        );
    }
}
