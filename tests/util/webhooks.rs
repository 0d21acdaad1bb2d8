//! GitHub webhook requests shaped exactly like GitHub's: the samples in `tests/data/`, with
//! the fields a test cares about replaced, signed with a test secret.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::http::{self, Resp};

/// The webhook secret the tests configure.
pub const SECRET: &str = "test-webhook-secret";

/// A sample payload from `tests/data/`.
pub fn sample(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fresh id for each comment, review or event a test makes, as GitHub gives each its own
/// (lockstep refuses a second event with the same one as a replay).
fn fresh_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(4_000_000_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn set_repo(v: &mut Value, repo: &str) {
    let (owner, name) = repo.split_once('/').unwrap();
    v["repository"]["full_name"] = repo.into();
    v["repository"]["name"] = name.into();
    v["repository"]["owner"]["login"] = owner.into();
}

/// `issue_comment` `created` on pull request `number` of `repo`, by `user`.
pub fn comment(repo: &str, number: u64, user: &str, body: &str) -> Vec<u8> {
    let mut v = sample("issue_comment.created.json");
    set_repo(&mut v, repo);
    v["issue"]["number"] = number.into();
    v["comment"]["id"] = fresh_id().into();
    v["comment"]["body"] = body.into();
    v["comment"]["user"]["login"] = user.into();
    v["sender"]["login"] = user.into();
    serde_json::to_vec(&v).unwrap()
}

/// `issue_comment` on an issue that is not a pull request.
pub fn issue_comment(repo: &str, number: u64, user: &str, body: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&comment(repo, number, user, body)).unwrap();
    v["issue"].as_object_mut().unwrap().remove("pull_request");
    serde_json::to_vec(&v).unwrap()
}

/// `pull_request_review` `submitted` or `dismissed`.
pub fn review(repo: &str, number: u64, head_ref: &str, author: &str, action: &str) -> Vec<u8> {
    let mut v = sample("pull_request_review.submitted.json");
    set_repo(&mut v, repo);
    v["action"] = action.into();
    v["review"]["id"] = fresh_id().into();
    v["pull_request"]["number"] = number.into();
    v["pull_request"]["head"]["ref"] = head_ref.into();
    v["pull_request"]["user"]["login"] = author.into();
    serde_json::to_vec(&v).unwrap()
}

/// `pull_request` `closed`.
pub fn closed(repo: &str, number: u64, head_ref: &str) -> Vec<u8> {
    let mut v = sample("pull_request.closed.json");
    set_repo(&mut v, repo);
    v["number"] = number.into();
    v["pull_request"]["number"] = number.into();
    v["pull_request"]["head"]["ref"] = head_ref.into();
    // Each close of a pull request is its own event: GitHub's `updated_at` tells them apart.
    let at = chrono::DateTime::from_timestamp(1_700_000_000 + fresh_id() as i64, 0).unwrap();
    v["pull_request"]["updated_at"] = at.to_rfc3339().into();
    serde_json::to_vec(&v).unwrap()
}

/// Posts a webhook; `secret: None` sends no signature.
pub fn post(base: &str, event: &str, delivery: &str, body: &[u8], secret: Option<&str>) -> Resp {
    let sig = secret.map(|s| lockstep::sign(s, body));
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("User-Agent", "GitHub-Hookshot/test"),
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", delivery),
    ];
    if let Some(sig) = &sig {
        headers.push(("X-Hub-Signature-256", sig.as_str()));
    }
    http::request(base, "POST", "/webhooks/github", &headers, body)
        .unwrap_or_else(|e| panic!("POST /webhooks/github: {e}"))
}
