//! `[prometheus]`, `[[gate]]` and `[alertmanager]`: the metric gates a delivery must pass
//! after deploy, and the alerts that roll a delivery back while it is watched after merge.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use super::duration;

/// `[prometheus]`: where the gates' queries go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// The server's base URL, e.g. `http://127.0.0.1:9090`. No default.
    pub url: String,
    /// The variable holding a bearer token, if Prometheus wants one. Default none.
    pub token_env: Option<String>,
    /// How long one query may take. Default `5s`.
    #[serde(default = "default_prometheus_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_prometheus_timeout() -> Duration {
    Duration::from_secs(5)
}

/// What a gate makes of a query that returns nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NoData {
    /// The gate fails: a metric that vanished proves nothing. The default.
    #[default]
    Fail,
    /// The gate passes that sample.
    Pass,
}

impl NoData {
    pub fn as_str(self) -> &'static str {
        match self {
            NoData::Fail => "fail",
            NoData::Pass => "pass",
        }
    }
}

/// `[[gate]]`: a PromQL query whose every sample must stay within its bounds for a while
/// after deploy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// The gate's name in messages. Required, unique.
    pub name: String,
    /// The repositories whose deliveries it guards. Default: every repository.
    #[serde(default)]
    pub repos: Vec<String>,
    /// The PromQL expression, sent as is: only configuration goes into it.
    pub query: String,
    /// A sample above this fails the gate. Default none (`min` must then be set).
    pub max: Option<f64>,
    /// A sample below this fails the gate. Default none (`max` must then be set).
    pub min: Option<f64>,
    /// How long after deploy it is sampled. Default `0s`: one sample.
    #[serde(default, rename = "for", with = "duration")]
    pub duration: Duration,
    /// How often it is sampled within `for`. Default `15s`.
    #[serde(default = "default_every", with = "duration")]
    pub every: Duration,
    /// `fail` (default) or `pass` when the query returns nothing.
    #[serde(default)]
    pub no_data: NoData,
}

fn default_every() -> Duration {
    Duration::from_secs(15)
}

impl Gate {
    /// Whether the gate guards a delivery of these repositories.
    pub fn guards<'a>(&self, mut repos: impl Iterator<Item = &'a str>) -> bool {
        self.repos.is_empty() || repos.any(|r| self.repos.iter().any(|g| g == r))
    }

    /// `max = 0.01`, `min = 5`, or `min = 5, max = 10`: the bounds in the words of the config.
    pub fn bounds(&self) -> String {
        match (self.min, self.max) {
            (Some(min), Some(max)) => format!("`min = {min}`, `max = {max}`"),
            (Some(min), None) => format!("`min = {min}`"),
            (None, Some(max)) => format!("`max = {max}`"),
            (None, None) => "no bound".into(),
        }
    }

    fn check(&self, repos: &[&str]) -> anyhow::Result<()> {
        let name = &self.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!("gate name `{name}` must be letters, digits, `-`, `_` or `.`");
        }
        if self.query.trim().is_empty() {
            bail!("gate `{name}` has an empty `query`; write the PromQL expression it checks");
        }
        for r in &self.repos {
            if !repos.contains(&r.as_str()) {
                bail!("gate `{name}` names repo `{r}`, which no `[[repo]]` declares");
            }
        }
        for (key, bound) in [("min", self.min), ("max", self.max)] {
            if bound.is_some_and(|b| !b.is_finite()) {
                bail!("gate `{name}`: `{key}` must be a finite number");
            }
        }
        match (self.min, self.max) {
            (None, None) => {
                bail!("gate `{name}` has no bound; set `max`, `min` or both")
            }
            (Some(min), Some(max)) if min > max => {
                bail!("gate `{name}`: `min = {min}` is above `max = {max}`; no value can pass")
            }
            _ => {}
        }
        if self.every.is_zero() {
            bail!("gate `{name}`: `every` must be longer than 0s");
        }
        if !self.duration.is_zero() && self.every > self.duration {
            bail!(
                "gate `{name}`: `every = \"{}\"` is longer than `for = \"{}\"`; it would be \
                 sampled once: shorten `every` or drop `for`",
                duration::humanize(self.every),
                duration::humanize(self.duration)
            );
        }
        Ok(())
    }
}

/// `[alertmanager]`: `POST /webhooks/alertmanager`, and how an alert names a repository.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// The variable holding the bearer token Alertmanager sends (`http_config.authorization`).
    /// Required.
    pub token_env: String,
    /// The label naming the repository an alert is about. Default `lockstep_repo`.
    #[serde(default = "default_repo_label")]
    pub repo_label: String,
    /// More ways to tie an alert to a repository: an alert whose labels hold every pair of a
    /// matcher's `labels` is about its `repo`. Default none.
    #[serde(default, rename = "match")]
    pub matchers: Vec<AlertMatcher>,
    /// The largest body accepted, in bytes. Default 1 MiB.
    #[serde(default = "default_alert_body_limit")]
    pub body_limit: usize,
    /// An alert counts against a delivery only if it started after the delivery landed, less
    /// this much (the hosts' clocks, a release reaching production while the merge ends).
    /// An alert that started earlier was not the delivery's doing: it is recorded, and left
    /// alone. Default `30s`.
    #[serde(default = "default_alert_slack", with = "duration")]
    pub slack: Duration,
}

/// `[[alertmanager.match]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertMatcher {
    /// The repository the alert is about.
    pub repo: String,
    /// Labels the alert must carry, each with this exact value.
    pub labels: BTreeMap<String, String>,
}

fn default_repo_label() -> String {
    "lockstep_repo".into()
}
fn default_alert_body_limit() -> usize {
    1024 * 1024
}
/// `[alertmanager] slack`'s default.
pub const DEFAULT_ALERT_SLACK: Duration = Duration::from_secs(30);
fn default_alert_slack() -> Duration {
    DEFAULT_ALERT_SLACK
}

impl AlertmanagerConfig {
    fn check(&self, repos: &[&str]) -> anyhow::Result<()> {
        if self.token_env.trim().is_empty() {
            bail!("`alertmanager.token_env` is empty; name the variable that holds the token");
        }
        for m in &self.matchers {
            if !repos.contains(&m.repo.as_str()) {
                bail!(
                    "`[[alertmanager.match]]` names repo `{}`, which no `[[repo]]` declares",
                    m.repo
                );
            }
            if m.labels.is_empty() {
                bail!(
                    "`[[alertmanager.match]]` for repo `{}` has no `labels`; it would match \
                     every alert",
                    m.repo
                );
            }
        }
        Ok(())
    }

    /// The repositories an alert's labels name: the repo label, then the matchers.
    pub fn repos_of(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        let mut out: Vec<String> = labels.get(&self.repo_label).into_iter().cloned().collect();
        for m in &self.matchers {
            if m.labels.iter().all(|(k, v)| labels.get(k) == Some(v)) && !out.contains(&m.repo) {
                out.push(m.repo.clone());
            }
        }
        out
    }
}

/// The checks of the monitoring sections, against the declared repositories.
pub(super) fn check(
    prometheus: Option<&PrometheusConfig>,
    gates: &[Gate],
    alertmanager: Option<&AlertmanagerConfig>,
    repos: &[&str],
) -> anyhow::Result<()> {
    if let Some(p) = prometheus {
        let ok = reqwest::Url::parse(&p.url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            bail!(
                "`prometheus.url = \"{}\"` is not an http(s) URL; write it like \
                 `http://127.0.0.1:9090`",
                p.url
            );
        }
    }
    if !gates.is_empty() && prometheus.is_none() {
        bail!("`[[gate]]` needs a `[prometheus]` section with the `url` its queries go to");
    }
    let mut seen = std::collections::BTreeSet::new();
    for g in gates {
        g.check(repos)?;
        if !seen.insert(&g.name) {
            bail!("gate `{}` is declared twice", g.name);
        }
    }
    if let Some(a) = alertmanager {
        a.check(repos)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const REPOS: &str = "[[repo]]\nname='api'\nurl='/x'\n[[repo]]\nname='web'\nurl='/y'\n";

    fn err(text: &str) -> String {
        format!(
            "{:#}",
            Config::parse_str(&format!("{text}\n{REPOS}")).unwrap_err()
        )
    }

    #[test]
    fn gates_read_with_their_defaults() {
        let c = Config::parse_str(&format!(
            "[prometheus]\nurl = 'http://127.0.0.1:9090'\n\
             [[gate]]\nname = 'error-rate'\nrepos = ['api']\nquery = 'up'\nmax = 0.01\nfor = '60s'\n\
             [[gate]]\nname = 'traffic'\nquery = 'x'\nmin = 1\nno_data = 'pass'\n{REPOS}"
        ))
        .unwrap();
        let g = &c.gates[0];
        assert_eq!(g.every, std::time::Duration::from_secs(15));
        assert_eq!(g.duration, std::time::Duration::from_secs(60));
        assert_eq!(g.no_data, super::NoData::Fail);
        assert!(g.guards(["api", "web"].into_iter()));
        assert!(!g.guards(["web"].into_iter()));
        assert!(c.gates[1].guards(["web"].into_iter()));
        assert_eq!(c.gates[1].no_data, super::NoData::Pass);
        assert_eq!(g.bounds(), "`max = 0.01`");
        assert_eq!(
            c.prometheus.unwrap().timeout,
            std::time::Duration::from_secs(5)
        );
    }

    #[test]
    fn bad_gates_are_refused_with_the_fix() {
        let p = "[prometheus]\nurl = 'http://127.0.0.1:9090'\n";
        let cases = [
            (
                "[[gate]]\nname='g'\nquery='up'\nmax=1\n".to_string(),
                "`[[gate]]` needs a `[prometheus]` section",
            ),
            (
                format!("{p}[[gate]]\nname='g'\nquery='up'\n"),
                "gate `g` has no bound; set `max`, `min` or both",
            ),
            (
                format!("{p}[[gate]]\nname='g'\nquery='up'\nmin=2\nmax=1\n"),
                "`min = 2` is above `max = 1`",
            ),
            (
                format!("{p}[[gate]]\nname='g'\nquery='up'\nmax=nan\n"),
                "`max` must be a finite number",
            ),
            (
                format!("{p}[[gate]]\nname='g'\nquery='up'\nmax=1\nfor='10s'\nevery='30s'\n"),
                "`every = \"30s\"` is longer than `for = \"10s\"`",
            ),
            (
                format!("{p}[[gate]]\nname='g'\nquery='up'\nmax=1\nevery='0s'\n"),
                "`every` must be longer than 0s",
            ),
            (
                format!("{p}[[gate]]\nname='g'\nquery='  '\nmax=1\n"),
                "gate `g` has an empty `query`",
            ),
            (
                format!("{p}[[gate]]\nname='g'\nquery='up'\nmax=1\nrepos=['db']\n"),
                "gate `g` names repo `db`, which no `[[repo]]` declares",
            ),
            (
                format!("{p}[[gate]]\nname='g'\nquery='up'\nmax=1\n[[gate]]\nname='g'\nquery='up'\nmax=1\n"),
                "gate `g` is declared twice",
            ),
            (
                format!("{p}[[gate]]\nname='g'\nquery='up'\nmax=1\nno_data='maybe'\n"),
                "unknown variant `maybe`",
            ),
            (
                "[prometheus]\nurl = '127.0.0.1:9090'\n".to_string(),
                "is not an http(s) URL",
            ),
            (
                "[alertmanager]\ntoken_env='T'\n[[alertmanager.match]]\nrepo='db'\nlabels={job='db'}\n"
                    .to_string(),
                "names repo `db`, which no `[[repo]]` declares",
            ),
            (
                "[alertmanager]\ntoken_env='T'\n[[alertmanager.match]]\nrepo='api'\nlabels={}\n"
                    .to_string(),
                "has no `labels`; it would match every alert",
            ),
            (
                "[delivery]\nwatch='forever'\n".to_string(),
                "bad duration `forever`",
            ),
            (
                "[delivery]\nwatch_gates=true\n".to_string(),
                "`delivery.watch_gates` samples the `[[gate]]`s for `delivery.watch`; set both",
            ),
        ];
        for (text, want) in cases {
            let got = err(&text);
            assert!(got.contains(want), "{text}\n→ {got}\nwanted: {want}");
        }
    }

    #[test]
    fn alerts_name_repos_by_label_or_matcher() {
        let c = Config::parse_str(&format!(
            "[alertmanager]\ntoken_env = 'AM_TOKEN'\n\
             [[alertmanager.match]]\nrepo = 'web'\nlabels = {{ job = 'frontend', env = 'prod' }}\n{REPOS}"
        ))
        .unwrap();
        let a = c.alertmanager.unwrap();
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(a.repos_of(&labels(&[("lockstep_repo", "api")])), ["api"]);
        assert_eq!(
            a.repos_of(&labels(&[("job", "frontend"), ("env", "prod")])),
            ["web"]
        );
        assert!(a.repos_of(&labels(&[("job", "frontend")])).is_empty());
        assert_eq!(a.body_limit, 1024 * 1024);
    }
}

#[cfg(test)]
mod docs {
    /// Every TOML block of the monitoring page is a valid config.
    #[test]
    fn monitoring_doc_configs_parse() {
        let doc = include_str!("../../docs/monitoring.md");
        let blocks: Vec<&str> = doc
            .split("```toml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .collect();
        assert_eq!(blocks.len(), 3);
        for block in blocks {
            if let Err(e) = crate::config::Config::parse_str(block) {
                panic!("{e:#}\nin:\n{block}");
            }
        }
    }
}
