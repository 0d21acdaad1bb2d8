//! GitHub Issues: the status of an issue is a label, the note is a comment.
//!
//! ```toml
//! [tasks]
//! pattern = 'gh-(?P<task>[0-9]+)'      # the task key is the issue number
//!
//! [tracker]
//! kind = "github"
//! repo = "acme/shop"
//! token_env = "GITHUB_TOKEN"
//! label_prefix = "status: "            # labels `status: In Progress`, `status: For Delivery`
//! ```
//!
//! An open issue has the status its one `status: …` label names (`Open` when it has none);
//! a closed issue has the status `Closed`. Moving replaces the status label (and closes or
//! reopens the issue) in one update, then comments. Pull requests are not tasks.
//!
//! A note is plain text that quotes what lockstep does not trust (step output, failure
//! reasons, alerts, branch names) and GitHub reads a comment as Markdown: the note is posted
//! as one fenced block, so a mention, an image or a link in it is shown, not obeyed.
//!
//! The client is octocrab with a configurable base URL: the same code talks to
//! api.github.com, to GitHub Enterprise Server and to the tests' fake.

use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use octocrab::Octocrab;
use octocrab::models::IssueState;
use octocrab::models::issues::Issue;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::SecretString;

use super::http::{chain, parse_base_url};
use super::{Credential, Task, Tracker, TrackerError};
use crate::domain::TaskKey;

pub const NAME: &str = "github";
/// The variable read for the token when `tracker.token_env` is not set.
pub const TOKEN_ENV: &str = "GITHUB_TOKEN";
/// The API of github.com, when `tracker.api_url` is not set.
pub const API_URL: &str = "https://api.github.com";
/// The label prefix when `tracker.label_prefix` is not set.
pub const LABEL_PREFIX: &str = "status: ";
/// The status of a closed issue; moving an issue there closes it.
pub const CLOSED: &str = "Closed";
/// The status of an open issue without a status label.
pub const OPEN: &str = "Open";

pub struct GitHubIssues {
    /// Built at the first request: octocrab starts a task on the runtime it is built in, and
    /// the hooks open the tracker before they start theirs.
    crab: OnceLock<Octocrab>,
    base: String,
    token: SecretString,
    owner: String,
    repo: String,
    prefix: String,
    timeout: Duration,
    token_var: String,
}

fn other(message: String) -> TrackerError {
    TrackerError::Other {
        tracker: NAME,
        message,
    }
}

/// The issue number a task key stands for.
fn issue_number(key: &str) -> Result<u64, TrackerError> {
    let number = (!key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()))
        .then(|| key.parse::<u64>().ok())
        .flatten();
    number.ok_or_else(|| {
        other(format!(
            "task key `{key}` is not an issue number; GitHub issues are numbers, so make the \
             `task` group of `[tasks] pattern` capture only the number, like 'gh-(?P<task>[0-9]+)'"
        ))
    })
}

/// The HTTP status GitHub answered, when the error is an answer.
fn http_status(e: &octocrab::Error) -> Option<u16> {
    match e {
        octocrab::Error::GitHub { source, .. } => Some(source.status_code.as_u16()),
        _ => None,
    }
}

impl GitHubIssues {
    /// A client for the issues of `repo` (`owner/name`) at the API `api_url`.
    pub fn new(
        api_url: &str,
        repo: &str,
        token: Credential,
        label_prefix: &str,
        timeout: Duration,
    ) -> anyhow::Result<GitHubIssues> {
        let base = parse_base_url("api_url", api_url)?;
        let (owner, name) = repo
            .split_once('/')
            .filter(|(o, n)| {
                let ok = |s: &str| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                };
                ok(o) && ok(n) && *n != "." && *n != ".."
            })
            .ok_or_else(|| {
                anyhow::anyhow!("`tracker.repo` must be `owner/name`, like `acme/shop`")
            })?;
        if let Err(e) = Octocrab::builder().base_uri(base.as_str()) {
            anyhow::bail!("`tracker.api_url` is not usable: {e}");
        }
        Ok(GitHubIssues {
            crab: OnceLock::new(),
            base: base.to_string(),
            token: token.secret.clone(),
            owner: owner.to_string(),
            repo: name.to_string(),
            prefix: label_prefix.to_string(),
            timeout,
            token_var: token.var,
        })
    }

    /// The client; call it from within the runtime that will drive it.
    fn crab(&self) -> Result<&Octocrab, TrackerError> {
        if let Some(crab) = self.crab.get() {
            return Ok(crab);
        }
        let crab = Octocrab::builder()
            .base_uri(self.base.as_str())
            .map_err(|e| other(format!("`tracker.api_url` is not usable: {e}")))?
            .personal_token(self.token.clone())
            .set_connect_timeout(Some(self.timeout))
            .set_read_timeout(Some(self.timeout))
            .set_write_timeout(Some(self.timeout))
            .build()
            .map_err(|e| other(format!("cannot build the client: {e}")))?;
        Ok(self.crab.get_or_init(|| crab))
    }

    /// Runs one API call under the tracker timeout and maps its error.
    async fn call<T>(
        &self,
        fut: impl Future<Output = octocrab::Result<T>>,
    ) -> Result<octocrab::Result<T>, TrackerError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Err(self.timed_out()),
            Ok(r) => Ok(r),
        }
    }

    fn timed_out(&self) -> TrackerError {
        TrackerError::Timeout {
            tracker: NAME,
            after: self.timeout,
        }
    }

    /// A failed call as a tracker error: 401 and 403 name the token's variable (a 403 unless
    /// GitHub says it is rate limiting), timeouts deep in the client count as timeouts.
    fn failure(&self, what: &str, e: octocrab::Error) -> TrackerError {
        if let octocrab::Error::GitHub { source, .. } = &e {
            let code = source.status_code.as_u16();
            let rate_limited = source.message.to_ascii_lowercase().contains("rate limit");
            if code == 401 {
                return TrackerError::Auth {
                    tracker: NAME,
                    var: self.token_var.clone(),
                };
            }
            if code == 403 && !rate_limited {
                return TrackerError::Forbidden {
                    tracker: NAME,
                    var: self.token_var.clone(),
                    what: what.to_string(),
                };
            }
            return other(format!(
                "{what} answered {}: {}",
                source.status_code,
                source.message.lines().next().unwrap_or("")
            ));
        }
        let text = chain(&e);
        if text.contains("timed out") || text.contains("deadline has elapsed") {
            return self.timed_out();
        }
        other(format!("{what} failed: {text}"))
    }

    fn is_status_label(&self, name: &str) -> bool {
        name.len() >= self.prefix.len()
            && name.is_char_boundary(self.prefix.len())
            && name[..self.prefix.len()].eq_ignore_ascii_case(&self.prefix)
    }

    /// The status of an issue: `Closed`, its one status label, or `Open`.
    fn status_of(&self, issue: &Issue) -> Result<String, TrackerError> {
        if issue.state == IssueState::Closed {
            return Ok(CLOSED.to_string());
        }
        let labels: Vec<&str> = issue
            .labels
            .iter()
            .map(|l| l.name.as_str())
            .filter(|n| self.is_status_label(n))
            .collect();
        match labels[..] {
            [] => Ok(OPEN.to_string()),
            [one] => Ok(one[self.prefix.len()..].to_string()),
            _ => Err(other(format!(
                "issue #{} has several status labels ({}); keep one",
                issue.number,
                labels
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    fn task_of(&self, key: &str, issue: &Issue, status: String) -> Task {
        Task {
            key: key.to_string(),
            status,
            title: issue.title.clone(),
            assignee: issue
                .assignee
                .as_ref()
                .or(issue.assignees.first())
                .map(|a| a.login.clone())
                .unwrap_or_default(),
            url: issue.html_url.to_string(),
        }
    }

    /// The issue, or `None` when it does not exist or is a pull request.
    async fn issue(&self, number: u64) -> Result<Option<Issue>, TrackerError> {
        let what = format!("GET /repos/{}/{}/issues/{number}", self.owner, self.repo);
        match self
            .call(self.crab()?.issues(&self.owner, &self.repo).get(number))
            .await?
        {
            Ok(issue) if issue.pull_request.is_none() => Ok(Some(issue)),
            Ok(_) => Ok(None),
            Err(e) if http_status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.failure(&what, e)),
        }
    }

    /// The repository's label for a status, with GitHub's spelling of its name.
    async fn status_label(&self, status: &str) -> Result<String, TrackerError> {
        let wanted = format!("{}{status}", self.prefix);
        let route = format!(
            "/repos/{}/{}/labels/{}",
            self.owner,
            self.repo,
            utf8_percent_encode(&wanted, NON_ALPHANUMERIC)
        );
        let what = format!("GET /repos/{}/{}/labels/…", self.owner, self.repo);
        match self
            .call(
                self.crab()?
                    .get::<octocrab::models::Label, _, ()>(route, None),
            )
            .await?
        {
            Ok(label) => Ok(label.name),
            Err(e) if http_status(&e) == Some(404) => {
                let known = self.status_labels().await.unwrap_or_default();
                Err(TrackerError::NoSuchStatus {
                    tracker: NAME,
                    status: status.to_string(),
                    hint: if known.is_empty() {
                        format!(
                            "; create the label `{wanted}` in `{}/{}`",
                            self.owner, self.repo
                        )
                    } else {
                        format!(
                            "; create the label `{wanted}` or use one of {}",
                            known
                                .iter()
                                .map(|l| format!("`{l}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                })
            }
            Err(e) => Err(self.failure(&what, e)),
        }
    }

    /// The names of the repository's status labels (for hints).
    async fn status_labels(&self) -> Result<Vec<String>, TrackerError> {
        let what = format!("GET /repos/{}/{}/labels", self.owner, self.repo);
        let handler = self.crab()?.issues(&self.owner, &self.repo);
        let mut page = match self
            .call(handler.list_labels_for_repo().per_page(100).send())
            .await?
        {
            Ok(p) => p,
            Err(e) => return Err(self.failure(&what, e)),
        };
        let mut names = Vec::new();
        loop {
            names.extend(
                page.items
                    .iter()
                    .map(|l| l.name.clone())
                    .filter(|n| self.is_status_label(n)),
            );
            match self.call(self.crab()?.get_page(&page.next)).await? {
                Ok(Some(next)) => page = next,
                Ok(None) => return Ok(names),
                Err(e) => return Err(self.failure(&what, e)),
            }
        }
    }

    /// Every issue (not pull request) in a state with these labels, following the pages.
    async fn list(
        &self,
        state: octocrab::params::State,
        labels: &[String],
    ) -> Result<Vec<Issue>, TrackerError> {
        let what = format!("GET /repos/{}/{}/issues", self.owner, self.repo);
        let handler = self.crab()?.issues(&self.owner, &self.repo);
        let mut builder = handler.list().state(state).per_page(100);
        if !labels.is_empty() {
            builder = builder.labels(labels);
        }
        let mut page = match self.call(builder.send()).await? {
            Ok(p) => p,
            Err(e) => return Err(self.failure(&what, e)),
        };
        let mut issues = Vec::new();
        loop {
            issues.extend(
                std::mem::take(&mut page.items)
                    .into_iter()
                    .filter(|i| i.pull_request.is_none()),
            );
            match self
                .call(self.crab()?.get_page::<Issue>(&page.next))
                .await?
            {
                Ok(Some(next)) => page = next,
                Ok(None) => return Ok(issues),
                Err(e) => return Err(self.failure(&what, e)),
            }
        }
    }
}

#[async_trait]
impl Tracker for GitHubIssues {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn task(&self, key: &TaskKey) -> Result<Option<Task>, TrackerError> {
        let key = key.as_str();
        let number = issue_number(key)?;
        match self.issue(number).await? {
            None => Ok(None),
            Some(issue) => {
                let status = self.status_of(&issue)?;
                Ok(Some(self.task_of(key, &issue, status)))
            }
        }
    }

    async fn move_to(&self, key: &TaskKey, status: &str, note: &str) -> Result<(), TrackerError> {
        let key = key.as_str();
        let number = issue_number(key)?;
        let issue = self
            .issue(number)
            .await?
            .ok_or_else(|| TrackerError::NotFound {
                tracker: NAME,
                key: key.to_string(),
            })?;
        let closing = status.eq_ignore_ascii_case(CLOSED);
        let mut labels: Vec<String> = issue
            .labels
            .iter()
            .map(|l| l.name.clone())
            .filter(|n| !self.is_status_label(n))
            .collect();
        if !closing {
            labels.push(self.status_label(status).await?);
        }
        let state = if closing {
            IssueState::Closed
        } else {
            IssueState::Open
        };
        let what = format!("PATCH /repos/{}/{}/issues/{number}", self.owner, self.repo);
        let handler = self.crab()?.issues(&self.owner, &self.repo);
        let updated = match self
            .call(handler.update(number).labels(&labels).state(state).send())
            .await?
        {
            Ok(issue) => issue,
            Err(e) if http_status(&e) == Some(404) => {
                return Err(TrackerError::NotFound {
                    tracker: NAME,
                    key: key.to_string(),
                });
            }
            Err(e) if http_status(&e) == Some(422) => {
                return Err(TrackerError::Refused {
                    tracker: NAME,
                    key: key.to_string(),
                    status: status.to_string(),
                    why: match &e {
                        octocrab::Error::GitHub { source, .. } => source.message.clone(),
                        _ => chain(&e),
                    },
                });
            }
            Err(e) => return Err(self.failure(&what, e)),
        };
        // GitHub drops label and state changes from accounts without write access.
        let now = self.status_of(&updated)?;
        let wanted = if closing {
            CLOSED.to_string()
        } else {
            labels.last().expect("pushed above")[self.prefix.len()..].to_string()
        };
        if now != wanted {
            return Err(TrackerError::Refused {
                tracker: NAME,
                key: key.to_string(),
                status: status.to_string(),
                why: format!(
                    "GitHub kept it `{now}`; the token in `{}` needs write access to `{}/{}`",
                    self.token_var, self.owner, self.repo
                ),
            });
        }
        if note.is_empty() {
            return Ok(());
        }
        let what = format!(
            "POST /repos/{}/{}/issues/{number}/comments",
            self.owner, self.repo
        );
        let body = crate::text::markdown::fenced(note);
        match self.call(handler.create_comment(number, body)).await? {
            Ok(_) => Ok(()),
            Err(e) => Err(match self.failure(&what, e) {
                TrackerError::Other { message, .. } => other(format!(
                    "moved `{key}` to `{status}` but could not leave the note: {message}"
                )),
                e => e,
            }),
        }
    }

    async fn in_statuses(&self, statuses: &[String]) -> Result<Vec<Task>, TrackerError> {
        let mut tasks = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for status in statuses {
            let issues = if status.eq_ignore_ascii_case(CLOSED) {
                self.list(octocrab::params::State::Closed, &[]).await?
            } else if status.eq_ignore_ascii_case(OPEN) {
                let open = self.list(octocrab::params::State::Open, &[]).await?;
                open.into_iter()
                    .filter(|i| !i.labels.iter().any(|l| self.is_status_label(&l.name)))
                    .collect()
            } else {
                let label = format!("{}{status}", self.prefix);
                self.list(octocrab::params::State::Open, &[label]).await?
            };
            for issue in issues {
                if seen.insert(issue.number) {
                    let key = issue.number.to_string();
                    // Listed by its label: that label is its status, even if it has another.
                    let status = self.status_of(&issue).unwrap_or_else(|_| status.clone());
                    tasks.push(self.task_of(&key, &issue, status));
                }
            }
        }
        Ok(tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_issue_numbers() {
        assert_eq!(issue_number("12").unwrap(), 12);
        let e = issue_number("GH-12").unwrap_err().to_string();
        assert!(e.contains("is not an issue number"), "{e}");
    }

    #[test]
    fn repo_names_are_checked() {
        let cred = || Credential::new("GITHUB_TOKEN", "t");
        let d = Duration::from_secs(1);
        assert!(GitHubIssues::new(API_URL, "acme/shop", cred(), LABEL_PREFIX, d).is_ok());
        for bad in [
            "acme",
            "acme/",
            "/shop",
            "acme/shop/x",
            "acme/..",
            "ac me/shop",
        ] {
            let e = GitHubIssues::new(API_URL, bad, cred(), LABEL_PREFIX, d)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"))
                .to_string();
            assert!(e.contains("`owner/name`"), "{bad}: {e}");
        }
    }
}
