//! GitHub: the API client `lockstep serve` talks through, and the pure parts of GitHub's
//! semantics (webhook signatures, who approved a pull request, who may command the bot).
//!
//! One concrete client (octocrab) with a configurable base URL; tests point it at a fake
//! GitHub over HTTP. Responses are read into the few fields lockstep uses, so a field GitHub
//! adds or drops elsewhere in a payload cannot break a delivery.
//!
//! Secrets (the token, the App's key, the webhook secret) live in `SecretString`s: they are
//! redacted in `Debug` and never logged.
//!
//! # Layout
//! - this file: pull requests, reviews, permissions and statuses as lockstep reads them, and
//!   the rules over them (the latest review per reviewer counts).
//! - `client`: the API client, [`GitHub`], and how it authenticates (token or App).
//! - `checks`: a commit's statuses and check runs, as a status runner's step reads them.
//! - `app`: the GitHub App: its JWT, signed with ring, and its installations' tokens.
//! - `endpoint`: where the API is, its timeout, and its errors in one line.
//! - `signature`: webhook signatures (`X-Hub-Signature-256`).

mod app;
mod checks;
mod client;
mod endpoint;
mod signature;

pub use crate::domain::GitHubRepo;
use crate::domain::PrState;
pub use checks::Check;
pub use client::{GitHub, secret_from_env};
pub use signature::{check_signature, sign};

/// A pull request, as lockstep reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    pub number: u64,
    pub author: String,
    pub head_ref: String,
    pub head_sha: String,
    /// The repository the head branch is in (`owner/name`; a fork's differs), "" if unknown.
    pub head_repo: String,
    pub state: PrState,
}

/// One review as GitHub lists it (oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewEntry {
    pub user: String,
    /// `APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`, `DISMISSED`, `PENDING`.
    pub state: String,
}

/// The latest review that counts per reviewer, in the order reviewers first appear.
///
/// As on GitHub's own page: a `COMMENTED` (or `PENDING`) review neither grants nor revokes
/// an approval, so it is skipped; a dismissed review stays `DISMISSED` and does not count.
pub fn latest_reviews(reviews: &[ReviewEntry]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in reviews {
        if !matches!(
            r.state.as_str(),
            "APPROVED" | "CHANGES_REQUESTED" | "DISMISSED"
        ) {
            continue;
        }
        match out
            .iter_mut()
            .find(|(u, _)| u.eq_ignore_ascii_case(&r.user))
        {
            Some(slot) => slot.1 = r.state.clone(),
            None => out.push((r.user.clone(), r.state.clone())),
        }
    }
    out
}

/// What a user may do on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Admin,
    Maintain,
    Write,
    Triage,
    Read,
    None,
}

impl Permission {
    /// From GitHub's `permission` and `role_name` fields (`role_name` is the finer one).
    pub fn from_api(permission: &str, role_name: &str) -> Permission {
        let p = |s: &str| match s {
            "admin" => Some(Permission::Admin),
            "maintain" => Some(Permission::Maintain),
            "write" | "push" => Some(Permission::Write),
            "triage" => Some(Permission::Triage),
            "read" | "pull" => Some(Permission::Read),
            _ => None,
        };
        p(role_name)
            .or_else(|| p(permission))
            .unwrap_or(Permission::None)
    }

    /// Whether this lets someone command the bot (admin, maintain or write).
    pub fn can_write(self) -> bool {
        matches!(
            self,
            Permission::Admin | Permission::Maintain | Permission::Write
        )
    }
}

/// A commit status state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

impl StatusState {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failure",
            StatusState::Error => "error",
        }
    }
}

/// The context of lockstep's commit status.
pub const STATUS_CONTEXT: &str = "lockstep";

#[cfg(test)]
mod tests {
    use super::*;

    fn r(user: &str, state: &str) -> ReviewEntry {
        ReviewEntry {
            user: user.into(),
            state: state.into(),
        }
    }

    #[test]
    fn latest_review_per_person_counts() {
        let reviews = [
            r("bob", "APPROVED"),
            r("carol", "CHANGES_REQUESTED"),
            r("bob", "COMMENTED"),
            r("carol", "APPROVED"),
            r("dave", "APPROVED"),
            r("dave", "DISMISSED"),
            r("erin", "COMMENTED"),
            r("Bob", "PENDING"),
        ];
        assert_eq!(
            latest_reviews(&reviews),
            [
                ("bob".to_string(), "APPROVED".to_string()),
                ("carol".into(), "APPROVED".into()),
                ("dave".into(), "DISMISSED".into()),
            ]
        );
        let pr = crate::delivery::PrFacts {
            author: "carol".into(),
            reviews: latest_reviews(&reviews),
            ..Default::default()
        };
        // carol approving her own pull request does not count; dave's was dismissed.
        assert_eq!(pr.approvals(), 1);
        let later = [r("bob", "APPROVED"), r("bob", "CHANGES_REQUESTED")];
        assert_eq!(
            latest_reviews(&later),
            [("bob".to_string(), "CHANGES_REQUESTED".to_string())]
        );
    }

    #[test]
    fn permissions() {
        assert!(Permission::from_api("write", "maintain").can_write());
        assert!(Permission::from_api("admin", "").can_write());
        assert!(!Permission::from_api("read", "triage").can_write());
        assert!(!Permission::from_api("none", "").can_write());
    }
}
