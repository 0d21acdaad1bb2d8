//! A stateful fake of GitHub's issues API on 127.0.0.1, answering with payloads shaped like
//! the real ones (the samples in `tests/data/github_*.json`, filled with the fake's state),
//! paged with `Link` headers like GitHub's.
//!
//! Routes under `/repos/{owner}/{repo}`: `GET|PATCH /issues/{n}`, `POST /issues/{n}/comments`,
//! `GET /issues` (`state`, `labels`, `per_page`, `page`), `GET /labels`, `GET /labels/{name}`.
//! Every request must carry `Authorization: Bearer <token>` (else 401); every request is
//! logged.

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

const ISSUE: &str = include_str!("../data/github_issue.json");
const LABEL: &str = include_str!("../data/github_label.json");
const COMMENT: &str = include_str!("../data/github_comment.json");
const ERROR_404: &str = include_str!("../data/github_error_404.json");
const ERROR_401: &str = include_str!("../data/github_error_401.json");

#[derive(Debug, Clone, Default)]
pub struct FakeIssue {
    pub title: String,
    pub open: bool,
    pub labels: Vec<String>,
    pub assignee: Option<String>,
    pub comments: Vec<String>,
    pub pull_request: bool,
}

#[derive(Debug, Default)]
pub struct GitHubState {
    pub repo: String,
    pub issues: BTreeMap<u64, FakeIssue>,
    /// The repository's labels.
    pub labels: Vec<String>,
    pub token: String,
    /// Requests as `METHOD /path?query`, in order.
    pub log: Vec<String>,
    /// Answer reads of this issue only after this long.
    pub slow: Option<(u64, Duration)>,
    /// The most items a page holds (GitHub caps `per_page` at 100).
    pub page_cap: usize,
}

pub struct FakeGitHub {
    pub state: Arc<Mutex<GitHubState>>,
    served: Served,
}

type Shared = Arc<Mutex<GitHubState>>;

impl FakeGitHub {
    /// Starts a fake of the repository `repo` (`owner/name`) accepting the token `token`,
    /// with the labels `status: To Do`, `status: In Progress`, `status: For Delivery`.
    pub fn start(repo: &str, token: &str) -> FakeGitHub {
        let state = Arc::new(Mutex::new(GitHubState {
            repo: repo.into(),
            token: token.into(),
            page_cap: 100,
            labels: [
                "bug",
                "status: To Do",
                "status: In Progress",
                "status: For Delivery",
            ]
            .map(String::from)
            .to_vec(),
            ..GitHubState::default()
        }));
        let router = Router::new()
            .route("/repos/{owner}/{repo}/issues", get(list))
            .route(
                "/repos/{owner}/{repo}/issues/{number}",
                get(issue).patch(update),
            )
            .route(
                "/repos/{owner}/{repo}/issues/{number}/comments",
                axum::routing::post(comment),
            )
            .route("/repos/{owner}/{repo}/labels", get(labels))
            .route("/repos/{owner}/{repo}/labels/{name}", get(label))
            .layer(middleware::from_fn_with_state(state.clone(), guard))
            .with_state(state.clone());
        FakeGitHub {
            state,
            served: super::serve(router),
        }
    }

    pub fn url(&self) -> &str {
        &self.served.url
    }

    pub fn add(&self, number: u64, title: &str, open: bool, labels: &[&str]) {
        self.state.lock().unwrap().issues.insert(
            number,
            FakeIssue {
                title: title.into(),
                open,
                labels: labels.iter().map(|l| l.to_string()).collect(),
                assignee: Some("alice".into()),
                ..FakeIssue::default()
            },
        );
    }

    pub fn issue(&self, number: u64) -> FakeIssue {
        self.state.lock().unwrap().issues[&number].clone()
    }

    pub fn update(&self, number: u64, change: impl FnOnce(&mut FakeIssue)) {
        change(self.state.lock().unwrap().issues.get_mut(&number).unwrap());
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
        [("content-type", "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

async fn guard(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let line = format!(
        "{} {}",
        req.method(),
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
    );
    let allowed = {
        let mut s = state.lock().unwrap();
        s.log.push(line);
        let want = format!("Bearer {}", s.token);
        req.headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(want.as_str())
    };
    if !allowed {
        return json_answer(StatusCode::UNAUTHORIZED, ERROR_401);
    }
    next.run(req).await
}

fn render_label(repo: &str, name: &str, id: usize) -> Value {
    let mut v: Value = serde_json::from_str(LABEL).unwrap();
    v["id"] = json!(208045900 + id);
    v["name"] = json!(name);
    v["url"] = json!(format!(
        "https://api.github.com/repos/{repo}/labels/{}",
        name.replace(' ', "%20")
    ));
    v
}

fn render(s: &GitHubState, number: u64, i: &FakeIssue) -> Value {
    let mut v: Value = serde_json::from_str(ISSUE).unwrap();
    let api = format!("https://api.github.com/repos/{}/issues/{number}", s.repo);
    v["url"] = json!(api);
    v["repository_url"] = json!(format!("https://api.github.com/repos/{}", s.repo));
    v["labels_url"] = json!(format!("{api}/labels{{/name}}"));
    v["comments_url"] = json!(format!("{api}/comments"));
    v["events_url"] = json!(format!("{api}/events"));
    v["timeline_url"] = json!(format!("{api}/timeline"));
    v["html_url"] = json!(format!("https://github.com/{}/issues/{number}", s.repo));
    v["id"] = json!(1893456700 + number);
    v["number"] = json!(number);
    v["title"] = json!(i.title);
    v["state"] = json!(if i.open { "open" } else { "closed" });
    v["state_reason"] = if i.open {
        Value::Null
    } else {
        json!("completed")
    };
    v["closed_at"] = if i.open {
        Value::Null
    } else {
        json!("2026-11-27T10:30:00Z")
    };
    v["comments"] = json!(i.comments.len());
    v["labels"] = Value::Array(
        i.labels
            .iter()
            .map(|l| {
                let id = s.labels.iter().position(|x| x == l).unwrap_or(99);
                render_label(&s.repo, l, id)
            })
            .collect(),
    );
    match &i.assignee {
        None => {
            v["assignee"] = Value::Null;
            v["assignees"] = json!([]);
        }
        Some(login) => {
            v["assignee"]["login"] = json!(login);
            v["assignees"][0]["login"] = json!(login);
        }
    }
    if i.pull_request {
        v["pull_request"] = json!({
            "url": format!("https://api.github.com/repos/{}/pulls/{number}", s.repo),
            "html_url": format!("https://github.com/{}/pull/{number}", s.repo),
            "diff_url": format!("https://github.com/{}/pull/{number}.diff", s.repo),
            "patch_url": format!("https://github.com/{}/pull/{number}.patch", s.repo),
            "merged_at": null
        });
    }
    v
}

fn check_repo(s: &GitHubState, owner: &str, repo: &str) -> bool {
    s.repo == format!("{owner}/{repo}")
}

async fn issue(
    State(state): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
) -> Response {
    let slow = state.lock().unwrap().slow;
    if let Some((n, delay)) = slow
        && n == number
    {
        tokio::time::sleep(delay).await;
    }
    let s = state.lock().unwrap();
    match s
        .issues
        .get(&number)
        .filter(|_| check_repo(&s, &owner, &repo))
    {
        Some(i) => json_answer(StatusCode::OK, &render(&s, number, i).to_string()),
        None => json_answer(StatusCode::NOT_FOUND, ERROR_404),
    }
}

async fn update(
    State(state): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    body: String,
) -> Response {
    let mut s = state.lock().unwrap();
    if !check_repo(&s, &owner, &repo) || !s.issues.contains_key(&number) {
        return json_answer(StatusCode::NOT_FOUND, ERROR_404);
    }
    let body: Value = serde_json::from_str(&body).unwrap_or_default();
    if let Some(labels) = body["labels"].as_array() {
        let labels: Vec<String> = labels
            .iter()
            .filter_map(|l| l.as_str().map(String::from))
            .collect();
        for l in &labels {
            if !s.labels.contains(l) {
                s.labels.push(l.clone()); // GitHub creates labels it does not know
            }
        }
        s.issues.get_mut(&number).unwrap().labels = labels;
    }
    if let Some(state) = body["state"].as_str() {
        s.issues.get_mut(&number).unwrap().open = state == "open";
    }
    let i = s.issues[&number].clone();
    json_answer(StatusCode::OK, &render(&s, number, &i).to_string())
}

async fn comment(
    State(state): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    body: String,
) -> Response {
    let mut s = state.lock().unwrap();
    if !check_repo(&s, &owner, &repo) || !s.issues.contains_key(&number) {
        return json_answer(StatusCode::NOT_FOUND, ERROR_404);
    }
    let body: Value = serde_json::from_str(&body).unwrap_or_default();
    let text = body["body"].as_str().unwrap_or("").to_string();
    s.issues
        .get_mut(&number)
        .unwrap()
        .comments
        .push(text.clone());
    let mut v: Value = serde_json::from_str(COMMENT).unwrap();
    v["body"] = json!(text);
    v["issue_url"] = json!(format!(
        "https://api.github.com/repos/{}/issues/{number}",
        s.repo
    ));
    json_answer(StatusCode::CREATED, &v.to_string())
}

async fn label(
    State(state): State<Shared>,
    Path((owner, repo, name)): Path<(String, String, String)>,
) -> Response {
    let s = state.lock().unwrap();
    // GitHub finds labels whatever their case, and answers with the label's own spelling.
    match s
        .labels
        .iter()
        .position(|l| l.eq_ignore_ascii_case(&name))
        .filter(|_| check_repo(&s, &owner, &repo))
    {
        Some(id) => json_answer(
            StatusCode::OK,
            &render_label(&s.repo, &s.labels[id], id).to_string(),
        ),
        None => json_answer(StatusCode::NOT_FOUND, ERROR_404),
    }
}

/// One page of `items`, with a `Link` header like GitHub's.
fn paged(
    s: &GitHubState,
    path: &str,
    q: &BTreeMap<String, String>,
    items: Vec<Value>,
    base_url: &str,
) -> Response {
    let per_page: usize = q
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .min(s.page_cap);
    let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
    let last = items.len().div_ceil(per_page).max(1);
    let body: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let link_to = |p: usize| {
        let mut q = q.clone();
        q.insert("page".into(), p.to_string());
        q.insert("per_page".into(), per_page.to_string());
        let query: Vec<String> = q
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(' ', "%20").replace(',', "%2C")))
            .collect();
        format!("{base_url}{path}?{}", query.join("&"))
    };
    let mut links = Vec::new();
    if page < last {
        links.push(format!("<{}>; rel=\"next\"", link_to(page + 1)));
        links.push(format!("<{}>; rel=\"last\"", link_to(last)));
    }
    if page > 1 {
        links.push(format!("<{}>; rel=\"first\"", link_to(1)));
        links.push(format!("<{}>; rel=\"prev\"", link_to(page - 1)));
    }
    let mut resp = json_answer(StatusCode::OK, &Value::Array(body).to_string());
    if !links.is_empty() {
        resp.headers_mut()
            .insert("link", links.join(", ").parse().unwrap());
    }
    resp
}

async fn list(
    State(state): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    req: Request,
) -> Response {
    let s = state.lock().unwrap();
    if !check_repo(&s, &owner, &repo) {
        return json_answer(StatusCode::NOT_FOUND, ERROR_404);
    }
    let want_open = q.get("state").map(|v| v.as_str()) != Some("closed");
    let all_states = q.get("state").map(|v| v.as_str()) == Some("all");
    let labels: Vec<&str> = q
        .get("labels")
        .map(|l| l.split(',').collect())
        .unwrap_or_default();
    let items: Vec<Value> = s
        .issues
        .iter()
        .filter(|(_, i)| all_states || i.open == want_open)
        .filter(|(_, i)| {
            labels
                .iter()
                .all(|l| i.labels.iter().any(|x| x.eq_ignore_ascii_case(l)))
        })
        .map(|(n, i)| render(&s, *n, i))
        .collect();
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    paged(&s, req.uri().path(), &q, items, &format!("http://{host}"))
}

async fn labels(
    State(state): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    req: Request,
) -> Response {
    let s = state.lock().unwrap();
    if !check_repo(&s, &owner, &repo) {
        return json_answer(StatusCode::NOT_FOUND, ERROR_404);
    }
    let items = s
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| render_label(&s.repo, l, i))
        .collect();
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    paged(&s, req.uri().path(), &q, items, &format!("http://{host}"))
}
