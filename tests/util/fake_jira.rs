//! A stateful fake of Jira's REST API v2 on 127.0.0.1, answering with payloads shaped like
//! the real ones (the samples in `tests/data/jira_*.json`, filled with the fake's state).
//!
//! Routes: `GET /rest/api/2/issue/{key}`, `GET|POST …/{key}/transitions`,
//! `POST …/{key}/comment`, `GET /rest/api/2/status`, `GET /rest/api/2/search` (Server/Data
//! Center; 410 Gone in the Cloud flavour) and `GET /rest/api/2/search/jql` (Cloud).
//! Every request must carry the expected credentials (else 401); every request is logged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::Served;

const ISSUE: &str = include_str!("../data/jira_issue.json");
const STATUSES: &str = include_str!("../data/jira_statuses.json");
const TRANSITIONS: &str = include_str!("../data/jira_transitions.json");
const SEARCH: &str = include_str!("../data/jira_search.json");
const SEARCH_JQL: &str = include_str!("../data/jira_search_jql.json");
const COMMENT: &str = include_str!("../data/jira_comment.json");
const ERROR_404: &str = include_str!("../data/jira_error_404.json");
const ERROR_401: &str = include_str!("../data/jira_error_401.json");
const ERROR_403: &str = include_str!("../data/jira_error_403.json");
const ERROR_410: &str = include_str!("../data/jira_error_410.json");

/// The fake's workflow: which transition (by id, as in `jira_transitions.json`) is offered
/// from which status. "Done" is reached only from "For Delivery".
const WORKFLOW: &[(&str, &[&str])] = &[
    ("11", &["In Progress", "For Delivery"]),
    ("21", &["To Do", "For Delivery", "Done"]),
    ("31", &["In Progress"]),
    ("41", &["For Delivery"]),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Jira Server / Data Center: `/rest/api/2/search`.
    Server,
    /// Jira Cloud since 2025: `/rest/api/2/search` answers 410 Gone.
    Cloud,
}

#[derive(Debug, Clone, Default)]
pub struct FakeIssue {
    pub status: String,
    pub summary: String,
    pub assignee: Option<String>,
    pub comments: Vec<String>,
}

#[derive(Debug, Default)]
pub struct JiraState {
    pub issues: BTreeMap<String, FakeIssue>,
    /// The `Authorization` header every request must carry.
    pub authorization: String,
    /// Requests as `METHOD /path?query`, in order.
    pub log: Vec<String>,
    /// Answer reads of this issue only after this long.
    pub slow: Option<(String, Duration)>,
    /// The most issues a search page holds (Jira caps `maxResults` too).
    pub page_cap: usize,
    /// The JQL of each search, as received.
    pub searches: Vec<String>,
    /// The credentials may read but not write: every other request is answered 403.
    pub read_only: bool,
}

pub struct FakeJira {
    pub state: Arc<Mutex<JiraState>>,
    served: Served,
}

type Shared = (Arc<Mutex<JiraState>>, Flavor);

impl FakeJira {
    /// Starts a fake whose requests must carry `authorization` (a full header value).
    pub fn start(flavor: Flavor, authorization: &str) -> FakeJira {
        let state = Arc::new(Mutex::new(JiraState {
            authorization: authorization.to_string(),
            page_cap: 50,
            ..JiraState::default()
        }));
        let shared: Shared = (state.clone(), flavor);
        let router = Router::new()
            .route("/rest/api/2/issue/{key}", get(issue))
            .route(
                "/rest/api/2/issue/{key}/transitions",
                get(transitions).post(transition),
            )
            .route(
                "/rest/api/2/issue/{key}/comment",
                axum::routing::post(comment),
            )
            .route("/rest/api/2/status", get(statuses))
            .route("/rest/api/2/search", get(search))
            .route("/rest/api/2/search/jql", get(search_jql))
            .layer(middleware::from_fn_with_state(shared.clone(), guard))
            .with_state(shared);
        FakeJira {
            state,
            served: super::serve(router),
        }
    }

    pub fn url(&self) -> &str {
        &self.served.url
    }

    pub fn add(&self, key: &str, status: &str, summary: &str, assignee: Option<&str>) {
        self.state.lock().unwrap().issues.insert(
            key.to_string(),
            FakeIssue {
                status: status.into(),
                summary: summary.into(),
                assignee: assignee.map(String::from),
                comments: Vec::new(),
            },
        );
    }

    pub fn issue(&self, key: &str) -> FakeIssue {
        self.state.lock().unwrap().issues[key].clone()
    }

    pub fn set_status(&self, key: &str, status: &str) {
        self.state
            .lock()
            .unwrap()
            .issues
            .get_mut(key)
            .unwrap()
            .status = status.into();
    }

    /// How many requests were `METHOD path-prefix…`.
    pub fn count(&self, method_and_prefix: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.log
            .iter()
            .filter(|l| l.starts_with(method_and_prefix))
            .count()
    }
}

fn json_answer(status: StatusCode, body: &str) -> Response {
    (
        status,
        [("content-type", "application/json;charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

/// Logs every request and refuses those without the expected credentials.
async fn guard(State((state, _)): State<Shared>, req: Request, next: Next) -> Response {
    let line = format!(
        "{} {}",
        req.method(),
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
    );
    let (allowed, read_only) = {
        let mut s = state.lock().unwrap();
        s.log.push(line);
        let allowed = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(s.authorization.as_str());
        (allowed, s.read_only)
    };
    if !allowed {
        return json_answer(StatusCode::UNAUTHORIZED, ERROR_401);
    }
    if read_only && req.method() != axum::http::Method::GET {
        return json_answer(StatusCode::FORBIDDEN, ERROR_403);
    }
    next.run(req).await
}

fn status_object(name: &str) -> Value {
    let all: Value = serde_json::from_str(STATUSES).unwrap();
    let mut s = all
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("the fake knows no status {name}"))
        .clone();
    let o = s.as_object_mut().unwrap();
    o.remove("untranslatedName");
    o.remove("scope");
    s
}

fn render(key: &str, i: &FakeIssue) -> Value {
    let mut v: Value = serde_json::from_str(ISSUE).unwrap();
    let id = 10000 + key.rsplit('-').next().unwrap().parse::<u64>().unwrap();
    v["id"] = json!(id.to_string());
    v["self"] = json!(format!("https://acme.atlassian.net/rest/api/2/issue/{id}"));
    v["key"] = json!(key);
    v["fields"]["summary"] = json!(i.summary);
    v["fields"]["status"] = status_object(&i.status);
    match &i.assignee {
        None => v["fields"]["assignee"] = Value::Null,
        Some(name) => v["fields"]["assignee"]["displayName"] = json!(name),
    }
    v
}

async fn issue(State((state, _)): State<Shared>, Path(key): Path<String>) -> Response {
    let slow = state.lock().unwrap().slow.clone();
    if let Some((k, delay)) = slow
        && k == key
    {
        tokio::time::sleep(delay).await;
    }
    let s = state.lock().unwrap();
    match s.issues.get(&key) {
        Some(i) => json_answer(StatusCode::OK, &render(&key, i).to_string()),
        None => json_answer(StatusCode::NOT_FOUND, ERROR_404),
    }
}

fn offered(from: &str) -> Vec<Value> {
    let all: Value = serde_json::from_str(TRANSITIONS).unwrap();
    all["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            WORKFLOW
                .iter()
                .any(|(id, froms)| t["id"] == *id && froms.contains(&from))
        })
        .cloned()
        .collect()
}

async fn transitions(State((state, _)): State<Shared>, Path(key): Path<String>) -> Response {
    let s = state.lock().unwrap();
    let Some(i) = s.issues.get(&key) else {
        return json_answer(StatusCode::NOT_FOUND, ERROR_404);
    };
    let mut v: Value = serde_json::from_str(TRANSITIONS).unwrap();
    v["transitions"] = Value::Array(offered(&i.status));
    json_answer(StatusCode::OK, &v.to_string())
}

async fn transition(
    State((state, _)): State<Shared>,
    Path(key): Path<String>,
    body: String,
) -> Response {
    let mut s = state.lock().unwrap();
    let Some(i) = s.issues.get_mut(&key) else {
        return json_answer(StatusCode::NOT_FOUND, ERROR_404);
    };
    let body: Value = serde_json::from_str(&body).unwrap_or_default();
    let id = body["transition"]["id"].as_str().unwrap_or("");
    match offered(&i.status).iter().find(|t| t["id"] == id) {
        Some(t) => {
            i.status = t["to"]["name"].as_str().unwrap().to_string();
            StatusCode::NO_CONTENT.into_response()
        }
        None => json_answer(
            StatusCode::BAD_REQUEST,
            &json!({
                "errorMessages": [format!("Transition id '{id}' is not valid for this issue.")],
                "errors": {}
            })
            .to_string(),
        ),
    }
}

async fn comment(
    State((state, _)): State<Shared>,
    Path(key): Path<String>,
    body: String,
) -> Response {
    let mut s = state.lock().unwrap();
    let Some(i) = s.issues.get_mut(&key) else {
        return json_answer(StatusCode::NOT_FOUND, ERROR_404);
    };
    let body: Value = serde_json::from_str(&body).unwrap_or_default();
    let text = body["body"].as_str().unwrap_or("").to_string();
    i.comments.push(text.clone());
    let mut v: Value = serde_json::from_str(COMMENT).unwrap();
    v["body"] = json!(text);
    json_answer(StatusCode::CREATED, &v.to_string())
}

async fn statuses() -> Response {
    json_answer(StatusCode::OK, STATUSES)
}

/// The status names of `status in ("A", "B")` (with `\"` and `\\` escapes), and the
/// project of `project = "P" AND …`.
pub fn parse_jql(jql: &str) -> (Vec<String>, Option<String>) {
    fn strings(s: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '"' {
                continue;
            }
            let mut word = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => word.extend(chars.next()),
                    '"' => break,
                    c => word.push(c),
                }
            }
            out.push(word);
        }
        out
    }
    let (project, rest) = match jql.strip_prefix("project = ") {
        Some(r) => {
            let (p, rest) = r.split_once(" AND ").unwrap();
            (strings(p).into_iter().next(), rest)
        }
        None => (None, jql),
    };
    let inside = rest
        .strip_prefix("status in (")
        .and_then(|r| r.rsplit_once(')'))
        .map(|(i, _)| i)
        .unwrap_or("");
    (strings(inside), project)
}

fn matching(s: &JiraState, jql: &str) -> Vec<Value> {
    let (statuses, project) = parse_jql(jql);
    s.issues
        .iter()
        .filter(|(k, i)| {
            statuses.contains(&i.status)
                && project
                    .as_ref()
                    .is_none_or(|p| k.starts_with(&format!("{p}-")))
        })
        .map(|(k, i)| render(k, i))
        .collect()
}

async fn search(
    State((state, flavor)): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if flavor == Flavor::Cloud {
        return json_answer(StatusCode::GONE, ERROR_410);
    }
    let mut s = state.lock().unwrap();
    let jql = q.get("jql").cloned().unwrap_or_default();
    s.searches.push(jql.clone());
    let all = matching(&s, &jql);
    let start: usize = q.get("startAt").and_then(|v| v.parse().ok()).unwrap_or(0);
    let max: usize = q
        .get("maxResults")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .min(s.page_cap);
    let mut v: Value = serde_json::from_str(SEARCH).unwrap();
    v["startAt"] = json!(start);
    v["maxResults"] = json!(max);
    v["total"] = json!(all.len());
    v["issues"] = Value::Array(all.into_iter().skip(start).take(max).collect());
    json_answer(StatusCode::OK, &v.to_string())
}

async fn search_jql(
    State((state, _)): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let mut s = state.lock().unwrap();
    let jql = q.get("jql").cloned().unwrap_or_default();
    s.searches.push(jql.clone());
    let all = matching(&s, &jql);
    let start: usize = q
        .get("nextPageToken")
        .map(|t| t.strip_prefix("page-").unwrap().parse().unwrap())
        .unwrap_or(0);
    let max: usize = q
        .get("maxResults")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .min(s.page_cap);
    let end = (start + max).min(all.len());
    let mut v: Value = serde_json::from_str(SEARCH_JQL).unwrap();
    v["issues"] = Value::Array(all[start..end].to_vec());
    if end < all.len() {
        v["nextPageToken"] = json!(format!("page-{end}"));
        v["isLast"] = json!(false);
    } else {
        v.as_object_mut().unwrap().remove("nextPageToken");
        v["isLast"] = json!(true);
    }
    json_answer(StatusCode::OK, &v.to_string())
}
