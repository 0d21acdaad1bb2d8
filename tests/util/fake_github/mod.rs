//! A stateful fake of GitHub's REST API on 127.0.0.1, for everything lockstep asks GitHub:
//! issues and labels (the GitHub Issues tracker), pull requests, reviews, collaborator
//! permissions, comments and commit statuses (the bot), and GitHub App installation tokens.
//! Payloads are shaped like the real ones (the samples in `tests/data/github_*.json`, filled
//! with the fake's state), lists are paged with `Link` headers like GitHub's.
//!
//! One way to use it: [`FakeGitHub::start`] with the token it accepts, seed it (`add_issue`,
//! `add_pull`, `review`, `permit`, …), point lockstep at [`FakeGitHub::url`], then read what
//! was done (`issue`, `comments`, `statuses`, `requests`).
//!
//! Routes under `/repos/{owner}/{repo}`: `GET /issues` (`state`, `labels`, `per_page`,
//! `page`), `GET|PATCH /issues/{n}`, `POST /issues/{n}/comments`, `GET /labels`,
//! `GET /labels/{name}`, `GET /pulls` (`state`), `GET /pulls/{n}`, `GET /pulls/{n}/reviews`,
//! `GET /collaborators/{user}/permission`, `POST /statuses/{sha}`, `GET /commits/{sha}/status`
//! (the combined status), `GET /commits/{sha}/check-runs`, `GET /installation`; and
//! `POST /app/installations/{id}/access_tokens`. Every request is logged. A request must carry
//! `Authorization: Bearer <token>` with the token the fake was started with or one it minted
//! for an App installation; the App's own routes want a JWT instead. Else 401.

mod render;
mod routes;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use super::Served;
use routes::*;

/// The token the fake mints for any GitHub App installation.
pub const INSTALLATION_TOKEN: &str = "ghs_installation_token";

/// An issue; on GitHub every pull request is an issue too, with `pull` set.
#[derive(Debug, Clone, Default)]
pub struct Issue {
    pub title: String,
    pub author: String,
    pub open: bool,
    pub labels: Vec<String>,
    pub assignee: Option<String>,
    /// The comments, oldest first.
    pub comments: Vec<String>,
    pub pull: Option<Pull>,
}

/// What a pull request has besides its issue.
#[derive(Debug, Clone, Default)]
pub struct Pull {
    pub head_ref: String,
    pub head_sha: String,
    /// The fork the head branch is in (`owner/name`); None: the repository itself.
    pub head_repo: Option<String>,
    /// The reviews, oldest first: (user, state).
    pub reviews: Vec<(String, String)>,
}

/// A commit status set through the fake.
#[derive(Debug, Clone)]
pub struct StatusSet {
    pub repo: String,
    pub sha: String,
    pub state: String,
    pub context: String,
    pub description: String,
    pub target_url: String,
}

/// A check run a CI (a GitHub App, e.g. GitHub Actions) reported on a commit.
#[derive(Debug, Clone)]
pub struct CheckRun {
    pub repo: String,
    pub head_sha: String,
    pub name: String,
    /// `queued`, `in_progress` or `completed`.
    pub status: String,
    /// Set once completed: `success`, `failure`, `neutral`, `cancelled`, `skipped`,
    /// `timed_out`, `action_required`.
    pub conclusion: Option<String>,
    pub details_url: String,
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `METHOD /path?query`.
    pub line: String,
    /// The `Authorization` header ("" when there was none).
    pub auth: String,
}

#[derive(Debug, Default)]
struct Repo {
    labels: Vec<String>,
    issues: BTreeMap<u64, Issue>,
    /// user → `admin`, `maintain`, `write`, `triage`, `read`.
    permissions: BTreeMap<String, String>,
}

#[derive(Debug)]
struct GitHubState {
    /// `owner/name` → repository.
    repos: BTreeMap<String, Repo>,
    statuses: Vec<StatusSet>,
    check_runs: Vec<CheckRun>,
    log: Vec<Received>,
    /// The tokens a request may carry: the one the fake started with, then minted ones.
    tokens: Vec<String>,
    /// Answer reads of this issue only after this long.
    slow: Option<(String, u64, Duration)>,
    /// The most items a page holds (GitHub caps `per_page` at 100).
    page_cap: usize,
}

type Shared = Arc<Mutex<GitHubState>>;

/// What a repository nobody seeded has: nothing, as a new repository on GitHub.
static EMPTY: Repo = Repo {
    labels: Vec::new(),
    issues: BTreeMap::new(),
    permissions: BTreeMap::new(),
};

/// Every repository exists; those not seeded are empty.
fn repo_of<'s>(s: &'s GitHubState, full: &str) -> &'s Repo {
    s.repos.get(full).unwrap_or(&EMPTY)
}

/// The fake, serving on its own thread until dropped.
pub struct FakeGitHub {
    state: Shared,
    served: Served,
}

impl FakeGitHub {
    /// Starts a fake GitHub accepting the token `token`; every repository on it exists,
    /// empty until seeded.
    pub fn start(token: &str) -> FakeGitHub {
        let state = Arc::new(Mutex::new(GitHubState {
            repos: BTreeMap::new(),
            statuses: Vec::new(),
            check_runs: Vec::new(),
            log: Vec::new(),
            tokens: vec![token.to_string()],
            slow: None,
            page_cap: 100,
        }));
        let router = Router::new()
            .route("/repos/{owner}/{repo}/issues", get(issues))
            .route(
                "/repos/{owner}/{repo}/issues/{number}",
                get(issue).patch(update_issue),
            )
            .route(
                "/repos/{owner}/{repo}/issues/{number}/comments",
                post(comment),
            )
            .route("/repos/{owner}/{repo}/labels", get(labels))
            .route("/repos/{owner}/{repo}/labels/{name}", get(label))
            .route("/repos/{owner}/{repo}/pulls", get(pulls))
            .route("/repos/{owner}/{repo}/pulls/{number}", get(pull))
            .route("/repos/{owner}/{repo}/pulls/{number}/reviews", get(reviews))
            .route(
                "/repos/{owner}/{repo}/collaborators/{login}/permission",
                get(permission),
            )
            .route("/repos/{owner}/{repo}/statuses/{sha}", post(status))
            .route(
                "/repos/{owner}/{repo}/commits/{reference}/status",
                get(combined_status),
            )
            .route(
                "/repos/{owner}/{repo}/commits/{reference}/check-runs",
                get(check_runs),
            )
            .route("/repos/{owner}/{repo}/installation", get(installation))
            .route("/app/installations/{id}/access_tokens", post(access_token))
            .fallback(|| async { not_found() })
            .layer(middleware::from_fn_with_state(state.clone(), guard))
            .with_state(state.clone());
        FakeGitHub {
            state,
            served: super::serve(router),
        }
    }

    /// The API's base URL, for `api_url` in lockstep's config.
    pub fn url(&self) -> &str {
        &self.served.url
    }

    fn with<T>(&self, f: impl FnOnce(&mut GitHubState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn with_repo<T>(&self, repo: &str, f: impl FnOnce(&mut Repo) -> T) -> T {
        self.with(|s| f(s.repos.entry(repo.to_string()).or_default()))
    }

    /// Adds labels to a repository.
    pub fn add_labels(&self, repo: &str, labels: &[&str]) {
        self.with_repo(repo, |r| {
            r.labels.extend(labels.iter().map(|l| l.to_string()))
        });
    }

    /// Adds an issue by bob, assigned to alice.
    pub fn add_issue(&self, repo: &str, number: u64, title: &str, open: bool, labels: &[&str]) {
        let issue = Issue {
            title: title.into(),
            author: "bob".into(),
            open,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            assignee: Some("alice".into()),
            ..Issue::default()
        };
        self.with_repo(repo, |r| r.issues.insert(number, issue));
    }

    /// Adds an open pull request of the branch `head_ref` (at `head_sha`) of `repo` itself.
    pub fn add_pull(&self, repo: &str, number: u64, author: &str, head_ref: &str, head_sha: &str) {
        let issue = Issue {
            title: format!("{head_ref} work"),
            author: author.into(),
            open: true,
            pull: Some(Pull {
                head_ref: head_ref.into(),
                head_sha: head_sha.into(),
                ..Pull::default()
            }),
            ..Issue::default()
        };
        self.with_repo(repo, |r| r.issues.insert(number, issue));
    }

    /// Adds a review (`APPROVED`, `CHANGES_REQUESTED`, `DISMISSED`, …) to a pull request.
    pub fn review(&self, repo: &str, number: u64, user: &str, state: &str) {
        self.update(repo, number, |i| {
            let pull = i.pull.as_mut().expect("reviews are for pull requests");
            pull.reviews.push((user.into(), state.into()));
        });
    }

    /// Gives `user` a permission (`admin`, `maintain`, `write`, `triage`, `read`) on `repo`.
    pub fn permit(&self, repo: &str, user: &str, permission: &str) {
        self.with_repo(repo, |r| {
            r.permissions.insert(user.into(), permission.into())
        });
    }

    /// Changes an issue or pull request.
    pub fn update(&self, repo: &str, number: u64, change: impl FnOnce(&mut Issue)) {
        self.with(|s| {
            change(
                s.repos
                    .get_mut(repo)
                    .unwrap()
                    .issues
                    .get_mut(&number)
                    .unwrap(),
            )
        });
    }

    /// Answers reads of one issue only after `delay`.
    pub fn answer_slowly(&self, repo: &str, number: u64, delay: Duration) {
        self.with(|s| s.slow = Some((repo.to_string(), number, delay)));
    }

    /// Caps the items of a page below GitHub's 100.
    pub fn cap_pages(&self, items: usize) {
        self.with(|s| s.page_cap = items);
    }

    /// An issue or pull request as it is now.
    pub fn issue(&self, repo: &str, number: u64) -> Issue {
        self.with(|s| s.repos[repo].issues[&number].clone())
    }

    /// The comments on an issue or pull request, oldest first.
    pub fn comments(&self, repo: &str, number: u64) -> Vec<String> {
        self.with(|s| {
            s.repos
                .get(repo)
                .and_then(|r| r.issues.get(&number))
                .map(|i| i.comments.clone())
                .unwrap_or_default()
        })
    }

    /// Reports a check run on `sha` (a later run of the same name supersedes it, as a re-run
    /// does on GitHub).
    pub fn check_run(&self, run: CheckRun) {
        self.with(|s| s.check_runs.push(run));
    }

    /// Every commit status set, in order.
    pub fn statuses(&self) -> Vec<StatusSet> {
        self.with(|s| s.statuses.clone())
    }

    /// The last status set on `sha`: its state and description.
    pub fn last_status(&self, sha: &str) -> (String, String) {
        let last = self
            .statuses()
            .into_iter()
            .rfind(|s| s.sha == sha)
            .unwrap_or_else(|| panic!("no status was set on {sha}"));
        (last.state, last.description)
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Received> {
        self.with(|s| s.log.clone())
    }

    /// How many requests were `METHOD path-prefix…`.
    pub fn count(&self, method_and_prefix: &str) -> usize {
        self.with(|s| {
            s.log
                .iter()
                .filter(|r| r.line.starts_with(method_and_prefix))
                .count()
        })
    }
}
/// Whether `jwt` is the test App's JWT as GitHub checks one: RS256, signed by the key of
/// `tests/data/github-app-test-key.pem`, issued for App 77, and within its lifetime.
fn app_jwt_checks(jwt: &str) -> bool {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let pem = include_str!("../../data/github-app-test-key.pem");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let key = ring::signature::RsaKeyPair::from_der(&STANDARD.decode(body).unwrap()).unwrap();
    let Some((message, signature)) = jwt.rsplit_once('.') else {
        return false;
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        key.public().as_ref(),
    );
    if public.verify(message.as_bytes(), &signature).is_err() {
        return false;
    }
    let part = |i: usize| -> Option<serde_json::Value> {
        let raw = URL_SAFE_NO_PAD.decode(message.split('.').nth(i)?).ok()?;
        serde_json::from_slice(&raw).ok()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    match (part(0), part(1)) {
        (Some(header), Some(claims)) => {
            header["alg"] == "RS256"
                && claims["iss"] == "77"
                && claims["iat"].as_i64().is_some_and(|t| t <= now)
                && claims["exp"]
                    .as_i64()
                    .is_some_and(|t| t > now && t - now <= 600)
        }
        _ => false,
    }
}

/// Logs every request and refuses those without a token the fake accepts.
async fn guard(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // The App's own routes take the App's JWT (three dot-separated parts), the rest a token.
    let app_route = path.starts_with("/app/") || path.ends_with("/installation");
    let allowed = {
        let mut s = state.lock().unwrap();
        let allowed = match auth.strip_prefix("Bearer ") {
            Some(jwt) if app_route => app_jwt_checks(jwt),
            Some(token) => s.tokens.iter().any(|t| t == token),
            None => false,
        };
        s.log.push(Received {
            line: format!(
                "{} {}",
                req.method(),
                req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
            ),
            auth,
        });
        allowed
    };
    if !allowed {
        return json_answer(StatusCode::UNAUTHORIZED, ERROR_401);
    }
    next.run(req).await
}
