//! Jira, through its REST API v2: Cloud and Server/Data Center.
//!
//! ```toml
//! [tracker]
//! kind = "jira"
//! url = "https://acme.atlassian.net"
//! user = "bot@acme.example"      # Cloud: basic auth with an API token; omit it to send
//! token_env = "JIRA_TOKEN"       # the token as a bearer token (Data Center PAT)
//! ```
//!
//! A move looks the transition up by the name of the status it leads to (transition ids
//! differ per workflow), performs it, then leaves the note as a comment. Listing searches by
//! JQL: `/rest/api/2/search` (Server/Data Center), and `/rest/api/2/search/jql` once Jira
//! Cloud has answered 410 Gone to the former.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use regex::Regex;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use super::http::Http;
use super::{Credential, Task, Tracker, TrackerError};
use crate::domain::TaskKey;

pub const NAME: &str = "jira";
/// The variable read for the token when `tracker.token_env` is not set.
pub const TOKEN_ENV: &str = "JIRA_TOKEN";
/// Issues a search request asks for (servers may answer fewer).
const PAGE: u32 = 100;
const FIELDS: &str = "status,summary,assignee";

static KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Z][A-Z0-9_]+-[0-9]+$").expect("a valid regex"));

pub struct Jira {
    http: Http,
    auth: Auth,
    project: Option<String>,
    page_size: u32,
    /// Set once `/rest/api/2/search` answered 410 Gone (Jira Cloud since 2025).
    cloud_search: AtomicBool,
}

enum Auth {
    Basic { user: String, token: SecretString },
    Bearer(SecretString),
}

#[derive(Deserialize)]
struct Issue {
    key: String,
    fields: Fields,
}

#[derive(Deserialize)]
struct Fields {
    #[serde(default)]
    summary: String,
    status: Named,
    assignee: Option<User>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    #[serde(default)]
    display_name: String,
}

#[derive(Deserialize)]
struct Transitions {
    transitions: Vec<Transition>,
}

#[derive(Deserialize)]
struct Transition {
    id: String,
    to: Named,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchPage {
    #[serde(default)]
    total: u64,
    issues: Vec<Issue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JqlPage {
    issues: Vec<Issue>,
    next_page_token: Option<String>,
    #[serde(default)]
    is_last: bool,
}

/// Checks a task key against Jira's key syntax, so nothing else reaches a URL.
fn check_key(key: &str) -> Result<(), TrackerError> {
    if KEY.is_match(key) {
        Ok(())
    } else {
        Err(TrackerError::Other {
            tracker: NAME,
            message: format!(
                "task key `{}` is not a Jira issue key like `PROJ-123`; check `[tasks] pattern`",
                key.chars().take(100).collect::<String>()
            ),
        })
    }
}

/// A JQL string literal: quoted, with `"` and `\` escaped.
pub fn jql_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The JQL that finds the tasks in these statuses (in this project, when one is set).
pub fn jql_in_statuses(statuses: &[String], project: Option<&str>) -> String {
    let list: Vec<String> = statuses.iter().map(|s| jql_string(s)).collect();
    let mut jql = format!("status in ({})", list.join(", "));
    if let Some(p) = project {
        jql = format!("project = {} AND {jql}", jql_string(p));
    }
    jql + " ORDER BY key ASC"
}

impl Jira {
    /// A client for the Jira at `url`: basic auth `user:token` when a user is given, else
    /// the token as a bearer token. Each request is bounded by `timeout`.
    pub fn new(
        url: &str,
        user: Option<String>,
        token: Credential,
        project: Option<String>,
        timeout: Duration,
    ) -> anyhow::Result<Jira> {
        let mut headers = HeaderMap::new();
        headers.insert("Accept", HeaderValue::from_static("application/json"));
        let auth = match user.filter(|u| !u.is_empty()) {
            Some(user) => Auth::Basic {
                user,
                token: token.secret.clone(),
            },
            None => Auth::Bearer(token.secret.clone()),
        };
        Ok(Jira {
            http: Http::new(NAME, "url", url, timeout, &token.var, headers)?,
            auth,
            project,
            page_size: PAGE,
            cloud_search: AtomicBool::new(false),
        })
    }

    /// Asks for `n` issues a search request instead of 100.
    pub fn with_page_size(mut self, n: u32) -> Jira {
        self.page_size = n.clamp(1, PAGE);
        self
    }

    /// A request to the path `segments` (each one encoded) with the query `query`.
    fn request(&self, method: Method, segments: &[&str], query: &[(&str, &str)]) -> RequestBuilder {
        let mut url = self.http.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let req = self.http.client.request(method, url);
        match &self.auth {
            Auth::Basic { user, token } => req.basic_auth(user, Some(token.expose_secret())),
            Auth::Bearer(token) => req.bearer_auth(token.expose_secret()),
        }
    }

    fn task_of(&self, key: &str, issue: &Issue) -> Task {
        Task {
            key: key.to_string(),
            status: issue.fields.status.name.clone(),
            title: issue.fields.summary.clone(),
            assignee: issue
                .fields
                .assignee
                .as_ref()
                .map(|a| a.display_name.clone())
                .unwrap_or_default(),
            url: self.http.url(&["browse", key]).to_string(),
        }
    }

    async fn issue(&self, key: &str) -> Result<Option<Issue>, TrackerError> {
        let what = format!("GET /rest/api/2/issue/{key}");
        let req = self.request(
            Method::GET,
            &["rest", "api", "2", "issue", key],
            &[("fields", FIELDS)],
        );
        let resp = self.http.send(req).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(self.http.read(resp, &what).await?)),
            _ => Err(self.http.failure(resp, &what).await),
        }
    }

    /// Why no transition leads to `status`: the status does not exist, or the workflow
    /// offers no way there from where the issue is.
    async fn no_transition(
        &self,
        key: &str,
        status: &str,
        offered: &[Transition],
    ) -> Result<(), TrackerError> {
        let what = "GET /rest/api/2/status";
        let resp = self
            .http
            .send(self.request(Method::GET, &["rest", "api", "2", "status"], &[]))
            .await?;
        if resp.status().is_success() {
            let all: Vec<Named> = self.http.read(resp, what).await?;
            if !all.iter().any(|s| s.name.eq_ignore_ascii_case(status)) {
                let mut names: Vec<String> = all.iter().map(|s| format!("`{}`", s.name)).collect();
                names.sort();
                names.dedup();
                return Err(TrackerError::NoSuchStatus {
                    tracker: NAME,
                    status: status.to_string(),
                    hint: format!("; its statuses are {}", names.join(", ")),
                });
            }
        }
        let current = self
            .issue(key)
            .await?
            .ok_or_else(|| TrackerError::NotFound {
                tracker: NAME,
                key: key.to_string(),
            })?
            .fields
            .status
            .name;
        if current.eq_ignore_ascii_case(status) {
            return Ok(()); // already there: only the note is left to add
        }
        let offered: Vec<String> = offered.iter().map(|t| format!("`{}`", t.to.name)).collect();
        Err(TrackerError::Refused {
            tracker: NAME,
            key: key.to_string(),
            status: status.to_string(),
            why: format!(
                "the workflow has no transition from `{current}` to it for this account; \
                 from `{current}` it offers {}",
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            ),
        })
    }

    /// One page of `/rest/api/2/search`; `None` when Jira answers 410 Gone (Cloud).
    async fn search_page(
        &self,
        jql: &str,
        start_at: u64,
    ) -> Result<Option<SearchPage>, TrackerError> {
        let what = "GET /rest/api/2/search";
        let req = self.request(
            Method::GET,
            &["rest", "api", "2", "search"],
            &[
                ("jql", jql),
                ("fields", FIELDS),
                ("startAt", &start_at.to_string()),
                ("maxResults", &self.page_size.to_string()),
            ],
        );
        let resp = self.http.send(req).await?;
        if resp.status() == StatusCode::GONE {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.http.failure(resp, what).await);
        }
        self.http.read(resp, what).await.map(Some)
    }

    /// Searches with `/rest/api/2/search`; `None` when that endpoint is gone.
    async fn search_server(&self, jql: &str) -> Result<Option<Vec<Issue>>, TrackerError> {
        let mut issues = Vec::new();
        loop {
            let Some(page) = self.search_page(jql, issues.len() as u64).await? else {
                return Ok(None);
            };
            let n = page.issues.len();
            issues.extend(page.issues);
            if n == 0 || issues.len() as u64 >= page.total {
                return Ok(Some(issues));
            }
        }
    }

    async fn search_cloud(&self, jql: &str) -> Result<Vec<Issue>, TrackerError> {
        let what = "GET /rest/api/2/search/jql";
        let mut issues = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let size = self.page_size.to_string();
            let mut query = vec![("jql", jql), ("fields", FIELDS), ("maxResults", &size)];
            if let Some(t) = &token {
                query.push(("nextPageToken", t));
            }
            let req = self.request(Method::GET, &["rest", "api", "2", "search", "jql"], &query);
            let resp = self.http.send(req).await?;
            if !resp.status().is_success() {
                return Err(self.http.failure(resp, what).await);
            }
            let page: JqlPage = self.http.read(resp, what).await?;
            let n = page.issues.len();
            issues.extend(page.issues);
            match page.next_page_token {
                Some(t) if !page.is_last && n > 0 => token = Some(t),
                _ => return Ok(issues),
            }
        }
    }
}

#[async_trait]
impl Tracker for Jira {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn task(&self, key: &TaskKey) -> Result<Option<Task>, TrackerError> {
        let key = key.as_str();
        check_key(key)?;
        Ok(self.issue(key).await?.map(|i| self.task_of(key, &i)))
    }

    async fn move_to(&self, key: &TaskKey, status: &str, note: &str) -> Result<(), TrackerError> {
        let key = key.as_str();
        check_key(key)?;
        let not_found = || TrackerError::NotFound {
            tracker: NAME,
            key: key.to_string(),
        };
        let path = ["rest", "api", "2", "issue", key, "transitions"];
        let what = format!("GET /rest/api/2/issue/{key}/transitions");
        let resp = self
            .http
            .send(self.request(Method::GET, &path, &[]))
            .await?;
        let offered: Transitions = match resp.status() {
            StatusCode::NOT_FOUND => return Err(not_found()),
            s if s.is_success() => self.http.read(resp, &what).await?,
            _ => return Err(self.http.failure(resp, &what).await),
        };
        let chosen = offered
            .transitions
            .iter()
            .find(|t| t.to.name == status)
            .or_else(|| {
                offered
                    .transitions
                    .iter()
                    .find(|t| t.to.name.eq_ignore_ascii_case(status))
            });
        match chosen {
            None => {
                self.no_transition(key, status, &offered.transitions)
                    .await?
            }
            Some(t) => {
                let what = format!("POST /rest/api/2/issue/{key}/transitions");
                let body = serde_json::json!({ "transition": { "id": t.id } });
                let resp = self
                    .http
                    .send(self.request(Method::POST, &path, &[]).json(&body))
                    .await?;
                match resp.status() {
                    s if s.is_success() => {}
                    StatusCode::NOT_FOUND => return Err(not_found()),
                    StatusCode::BAD_REQUEST | StatusCode::CONFLICT => {
                        return Err(TrackerError::Refused {
                            tracker: NAME,
                            key: key.to_string(),
                            status: t.to.name.clone(),
                            why: Http::reason(resp).await,
                        });
                    }
                    _ => return Err(self.http.failure(resp, &what).await),
                }
            }
        }
        if note.is_empty() {
            return Ok(());
        }
        let what = format!("POST /rest/api/2/issue/{key}/comment");
        let resp = self
            .http
            .send(
                self.request(
                    Method::POST,
                    &["rest", "api", "2", "issue", key, "comment"],
                    &[],
                )
                .json(&serde_json::json!({ "body": note })),
            )
            .await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(match self.http.failure(resp, &what).await {
            TrackerError::Other { tracker, message } => TrackerError::Other {
                tracker,
                message: format!(
                    "moved `{key}` to `{status}` but could not leave the note: {message}"
                ),
            },
            e => e,
        })
    }

    async fn in_statuses(&self, statuses: &[String]) -> Result<Vec<Task>, TrackerError> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let jql = jql_in_statuses(statuses, self.project.as_deref());
        let issues = if self.cloud_search.load(Ordering::Relaxed) {
            self.search_cloud(&jql).await?
        } else {
            match self.search_server(&jql).await? {
                Some(issues) => issues,
                None => {
                    self.cloud_search.store(true, Ordering::Relaxed);
                    self.search_cloud(&jql).await?
                }
            }
        };
        let mut seen = std::collections::HashSet::new();
        Ok(issues
            .iter()
            .filter(|i| seen.insert(i.key.clone()))
            .map(|i| self.task_of(&i.key, i))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_before_they_reach_a_url() {
        assert!(check_key("PROJ-12").is_ok());
        assert!(check_key("AB_C2-1").is_ok());
        for bad in [
            "proj-12",
            "P-1",
            "PROJ-",
            "PROJ-1/../x",
            "PROJ-1?a",
            "12",
            "",
        ] {
            let e = check_key(bad).unwrap_err().to_string();
            assert!(e.contains("is not a Jira issue key"), "{bad}: {e}");
        }
    }

    #[test]
    fn jql_quotes_names() {
        assert_eq!(
            jql_in_statuses(
                &["For Delivery".into(), r#"Odd "name" \ here"#.into()],
                None
            ),
            r#"status in ("For Delivery", "Odd \"name\" \\ here") ORDER BY key ASC"#
        );
        assert_eq!(
            jql_in_statuses(&["Ready".into()], Some("SHOP")),
            r#"project = "SHOP" AND status in ("Ready") ORDER BY key ASC"#
        );
    }
}
