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

/// `GET /repos/{o}/{r}/commits/{ref}/status`: the latest status of each context of a
/// commit, and their combined state (failure if any failed or errored, pending if any is
/// pending or there is none, else success).
pub(super) async fn combined_status(
    State(state): State<Shared>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let s = state.lock().unwrap();
    let mut latest: Vec<(usize, &StatusSet)> = Vec::new();
    for (i, set) in s.statuses.iter().enumerate().rev() {
        if set.repo == full
            && set.sha == sha
            && !latest.iter().any(|(_, l)| l.context == set.context)
        {
            latest.push((i + 1, set));
        }
    }
    let states: Vec<&str> = latest.iter().map(|(_, l)| l.state.as_str()).collect();
    let combined = if states.iter().any(|s| *s == "failure" || *s == "error") {
        "failure"
    } else if states.is_empty() || states.contains(&"pending") {
        "pending"
    } else {
        "success"
    };
    let statuses: Vec<Value> = latest
        .iter()
        .map(|(id, l)| {
            json!({
                "url": format!("https://api.github.com/repos/{full}/statuses/{sha}"),
                "avatar_url": "https://avatars.githubusercontent.com/u/1?v=4",
                "id": id, "node_id": "SC_fake", "state": l.state,
                "description": if l.description.is_empty() { Value::Null } else { json!(l.description) },
                "target_url": if l.target_url.is_empty() { Value::Null } else { json!(l.target_url) },
                "context": l.context,
                "created_at": "2024-05-01T12:00:00Z", "updated_at": "2024-05-01T12:00:00Z"
            })
        })
        .collect();
    answer(
        StatusCode::OK,
        &json!({
            "state": combined, "statuses": statuses, "sha": sha,
            "total_count": statuses.len(), "repository": render::repository(&full),
            "commit_url": format!("https://api.github.com/repos/{full}/commits/{sha}"),
            "url": format!("https://api.github.com/repos/{full}/commits/{sha}/status")
        }),
    )
}

/// `GET /repos/{o}/{r}/commits/{ref}/check-runs`: the latest run of each name on a commit
/// (GitHub's default `filter=latest`), newest first.
pub(super) async fn check_runs(
    State(state): State<Shared>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let s = state.lock().unwrap();
    let mut runs: Vec<Value> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (i, run) in s.check_runs.iter().enumerate().rev() {
        if run.repo != full || run.head_sha != sha || names.contains(&run.name.as_str()) {
            continue;
        }
        names.push(&run.name);
        let id = 4000 + i;
        let completed = run.status == "completed";
        runs.push(json!({
            "id": id, "head_sha": run.head_sha, "node_id": "CR_fake", "external_id": "",
            "url": format!("https://api.github.com/repos/{full}/check-runs/{id}"),
            "html_url": format!("https://github.com/{full}/runs/{id}"),
            "details_url": run.details_url,
            "status": run.status, "conclusion": run.conclusion,
            "started_at": "2024-05-01T12:00:00Z",
            "completed_at": if completed { json!("2024-05-01T12:05:00Z") } else { Value::Null },
            "output": {
                "title": run.conclusion.as_ref().map(|c| format!("{} {c}", run.name)),
                "summary": null, "text": null, "annotations_count": 0,
                "annotations_url": format!("https://api.github.com/repos/{full}/check-runs/{id}/annotations")
            },
            "name": run.name, "check_suite": { "id": 5000 + i },
            "app": { "id": 15368, "slug": "github-actions", "node_id": "A_fake",
                     "owner": render::user("github"), "name": "GitHub Actions" },
            "pull_requests": []
        }));
    }
    answer(
        StatusCode::OK,
        &json!({ "total_count": runs.len(), "check_runs": runs }),
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
