//! Redmine, through its REST API (`X-Redmine-API-Key`, JSON).
//!
//! ```toml
//! [tasks]
//! pattern = 'feature-(?P<task>[0-9]+)'   # the task key is the issue number
//!
//! [tracker]
//! kind = "redmine"
//! url = "https://redmine.example.com"
//! api_key_env = "REDMINE_API_KEY"
//! ```
//!
//! Statuses are named in the config and resolved to ids through `/issue_statuses.json`.
//! Redmine answers 204 to a status change its workflow does not allow and keeps the old
//! status, so a move is checked against the issue's `allowed_statuses` before it is written
//! and re-read after: a refused move is reported as [`TrackerError::Refused`], never as done.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::ExposeSecret as _;
use serde::Deserialize;

use super::http::Http;
use super::{Credential, Task, Tracker, TrackerError};
use crate::domain::TaskKey;

pub const NAME: &str = "redmine";
/// The variable read for the API key when `tracker.api_key_env` is not set.
pub const KEY_ENV: &str = "REDMINE_API_KEY";
/// Issues a listing request asks for: Redmine's maximum.
const PAGE: u32 = 100;

pub struct Redmine {
    http: Http,
    project: Option<String>,
    page_size: u32,
    statuses: Mutex<Option<Arc<Vec<Named>>>>,
}

#[derive(Debug, Clone, Deserialize)]
struct Named {
    id: u64,
    name: String,
}

#[derive(Deserialize)]
struct IssueEnvelope {
    issue: Issue,
}

#[derive(Deserialize)]
struct Issue {
    id: u64,
    #[serde(default)]
    subject: String,
    status: Named,
    assigned_to: Option<Named>,
    /// Only with `?include=allowed_statuses` (Redmine 5.0 and later).
    allowed_statuses: Option<Vec<Named>>,
}

#[derive(Deserialize)]
struct IssuePage {
    issues: Vec<Issue>,
    total_count: u64,
}

#[derive(Deserialize)]
struct Statuses {
    issue_statuses: Vec<Named>,
}

/// The issue number a task key stands for.
fn issue_id(key: &str) -> Result<u64, TrackerError> {
    let number = (!key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()))
        .then(|| key.parse::<u64>().ok())
        .flatten();
    number.ok_or_else(|| TrackerError::Other {
        tracker: NAME,
        message: format!(
            "task key `{key}` is not an issue number; Redmine issues are numbers, so make \
             the `task` group of `[tasks] pattern` capture only the number, like \
             'feature-(?P<task>[0-9]+)'"
        ),
    })
}

impl Redmine {
    /// A client for the Redmine at `url`, each request bounded by `timeout`.
    pub fn new(
        url: &str,
        key: Credential,
        project: Option<String>,
        timeout: Duration,
    ) -> anyhow::Result<Redmine> {
        let mut value = HeaderValue::from_str(key.secret.expose_secret()).map_err(|_| {
            anyhow::anyhow!(
                "tracker `redmine`: the API key in `{}` has characters a header cannot carry; \
                 copy it again from Redmine's \"My account\" page",
                key.var
            )
        })?;
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("X-Redmine-API-Key", value);
        headers.insert("Accept", HeaderValue::from_static("application/json"));
        Ok(Redmine {
            http: Http::new(NAME, "url", url, timeout, &key.var, headers)?,
            project,
            page_size: PAGE,
            statuses: Mutex::new(None),
        })
    }

    /// Lists `n` issues a request instead of 100 (to see the paging work on a small Redmine).
    pub fn with_page_size(mut self, n: u32) -> Redmine {
        self.page_size = n.clamp(1, PAGE);
        self
    }

    fn task_of(&self, key: &str, issue: &Issue) -> Task {
        Task {
            key: key.to_string(),
            status: issue.status.name.clone(),
            title: issue.subject.clone(),
            assignee: issue
                .assigned_to
                .as_ref()
                .map(|a| a.name.clone())
                .unwrap_or_default(),
            url: self
                .http
                .url(&["issues", &issue.id.to_string()])
                .to_string(),
        }
    }

    async fn issue(&self, id: u64, include: Option<&str>) -> Result<Option<Issue>, TrackerError> {
        let what = format!("GET /issues/{id}.json");
        let mut url = self.http.url(&["issues", &format!("{id}.json")]);
        if let Some(include) = include {
            url.query_pairs_mut().append_pair("include", include);
        }
        let resp = self.http.send(self.http.client.get(url)).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(
                self.http.read::<IssueEnvelope>(resp, &what).await?.issue,
            )),
            _ => Err(self.http.failure(resp, &what).await),
        }
    }

    async fn fetch_statuses(&self) -> Result<Arc<Vec<Named>>, TrackerError> {
        let what = "GET /issue_statuses.json";
        let resp = self
            .http
            .send(
                self.http
                    .client
                    .get(self.http.url(&["issue_statuses.json"])),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.http.failure(resp, what).await);
        }
        let list = Arc::new(self.http.read::<Statuses>(resp, what).await?.issue_statuses);
        *self.statuses.lock().expect("no panic while holding it") = Some(list.clone());
        Ok(list)
    }

    /// The status of that name (exact, else ignoring case); fetched once, and again when a
    /// name is not found (statuses are rarely added, but they are).
    async fn status(&self, name: &str) -> Result<Named, TrackerError> {
        let find = |list: &[Named]| {
            list.iter()
                .find(|s| s.name == name)
                .or_else(|| list.iter().find(|s| s.name.eq_ignore_ascii_case(name)))
                .cloned()
        };
        let cached = self
            .statuses
            .lock()
            .expect("no panic while holding it")
            .clone();
        if let Some(found) = cached.as_deref().and_then(|l| find(l)) {
            return Ok(found);
        }
        let list = self.fetch_statuses().await?;
        find(&list).ok_or_else(|| TrackerError::NoSuchStatus {
            tracker: NAME,
            status: name.to_string(),
            hint: format!(
                "; its statuses are {}",
                list.iter()
                    .map(|s| format!("`{}`", s.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    fn refused(&self, key: &str, status: &str, why: String) -> TrackerError {
        TrackerError::Refused {
            tracker: NAME,
            key: key.to_string(),
            status: status.to_string(),
            why,
        }
    }

    fn not_found(key: &str) -> TrackerError {
        TrackerError::NotFound {
            tracker: NAME,
            key: key.to_string(),
        }
    }
}

#[async_trait]
impl Tracker for Redmine {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn task(&self, key: &TaskKey) -> Result<Option<Task>, TrackerError> {
        let key = key.as_str();
        let id = issue_id(key)?;
        Ok(self.issue(id, None).await?.map(|i| self.task_of(key, &i)))
    }

    async fn move_to(&self, key: &TaskKey, status: &str, note: &str) -> Result<(), TrackerError> {
        let key = key.as_str();
        let id = issue_id(key)?;
        let target = self.status(status).await?;
        let issue = self
            .issue(id, Some("allowed_statuses"))
            .await?
            .ok_or_else(|| Self::not_found(key))?;
        let var = &self.http.credential_var;
        if issue.status.id != target.id
            && let Some(allowed) = &issue.allowed_statuses
            && !allowed.iter().any(|s| s.id == target.id)
        {
            return Err(self.refused(
                key,
                &target.name,
                format!(
                    "the workflow does not let the account of `{var}` move it from `{}`; \
                     allow that transition for its role",
                    issue.status.name
                ),
            ));
        }
        let mut change = serde_json::json!({ "status_id": target.id });
        if !note.is_empty() {
            change["notes"] = note.into();
        }
        let what = format!("PUT /issues/{id}.json");
        let resp = self
            .http
            .send(
                self.http
                    .client
                    .put(self.http.url(&["issues", &format!("{id}.json")]))
                    .json(&serde_json::json!({ "issue": change })),
            )
            .await?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => return Err(Self::not_found(key)),
            StatusCode::UNPROCESSABLE_ENTITY => {
                return Err(self.refused(key, &target.name, Http::reason(resp).await));
            }
            _ => return Err(self.http.failure(resp, &what).await),
        }
        // Redmine drops a status change its workflow refuses and still answers 204.
        let after = self
            .issue(id, None)
            .await?
            .ok_or_else(|| Self::not_found(key))?;
        if after.status.id != target.id {
            return Err(self.refused(
                key,
                &target.name,
                format!(
                    "Redmine kept it `{}`: its workflow does not allow this change for the \
                     account of `{var}`",
                    after.status.name
                ),
            ));
        }
        Ok(())
    }

    async fn in_statuses(&self, statuses: &[String]) -> Result<Vec<Task>, TrackerError> {
        let mut seen = HashSet::new();
        let mut tasks = Vec::new();
        for name in statuses {
            let status = self.status(name).await?;
            // Pages are keyed on the issue id, not an offset: an issue that leaves the status
            // while the list is read (moved by someone, or by lockstep) must not shift the
            // pages and hide another one.
            let mut from = 1u64;
            loop {
                let mut url = self.http.url(&["issues.json"]);
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("status_id", &status.id.to_string())
                        .append_pair("sort", "id")
                        .append_pair("issue_id", &format!(">={from}"))
                        .append_pair("limit", &self.page_size.to_string());
                    if let Some(project) = &self.project {
                        q.append_pair("project_id", project);
                    }
                }
                let what = "GET /issues.json";
                let resp = self.http.send(self.http.client.get(url)).await?;
                if resp.status() == StatusCode::NOT_FOUND
                    && let Some(project) = &self.project
                {
                    return Err(TrackerError::Other {
                        tracker: NAME,
                        message: format!(
                            "project `{project}` does not exist or its issues are hidden from \
                             the account; check `tracker.project`"
                        ),
                    });
                }
                if !resp.status().is_success() {
                    return Err(self.http.failure(resp, what).await);
                }
                let page: IssuePage = self.http.read(resp, what).await?;
                let n = page.issues.len() as u64;
                for issue in &page.issues {
                    if seen.insert(issue.id) {
                        tasks.push(self.task_of(&issue.id.to_string(), issue));
                    }
                }
                match page.issues.iter().map(|i| i.id).max() {
                    Some(last) if n < page.total_count => from = last + 1,
                    _ => break,
                }
            }
        }
        Ok(tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_issue_numbers() {
        assert_eq!(issue_id("34").unwrap(), 34);
        for bad in ["", "+34", "TASK-1", "34 ", "99999999999999999999999"] {
            let e = issue_id(bad).unwrap_err().to_string();
            assert!(e.contains("is not an issue number"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_key_never_shows() {
        let r = Redmine::new(
            "http://127.0.0.1:9",
            Credential::new("REDMINE_API_KEY", "s3cr3t-key"),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        let debug = format!("{:?}", r.http.client);
        assert!(!debug.contains("s3cr3t-key"), "{debug}");
        let cred = format!("{:?}", Credential::new("REDMINE_API_KEY", "s3cr3t-key"));
        assert!(
            !cred.contains("s3cr3t-key") && cred.contains("REDMINE_API_KEY"),
            "{cred}"
        );
    }
}
