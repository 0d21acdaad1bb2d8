//! Redmine, against a real Redmine: `scripts/redmine.sh start`, then export the variables
//! of its env file (`.ci/run` does both). Without `REDMINE_URL` these tests say they are
//! skipped, or fail when `CI` is set.
//!
//! Each test creates its own issues (tests run in parallel; none edits another's issue).
//! Setup and checks go through the REST API with the admin key; the tracker under test uses
//! the non-admin key, as lockstep would in production.

use std::time::Duration;

use lockstep::Redmine;
use lockstep::{Credential, Tracker, TrackerError};
use serde_json::{Value, json};

use super::{push_branch, said, sandbox_with};

#[derive(Clone)]
struct Rm {
    url: String,
    key: String,
    admin: String,
    project: String,
    http: reqwest::Client,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("REDMINE_URL is set but {name} is not; export every variable of the env file written by scripts/redmine.sh")
    })
}

/// The Redmine to test against, if one runs.
fn redmine(test: &str) -> Option<Rm> {
    match std::env::var("REDMINE_URL") {
        Ok(url) if !url.is_empty() => Some(Rm {
            url,
            key: var("REDMINE_API_KEY"),
            admin: var("REDMINE_ADMIN_API_KEY"),
            project: var("REDMINE_PROJECT"),
            http: {
                lockstep::install_tls();
                reqwest::Client::new()
            },
        }),
        _ => {
            crate::util::skip(
                test,
                "Redmine (REDMINE_URL)",
                "start it with scripts/redmine.sh, then \
                 `set -a; . \"$(scripts/redmine.sh env)\"; set +a`",
            );
            None
        }
    }
}

impl Rm {
    fn tracker(&self) -> Redmine {
        self.tracker_with_key(&self.key)
    }

    fn tracker_with_key(&self, key: &str) -> Redmine {
        Redmine::new(
            &self.url,
            Credential::new("REDMINE_API_KEY", key),
            None,
            Duration::from_secs(10),
        )
        .unwrap()
    }

    async fn call(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        // The test Redmine keeps its data in SQLite: under many tests at once a write can
        // come back 500 (its database was busy). Set-up tries such a call again, twice.
        let mut tries = 0;
        let (status, text) = loop {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.url))
                .header("X-Redmine-API-Key", key);
            if let Some(body) = &body {
                req = req.json(body);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap();
            tries += 1;
            if !status.is_server_error() || tries == 3 {
                break (status, text);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    async fn status_id(&self, name: &str) -> u64 {
        let all = self
            .call(
                &self.admin,
                reqwest::Method::GET,
                "/issue_statuses.json",
                None,
            )
            .await;
        all["issue_statuses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no status {name}: {all}"))["id"]
            .as_u64()
            .unwrap()
    }

    /// A new issue (created by the non-admin account), put in `status` by the admin.
    async fn create(&self, subject: &str, status: &str) -> u64 {
        let created = self
            .call(
                &self.key,
                reqwest::Method::POST,
                "/issues.json",
                Some(json!({ "issue": { "project_id": self.project, "subject": subject } })),
            )
            .await;
        let id = created["issue"]["id"].as_u64().unwrap();
        if status != "New" {
            let status_id = self.status_id(status).await;
            self.call(
                &self.admin,
                reqwest::Method::PUT,
                &format!("/issues/{id}.json"),
                Some(json!({ "issue": { "status_id": status_id } })),
            )
            .await;
            assert_eq!(self.status_of(id).await, status);
        }
        id
    }

    async fn issue(&self, id: u64) -> Value {
        self.call(
            &self.admin,
            reqwest::Method::GET,
            &format!("/issues/{id}.json?include=journals"),
            None,
        )
        .await["issue"]
            .clone()
    }

    async fn status_of(&self, id: u64) -> String {
        self.issue(id).await["status"]["name"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The notes of the issue's journal, oldest first.
    async fn notes(&self, id: u64) -> Vec<String> {
        self.issue(id).await["journals"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|j| j["notes"].as_str())
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect()
    }
}

#[tokio::test]
async fn reads_an_issue() {
    let Some(rm) = redmine("reads_an_issue") else {
        return;
    };
    let id = rm
        .create("reads_an_issue: log in with SSO", "In Progress")
        .await;
    let me = rm
        .call(&rm.key, reqwest::Method::GET, "/users/current.json", None)
        .await;
    rm.call(
        &rm.admin,
        reqwest::Method::PUT,
        &format!("/issues/{id}.json"),
        Some(json!({ "issue": { "assigned_to_id": me["user"]["id"] } })),
    )
    .await;

    let t = rm
        .tracker()
        .task(&id.to_string().into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.key, id.to_string());
    assert_eq!(t.status, "In Progress");
    assert_eq!(t.title, "reads_an_issue: log in with SSO");
    assert_eq!(t.assignee, "CI Bot");
    assert_eq!(t.url, format!("{}/issues/{id}", rm.url));
}

#[tokio::test]
async fn moves_an_issue_with_a_note() {
    let Some(rm) = redmine("moves_an_issue_with_a_note") else {
        return;
    };
    let id = rm.create("moves_an_issue_with_a_note", "In Progress").await;
    let key = id.to_string();
    let tracker = rm.tracker();

    tracker
        .move_to(
            &key.as_str().into(),
            "For Delivery",
            "ready: all repositories pushed",
        )
        .await
        .unwrap();
    assert_eq!(rm.status_of(id).await, "For Delivery");
    let delivered = "delivered by lockstep: api 1a2b3c → master, web 4d5e6f → master";
    tracker
        .move_to(&key.as_str().into(), "Closed", delivered)
        .await
        .unwrap();
    assert_eq!(rm.status_of(id).await, "Closed");
    assert_eq!(
        rm.notes(id).await,
        ["ready: all repositories pushed", delivered]
    );
}

#[tokio::test]
async fn a_move_the_workflow_refuses_is_reported_and_leaves_no_note() {
    let Some(rm) = redmine("a_move_the_workflow_refuses_is_reported_and_leaves_no_note") else {
        return;
    };
    let id = rm.create("refused move", "In Progress").await;
    let e = rm
        .tracker()
        .move_to(
            &id.to_string().into(),
            "Rejected",
            "delivery failed in test (web): …",
        )
        .await
        .unwrap_err();
    assert!(matches!(e, TrackerError::Refused { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "tracker `redmine` did not move task `{id}` to `Rejected`: the workflow does not \
             let the account of `REDMINE_API_KEY` move it from `In Progress`; allow that \
             transition for its role"
        )
    );
    assert_eq!(rm.status_of(id).await, "In Progress");
    assert!(rm.notes(id).await.is_empty());
}

/// A proxy in front of the real Redmine that, each time a page of `GET /issues.json` lists
/// one of `watched`, moves that issue to In Progress before answering: as when someone moves a
/// task while lockstep reads the list.
async fn moving_proxy(rm: Rm, watched: Vec<u64>) -> String {
    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use axum::http::Response;
    let handler = move |req: Request| {
        let (rm, watched) = (rm.clone(), watched.clone());
        async move {
            let path = req.uri().path_and_query().unwrap().as_str().to_string();
            let mut fwd = rm
                .http
                .request(req.method().clone(), format!("{}{path}", rm.url));
            if let Some(key) = req.headers().get("X-Redmine-API-Key") {
                fwd = fwd.header("X-Redmine-API-Key", key.as_bytes());
            }
            let body = to_bytes(req.into_body(), 1 << 20).await.unwrap();
            let resp = fwd.body(body).send().await.unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.unwrap();
            if path.starts_with("/issues.json?") {
                let page: Value = serde_json::from_slice(&bytes).unwrap();
                for issue in page["issues"].as_array().unwrap() {
                    let id = issue["id"].as_u64().unwrap();
                    if watched.contains(&id) {
                        let busy = rm.status_id("In Progress").await;
                        rm.call(
                            &rm.admin,
                            reqwest::Method::PUT,
                            &format!("/issues/{id}.json"),
                            Some(json!({ "issue": { "status_id": busy } })),
                        )
                        .await;
                    }
                }
            }
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(bytes))
                .unwrap()
        }
    };
    let app = axum::Router::new().fallback(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn an_issue_that_leaves_the_status_mid_list_hides_no_other() {
    let Some(rm) = redmine("an_issue_that_leaves_the_status_mid_list_hides_no_other") else {
        return;
    };
    // Read one issue a page: each of these that is listed leaves the status before the next
    // page is asked for. Pages by offset would then skip the one right after it.
    let mut ready = Vec::new();
    for n in 0..4 {
        ready.push(
            rm.create(&format!("moves mid-list {n}"), "For Delivery")
                .await,
        );
    }
    let url = moving_proxy(rm.clone(), ready.clone()).await;
    let tracker = Redmine::new(
        &url,
        Credential::new("REDMINE_API_KEY", &rm.key),
        None,
        Duration::from_secs(10),
    )
    .unwrap()
    .with_page_size(1);
    let tasks = tracker.in_statuses(&["For Delivery".into()]).await.unwrap();
    let missed: Vec<u64> = ready
        .iter()
        .copied()
        .filter(|id| !tasks.iter().any(|t| t.key == id.to_string()))
        .collect();
    assert!(missed.is_empty(), "not listed: {missed:?}");
    for id in &ready {
        assert_eq!(rm.status_of(*id).await, "In Progress");
    }
}

#[tokio::test]
async fn lists_the_issues_in_a_status_page_by_page() {
    let Some(rm) = redmine("lists_the_issues_in_a_status_page_by_page") else {
        return;
    };
    let mut ready = Vec::new();
    for n in 0..3 {
        ready.push(rm.create(&format!("listed {n}"), "For Delivery").await);
    }
    let busy = rm.create("not listed", "In Progress").await;

    // Other tests add issues For Delivery too: look only for this test's own.
    let tracker = rm.tracker().with_page_size(2);
    let tasks = tracker.in_statuses(&["For Delivery".into()]).await.unwrap();
    for id in &ready {
        let t = tasks
            .iter()
            .find(|t| t.key == id.to_string())
            .unwrap_or_else(|| panic!("issue {id} is not listed"));
        assert_eq!(t.status, "For Delivery");
    }
    assert!(tasks.iter().all(|t| t.status == "For Delivery"));
    assert!(!tasks.iter().any(|t| t.key == busy.to_string()));
    assert!(tasks.len() >= 3);

    let in_project = Redmine::new(
        &rm.url,
        Credential::new("REDMINE_API_KEY", &rm.key),
        Some(rm.project.clone()),
        Duration::from_secs(10),
    )
    .unwrap();
    let listed = in_project
        .in_statuses(&["For Delivery".into()])
        .await
        .unwrap();
    assert!(
        ready
            .iter()
            .all(|id| listed.iter().any(|t| t.key == id.to_string()))
    );
    let e = Redmine::new(
        &rm.url,
        Credential::new("REDMINE_API_KEY", &rm.key),
        Some("no-such-project".into()),
        Duration::from_secs(10),
    )
    .unwrap()
    .in_statuses(&["For Delivery".into()])
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("project `no-such-project` does not exist"),
        "{e}"
    );
}

#[tokio::test]
async fn a_bad_key_is_refused_naming_its_variable() {
    let Some(rm) = redmine("a_bad_key_is_refused_naming_its_variable") else {
        return;
    };
    let tracker = rm.tracker_with_key("0123456789abcdef-not-a-key");
    let e = tracker.task(&"1".into()).await.unwrap_err();
    assert!(matches!(e, TrackerError::Auth { .. }), "{e:?}");
    let text = format!("{e} {e:?}");
    assert_eq!(
        e.to_string(),
        "tracker `redmine` refused the credentials in `REDMINE_API_KEY`; check that variable"
    );
    assert!(!text.contains("not-a-key"), "{text}");
}

#[tokio::test]
async fn unknown_issues_statuses_and_keys() {
    let Some(rm) = redmine("unknown_issues_statuses_and_keys") else {
        return;
    };
    let tracker = rm.tracker();
    assert_eq!(tracker.task(&"99999999".into()).await.unwrap(), None);
    let e = tracker
        .move_to(&"99999999".into(), "In Progress", "x")
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "task `99999999` does not exist in redmine");

    let id = rm.create("unknown status", "In Progress").await;
    let e = tracker
        .move_to(&id.to_string().into(), "Shipped", "x")
        .await
        .unwrap_err();
    assert!(matches!(e, TrackerError::NoSuchStatus { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with(
            "tracker `redmine` has no status `Shipped`; its statuses are `New`, `In Progress`"
        ),
        "{text}"
    );
    assert!(text.contains("`For Delivery`"), "{text}");

    let e = tracker.task(&"TASK-1".into()).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("task key `TASK-1` is not an issue number"),
        "{e}"
    );
}

#[test]
fn pushes_follow_the_redmine_status() {
    let Some(rm) = redmine("pushes_follow_the_redmine_status") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = rt.block_on(rm.create("pushes_follow_the_redmine_status", "In Progress"));
    let config = format!(
        "[tracker]\nkind = \"redmine\"\nurl = \"{}\"\n\n[tasks]\npattern = 'feature-(?P<task>[0-9]+)'\n",
        rm.url
    );
    let (env, clone) = sandbox_with(&config);
    let vars = [("REDMINE_API_KEY", rm.key.as_str())];
    let branch = format!("feature-{id}");

    let p = push_branch(&clone, &branch, &vars);
    assert!(p.accepted, "{}", said(&p));
    let pushed = env.rev("api", &format!("refs/heads/{branch}"));
    assert!(pushed.is_some());

    rt.block_on(
        rm.tracker()
            .move_to(&id.to_string().into(), "Resolved", "done, say the tests"),
    )
    .unwrap();
    crate::util::commit(&clone, "alice", "late.txt", "late\n", "late change").unwrap();
    let p = super::alice_push(&clone, &vars, &[&branch]);
    assert!(!p.accepted);
    assert!(
        said(&p).contains(&format!(
            "refs/heads/{branch}: [task-in-progress] task `{id}` is Resolved, not In Progress; \
             move it to In Progress in redmine, then push again"
        )),
        "{}",
        said(&p)
    );
    assert_eq!(env.rev("api", &format!("refs/heads/{branch}")), pushed);

    let p = push_branch(&clone, "feature-99999999", &vars);
    assert!(
        said(&p).contains("task `99999999` does not exist in redmine; check the branch name"),
        "{}",
        said(&p)
    );
}

/// Runs `lockstep deliver` in the sandbox with the Redmine key in its environment.
fn deliver(env: &crate::util::Env, key: &str, task: &str) -> std::process::Output {
    std::process::Command::new(crate::util::bin())
        .arg("--config")
        .arg(env.config())
        .args(["deliver", task])
        .env("REDMINE_API_KEY", key)
        .output()
        .unwrap()
}

#[test]
fn deliveries_move_the_redmine_issue_on() {
    let Some(rm) = redmine("deliveries_move_the_redmine_issue_on") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let good = rt.block_on(rm.create("a delivery that lands", "In Progress"));
    let bad = rt.block_on(rm.create("a delivery whose test fails", "In Progress"));
    let config = format!(
        "[tracker]\nkind = \"redmine\"\nurl = \"{}\"\n\n[tasks]\npattern = 'feature-(?P<task>[0-9]+)'\n\
         delivered = \"Closed\"\nreturned = \"In Progress\"\n",
        rm.url
    );
    let (env, clone) = sandbox_with(&config);
    let vars = [("REDMINE_API_KEY", rm.key.as_str())];
    let before = env.rev("api", "refs/heads/master");

    let p = push_branch(&clone, &format!("feature-{good}"), &vars);
    assert!(p.accepted, "{}", said(&p));
    rt.block_on(
        rm.tracker()
            .move_to(&good.to_string().into(), "For Delivery", "ready"),
    )
    .unwrap();
    let out = deliver(&env, &rm.key, &good.to_string());
    assert!(
        out.status.success(),
        "{}{}",
        crate::util::stdout(&out),
        crate::util::stderr(&out)
    );
    assert_eq!(rt.block_on(rm.status_of(good)), "Closed");
    let notes = rt.block_on(rm.notes(good));
    let last = notes.last().unwrap();
    assert!(last.starts_with("delivered by lockstep"), "{last}");
    assert!(last.contains("api ") && last.contains("→ master"), "{last}");
    let landed = env.rev("api", "refs/heads/master");
    assert_ne!(landed, before);

    let branch = format!("feature-{bad}");
    let p = push_branch(&clone, &branch, &vars);
    assert!(p.accepted, "{}", said(&p));
    crate::util::commit(
        &clone,
        "alice",
        "FAIL-TEST",
        "expected 2, got 3\n",
        "break it",
    )
    .unwrap();
    let p = super::alice_push(&clone, &vars, &[&branch]);
    assert!(p.accepted, "{}", said(&p));
    rt.block_on(
        rm.tracker()
            .move_to(&bad.to_string().into(), "For Delivery", "ready"),
    )
    .unwrap();
    let out = deliver(&env, &rm.key, &bad.to_string());
    assert_eq!(out.status.code(), Some(1), "{}", crate::util::stderr(&out));
    assert_eq!(rt.block_on(rm.status_of(bad)), "In Progress");
    let notes = rt.block_on(rm.notes(bad));
    let last = notes.last().unwrap();
    assert!(
        last.starts_with("delivery failed in test (api): `test` exited with 1: assertion failed: expected 2, got 3"),
        "{last}"
    );
    assert_eq!(
        env.rev("api", "refs/heads/master"),
        landed,
        "nothing merged"
    );
}
