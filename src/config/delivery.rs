//! `[delivery]`, `[environments.*]` and `[[repo]]`: the repositories a delivery spans, their
//! steps, and how a delivery runs and lands.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::runners::RunnerStep;
use crate::domain::{Phase, RepoName};

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
    #[serde(default = "default_step_timeout", with = "duration")]
    pub step_timeout: Duration,
    /// `LOCKSTEP_ENV` for the steps, and which `[environments.*]` applies.
    /// Default `production`.
    #[serde(default = "default_environment")]
    pub environment: String,
    /// The environments a delivery is deployed to and verified in, one after the other
    /// (`["staging", "production"]`): each stage for every repository before the next, each
    /// with its `[environments.<stage>]`. Default none: the one `environment`.
    #[serde(default)]
    pub stages: Vec<String>,
    /// `fast-forward` (default) or `merge-commit`.
    #[serde(default)]
    pub merge: MergeMode,
    /// Delete the task branches after a delivery lands. Default false.
    #[serde(default)]
    pub delete_branches: bool,
    /// How many build and test steps run at once, across every delivery of the pipeline
    /// (the nearest delivery to landing gets a free slot first). Default 4.
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    /// How many deliveries are in flight at once: the head of the queue, which deploys,
    /// verifies and merges, and up to `window - 1` behind it, rebased onto the result of those
    /// ahead of them and built and tested speculatively. `1` is the strictly serial line.
    /// Default 4.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Variables of lockstep's own environment handed to steps (besides PATH, HOME, LANG and
    /// the like). Default none: secrets of the bot do not reach steps unless named here.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// How long a delivery stays watched after it lands: a firing alert about one of its
    /// repositories (`POST /webhooks/alertmanager`) rolls it back and reverts it. Default
    /// `0s`: not watched.
    #[serde(default, with = "duration")]
    pub watch: Duration,
    /// Keep sampling the `[[gate]]`s during the watch (`lockstep serve`): a gate that fails
    /// rolls the delivery back as an alert would. Default false.
    #[serde(default)]
    pub watch_gates: bool,
    /// Limit what steps may write (their checkout, their `HOME`, the temporary folder and
    /// `[[repo]] writable`) where the kernel enforces Landlock. Default true; false lets a
    /// step use `sudo` (Landlock sets `no_new_privs`) and write wherever the bot may.
    #[serde(default = "default_confine_steps")]
    pub confine_steps: bool,
    /// The branch a candidate is pushed to, for a step that runs on a `[runners.*]` CI to
    /// fetch: the commit that would land, pushed before such a step and deleted when the
    /// delivery lands, fails or is discarded. `{delivery}` is the delivery's number; only
    /// the bot may write under the prefix before it (`policies/30-protected.toml`). Default
    /// `lockstep/{delivery}`.
    #[serde(default = "super::runners::default_candidate_branch")]
    pub candidate_branch: String,
    /// Push the candidate branch before every command step too (they get its name in
    /// `LOCKSTEP_CANDIDATE_BRANCH`), for a step that hands the candidate to a CI of its own
    /// (a Kubernetes Job, a Jenkins job it waits for). Default false: only before steps on a
    /// `[runners.*]`.
    #[serde(default)]
    pub push_candidates: bool,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            step_timeout: default_step_timeout(),
            environment: default_environment(),
            stages: Vec::new(),
            merge: MergeMode::FastForward,
            delete_branches: false,
            parallel: default_parallel(),
            window: default_window(),
            pass_env: Vec::new(),
            watch: Duration::ZERO,
            watch_gates: false,
            confine_steps: true,
            candidate_branch: super::runners::default_candidate_branch(),
            push_candidates: false,
        }
    }
}

impl Delivery {
    /// The stages a delivery goes through, in order: `stages`, or the one `environment`.
    pub fn stages(&self) -> Vec<&str> {
        if self.stages.is_empty() {
            vec![self.environment.as_str()]
        } else {
            self.stages.iter().map(String::as_str).collect()
        }
    }

    /// Whether a delivery goes through more than one stage (and journals each).
    pub fn staged(&self) -> bool {
        self.stages.len() > 1
    }

    /// The stage build and test run in (and the only one of a single-stage delivery).
    pub fn first_stage(&self) -> &str {
        self.stages.first().unwrap_or(&self.environment)
    }
}

/// `[delivery] stages`: names fit for a variable and a file name, each once, each with its
/// `[environments.<stage>]` (a stage without one would deploy with none of its variables).
pub(super) fn check_stages(
    delivery: &Delivery,
    environments: &BTreeMap<String, Environment>,
) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for stage in &delivery.stages {
        if stage.is_empty()
            || !stage
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            anyhow::bail!(
                "`delivery.stages`: stage `{}` must be letters, digits, `-`, `_` or `.`",
                stage.escape_debug()
            );
        }
        if !seen.insert(stage) {
            anyhow::bail!("`delivery.stages` names `{stage}` twice");
        }
        if !environments.contains_key(stage) {
            anyhow::bail!(
                "`delivery.stages` names `{stage}`, which has no environment: add \
                 `[environments.{stage}]` with its `vars` (an empty `vars = {{}}` will do)"
            );
        }
    }
    Ok(())
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
fn default_window() -> usize {
    4
}
fn default_confine_steps() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Variables handed to every step. Default none.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    // `[environments.showroom]` only (`config/showroom.rs` reads and checks them).
    /// The showroom's URL, `{task}` its task's safe label. Default none.
    pub url: Option<String>,
    /// How many showrooms at once. Default 5.
    pub max: Option<usize>,
    /// Past `max`: `evict-oldest` (default) or `refuse`.
    pub on_full: Option<super::showroom::OnFull>,
    /// A showroom older than this is torn down. Default none.
    #[serde(default, deserialize_with = "super::showroom::ttl")]
    pub ttl: Option<Duration>,
    /// The tracker statuses in which a task has a showroom (`lockstep serve`). Default none.
    #[serde(default)]
    pub statuses: Vec<String>,
    /// A push to the task's branch redeploys its showroom. Default false.
    #[serde(default)]
    pub follow: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repo {
    /// The repository's name in the ecosystem (and in messages).
    pub name: RepoName,
    /// Any URL or path the bot can fetch from and push to.
    pub url: String,
    /// The branch deliveries land on. Default `master`.
    #[serde(default = "default_upstream")]
    pub upstream: String,
    /// `owner/name` of the GitHub counterpart, if any.
    pub github: Option<String>,
    /// Where a `[runners.*]` CI clones the repository from, when not from `url` (the CI's
    /// own mirror, another host name). Default: `url`.
    pub ci_url: Option<String>,
    /// The delivery steps. Default: none (a phase with no step passes).
    #[serde(default)]
    pub steps: Steps,
    /// Paths its steps may write besides their checkout, their `HOME`, the temporary folder
    /// and `/dev` (where the kernel enforces Landlock), relative to the config; no `:` in
    /// them. Default none.
    #[serde(default)]
    pub writable: Vec<std::path::PathBuf>,
}

impl Repo {
    /// The command this repository runs in a phase; `None` for a phase with no step of its
    /// own (rebase and merge are lockstep's git work; rollback runs only when undoing).
    pub fn step(&self, phase: Phase) -> Option<&StepCommand> {
        match phase {
            Phase::Build => self.steps.build.as_ref(),
            Phase::Test => self.steps.test.as_ref(),
            Phase::Deploy => self.steps.deploy.as_ref(),
            Phase::Verify => self.steps.verify.as_ref(),
            Phase::Rebase | Phase::Merge | Phase::Rollback => None,
        }
    }
}

fn default_upstream() -> String {
    "master".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Steps {
    pub build: Option<StepCommand>,
    pub test: Option<StepCommand>,
    pub deploy: Option<StepCommand>,
    pub verify: Option<StepCommand>,
    pub rollback: Option<StepCommand>,
    /// Removes a task's showroom, given the variables its deploy had.
    pub teardown: Option<StepCommand>,
}

impl Steps {
    /// Every step declared, with its phase's name.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, &StepCommand)> {
        [
            ("build", &self.build),
            ("test", &self.test),
            ("deploy", &self.deploy),
            ("verify", &self.verify),
            ("rollback", &self.rollback),
        ]
        .into_iter()
        .filter_map(|(phase, step)| step.as_ref().map(|s| (phase, s)))
    }

    /// Whether any step runs on a runner (the candidate is then pushed for the CI).
    pub fn on_runners(&self) -> bool {
        self.all().any(|(_, s)| s.runner().is_some())
    }
}

/// A step's command: an argv list, a string run by `sh -c`, or a runner that runs it on a
/// CI (`{ runner = "bb", builder = "api-test" }`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StepCommand {
    Shell(String),
    Argv(Vec<String>),
    Runner(RunnerStep),
}

impl StepCommand {
    /// The program and its arguments, as handed to the operating system; empty for a step
    /// on a runner, which runs no process here.
    pub fn argv(&self) -> Vec<String> {
        match self {
            StepCommand::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
            StepCommand::Argv(v) => v.clone(),
            StepCommand::Runner(_) => Vec::new(),
        }
    }

    /// The runner it runs on, if it is not a local command.
    pub fn runner(&self) -> Option<&RunnerStep> {
        match self {
            StepCommand::Runner(r) => Some(r),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::domain::Phase;

    #[test]
    fn only_the_step_phases_run_a_repository_command() {
        let repo: super::Repo = toml::from_str(
            r#"
name = "api"
url = "api.git"
[steps]
build = "make"
test = "make test"
deploy = "deploy"
verify = "verify"
rollback = "undeploy"
"#,
        )
        .unwrap();
        let with_step: Vec<Phase> = Phase::ALL
            .into_iter()
            .filter(|p| repo.step(*p).is_some())
            .collect();
        assert_eq!(
            with_step,
            [Phase::Build, Phase::Test, Phase::Deploy, Phase::Verify]
        );
        assert_eq!(
            repo.step(Phase::Test),
            Some(&super::StepCommand::Shell("make test".into()))
        );
    }

    #[test]
    fn stages_default_to_the_one_environment() {
        let c = Config::parse_str("[delivery]\nenvironment = 'live'\n").unwrap();
        assert_eq!(c.delivery.stages(), ["live"]);
        assert!(!c.delivery.staged());
        assert_eq!(c.delivery.first_stage(), "live");
        let c = Config::parse_str(
            "[delivery]\nstages = ['staging', 'production']\n\
             [environments.staging]\nvars = { URL = 'https://staging' }\n\
             [environments.production]\nvars = {}\n",
        )
        .unwrap();
        assert_eq!(c.delivery.stages(), ["staging", "production"]);
        assert!(c.delivery.staged());
        assert_eq!(c.delivery.first_stage(), "staging");
        assert_eq!(c.stage_vars("staging")["URL"], "https://staging");
        assert!(c.stage_vars("production").is_empty());
    }

    #[test]
    fn a_stage_without_an_environment_says_what_to_add() {
        let e = Config::parse_str(
            "[delivery]\nstages = ['staging', 'production']\n\
             [environments.production]\nvars = {}\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`delivery.stages` names `staging`, which has no environment: add \
             `[environments.staging]` with its `vars` (an empty `vars = {}` will do)"
        );
        let e = Config::parse_str("[delivery]\nstages = ['a', 'a']\n[environments.a]\nvars = {}\n")
            .unwrap_err();
        assert_eq!(e.to_string(), "`delivery.stages` names `a` twice");
        let e = Config::parse_str("[delivery]\nstages = ['a b']\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`delivery.stages`: stage `a b` must be letters, digits, `-`, `_` or `.`"
        );
    }

    /// Every TOML block of the environments page is a valid config.
    #[test]
    fn the_environments_page_configs_parse() {
        let page = include_str!("../../docs/environments.md");
        let blocks: Vec<&str> = page
            .split("```toml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .collect();
        assert_eq!(blocks.len(), 3);
        for block in blocks {
            if let Err(e) = Config::parse_str(block) {
                panic!("{e:#}\nin:\n{block}");
            }
        }
        let last = page.rsplit("```toml\n").next().unwrap();
        let example = Config::parse_str(last.split("```").next().unwrap()).unwrap();
        assert_eq!(example.delivery.stages(), ["staging", "production"]);
    }

    #[test]
    fn steps_take_argv_or_shell() {
        let c = Config::parse_str(
            "[[repo]]\nname='api'\nurl='/x'\n[repo.steps]\nbuild=['make','image']\n\
             test='make test'\n",
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
}
