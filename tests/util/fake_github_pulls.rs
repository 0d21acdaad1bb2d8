//! A stateful fake GitHub on 127.0.0.1:0 for the bot (`lockstep serve`): pull requests, reviews, collaborator permissions,
//! comments and commit statuses, over the REST routes lockstep (through octocrab) calls.
//! Everything it is asked is recorded, so a test can assert what a user would see on GitHub.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// A pull request of the fake.
#[derive(Debug, Clone)]
pub struct FakePull {
    pub author: String,
    pub head_ref: String,
    pub head_sha: String,
    pub state: String,
    /// The fork the head branch is in (`owner/name`); None: the repository itself.
    pub head_repo: Option<String>,
}

/// A comment the bot posted.
#[derive(Debug, Clone)]
pub struct Posted {
    pub repo: String,
    pub number: u64,
    pub body: String,
}

/// A commit status the bot set.
#[derive(Debug, Clone)]
pub struct StatusSet {
    pub repo: String,
    pub sha: String,
    pub state: String,
    pub context: String,
    pub description: String,
    pub target_url: String,
}

#[derive(Debug, Default)]
pub struct GhState {
    /// (`owner/name`, number) → pull request.
    pub pulls: BTreeMap<(String, u64), FakePull>,
    /// (`owner/name`, number) → reviews, oldest first: (user, state).
    pub reviews: BTreeMap<(String, u64), Vec<(String, String)>>,
    /// (`owner/name`, user) → `admin`, `write`, `read`, …
    pub permissions: BTreeMap<(String, String), String>,
    pub comments: Vec<Posted>,
    pub statuses: Vec<StatusSet>,
    /// `METHOD /path` of every request, in order.
    pub requests: Vec<String>,
    /// The `Authorization` header of every request.
    pub auth: Vec<String>,
}

type Shared = Arc<Mutex<GhState>>;

/// The fake, serving on its own runtime until dropped.
pub struct FakeGitHub {
    pub url: String,
    pub state: Shared,
    _runtime: tokio::runtime::Runtime,
}

fn user(login: &str) -> Value {
    json!({
        "login": login, "id": 1000 + login.len(), "node_id": "U_fake",
        "avatar_url": "https://avatars.githubusercontent.com/u/1?v=4", "gravatar_id": "",
        "url": format!("https://api.github.com/users/{login}"),
        "html_url": format!("https://github.com/{login}"),
        "type": if login.ends_with("[bot]") { "Bot" } else { "User" }, "site_admin": false
    })
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "message": "Not Found",
            "documentation_url": "https://docs.github.com/rest",
            "status": "404"
        })),
    )
        .into_response()
}

fn record(state: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap) {
    let mut s = state.lock().unwrap();
    s.requests.push(format!("{method} {}", uri.path()));
    s.auth.push(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    );
}

/// A repository object as GitHub embeds it in a pull request's `head` and `base`.
fn repository(full: &str) -> Value {
    let (owner, name) = full.split_once('/').unwrap();
    json!({
        "id": 500 + full.len(), "node_id": "R_fake", "name": name, "full_name": full,
        "private": false, "owner": user(owner),
        "html_url": format!("https://github.com/{full}"),
        "url": format!("https://api.github.com/repos/{full}"),
        "default_branch": "master"
    })
}

/// A pull request as `GET /repos/{o}/{r}/pulls/{n}` and the list show it.
fn pull_json(full: &str, number: u64, p: &FakePull) -> Value {
    let owner = full.split('/').next().unwrap();
    let head_repo = p.head_repo.as_deref().unwrap_or(full);
    let head_owner = head_repo.split('/').next().unwrap();
    json!({
        "url": format!("https://api.github.com/repos/{full}/pulls/{number}"),
        "id": number * 1000, "node_id": "PR_fake", "number": number,
        "html_url": format!("https://github.com/{full}/pull/{number}"),
        "state": p.state, "locked": false, "title": format!("{} work", p.head_ref),
        "user": user(&p.author), "body": null, "draft": false,
        "head": { "label": format!("{head_owner}:{}", p.head_ref), "ref": p.head_ref, "sha": p.head_sha, "user": user(head_owner), "repo": repository(head_repo) },
        "base": { "label": format!("{owner}:master"), "ref": "master", "sha": "0".repeat(40), "user": user(owner), "repo": repository(full) },
        "created_at": "2024-05-01T10:00:00Z", "updated_at": "2024-05-01T10:00:00Z"
    })
}

async fn pull(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((owner, repo, number)): Path<(String, String, u64)>,
) -> Response {
    record(&state, &method, &uri, &headers);
    let full = format!("{owner}/{repo}");
    let s = state.lock().unwrap();
    let Some(p) = s.pulls.get(&(full.clone(), number)) else {
        return not_found();
    };
    let mut v = pull_json(&full, number, p);
    v["merged"] = json!(false);
    Json(v).into_response()
}

/// `GET /repos/{o}/{r}/pulls?state=open&per_page=&page=`: newest first, as GitHub lists.
async fn pulls(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((owner, repo)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
) -> Response {
    record(&state, &method, &uri, &headers);
    let full = format!("{owner}/{repo}");
    let wanted = q.get("state").map_or("open", String::as_str);
    let per_page: usize = q.get("per_page").and_then(|n| n.parse().ok()).unwrap_or(30);
    let page: usize = q.get("page").and_then(|n| n.parse().ok()).unwrap_or(1);
    let s = state.lock().unwrap();
    let list: Vec<Value> = s
        .pulls
        .iter()
        .rev()
        .filter(|((r, _), p)| *r == full && (wanted == "all" || p.state == wanted))
        .map(|((_, n), p)| pull_json(&full, *n, p))
        .skip(per_page * (page.max(1) - 1))
        .take(per_page)
        .collect();
    Json(list).into_response()
}

async fn reviews(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((owner, repo, number)): Path<(String, String, u64)>,
) -> Response {
    record(&state, &method, &uri, &headers);
    let full = format!("{owner}/{repo}");
    let page: u32 = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("page="))
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    let s = state.lock().unwrap();
    if !s.pulls.contains_key(&(full.clone(), number)) {
        return not_found();
    }
    if page > 1 {
        return Json(json!([])).into_response();
    }
    let list: Vec<Value> = s
        .reviews
        .get(&(full.clone(), number))
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, (u, st))| {
            json!({
                "id": 80 + i, "node_id": "PRR_fake", "user": user(&u), "body": "",
                "state": st, "commit_id": "0".repeat(40),
                "html_url": format!("https://github.com/{full}/pull/{number}#pullrequestreview-{}", 80 + i),
                "pull_request_url": format!("https://api.github.com/repos/{full}/pulls/{number}"),
                "submitted_at": format!("2024-05-01T11:{:02}:00Z", i % 60),
                "author_association": "MEMBER"
            })
        })
        .collect();
    Json(Value::Array(list)).into_response()
}

async fn permission(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((owner, repo, login)): Path<(String, String, String)>,
) -> Response {
    record(&state, &method, &uri, &headers);
    let full = format!("{owner}/{repo}");
    let s = state.lock().unwrap();
    let Some(p) = s.permissions.get(&(full, login.clone())) else {
        return not_found();
    };
    let legacy = match p.as_str() {
        "maintain" => "write",
        "triage" => "read",
        other => other,
    };
    Json(json!({ "permission": legacy, "role_name": p, "user": user(&login) })).into_response()
}

async fn comment(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Response {
    record(&state, &method, &uri, &headers);
    let full = format!("{owner}/{repo}");
    let text = body["body"].as_str().unwrap_or_default().to_string();
    let mut s = state.lock().unwrap();
    s.comments.push(Posted {
        repo: full.clone(),
        number,
        body: text.clone(),
    });
    let id = s.comments.len();
    (
        StatusCode::CREATED,
        Json(json!({
            "id": id, "node_id": "IC_fake", "body": text, "user": user("lockstep-bot"),
            "url": format!("https://api.github.com/repos/{full}/issues/comments/{id}"),
            "html_url": format!("https://github.com/{full}/pull/{number}#issuecomment-{id}"),
            "created_at": "2024-05-01T12:00:00Z", "updated_at": "2024-05-01T12:00:00Z"
        })),
    )
        .into_response()
}

async fn status(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> Response {
    record(&state, &method, &uri, &headers);
    let s_ = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    let set = StatusSet {
        repo: format!("{owner}/{repo}"),
        sha,
        state: s_("state"),
        context: s_("context"),
        description: s_("description"),
        target_url: s_("target_url"),
    };
    let mut s = state.lock().unwrap();
    s.statuses.push(set.clone());
    (
        StatusCode::CREATED,
        Json(json!({
            "id": s.statuses.len(), "node_id": "SC_fake", "state": set.state,
            "context": set.context, "description": set.description, "target_url": set.target_url,
            "creator": user("lockstep-bot"),
            "created_at": "2024-05-01T12:00:00Z", "updated_at": "2024-05-01T12:00:00Z"
        })),
    )
        .into_response()
}

async fn installation(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    record(&state, &method, &uri, &headers);
    Json(
        json!({ "id": 4242, "app_id": 77, "target_type": "Organization", "account": user("acme") }),
    )
    .into_response()
}

async fn access_token(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    record(&state, &method, &uri, &headers);
    (
        StatusCode::CREATED,
        Json(json!({
            "token": "ghs_installation_token", "expires_at": "2099-01-01T00:00:00Z",
            "permissions": { "issues": "write", "pull_requests": "read", "statuses": "write", "metadata": "read" },
            "repository_selection": "all"
        })),
    )
        .into_response()
}

async fn fallback(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    record(&state, &method, &uri, &headers);
    not_found()
}

impl FakeGitHub {
    pub fn start() -> FakeGitHub {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/repos/{owner}/{repo}/pulls", get(pulls))
            .route("/repos/{owner}/{repo}/pulls/{number}", get(pull))
            .route("/repos/{owner}/{repo}/pulls/{number}/reviews", get(reviews))
            .route(
                "/repos/{owner}/{repo}/collaborators/{login}/permission",
                get(permission),
            )
            .route(
                "/repos/{owner}/{repo}/issues/{number}/comments",
                post(comment),
            )
            .route("/repos/{owner}/{repo}/statuses/{sha}", post(status))
            .route("/repos/{owner}/{repo}/installation", get(installation))
            .route("/app/installations/{id}/access_tokens", post(access_token))
            .fallback(fallback)
            .with_state(state.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeGitHub {
            url,
            state,
            _runtime: runtime,
        }
    }

    pub fn add_pull(&self, repo: &str, number: u64, author: &str, head_ref: &str, head_sha: &str) {
        self.state.lock().unwrap().pulls.insert(
            (repo.to_string(), number),
            FakePull {
                author: author.into(),
                head_ref: head_ref.into(),
                head_sha: head_sha.into(),
                state: "open".into(),
                head_repo: None,
            },
        );
    }

    pub fn review(&self, repo: &str, number: u64, user: &str, state: &str) {
        self.state
            .lock()
            .unwrap()
            .reviews
            .entry((repo.to_string(), number))
            .or_default()
            .push((user.into(), state.into()));
    }

    pub fn permit(&self, repo: &str, user: &str, permission: &str) {
        self.state
            .lock()
            .unwrap()
            .permissions
            .insert((repo.to_string(), user.to_string()), permission.into());
    }

    /// The comments posted on a pull request.
    pub fn comments(&self, repo: &str, number: u64) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .comments
            .iter()
            .filter(|c| c.repo == repo && c.number == number)
            .map(|c| c.body.clone())
            .collect()
    }

    pub fn statuses(&self) -> Vec<StatusSet> {
        self.state.lock().unwrap().statuses.clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}
