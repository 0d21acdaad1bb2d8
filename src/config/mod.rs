//! The meta-project's `lockstep.toml`: what the ecosystem is and how it is guarded.
//!
//! Every struct rejects unknown keys, so a typo is an error naming the file and the key
//! instead of a silently ignored setting. Each field documents its default.
//!
//! # Layout
//! - this file: the whole [`Config`], `[bot]`, `[identity]`, `[policies]`; loading and the
//!   checks that span sections.
//! - `tracker`: `[tasks]` and `[tracker]`.
//! - `delivery`: `[delivery]`, `[environments.*]` and `[[repo]]` with their steps.
//! - `server`: `[server]` and `[github]`.
//! - `showroom`: `[environments.showroom]`, a showroom per task.
//! - `store`: `[store]`.
//! - `monitor`: `[prometheus]`, `[[gate]]` and `[alertmanager]`.
//! - `reviews`: `[reviews]`, `[teams]` and `[audit]`.
//! - `autotest`: `[autotest]`.
//! - `runners`: `[runners.*]`, the step that names one, and `[delivery] candidate_branch`.
//! - `duration`: the `30s` / `250ms` durations every section writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;

mod autotest;
mod delivery;
mod duration;
mod monitor;
mod reviews;
mod runners;
mod server;
mod showroom;
mod store;
mod tracker;

pub use autotest::Autotest;
pub use delivery::{Delivery, Environment, MergeMode, Repo, StepCommand};
pub use duration::{humanize, parse_duration};
pub use monitor::{AlertmanagerConfig, DEFAULT_ALERT_SLACK, Gate, NoData, PrometheusConfig};
pub use reviews::{Audit, AuditOnError, Reviews};
pub use runners::{Runner, RunnerKind, RunnerStep};
pub use server::{GitHubConfig, Server};
pub use showroom::{OnFull, SHOWROOM, Showroom};
pub use store::StoreConfig;
pub use tracker::{OnError, Tasks, TrackerConfig, TrackerKind};

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
    /// Who may approve a task branch with an approval ref.
    #[serde(default)]
    pub reviews: Reviews,
    /// Named groups of people (`dba = ["alice", "bob"]`), the `teams` fact. Default none.
    #[serde(default)]
    pub teams: BTreeMap<String, Vec<String>>,
    /// The decision log's size and rotation.
    #[serde(default)]
    pub audit: Audit,
    /// Where the queue and the journal live: SQLite in `state_dir`, or a PostgreSQL shared by
    /// several `lockstep serve` replicas.
    #[serde(default)]
    pub store: StoreConfig,
    /// Task branches tested on their own when they change (`[autotest]`).
    #[serde(default)]
    pub autotest: Autotest,
    /// The GitHub side of `lockstep serve` (webhooks, comments, statuses). Default: none, and
    /// `/webhooks/github` answers 404.
    pub github: Option<GitHubConfig>,
    /// Where the gates' queries go. Default none (and no gate may be declared).
    pub prometheus: Option<PrometheusConfig>,
    /// Metric gates every delivery passes after deploy. Default none.
    #[serde(default, rename = "gate")]
    pub gates: Vec<Gate>,
    /// `POST /webhooks/alertmanager`. Default none, and that endpoint answers 404.
    pub alertmanager: Option<AlertmanagerConfig>,
    /// The CI services steps may run on, by name. Default none: every step runs here.
    #[serde(default)]
    pub runners: BTreeMap<String, Runner>,
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
    /// People who may also update protected branches directly: identities of the git server
    /// (the pusher, as `[identity] env` names it), never GitHub logins. Default none.
    #[serde(default)]
    pub maintainers: Vec<String>,
    /// GitHub logins that may command the bot on a pull request even where GitHub answers
    /// that they may not write to the repository. Default none: GitHub's answer decides.
    #[serde(default)]
    pub github_maintainers: Vec<String>,
    /// Queue, journal and logs, relative to the config file. Default `.lockstep`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

impl Default for Bot {
    fn default() -> Self {
        Bot {
            user: default_bot_user(),
            maintainers: Vec::new(),
            github_maintainers: Vec::new(),
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
pub struct Policies {
    /// Folders of policy files, relative to the config; every `*.toml` in them is loaded in
    /// name order. Default `["policies"]`.
    #[serde(default = "default_policy_dirs")]
    pub dirs: Vec<PathBuf>,
    /// Branches only the bot and maintainers may update. Default `["master", "main"]`.
    #[serde(default = "default_protected")]
    pub protected: Vec<String>,
    /// How long the policies of one push (or one delivery request, or one merge) may take to
    /// evaluate; a rule still running then counts as its `on_error` says. Default `5s`.
    #[serde(default = "default_policy_timeout", with = "duration")]
    pub timeout: Duration,
    /// How much one rule may grow the process while it is evaluated, in MiB; a rule that
    /// builds more (a loop making huge lists or strings) is stopped and counts as its
    /// `on_error` says. Default 64.
    #[serde(default = "default_policy_memory")]
    pub max_memory_mib: u64,
    /// Whether the hooks may run with no rule for pushes, accepting every push. Default
    /// false: an empty or misplaced policy folder refuses every push instead.
    #[serde(default)]
    pub allow_empty: bool,
}

impl Default for Policies {
    fn default() -> Self {
        Policies {
            dirs: default_policy_dirs(),
            protected: default_protected(),
            timeout: default_policy_timeout(),
            max_memory_mib: default_policy_memory(),
            allow_empty: false,
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
fn default_policy_memory() -> u64 {
    64
}

impl Policies {
    /// `max_memory_mib` in bytes.
    pub fn max_memory(&self) -> u64 {
        self.max_memory_mib.saturating_mul(1024 * 1024)
    }
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

/// A config file's path and where that path came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    pub source: ConfigSource,
}

impl Located {
    /// Reads and checks the config file (see [`Config::load_from`]).
    pub fn load(&self) -> anyhow::Result<Config> {
        Config::load_from(&self.path, self.source)
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
            if repo.name.as_str().is_empty()
                || !repo
                    .name
                    .as_str()
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
            if let Some(p) = repo
                .writable
                .iter()
                .find(|p| p.to_string_lossy().contains(':'))
            {
                bail!(
                    "repo `{}`: writable path `{}` has a `:`, which cannot be handed to a step; \
                     move or link it to a path without one",
                    repo.name,
                    p.display()
                );
            }
        }
        if self.delivery.parallel == 0 {
            bail!("`delivery.parallel` must be at least 1");
        }
        if self.delivery.window == 0 {
            bail!("`delivery.window` must be at least 1 (1 delivers one task at a time)");
        }
        delivery::check_stages(&self.delivery, &self.environments)?;
        self.tracker.check()?;
        self.server.check()?;
        for repo in &self.repos {
            if let Some(gh) = &repo.github
                && crate::domain::GitHubRepo::parse(gh).is_none()
            {
                bail!(
                    "repo `{}`: `github = \"{gh}\"` must be `owner/name`",
                    repo.name
                );
            }
        }
        if let Some(gh) = &self.github {
            gh.check()?;
        }
        for (name, runner) in &self.runners {
            runner.check(name)?;
        }
        for repo in &self.repos {
            for (phase, step) in repo.steps.all() {
                if let Some(r) = step.runner() {
                    r.check(repo.name.as_str(), phase, &self.runners)?;
                }
            }
        }
        runners::check_candidate_branch(&self.delivery.candidate_branch)?;
        runners::check_status_steps(self)?;
        self.store.check()?;
        self.autotest.check()?;
        showroom::check(self)?;
        if self.delivery.watch_gates && (self.delivery.watch.is_zero() || self.gates.is_empty()) {
            bail!(
                "`delivery.watch_gates` samples the `[[gate]]`s for `delivery.watch`; set both, \
                 or drop `watch_gates`"
            );
        }
        let names: Vec<&str> = self.repos.iter().map(|r| r.name.as_str()).collect();
        monitor::check(
            self.prometheus.as_ref(),
            &self.gates,
            self.alertmanager.as_ref(),
            &names,
        )?;
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

    /// The variables of one stage's environment (`[environments.<stage>] vars`).
    pub fn stage_vars(&self, stage: &str) -> BTreeMap<String, String> {
        self.environments
            .get(stage)
            .map(|e| e.vars.clone())
            .unwrap_or_default()
    }

    /// The branch a delivery's candidate is pushed to for the runners' CI.
    pub fn candidate_branch(&self, id: crate::domain::DeliveryId) -> String {
        self.delivery
            .candidate_branch
            .replace("{delivery}", &id.to_string())
    }

    /// The branch an autotest's candidate is pushed to for the runners' CI: under the same
    /// prefix, so that the same policies guard it, and never a delivery's (whose part after
    /// the prefix starts with its id's digits).
    pub fn autotest_candidate(&self, id: i64) -> String {
        format!("{}autotest-{id}", self.candidate_prefix())
    }

    /// The branch a showroom's candidate is pushed to for the runners' CI, by its label (a
    /// DNS label: letters, digits and `-`).
    pub fn showroom_candidate(&self, label: &str) -> String {
        format!("{}showroom-{label}", self.candidate_prefix())
    }

    /// The fixed start of every candidate branch (the `candidate_branches` fact).
    pub fn candidate_prefix(&self) -> &str {
        self.delivery
            .candidate_branch
            .split('{')
            .next()
            .unwrap_or_default()
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
    fn unknown_key_is_named() {
        let err = Config::parse_str("[bot]\nusr = 'x'\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("unknown field `usr`"), "{text}");
        assert!(text.contains("line 2"), "{text}");
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

    /// The config names where secrets are (variables, a key file), never holds them: its
    /// `Debug` shows the names and the path, and nothing of the key file's content.
    #[test]
    fn the_config_debug_names_secrets_without_holding_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("app.pem"),
            "-----BEGIN KEY-----\nc2VjcmV0LWtleQ==\n",
        )
        .unwrap();
        let path = dir.path().join("lockstep.toml");
        std::fs::write(
            &path,
            "[tracker]\nkind = 'jira'\nurl = 'https://j.example'\ntoken_env = 'SHOP_JIRA_TOKEN'\n\
             [server]\ntracker_secret_env = 'SHOP_HOOK_SECRET'\n\
             [github]\napp_id = 7\nprivate_key_path = 'app.pem'\nwebhook_secret_env = 'SHOP_WH'\n",
        )
        .unwrap();
        let debug = format!("{:?}", Config::load(&path).unwrap());
        for name in ["SHOP_JIRA_TOKEN", "SHOP_HOOK_SECRET", "SHOP_WH", "app.pem"] {
            assert!(debug.contains(name), "{name} in {debug}");
        }
        assert!(!debug.contains("c2VjcmV0LWtleQ"), "{debug}");
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
        let c = Config::parse_str(include_str!("../../examples/lockstep.toml")).unwrap();
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
        let readme = include_str!("../../README.md");
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
