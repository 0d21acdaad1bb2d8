//! The fake's routes: GitHub's REST endpoints over the fake's state.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::render;
use super::{GitHubState, INSTALLATION_TOKEN, Shared, StatusSet, repo_of};

const ERROR_404: &str = include_str!("../../data/github_error_404.json");
pub(super) const ERROR_401: &str = include_str!("../../data/github_error_401.json");

pub(super) fn json_answer(status: StatusCode, body: &str) -> Response {
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

pub(super) fn not_found() -> Response {
    json_answer(StatusCode::NOT_FOUND, ERROR_404)
}

fn answer(status: StatusCode, v: &Value) -> Response {
    json_answer(status, &v.to_string())
}

/// One page of `items`, with a `Link` header like GitHub's.
fn paged(
    s: &GitHubState,
    req: &Request,
    q: &BTreeMap<String, String>,
    items: Vec<Value>,
) -> Response {
    let per_page: usize = q
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .min(s.page_cap);
    let page: usize = q
        .get("page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let body: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let link_to = |p: usize| {
        let mut q = q.clone();
        q.insert("page".into(), p.to_string());
        q.insert("per_page".into(), per_page.to_string());
        let query: Vec<String> = q
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(' ', "%20").replace(',', "%2C")))
            .collect();
        format!("http://{host}{}?{}", req.uri().path(), query.join("&"))
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
    let mut resp = answer(StatusCode::OK, &Value::Array(body));
    if !links.is_empty() {
        resp.headers_mut()
            .insert("link", links.join(", ").parse().unwrap());
    }
    resp
}

pub(super) async fn issues(
    State(state): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    req: Request,
) -> Response {
    let full = format!("{owner}/{repo}");
    let s = state.lock().unwrap();
    let r = repo_of(&s, &full);
    let wanted = q.get("state").map_or("open", String::as_str);
    let labels: Vec<&str> = q
        .get("labels")
        .map(|l| l.split(',').collect())
        .unwrap_or_default();
    let items: Vec<Value> = r
        .issues
        .iter()
        .filter(|(_, i)| wanted == "all" || i.open == (wanted != "closed"))
        .filter(|(_, i)| {
            labels
                .iter()
                .all(|l| i.labels.iter().any(|x| x.eq_ignore_ascii_case(l)))
        })
        .map(|(n, i)| render::issue(&full, r, *n, i))
        .collect();
    paged(&s, &req, &q, items)
}

pub(super) async fn issue(
    State(state): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let slow = state.lock().unwrap().slow.clone();
    if let Some((r, n, delay)) = slow
        && (r.as_str(), n) == (full.as_str(), number)
    {
        tokio::time::sleep(delay).await;
    }
    let s = state.lock().unwrap();
    match s
        .repos
        .get(&full)
        .and_then(|r| Some((r, r.issues.get(&number)?)))
    {
        Some((r, i)) => answer(StatusCode::OK, &render::issue(&full, r, number, i)),
        None => not_found(),
    }
}

pub(super) async fn update_issue(
    State(state): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    body: String,
) -> Response {
    let full = format!("{owner}/{repo}");
    let mut s = state.lock().unwrap();
    let Some(r) = s
        .repos
        .get_mut(&full)
        .filter(|r| r.issues.contains_key(&number))
    else {
        return not_found();
    };
    let body: Value = serde_json::from_str(&body).unwrap_or_default();
    if let Some(labels) = body["labels"].as_array() {
        let labels: Vec<String> = labels
            .iter()
            .filter_map(|l| l.as_str().map(String::from))
            .collect();
        for l in &labels {
            if !r.labels.contains(l) {
                r.labels.push(l.clone()); // GitHub creates labels it does not know
            }
        }
        r.issues.get_mut(&number).unwrap().labels = labels;
    }
    if let Some(state) = body["state"].as_str() {
        r.issues.get_mut(&number).unwrap().open = state == "open";
    }
    answer(
        StatusCode::OK,
        &render::issue(&full, r, number, &r.issues[&number]),
    )
}

pub(super) async fn comment(
    State(state): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    body: String,
) -> Response {
    let full = format!("{owner}/{repo}");
    let mut s = state.lock().unwrap();
    let Some(i) = s
        .repos
        .get_mut(&full)
        .and_then(|r| r.issues.get_mut(&number))
    else {
        return not_found();
    };
    let body: Value = serde_json::from_str(&body).unwrap_or_default();
    let text = body["body"].as_str().unwrap_or("").to_string();
    i.comments.push(text.clone());
    let v = render::comment(&full, number, i, &text);
    answer(StatusCode::CREATED, &v)
}

pub(super) async fn labels(
    State(state): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    req: Request,
) -> Response {
    let full = format!("{owner}/{repo}");
    let s = state.lock().unwrap();
    let r = repo_of(&s, &full);
    let items = r
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| render::label(&full, l, i))
        .collect();
    paged(&s, &req, &q, items)
}

pub(super) async fn label(
    State(state): State<Shared>,
    Path((owner, repo, name)): Path<(String, String, String)>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let s = state.lock().unwrap();
    let r = repo_of(&s, &full);
    // GitHub finds labels whatever their case, and answers with the label's own spelling.
    match r.labels.iter().position(|l| l.eq_ignore_ascii_case(&name)) {
        Some(id) => answer(StatusCode::OK, &render::label(&full, &r.labels[id], id)),
        None => not_found(),
    }
}

/// `GET /repos/{o}/{r}/pulls?state=open`: newest first, as GitHub lists them.
pub(super) async fn pulls(
    State(state): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    req: Request,
) -> Response {
    let full = format!("{owner}/{repo}");
    let s = state.lock().unwrap();
    let r = repo_of(&s, &full);
    let wanted = q.get("state").map_or("open", String::as_str);
    let items: Vec<Value> = r
        .issues
        .iter()
        .rev()
        .filter(|(_, i)| wanted == "all" || i.open == (wanted != "closed"))
        .filter_map(|(n, i)| Some(render::pull(&full, *n, i, i.pull.as_ref()?)))
        .collect();
    paged(&s, &req, &q, items)
}

pub(super) async fn pull(
    State(state): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let s = state.lock().unwrap();
    let found = repo_of(&s, &full).issues.get(&number);
    let Some((i, p)) = found.and_then(|i| Some((i, i.pull.as_ref()?))) else {
        return not_found();
    };
    let mut v = render::pull(&full, number, i, p);
    v["merged"] = json!(false);
    answer(StatusCode::OK, &v)
}

pub(super) async fn reviews(
    State(state): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    Query(q): Query<BTreeMap<String, String>>,
    req: Request,
) -> Response {
    let full = format!("{owner}/{repo}");
    let s = state.lock().unwrap();
    let found = repo_of(&s, &full).issues.get(&number);
    let Some(p) = found.and_then(|i| i.pull.as_ref()) else {
        return not_found();
    };
    let items = p
        .reviews
        .iter()
        .enumerate()
        .map(|(i, (u, st))| render::review(&full, number, i, u, st))
        .collect();
    paged(&s, &req, &q, items)
}

pub(super) async fn permission(
    State(state): State<Shared>,
    Path((owner, repo, login)): Path<(String, String, String)>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let s = state.lock().unwrap();
    let Some(p) = repo_of(&s, &full).permissions.get(&login) else {
        return not_found();
    };
    // `permission` is the legacy field, which knows no `maintain` and `triage`.
    let legacy = match p.as_str() {
        "maintain" => "write",
        "triage" => "read",
        other => other,
    };
    answer(
        StatusCode::OK,
        &json!({ "permission": legacy, "role_name": p, "user": render::user(&login) }),
    )
}

pub(super) async fn status(
    State(state): State<Shared>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    body: String,
) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or_default();
    let field = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    let set = StatusSet {
        repo: format!("{owner}/{repo}"),
        sha,
        state: field("state"),
        context: field("context"),
        description: field("description"),
        target_url: field("target_url"),
    };
    let mut s = state.lock().unwrap();
    s.statuses.push(set.clone());
    answer(
        StatusCode::CREATED,
        &json!({
            "id": s.statuses.len(), "node_id": "SC_fake", "state": set.state,
            "context": set.context, "description": set.description, "target_url": set.target_url,
            "creator": render::user("lockstep-bot"),
            "created_at": "2024-05-01T12:00:00Z", "updated_at": "2024-05-01T12:00:00Z"
        }),
    )
}

pub(super) async fn installation(Path((owner, _repo)): Path<(String, String)>) -> Response {
    answer(
        StatusCode::OK,
        &json!({
            "id": 4242, "app_id": 77, "target_type": "Organization",
            "account": render::user(&owner)
        }),
    )
}

pub(super) async fn access_token(State(state): State<Shared>) -> Response {
    let mut s = state.lock().unwrap();
    if !s.tokens.iter().any(|t| t == INSTALLATION_TOKEN) {
        s.tokens.push(INSTALLATION_TOKEN.to_string());
    }
    answer(
        StatusCode::CREATED,
        &json!({
            "token": INSTALLATION_TOKEN, "expires_at": "2099-01-01T00:00:00Z",
            "permissions": {
                "issues": "write", "pull_requests": "read", "statuses": "write",
                "metadata": "read"
            },
            "repository_selection": "all"
        }),
    )
}
