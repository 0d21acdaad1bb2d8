//! `[tasks]` and `[tracker]`: how a branch names its task, which statuses mean what, and
//! which tracker holds the tasks (with the keys each kind of tracker takes).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use regex::Regex;
use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tasks {
    /// Finds the task in a branch name; must have a group named `task`.
    /// Default `(?P<task>[A-Z][A-Z0-9]+-[0-9]+)` (Jira-like keys).
    #[serde(default = "default_task_pattern", with = "serde_regex")]
    pub pattern: Regex,
    /// Statuses in which a task branch takes pushes. Default `["In Progress"]`.
    #[serde(default = "default_in_progress")]
    pub in_progress: Vec<String>,
    /// Statuses that ask for a delivery. Default `["For Delivery"]`.
    #[serde(default = "default_for_delivery")]
    pub for_delivery: Vec<String>,
    /// The task's status after a delivery lands. Default `Closed`.
    #[serde(default = "default_delivered")]
    pub delivered: String,
    /// The task's status after a delivery fails. Default `In Progress`.
    #[serde(default = "default_returned")]
    pub returned: String,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks {
            pattern: default_task_pattern(),
            in_progress: default_in_progress(),
            for_delivery: default_for_delivery(),
            delivered: default_delivered(),
            returned: default_returned(),
        }
    }
}

fn default_task_pattern() -> Regex {
    Regex::new(r"(?P<task>[A-Z][A-Z0-9]+-[0-9]+)").expect("the default pattern is valid")
}
fn default_in_progress() -> Vec<String> {
    vec!["In Progress".into()]
}
fn default_for_delivery() -> Vec<String> {
    vec!["For Delivery".into()]
}
fn default_delivered() -> String {
    "Closed".into()
}
fn default_returned() -> String {
    "In Progress".into()
}

impl Tasks {
    /// The task named by a branch, if any.
    pub fn task_of<'a>(&self, branch: &'a str) -> Option<&'a str> {
        self.pattern
            .captures(branch)?
            .name("task")
            .map(|m| m.as_str())
    }
}

mod serde_regex {
    use regex::Regex;
    use serde::{Deserialize, Deserializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Regex, D::Error> {
        let text = String::deserialize(d)?;
        let re = Regex::new(&text).map_err(|e| D::Error::custom(format!("bad regex: {e}")))?;
        if re.capture_names().flatten().all(|n| n != "task") {
            return Err(D::Error::custom(format!(
                "pattern `{text}` has no group named `task`; write it like \
                 `(?P<task>[A-Z]+-[0-9]+)`"
            )));
        }
        Ok(re)
    }
}

/// Which tracker holds the tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TrackerKind {
    /// A TOML file next to the config (the embedded default).
    #[default]
    File,
    Redmine,
    Jira,
    Github,
}

impl TrackerKind {
    pub fn name(self) -> &'static str {
        match self {
            TrackerKind::File => "file",
            TrackerKind::Redmine => "redmine",
            TrackerKind::Jira => "jira",
            TrackerKind::Github => "github",
        }
    }
}

/// What a hook does when the tracker cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Reject the push (fail closed). The default.
    #[default]
    Reject,
    /// Accept the push with a warning.
    Allow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerConfig {
    /// `file`, `redmine`, `jira` or `github`. Default `file`.
    #[serde(default)]
    pub kind: TrackerKind,
    /// File tracker: the tasks file, relative to the config. Default `tasks.toml`.
    #[serde(default = "default_tasks_path")]
    pub path: PathBuf,
    /// Redmine / Jira: the server's base URL (`https://redmine.example.com`,
    /// `https://acme.atlassian.net`). Required for those kinds; no default.
    pub url: Option<String>,
    /// Redmine: the variable holding the API key. Default `REDMINE_API_KEY`.
    pub api_key_env: Option<String>,
    /// Jira: the account the token belongs to (Cloud: an email); without it the token is sent
    /// as a bearer token (a Data Center personal access token). Default none.
    pub user: Option<String>,
    /// Jira / GitHub: the variable holding the token. Default `JIRA_TOKEN` / `GITHUB_TOKEN`.
    pub token_env: Option<String>,
    /// Redmine / Jira: the project (Redmine identifier, Jira key) the tasks ready for delivery
    /// are listed from. Default none: every project the account can see.
    pub project: Option<String>,
    /// GitHub Issues: `owner/name` of the repository holding the issues. Required for that
    /// kind; no default.
    pub repo: Option<String>,
    /// GitHub Issues: the API base URL. Default `https://api.github.com`
    /// (GitHub Enterprise Server: `https://HOST/api/v3`).
    pub api_url: Option<String>,
    /// GitHub Issues: the label prefix that carries the status. Default `status: `.
    pub label_prefix: Option<String>,
    /// How long a hook waits for the tracker. Default `2s`.
    #[serde(default = "default_tracker_timeout", with = "duration")]
    pub timeout: Duration,
    /// `reject` (default) or `allow` the push when the tracker cannot answer.
    #[serde(default)]
    pub on_error: OnError,
    /// How often `serve` polls for tasks ready for delivery. Default `30s`.
    #[serde(default = "default_poll", with = "duration")]
    pub poll: Duration,
    /// How long `serve` keeps what the tracker answered about a task, so that a burst of
    /// checks asks once; a move by lockstep forgets it at once. Default `5s`; `0s` asks every
    /// time. (Hooks ask once per push and keep nothing.)
    #[serde(default = "default_cache", with = "duration")]
    pub cache: Duration,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            kind: TrackerKind::File,
            path: default_tasks_path(),
            url: None,
            api_key_env: None,
            user: None,
            token_env: None,
            project: None,
            repo: None,
            api_url: None,
            label_prefix: None,
            timeout: default_tracker_timeout(),
            on_error: OnError::Reject,
            poll: default_poll(),
            cache: default_cache(),
        }
    }
}

impl TrackerConfig {
    /// A key set for another kind of tracker is as likely a mistake as a typo: say so.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        use TrackerKind::*;
        let keys: [(&str, bool, &[TrackerKind]); 8] = [
            ("url", self.url.is_some(), &[Redmine, Jira]),
            ("api_key_env", self.api_key_env.is_some(), &[Redmine]),
            ("user", self.user.is_some(), &[Jira]),
            ("token_env", self.token_env.is_some(), &[Jira, Github]),
            ("project", self.project.is_some(), &[Redmine, Jira]),
            ("repo", self.repo.is_some(), &[Github]),
            ("api_url", self.api_url.is_some(), &[Github]),
            ("label_prefix", self.label_prefix.is_some(), &[Github]),
        ];
        for (key, set, kinds) in keys {
            if set && !kinds.contains(&self.kind) {
                let names: Vec<String> =
                    kinds.iter().map(|k| format!("\"{}\"", k.name())).collect();
                bail!(
                    "`tracker.{key}` is for kind = {}, not \"{}\"; remove it or change \
                     `tracker.kind`",
                    names.join(" or "),
                    self.kind.name()
                );
            }
        }
        Ok(())
    }
}

fn default_tasks_path() -> PathBuf {
    "tasks.toml".into()
}
fn default_tracker_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_poll() -> Duration {
    Duration::from_secs(30)
}
fn default_cache() -> Duration {
    Duration::from_secs(5)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

    #[test]
    fn redmine_style_numbers() {
        let c = Config::parse_str("[tasks]\npattern = 'feature-(?P<task>[0-9]+)'\n").unwrap();
        assert_eq!(c.tasks.task_of("feature-34"), Some("34"));
        assert_eq!(c.tasks.task_of("feature/x"), None);
    }

    #[test]
    fn pattern_needs_a_task_group() {
        let err = Config::parse_str("[tasks]\npattern = '[A-Z]+-[0-9]+'\n").unwrap_err();
        assert!(format!("{err:#}").contains("no group named `task`"));
    }

    #[test]
    fn tracker_keys_of_another_kind_are_refused() {
        let err = Config::parse_str("[tracker]\nkind = 'redmine'\nrepo = 'o/r'\n").unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "`tracker.repo` is for kind = \"github\", not \"redmine\"; remove it or change \
             `tracker.kind`"
        );
        let c = Config::parse_str(
            "[tracker]\nkind = 'jira'\nurl = 'https://j.example'\nuser = 'u'\nproject = 'P'\n",
        )
        .unwrap();
        assert_eq!(c.tracker.project.as_deref(), Some("P"));
    }

    #[test]
    fn the_cache_lasts_a_few_seconds_unless_set() {
        let c = Config::parse_str("").unwrap();
        assert_eq!(c.tracker.cache, Duration::from_secs(5));
        let c = Config::parse_str("[tracker]\ncache = '0s'\n").unwrap();
        assert_eq!(c.tracker.cache, Duration::ZERO);
        let err = Config::parse_str("[tracker]\ncache = 'soon'\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("bad duration `soon`"),
            "{err:#}"
        );
    }
}
