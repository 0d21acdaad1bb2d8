//! Task trackers: where a task's status lives and how it moves.
//!
//! A tracker is both a gate (pushes only while a task is In Progress, delivery only when it is
//! For Delivery) and a trigger (For Delivery queues the merge; the outcome moves the task on).
//! Every kind implements [`Tracker`]; [`open`] builds the one the config names, and
//! [`Cached`] keeps answers for a few seconds in the long-running server.
//!
//! # Layout
//! - [`file`](mod@file): the embedded tracker, a TOML file of tasks.
//! - [`redmine`]: Redmine's REST API.
//! - [`jira`]: Jira's REST API v2 (Cloud and Server/Data Center).
//! - [`github`]: GitHub Issues, the status carried by a label.
//! - [`cached`]: a short-lived cache in front of any tracker.
//! - `http`: what the HTTP trackers share: requests under the timeout, errors, secrets.

pub mod cached;
pub mod file;
pub mod github;
mod http;
pub mod jira;
pub mod redmine;

use std::time::Duration;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::config::{Config, TrackerKind};
use crate::domain::TaskKey;

use crate::config::humanize;
pub use cached::Cached;

/// A task as lockstep sees it, whatever the tracker.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Task {
    pub key: String,
    pub status: String,
    pub title: String,
    pub assignee: String,
    pub url: String,
}

/// Why a tracker could not answer.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("tracker `{tracker}` did not answer in {}", humanize(*.after))]
    Timeout {
        tracker: &'static str,
        after: Duration,
    },
    #[error("tracker `{tracker}` refused the credentials in `{var}`; check that variable")]
    Auth { tracker: &'static str, var: String },
    #[error(
        "tracker `{tracker}` took the credentials in `{var}` but does not allow them {what}; \
         give that account the permission"
    )]
    Forbidden {
        tracker: &'static str,
        var: String,
        what: String,
    },
    #[error("task `{key}` does not exist in {tracker}")]
    NotFound { tracker: &'static str, key: String },
    #[error("tracker `{tracker}` has no status `{status}`{hint}")]
    NoSuchStatus {
        tracker: &'static str,
        status: String,
        hint: String,
    },
    #[error("tracker `{tracker}` did not move task `{key}` to `{status}`: {why}")]
    Refused {
        tracker: &'static str,
        key: String,
        status: String,
        why: String,
    },
    #[error("tracker `{tracker}`: {message}")]
    Other {
        tracker: &'static str,
        message: String,
    },
}

/// What every tracker does.
#[async_trait]
pub trait Tracker: Send + Sync {
    /// The tracker's kind, for messages.
    fn name(&self) -> &'static str;

    /// Reads a task; `Ok(None)` when no such task exists.
    async fn task(&self, key: &TaskKey) -> Result<Option<Task>, TrackerError>;

    /// Moves a task to a status (by name), leaving a note that says why.
    async fn move_to(&self, key: &TaskKey, status: &str, note: &str) -> Result<(), TrackerError>;

    /// The tasks currently in any of these statuses.
    async fn in_statuses(&self, statuses: &[String]) -> Result<Vec<Task>, TrackerError>;
}

/// Builds the tracker the config names. Secrets are read from the variables the config
/// names; a missing one is an error naming the variable.
pub fn open(config: &Config) -> anyhow::Result<Box<dyn Tracker>> {
    let t = &config.tracker;
    Ok(match t.kind {
        TrackerKind::File => Box::new(file::FileTracker::new(config.resolve(&t.path))),
        TrackerKind::Redmine => {
            let var = t.api_key_env.as_deref().unwrap_or(redmine::KEY_ENV);
            Box::new(redmine::Redmine::new(
                required(t.url.as_deref(), "url", "redmine")?,
                Credential::from_env(redmine::NAME, var, "API key")?,
                t.project.clone(),
                t.timeout,
            )?)
        }
        TrackerKind::Jira => {
            let var = t.token_env.as_deref().unwrap_or(jira::TOKEN_ENV);
            Box::new(jira::Jira::new(
                required(t.url.as_deref(), "url", "jira")?,
                t.user.clone(),
                Credential::from_env(jira::NAME, var, "API token")?,
                t.project.clone(),
                t.timeout,
            )?)
        }
        TrackerKind::Github => {
            let var = t.token_env.as_deref().unwrap_or(github::TOKEN_ENV);
            Box::new(github::GitHubIssues::new(
                t.api_url.as_deref().unwrap_or(github::API_URL),
                required(t.repo.as_deref(), "repo", "github")?,
                Credential::from_env(github::NAME, var, "token")?,
                t.label_prefix.as_deref().unwrap_or(github::LABEL_PREFIX),
                t.timeout,
            )?)
        }
    })
}

fn required<'a>(value: Option<&'a str>, key: &str, kind: &str) -> anyhow::Result<&'a str> {
    value.filter(|v| !v.trim().is_empty()).ok_or_else(|| {
        anyhow::anyhow!("`tracker.{key}` is required with kind = \"{kind}\"; add it to `[tracker]`")
    })
}

/// A secret and the variable it came from: the variable is named in errors, the secret
/// never (its `Debug` prints `[REDACTED]` and it has no `Display`).
#[derive(Debug, Clone)]
pub struct Credential {
    pub var: String,
    pub secret: SecretString,
}

impl Credential {
    pub fn new(var: impl Into<String>, secret: impl Into<String>) -> Credential {
        Credential {
            var: var.into(),
            secret: SecretString::from(secret.into()),
        }
    }

    /// Reads the secret from the environment variable `var`.
    pub fn from_env(tracker: &str, var: &str, what: &str) -> anyhow::Result<Credential> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Credential::new(var, v)),
            Ok(_) => anyhow::bail!(
                "tracker `{tracker}`: variable `{var}` is empty; put the {what} in it"
            ),
            Err(std::env::VarError::NotPresent) => anyhow::bail!(
                "tracker `{tracker}`: variable `{var}` is not set; export the {what} in it \
                 where the hooks and the server run"
            ),
            Err(std::env::VarError::NotUnicode(_)) => {
                anyhow::bail!("tracker `{tracker}`: variable `{var}` is not UTF-8")
            }
        }
    }
}

/// Reads a task under a deadline, so that a slow tracker cannot hold a push.
pub async fn task_with_timeout(
    tracker: &dyn Tracker,
    key: &TaskKey,
    timeout: Duration,
) -> Result<Option<Task>, TrackerError> {
    match tokio::time::timeout(timeout, tracker.task(key)).await {
        Ok(r) => r,
        Err(_) => Err(TrackerError::Timeout {
            tracker: tracker.name(),
            after: timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A credential, and the errors that name it, say which variable holds the secret and
    /// never the secret itself.
    #[test]
    fn credentials_name_their_variable_not_their_secret() {
        let cred = Credential::new("JIRA_TOKEN", "tok-hunter2");
        let debug = format!("{cred:?}");
        assert!(debug.contains("JIRA_TOKEN"), "{debug}");
        assert!(!debug.contains("tok-hunter2"), "{debug}");
        let e = TrackerError::Auth {
            tracker: "jira",
            var: cred.var.clone(),
        };
        assert_eq!(
            e.to_string(),
            "tracker `jira` refused the credentials in `JIRA_TOKEN`; check that variable"
        );
    }
}
