//! The meta-project's `lockstep.toml`: what the ecosystem is and how it is guarded.
//!
//! Every struct rejects unknown keys, so a typo is an error naming the file and the key
//! instead of a silently ignored setting. Each field documents its default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use regex::Regex;
use serde::Deserialize;

/// The whole configuration, as read from `lockstep.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The bot account and the people who may bypass it.
    #[serde(default)]
    pub bot: Bot,
    /// Where the pushing user's name comes from.
    #[serde(default)]
    pub identity: Identity,
    /// How tasks are named and which statuses mean what.
    #[serde(default)]
    pub tasks: Tasks,
    /// The task tracker.
    #[serde(default)]
    pub tracker: TrackerConfig,
    /// Where the policies live and which branches are protected.
    #[serde(default)]
    pub policies: Policies,
    /// How deliveries run.
    #[serde(default)]
    pub delivery: Delivery,
    /// Variables handed to every step, per environment name.
    #[serde(default)]
    pub environments: BTreeMap<String, Environment>,
    /// The ecosystem's repositories.
    #[serde(default, rename = "repo")]
    pub repos: Vec<Repo>,
    /// `lockstep serve`: where it listens and how it links back to itself.
    #[serde(default)]
    pub server: Server,
    /// The GitHub side of `lockstep serve` (webhooks, comments, statuses). Default: none, and
    /// `/webhooks/github` answers 404.
    pub github: Option<GitHubConfig>,
    /// The folder this file was read from; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file this configuration was read from (empty when parsed from a string).
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bot {
    /// The bot account: the identity that merges. Default `lockstep-bot`.
    #[serde(default = "default_bot_user")]
    pub user: String,
    /// People who may also update protected branches directly. Default none.
    #[serde(default)]
    pub maintainers: Vec<String>,
    /// Queue, journal and logs, relative to the config file. Default `.lockstep`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

impl Default for Bot {
    fn default() -> Self {
        Bot {
            user: default_bot_user(),
            maintainers: Vec::new(),
            state_dir: default_state_dir(),
        }
    }
}

fn default_bot_user() -> String {
    "lockstep-bot".into()
}
fn default_state_dir() -> PathBuf {
    ".lockstep".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Environment variables naming the pusher; the first one set wins.
    /// Default: `GL_USER`, `GL_USERNAME`, `GITHUB_USER_LOGIN`, `GITEA_PUSHER_NAME`,
    /// `REMOTE_USER`.
    #[serde(default = "default_identity_env")]
    pub env: Vec<String>,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            env: default_identity_env(),
        }
    }
}

fn default_identity_env() -> Vec<String> {
    [
        "GL_USER",
        "GL_USERNAME",
        "GITHUB_USER_LOGIN",
        "GITEA_PUSHER_NAME",
        "REMOTE_USER",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

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
                "pattern `{text}` has no group named `task`; write it like `(?P<task>[A-Z]+-[0-9]+)`"
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
    #[serde(default = "default_tracker_timeout", with = "duration_str")]
    pub timeout: Duration,
    /// `reject` (default) or `allow` the push when the tracker cannot answer.
    #[serde(default)]
    pub on_error: OnError,
    /// How often `serve` polls for tasks ready for delivery. Default `30s`.
    #[serde(default = "default_poll", with = "duration_str")]
    pub poll: Duration,
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
        }
    }
}

impl TrackerConfig {
    /// A key set for another kind of tracker is as likely a mistake as a typo: say so.
    fn check(&self) -> anyhow::Result<()> {
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
                    "`tracker.{key}` is for kind = {}, not \"{}\"; remove it or change `tracker.kind`",
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Folders of policy files, relative to the config; every `*.toml` in them is loaded in
    /// name order. Default `["policies"]`.
    #[serde(default = "default_policy_dirs")]
    pub dirs: Vec<PathBuf>,
    /// Branches only the bot and maintainers may update. Default `["master", "main"]`.
    #[serde(default = "default_protected")]
    pub protected: Vec<String>,
    /// How long all policies of one push may take to evaluate. Default `5s`.
    #[serde(default = "default_policy_timeout", with = "duration_str")]
    pub timeout: Duration,
}

impl Default for Policies {
    fn default() -> Self {
        Policies {
            dirs: default_policy_dirs(),
            protected: default_protected(),
            timeout: default_policy_timeout(),
        }
    }
}

fn default_policy_dirs() -> Vec<PathBuf> {
    vec!["policies".into()]
}
fn default_protected() -> Vec<String> {
    vec!["master".into(), "main".into()]
}
fn default_policy_timeout() -> Duration {
    Duration::from_secs(5)
}

/// How a delivery lands on upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MergeMode {
    /// The rebased branch becomes upstream. The default.
    #[default]
    FastForward,
    /// A merge commit of the rebased branch onto upstream.
    MergeCommit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// A step running longer is killed (its whole process group). Default `30m`.
    #[serde(default = "default_step_timeout", with = "duration_str")]
    pub step_timeout: Duration,
    /// `LOCKSTEP_ENV` for the steps, and which `[environments.*]` applies.
    /// Default `production`.
    #[serde(default = "default_environment")]
    pub environment: String,
    /// `fast-forward` (default) or `merge-commit`.
    #[serde(default)]
    pub merge: MergeMode,
    /// Delete the task branches after a delivery lands. Default false.
    #[serde(default)]
    pub delete_branches: bool,
    /// How many repositories build and test at once. Default 4.
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    /// Variables of lockstep's own environment handed to steps (besides PATH, HOME, LANG and
    /// the like). Default none: secrets of the bot do not reach steps unless named here.
    #[serde(default)]
    pub pass_env: Vec<String>,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            step_timeout: default_step_timeout(),
            environment: default_environment(),
            merge: MergeMode::FastForward,
            delete_branches: false,
            parallel: default_parallel(),
            pass_env: Vec::new(),
        }
    }
}

fn default_step_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_environment() -> String {
    "production".into()
}
fn default_parallel() -> usize {
    4
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Variables handed to every step. Default none.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repo {
    /// The repository's name in the ecosystem (and in messages).
    pub name: String,
    /// Any URL or path the bot can fetch from and push to.
    pub url: String,
    /// The branch deliveries land on. Default `master`.
    #[serde(default = "default_upstream")]
    pub upstream: String,
    /// `owner/name` of the GitHub counterpart, if any.
    pub github: Option<String>,
    /// The delivery steps. Default: none (a phase with no step passes).
    #[serde(default)]
    pub steps: Steps,
}

fn default_upstream() -> String {
    "master".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Steps {
    pub build: Option<Command>,
    pub test: Option<Command>,
    pub deploy: Option<Command>,
    pub verify: Option<Command>,
    pub rollback: Option<Command>,
}

/// A step's command: an argv list, or a string run by `sh -c`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Command {
    Shell(String),
    Argv(Vec<String>),
}

impl Command {
    /// The program and its arguments, as handed to the operating system.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
            Command::Argv(v) => v.clone(),
        }
    }
}

/// `[server]`: the HTTP side of `lockstep serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// The address to listen on. Default `127.0.0.1:8080`; `lockstep serve --listen` overrides.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The URL people reach the queue page at, for links in comments and statuses.
    /// Default `http://` + `listen`.
    pub public_url: Option<String>,
    /// The variable holding the shared secret of `POST /webhooks/tracker` (sent in the header
    /// `X-Lockstep-Token`). Default: none, and that endpoint answers 404.
    pub tracker_secret_env: Option<String>,
    /// The largest webhook body accepted, in bytes. Default 5 MiB (GitHub sends at most 25 MiB,
    /// but the events lockstep reads are far smaller).
    #[serde(default = "default_body_limit")]
    pub body_limit: usize,
    /// How often the queue page reloads itself. Default `5s`.
    #[serde(default = "default_refresh", with = "duration_str")]
    pub refresh: Duration,
    /// On SIGTERM or ctrl-c, how long a running delivery may take to finish before it is
    /// stopped where it is (and recovered at the next start). Default `20s`.
    #[serde(default = "default_shutdown_grace", with = "duration_str")]
    pub shutdown_grace: Duration,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: default_listen(),
            public_url: None,
            tracker_secret_env: None,
            body_limit: default_body_limit(),
            refresh: default_refresh(),
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

impl Server {
    /// `public_url` without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_body_limit() -> usize {
    5 * 1024 * 1024
}
fn default_refresh() -> Duration {
    Duration::from_secs(5)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(20)
}

/// `[github]`: how `lockstep serve` talks to GitHub. Authenticate with a token (`token_env`)
/// or as a GitHub App (`app_id` + `private_key_path`), not both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubConfig {
    /// The REST API's base URL. Default `https://api.github.com` (GitHub Enterprise:
    /// `https://HOST/api/v3`).
    #[serde(default = "default_github_api")]
    pub api_url: String,
    /// The variable holding the webhook secret. Default `LOCKSTEP_WEBHOOK_SECRET`.
    #[serde(default = "default_webhook_secret_env")]
    pub webhook_secret_env: String,
    /// The variable holding a token (personal or fine-grained). Default `GITHUB_TOKEN` when
    /// no `app_id` is set.
    pub token_env: Option<String>,
    /// The GitHub App's id, to authenticate as an App installation. No default.
    pub app_id: Option<u64>,
    /// The App's private key (PEM), relative to the config. Required with `app_id`.
    pub private_key_path: Option<PathBuf>,
    /// How long one API call may take. Default `10s`.
    #[serde(default = "default_github_timeout", with = "duration_str")]
    pub timeout: Duration,
}

fn default_github_api() -> String {
    "https://api.github.com".into()
}
fn default_webhook_secret_env() -> String {
    "LOCKSTEP_WEBHOOK_SECRET".into()
}
fn default_github_timeout() -> Duration {
    Duration::from_secs(10)
}

mod duration_str {
    use serde::{Deserialize, Deserializer, de::Error};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(D::Error::custom)
    }
}

/// Parses `250ms`, `2s`, `30m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration `{text}`; write it like `30s`, `5m` or `250ms`"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "bad duration unit `{other}` in `{text}`; use ms, s, m or h"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration `{text}`"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Where the path of the config came from, so that a missing file can be explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// `--config PATH`.
    Flag,
    /// The `LOCKSTEP_CONFIG` variable.
    Env,
    /// The repository's git config `lockstep.config`, recorded by `install-hooks`.
    Repository,
    /// `./lockstep.toml`, when nothing else names one.
    Default,
}

impl ConfigSource {
    /// Says where the path came from, after the path in a message.
    fn origin(self) -> &'static str {
        match self {
            ConfigSource::Repository => " (this repository's `lockstep.config`)",
            ConfigSource::Env => " (from `LOCKSTEP_CONFIG`)",
            ConfigSource::Flag | ConfigSource::Default => "",
        }
    }

    /// How to fix a config file that does not exist.
    fn fix(self) -> &'static str {
        match self {
            ConfigSource::Flag => "check the path given to `--config`",
            ConfigSource::Env => "check `LOCKSTEP_CONFIG`",
            ConfigSource::Repository => {
                "restore it, or run `lockstep install-hooks --config PATH` on this repository"
            }
            ConfigSource::Default => {
                "pass `--config PATH`, set `LOCKSTEP_CONFIG`, or run from the folder that holds \
                 `lockstep.toml`"
            }
        }
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        Config::load_from(path, ConfigSource::Flag)
    }

    /// Reads and checks a config file; when it does not exist, the message says how to fix
    /// that for the place its path came from.
    pub fn load_from(path: &Path, source: ConfigSource) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let fix = if e.kind() == std::io::ErrorKind::NotFound {
                format!("; {}", source.fix())
            } else {
                String::new()
            };
            anyhow::anyhow!(
                "cannot read config `{}`{}: {e}{fix}",
                path.display(),
                source.origin()
            )
        })?;
        let mut config =
            Config::parse_str(&text).with_context(|| format!("bad config `{}`", path.display()))?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        config.base_dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
        config.path = abs;
        Ok(config)
    }

    /// Parses and checks config text; relative paths stay relative to the current folder.
    pub fn parse_str(text: &str) -> anyhow::Result<Config> {
        let config: Config =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for repo in &self.repos {
            if repo.name.is_empty()
                || !repo
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                bail!(
                    "repo name `{}` must be letters, digits, `-`, `_` or `.`",
                    repo.name
                );
            }
            if !seen.insert(&repo.name) {
                bail!("repo `{}` is declared twice", repo.name);
            }
        }
        if self.delivery.parallel == 0 {
            bail!("`delivery.parallel` must be at least 1");
        }
        self.tracker.check()?;
        for repo in &self.repos {
            if let Some(gh) = &repo.github
                && crate::domain::RepoName::parse(gh).is_none()
            {
                bail!(
                    "repo `{}`: `github = \"{gh}\"` must be `owner/name`",
                    repo.name
                );
            }
        }
        if let Some(gh) = &self.github {
            match (&gh.app_id, &gh.private_key_path, &gh.token_env) {
                (Some(_), Some(_), None) | (None, None, _) => {}
                (Some(_), None, _) => {
                    bail!("`github.app_id` needs `github.private_key_path`, the App's PEM key")
                }
                (None, Some(_), _) => {
                    bail!("`github.private_key_path` needs `github.app_id`")
                }
                (Some(_), Some(_), Some(_)) => bail!(
                    "`github.token_env` and `github.app_id` are both set; keep one way to authenticate"
                ),
            }
        }
        Ok(())
    }

    /// A path from the config, resolved against the config's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.resolve(&self.bot.state_dir)
    }

    pub fn repo(&self, name: &str) -> Option<&Repo> {
        self.repos.iter().find(|r| r.name == name)
    }

    /// The repository whose GitHub counterpart is `owner/name` (case-insensitive, as GitHub).
    pub fn repo_by_github(&self, full_name: &str) -> Option<&Repo> {
        self.repos.iter().find(|r| {
            r.github
                .as_deref()
                .is_some_and(|g| g.eq_ignore_ascii_case(full_name))
        })
    }

    /// The variables of the delivery environment.
    pub fn environment_vars(&self) -> BTreeMap<String, String> {
        self.environments
            .get(&self.delivery.environment)
            .map(|e| e.vars.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_an_empty_file() {
        let c = Config::parse_str("").unwrap();
        assert_eq!(c.bot.user, "lockstep-bot");
        assert_eq!(c.policies.protected, ["master", "main"]);
        assert_eq!(c.tracker.kind, TrackerKind::File);
        assert_eq!(c.tracker.timeout, Duration::from_secs(2));
        assert_eq!(c.tasks.task_of("feature/TASK-1-login"), Some("TASK-1"));
        assert_eq!(c.tasks.task_of("fix-login"), None);
    }

    #[test]
    fn redmine_style_numbers() {
        let c = Config::parse_str("[tasks]\npattern = 'feature-(?P<task>[0-9]+)'\n").unwrap();
        assert_eq!(c.tasks.task_of("feature-34"), Some("34"));
        assert_eq!(c.tasks.task_of("feature/x"), None);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse_str("[bot]\nusr = 'x'\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("unknown field `usr`"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn pattern_needs_a_task_group() {
        let err = Config::parse_str("[tasks]\npattern = '[A-Z]+-[0-9]+'\n").unwrap_err();
        assert!(format!("{err:#}").contains("no group named `task`"));
    }

    #[test]
    fn steps_take_argv_or_shell() {
        let c = Config::parse_str(
            "[[repo]]\nname='api'\nurl='/x'\n[repo.steps]\nbuild=['make','image']\ntest='make test'\n",
        )
        .unwrap();
        let steps = &c.repos[0].steps;
        assert_eq!(steps.build.as_ref().unwrap().argv(), ["make", "image"]);
        assert_eq!(
            steps.test.as_ref().unwrap().argv(),
            ["sh", "-c", "make test"]
        );
        assert_eq!(c.repos[0].upstream, "master");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn tracker_keys_of_another_kind_are_refused() {
        let err = Config::parse_str("[tracker]\nkind = 'redmine'\nrepo = 'o/r'\n").unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "`tracker.repo` is for kind = \"github\", not \"redmine\"; remove it or change `tracker.kind`"
        );
        let c = Config::parse_str(
            "[tracker]\nkind = 'jira'\nurl = 'https://j.example'\nuser = 'u'\nproject = 'P'\n",
        )
        .unwrap();
        assert_eq!(c.tracker.project.as_deref(), Some("P"));
    }

    #[test]
    fn missing_config_says_how_to_fix_it_for_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let msg = |source| format!("{:#}", Config::load_from(&path, source).unwrap_err());
        assert!(
            msg(ConfigSource::Repository).ends_with(
                "; restore it, or run `lockstep install-hooks --config PATH` on this repository"
            ),
            "{}",
            msg(ConfigSource::Repository)
        );
        assert!(msg(ConfigSource::Repository).contains("(this repository's `lockstep.config`)"));
        assert!(msg(ConfigSource::Default).contains("pass `--config PATH`"));
        assert!(msg(ConfigSource::Env).ends_with("; check `LOCKSTEP_CONFIG`"));
        assert!(msg(ConfigSource::Flag).ends_with("; check the path given to `--config`"));
        // A folder is no config, but it exists: the error says so and no more.
        let text = format!(
            "{:#}",
            Config::load_from(dir.path(), ConfigSource::Default).unwrap_err()
        );
        assert!(!text.contains("--config"), "{text}");
    }

    #[test]
    fn server_and_github_sections() {
        let c = Config::parse_str("").unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.server.public_url(), "http://127.0.0.1:8080");
        assert!(c.github.is_none());
        let c = Config::parse_str(
            "[server]\npublic_url = 'https://ci.example/lockstep/'\n[github]\n\
             [[repo]]\nname='api'\nurl='/x'\ngithub='Acme/API'\n",
        )
        .unwrap();
        assert_eq!(c.server.public_url(), "https://ci.example/lockstep");
        let gh = c.github.as_ref().unwrap();
        assert_eq!(gh.api_url, "https://api.github.com");
        assert_eq!(gh.webhook_secret_env, "LOCKSTEP_WEBHOOK_SECRET");
        assert_eq!(c.repo_by_github("acme/api").unwrap().name, "api");
        let err = Config::parse_str("[github]\napp_id = 1\n").unwrap_err();
        assert!(format!("{err:#}").contains("private_key_path"), "{err:#}");
        let err = Config::parse_str("[server]\nlisten_on = 'x'\n").unwrap_err();
        assert!(format!("{err:#}").contains("unknown field `listen_on`"));
        let err = Config::parse_str("[[repo]]\nname='a'\nurl='x'\ngithub='nope'\n").unwrap_err();
        assert!(format!("{err:#}").contains("owner/name"));
    }

    #[test]
    fn duplicate_repo_is_refused() {
        let err = Config::parse_str("[[repo]]\nname='a'\nurl='x'\n[[repo]]\nname='a'\nurl='y'\n")
            .unwrap_err();
        assert!(format!("{err:#}").contains("declared twice"));
    }
}

#[cfg(test)]
mod example {
    use super::*;

    /// The example in the repository is a real, complete config.
    #[test]
    fn example_config_parses() {
        let c = Config::parse_str(include_str!("../examples/lockstep.toml")).unwrap();
        assert_eq!(c.repos.len(), 2);
        assert_eq!(
            c.environment_vars().get("KUBE_CONTEXT").map(String::as_str),
            Some("prod")
        );
        assert_eq!(c.delivery.step_timeout, Duration::from_secs(1800));
    }
}

#[cfg(test)]
mod readme {
    /// Every TOML block of the README is a valid config, so the copy-paste examples work.
    #[test]
    fn readme_configs_parse() {
        let readme = include_str!("../README.md");
        let blocks: Vec<&str> = readme
            .split("```toml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .collect();
        assert!(blocks.len() >= 4);
        for block in blocks {
            if let Err(e) = super::Config::parse_str(block) {
                panic!("{e:#}\nin:\n{block}");
            }
        }
    }
}
