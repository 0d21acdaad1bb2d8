//! `[runners.<name>]`: the CI services a step may run on instead of lockstep's own host, and
//! the step that names one (`test = { runner = "bb", builder = "api-test" }`).

use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use super::duration;

/// What kind of CI a runner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunnerKind {
    /// A Buildbot master: lockstep forces a build through its REST API and follows it.
    Buildbot,
    /// Any CI that reports commit statuses (`POST /api/statuses/<sha>` on `lockstep serve`),
    /// triggered by the candidate branch's push.
    Status,
}

impl RunnerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerKind::Buildbot => "buildbot",
            RunnerKind::Status => "status",
        }
    }
}

/// One `[runners.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runner {
    pub kind: RunnerKind,
    /// The CI's web root, e.g. `https://ci.example.com/` (Buildbot's REST API is under
    /// `api/v2` of it). Buildbot only.
    #[serde(default)]
    pub url: String,
    /// The variable holding the bearer token a CI posts its statuses with. Status only.
    pub token_env: Option<String>,
    /// The ForceScheduler builds are forced through. Default `force`.
    #[serde(default = "default_scheduler")]
    pub scheduler: String,
    /// The user lockstep logs in as, when the master asks for a login. Default none.
    pub user: Option<String>,
    /// The variable of lockstep's environment holding that user's password.
    pub password_env: Option<String>,
    /// The longest a step waits for the CI (the step's own timeout, if shorter, wins).
    /// Default `30m`.
    #[serde(default = "default_wait", with = "duration")]
    pub wait: Duration,
    /// How long a build request may wait for a worker before the step fails, saying that
    /// the CI never started it. Default `5m`.
    #[serde(default = "default_start_within", with = "duration")]
    pub start_within: Duration,
}

fn default_scheduler() -> String {
    "force".into()
}
fn default_wait() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_start_within() -> Duration {
    Duration::from_secs(5 * 60)
}

impl Runner {
    /// The web root, ending in `/`.
    pub fn base_url(&self) -> String {
        if self.url.ends_with('/') {
            self.url.clone()
        } else {
            format!("{}/", self.url)
        }
    }

    pub(super) fn check(&self, name: &str) -> anyhow::Result<()> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!("runner name `{name}` must be letters, digits, `-`, `_` or `.`");
        }
        if self.kind == RunnerKind::Status {
            if self.token_env.as_deref().is_none_or(str::is_empty) {
                bail!(
                    "runner `{name}`: a status runner needs `token_env`, the variable holding \
                     the token the CI posts its statuses with"
                );
            }
            if !self.url.is_empty() || self.user.is_some() {
                bail!(
                    "runner `{name}`: a status runner takes no `url` or `user`: the CI posts to \
                     `POST /api/statuses/<sha>` of `lockstep serve`"
                );
            }
            if self.wait.is_zero() || self.start_within.is_zero() {
                bail!("runner `{name}`: `wait` and `start_within` must be longer than 0s");
            }
            return Ok(());
        }
        if self.token_env.is_some() {
            bail!("runner `{name}`: `token_env` is for `kind = \"status\"`");
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            bail!(
                "runner `{name}`: `url = \"{}\"` must be the CI's web root, starting with \
                 `http://` or `https://`",
                self.url
            );
        }
        if self.scheduler.is_empty()
            || !self
                .scheduler
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!(
                "runner `{name}`: `scheduler = \"{}\"` must be a ForceScheduler's name \
                 (letters, digits, `-`, `_` or `.`)",
                self.scheduler
            );
        }
        if self.user.is_some() != self.password_env.is_some() {
            bail!("runner `{name}`: set both `user` and `password_env`, or neither");
        }
        if self.wait.is_zero() || self.start_within.is_zero() {
            bail!("runner `{name}`: `wait` and `start_within` must be longer than 0s");
        }
        Ok(())
    }
}

/// A step run by a runner: `{ runner = "bb", builder = "api-test" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerStep {
    /// The `[runners.<name>]` it runs on.
    pub runner: String,
    /// The builder a Buildbot runner forces the build on.
    pub builder: Option<String>,
    /// The statuses a status runner waits for: every one `success` on the candidate's sha.
    pub contexts: Option<Vec<String>>,
}

impl RunnerStep {
    pub(super) fn check(
        &self,
        repo: &str,
        phase: &str,
        runners: &std::collections::BTreeMap<String, Runner>,
    ) -> anyhow::Result<()> {
        let Some(runner) = runners.get(&self.runner) else {
            let known: Vec<&str> = runners.keys().map(String::as_str).collect();
            bail!(
                "repo `{repo}`: the {phase} step runs on `{}`, but no `[runners.{}]` is \
                 declared{}",
                self.runner,
                self.runner,
                if known.is_empty() {
                    String::new()
                } else {
                    format!(" (declared: {})", known.join(", "))
                }
            );
        };
        match runner.kind {
            RunnerKind::Buildbot => match &self.builder {
                Some(b) if !b.trim().is_empty() => Ok(()),
                _ => bail!(
                    "repo `{repo}`: the {phase} step runs on the Buildbot runner `{}`; name \
                     its builder: `{{ runner = \"{}\", builder = \"...\" }}`",
                    self.runner,
                    self.runner
                ),
            },
            // What counts is never vacuous: no context would pass with no status at all.
            RunnerKind::Status => match &self.contexts {
                Some(c) if !c.is_empty() && c.iter().all(|c| !c.trim().is_empty()) => Ok(()),
                _ => bail!(
                    "repo `{repo}`: the {phase} step runs on the status runner `{}`; list the \
                     statuses it waits for: `{{ runner = \"{}\", contexts = [\"ci/test\"] }}`",
                    self.runner,
                    self.runner
                ),
            },
        }
    }
}

/// A status runner's CI is triggered by the candidate branch's push and told nothing else:
/// no step that must know its stage (deploy, verify or rollback of a delivery with
/// `delivery.stages`) or that it deploys a showroom runs on one. A Buildbot runner is told
/// both (`lockstep_env`, `lockstep_purpose`).
pub(super) fn check_status_steps(config: &super::Config) -> anyhow::Result<()> {
    for repo in &config.repos {
        for (phase, step) in repo.steps.all() {
            let Some(r) = step.runner().filter(|r| {
                config
                    .runners
                    .get(&r.runner)
                    .is_some_and(|r| r.kind == RunnerKind::Status)
            }) else {
                continue;
            };
            if config.delivery.staged() && matches!(phase, "deploy" | "verify" | "rollback") {
                bail!(
                    "repo `{}`: the {phase} step runs on the status runner `{}`, which only the \
                     candidate branch's push starts and which is not told the stage \
                     (`LOCKSTEP_ENV`) of a delivery with `delivery.stages`; run it on a Buildbot \
                     runner (told it as `lockstep_env`), make it a command, or drop `stages`",
                    repo.name,
                    r.runner
                );
            }
            if config.showroom().is_some() && phase == "deploy" {
                bail!(
                    "repo `{}`: the deploy step runs on the status runner `{}`, which only the \
                     candidate branch's push starts and which is not told that it deploys a \
                     showroom; run it on a Buildbot runner (told it as `lockstep_purpose`), \
                     make it a command, or drop `[environments.showroom]`",
                    repo.name,
                    r.runner
                );
            }
        }
    }
    Ok(())
}

/// The default `[delivery] candidate_branch`.
pub(super) fn default_candidate_branch() -> String {
    "lockstep/{delivery}".into()
}

/// Checks a `candidate_branch` template: `{delivery}` in it, a fixed prefix before it, and
/// nothing git would refuse in a branch name.
pub(super) fn check_candidate_branch(template: &str) -> anyhow::Result<()> {
    let sample = template.replace("{delivery}", "1");
    let prefix = template.split('{').next().unwrap_or_default();
    let bad = sample.contains("..")
        || sample.contains("//")
        || sample.starts_with('/')
        || sample.ends_with('/')
        || sample.ends_with(".lock")
        || sample.contains(['{', '}'])
        || sample
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\@".contains(c));
    if !template.contains("{delivery}") || prefix.is_empty() || bad {
        bail!(
            "`delivery.candidate_branch = \"{template}\"` must be a branch name with a fixed \
             prefix and `{{delivery}}` in it, like `lockstep/{{delivery}}`"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn err(text: &str) -> String {
        format!("{:#}", Config::parse_str(text).unwrap_err())
    }

    const RUNNER: &str = "[runners.bb]\nkind = 'buildbot'\nurl = 'http://127.0.0.1:8010'\n";

    #[test]
    fn a_step_names_a_declared_runner_and_its_builder() {
        let c = Config::parse_str(&format!(
            "{RUNNER}[[repo]]\nname='api'\nurl='/x'\n[repo.steps]\nbuild='make'\n\
             test={{ runner = 'bb', builder = 'api-test' }}\n"
        ))
        .unwrap();
        let bb = &c.runners["bb"];
        assert_eq!(bb.base_url(), "http://127.0.0.1:8010/");
        assert_eq!(bb.scheduler, "force");
        assert_eq!(bb.wait, std::time::Duration::from_secs(1800));
        assert_eq!(bb.start_within, std::time::Duration::from_secs(300));
        assert_eq!(c.delivery.candidate_branch, "lockstep/{delivery}");
        let test = c.repos[0].steps.test.as_ref().unwrap();
        assert_eq!(test.runner().unwrap().builder.as_deref(), Some("api-test"));
        assert!(c.repos[0].steps.build.as_ref().unwrap().runner().is_none());

        assert_eq!(
            err("[[repo]]\nname='api'\nurl='/x'\n[repo.steps]\ntest={ runner = 'ci' }\n"),
            "repo `api`: the test step runs on `ci`, but no `[runners.ci]` is declared"
        );
        assert_eq!(
            err(&format!(
                "{RUNNER}[[repo]]\nname='api'\nurl='/x'\n[repo.steps]\ndeploy={{ runner = 'bb' }}\n"
            )),
            "repo `api`: the deploy step runs on the Buildbot runner `bb`; name its builder: \
             `{ runner = \"bb\", builder = \"...\" }`"
        );
    }

    #[test]
    fn a_status_step_lists_its_contexts() {
        let runner = "[runners.ci]\nkind = 'status'\ntoken_env = 'CI_TOKEN'\n";
        let c = Config::parse_str(&format!(
            "{runner}[[repo]]\nname='api'\nurl='/x'\n[repo.steps]\n\
             test={{ runner = 'ci', contexts = ['ci/test'] }}\n"
        ))
        .unwrap();
        let test = c.repos[0].steps.test.as_ref().unwrap().runner().unwrap();
        assert_eq!(test.contexts.as_deref(), Some(&["ci/test".to_string()][..]));
        for contexts in ["", ", contexts = []", ", contexts = ['']"] {
            assert_eq!(
                err(&format!(
                    "{runner}[[repo]]\nname='api'\nurl='/x'\n[repo.steps]\n\
                     test={{ runner = 'ci'{contexts} }}\n"
                )),
                "repo `api`: the test step runs on the status runner `ci`; list the statuses \
                 it waits for: `{ runner = \"ci\", contexts = [\"ci/test\"] }`",
                "{contexts}"
            );
        }
        assert!(err("[runners.ci]\nkind = 'status'\n").contains("needs `token_env`"));
    }

    #[test]
    fn a_status_runner_is_refused_where_it_would_need_its_stage_or_purpose() {
        let runners = "[runners.bb]\nkind = 'buildbot'\nurl = 'http://127.0.0.1:8010'\n\
                       [runners.ci]\nkind = 'status'\ntoken_env = 'CI_TOKEN'\n";
        let staged = format!(
            "[delivery]\nstages = ['staging', 'production']\n\
             [environments.staging]\nvars = {{}}\n[environments.production]\nvars = {{}}\n\
             {runners}[[repo]]\nname = 'api'\nurl = '/x'\n[repo.steps]\n"
        );
        assert_eq!(
            err(&format!(
                "{staged}build = {{ runner = 'ci', contexts = ['ci/build'] }}\n\
                 verify = {{ runner = 'ci', contexts = ['ci/verify'] }}\n"
            )),
            "repo `api`: the verify step runs on the status runner `ci`, which only the \
             candidate branch's push starts and which is not told the stage (`LOCKSTEP_ENV`) \
             of a delivery with `delivery.stages`; run it on a Buildbot runner (told it as \
             `lockstep_env`), make it a command, or drop `stages`"
        );
        // Every stage's deploy and verify on Buildbot is told its stage; build and test on a
        // status runner run once, before the stages.
        let c = Config::parse_str(&format!(
            "{staged}build = {{ runner = 'ci', contexts = ['ci/build'] }}\n\
             deploy = {{ runner = 'bb', builder = 'deploy' }}\n\
             verify = {{ runner = 'bb', builder = 'verify' }}\n\
             rollback = {{ runner = 'bb', builder = 'rollback' }}\n"
        ))
        .unwrap();
        assert_eq!(c.delivery.stages(), ["staging", "production"]);

        let showroom = format!(
            "[environments.showroom]\nurl = 'https://{{task}}.show.example.com'\n\
             {runners}[[repo]]\nname = 'api'\nurl = '/x'\n[repo.steps]\n"
        );
        assert_eq!(
            err(&format!(
                "{showroom}deploy = {{ runner = 'ci', contexts = ['ci/deploy'] }}\n"
            )),
            "repo `api`: the deploy step runs on the status runner `ci`, which only the \
             candidate branch's push starts and which is not told that it deploys a showroom; \
             run it on a Buildbot runner (told it as `lockstep_purpose`), make it a command, \
             or drop `[environments.showroom]`"
        );
        Config::parse_str(&format!(
            "{showroom}build = {{ runner = 'ci', contexts = ['ci/build'] }}\n\
             test = {{ runner = 'ci', contexts = ['ci/test'] }}\n\
             deploy = {{ runner = 'bb', builder = 'deploy' }}\n"
        ))
        .unwrap();
        // Without stages or a showroom, the one deploy needs to be told nothing.
        Config::parse_str(&format!(
            "{runners}[[repo]]\nname = 'api'\nurl = '/x'\n[repo.steps]\n\
             deploy = {{ runner = 'ci', contexts = ['ci/deploy'] }}\n"
        ))
        .unwrap();
    }

    #[test]
    fn candidates_of_autotests_and_showrooms_are_under_the_prefix_and_never_a_deliverys() {
        let c = Config::parse_str("").unwrap();
        assert_eq!(c.autotest_candidate(5), "lockstep/autotest-5");
        assert_eq!(c.showroom_candidate("task-1"), "lockstep/showroom-task-1");
        let c = Config::parse_str("[delivery]\ncandidate_branch = 'ci/cand-{delivery}'\n").unwrap();
        assert_eq!(c.autotest_candidate(5), "ci/cand-autotest-5");
        assert_eq!(c.showroom_candidate("task-1"), "ci/cand-showroom-task-1");
        // A delivery's part after the prefix starts with its id's digits, theirs with a letter.
        for id in [1, 5, 42] {
            let d = c.candidate_branch(crate::domain::DeliveryId(id));
            assert!(d.starts_with(c.candidate_prefix()));
            assert_ne!(d, c.autotest_candidate(id));
            assert!(d[c.candidate_prefix().len()..].starts_with(|ch: char| ch.is_ascii_digit()));
        }
    }

    #[test]
    fn runners_and_the_candidate_branch_are_checked() {
        assert!(
            err("[runners.bb]\nkind = 'buildbot'\nurl = 'ci.example.com'\n")
                .contains("must be the CI's web root")
        );
        assert!(err("[runners.bb]\nkind = 'jenkins'\nurl = 'http://x'\n").contains("jenkins"));
        assert!(err(&format!("{RUNNER}user = 'bot'\n")).contains("both `user` and `password_env`"));
        assert!(err(&format!("{RUNNER}wait = '0s'\n")).contains("longer than 0s"));
        for bad in [
            "lockstep/x",
            "{delivery}",
            "lock step/{delivery}",
            "a..b/{delivery}",
        ] {
            assert!(
                err(&format!("[delivery]\ncandidate_branch = '{bad}'\n"))
                    .contains("must be a branch name with a fixed prefix"),
                "{bad}"
            );
        }
        let c = Config::parse_str("[delivery]\ncandidate_branch = 'ci/cand-{delivery}'\n").unwrap();
        assert_eq!(
            c.candidate_branch(crate::domain::DeliveryId(7)),
            "ci/cand-7"
        );
        assert_eq!(c.candidate_prefix(), "ci/cand-");
    }
}
