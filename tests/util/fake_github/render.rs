//! The fake's payloads, shaped like GitHub's: the samples in `tests/data/github_*.json`
//! filled with the fake's state, and the small objects GitHub embeds.

use serde_json::{Value, json};

use super::{Issue, Pull, Repo};

const ISSUE: &str = include_str!("../../data/github_issue.json");
const LABEL: &str = include_str!("../../data/github_label.json");
const COMMENT: &str = include_str!("../../data/github_comment.json");

/// A user as GitHub embeds one in a pull request, a review or a permission.
pub(super) fn user(login: &str) -> Value {
    json!({
        "login": login, "id": 1000 + login.len(), "node_id": "U_fake",
        "avatar_url": "https://avatars.githubusercontent.com/u/1?v=4", "gravatar_id": "",
        "url": format!("https://api.github.com/users/{login}"),
        "html_url": format!("https://github.com/{login}"),
        "type": if login.ends_with("[bot]") { "Bot" } else { "User" }, "site_admin": false
    })
}

pub(super) fn label(repo: &str, name: &str, id: usize) -> Value {
    let mut v: Value = serde_json::from_str(LABEL).unwrap();
    v["id"] = json!(208045900 + id);
    v["name"] = json!(name);
    v["url"] = json!(format!(
        "https://api.github.com/repos/{repo}/labels/{}",
        name.replace(' ', "%20")
    ));
    v
}

/// An issue as `GET /repos/{o}/{r}/issues/{n}` and the list show it.
pub(super) fn issue(full: &str, r: &Repo, number: u64, i: &Issue) -> Value {
    let mut v: Value = serde_json::from_str(ISSUE).unwrap();
    let api = format!("https://api.github.com/repos/{full}/issues/{number}");
    v["url"] = json!(api);
    v["repository_url"] = json!(format!("https://api.github.com/repos/{full}"));
    v["labels_url"] = json!(format!("{api}/labels{{/name}}"));
    v["comments_url"] = json!(format!("{api}/comments"));
    v["events_url"] = json!(format!("{api}/events"));
    v["timeline_url"] = json!(format!("{api}/timeline"));
    v["html_url"] = json!(format!("https://github.com/{full}/issues/{number}"));
    v["id"] = json!(1893456700 + number);
    v["number"] = json!(number);
    v["title"] = json!(i.title);
    v["user"]["login"] = json!(i.author);
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
                let id = r.labels.iter().position(|x| x == l).unwrap_or(99);
                label(full, l, id)
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
    if i.pull.is_some() {
        v["pull_request"] = json!({
            "url": format!("https://api.github.com/repos/{full}/pulls/{number}"),
            "html_url": format!("https://github.com/{full}/pull/{number}"),
            "diff_url": format!("https://github.com/{full}/pull/{number}.diff"),
            "patch_url": format!("https://github.com/{full}/pull/{number}.patch"),
            "merged_at": null
        });
    }
    v
}

/// A repository as GitHub embeds it in a pull request's `head` and `base`.
pub(super) fn repository(full: &str) -> Value {
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
pub(super) fn pull(full: &str, number: u64, i: &Issue, p: &Pull) -> Value {
    let owner = full.split('/').next().unwrap();
    let head_repo = p.head_repo.as_deref().unwrap_or(full);
    let head_owner = head_repo.split('/').next().unwrap();
    json!({
        "url": format!("https://api.github.com/repos/{full}/pulls/{number}"),
        "id": number * 1000, "node_id": "PR_fake", "number": number,
        "html_url": format!("https://github.com/{full}/pull/{number}"),
        "state": if i.open { "open" } else { "closed" }, "locked": false, "title": i.title,
        "user": user(&i.author), "body": null, "draft": false,
        "head": {
            "label": format!("{head_owner}:{}", p.head_ref), "ref": p.head_ref,
            "sha": p.head_sha, "user": user(head_owner), "repo": repository(head_repo)
        },
        "base": {
            "label": format!("{owner}:master"), "ref": "master", "sha": "0".repeat(40),
            "user": user(owner), "repo": repository(full)
        },
        "created_at": "2024-05-01T10:00:00Z", "updated_at": "2024-05-01T10:00:00Z"
    })
}

/// The comment just posted on an issue (its last).
pub(super) fn comment(full: &str, number: u64, i: &Issue, text: &str) -> Value {
    let id = 2513370000 + number * 1000 + i.comments.len() as u64;
    let kind = if i.pull.is_some() { "pull" } else { "issues" };
    let mut v: Value = serde_json::from_str(COMMENT).unwrap();
    v["id"] = json!(id);
    v["body"] = json!(text);
    v["url"] = json!(format!(
        "https://api.github.com/repos/{full}/issues/comments/{id}"
    ));
    v["html_url"] = json!(format!(
        "https://github.com/{full}/{kind}/{number}#issuecomment-{id}"
    ));
    v["issue_url"] = json!(format!(
        "https://api.github.com/repos/{full}/issues/{number}"
    ));
    v
}

/// The `n`th review of a pull request.
pub(super) fn review(full: &str, number: u64, n: usize, login: &str, state: &str) -> Value {
    json!({
        "id": 80 + n, "node_id": "PRR_fake", "user": user(login), "body": "",
        "state": state, "commit_id": "0".repeat(40),
        "html_url": format!("https://github.com/{full}/pull/{number}#pullrequestreview-{}", 80 + n),
        "pull_request_url": format!("https://api.github.com/repos/{full}/pulls/{number}"),
        "submitted_at": format!("2024-05-01T11:{:02}:00Z", n % 60),
        "author_association": "MEMBER"
    })
}
