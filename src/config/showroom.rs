//! `[environments.showroom]`: a showroom per task, its URL template, how many at once, how
//! long each lives, the tracker statuses that bring one up, and whether it follows its task.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Deserializer};

use super::Config;

/// The environment showrooms run in: `LOCKSTEP_ENV` of their steps.
pub const SHOWROOM: &str = "showroom";

/// What `lockstep showroom` does when `max` showrooms are up already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnFull {
    /// The oldest showroom is torn down to make room. The default.
    #[default]
    EvictOldest,
    /// The request is refused.
    Refuse,
}

/// The showroom settings, read from `[environments.showroom]` with their defaults.
#[derive(Debug, Clone)]
pub struct Showroom<'a> {
    /// The URL template; `{task}` is the task's safe label. Empty when none is set.
    pub url: &'a str,
    pub max: usize,
    pub on_full: OnFull,
    pub ttl: Option<Duration>,
    pub statuses: &'a [String],
    pub follow: bool,
    /// The environment's `vars`.
    pub vars: &'a BTreeMap<String, String>,
}

const DEFAULT_MAX: usize = 5;

impl Config {
    /// The showroom settings; `None` when `[environments.showroom]` is not in the config.
    pub fn showroom(&self) -> Option<Showroom<'_>> {
        let env = self.environments.get(SHOWROOM)?;
        Some(Showroom {
            url: env.url.as_deref().unwrap_or(""),
            max: env.max.unwrap_or(DEFAULT_MAX),
            on_full: env.on_full.unwrap_or_default(),
            ttl: env.ttl,
            statuses: &env.statuses,
            follow: env.follow,
            vars: &env.vars,
        })
    }
}

/// Reads `ttl = "3d"`.
pub fn ttl<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    super::duration::deserialize(d).map(Some)
}

/// The showroom keys are only for `[environments.showroom]`, and `max` is at least 1.
pub(super) fn check(config: &Config) -> anyhow::Result<()> {
    for (name, env) in &config.environments {
        let set = env.url.is_some()
            || env.max.is_some()
            || env.on_full.is_some()
            || env.ttl.is_some()
            || !env.statuses.is_empty()
            || env.follow;
        if name != SHOWROOM && set {
            bail!(
                "`[environments.{name}]`: `url`, `max`, `on_full`, `ttl`, `statuses` and \
                 `follow` are for `[environments.showroom]` only; move them there"
            );
        }
    }
    for repo in &config.repos {
        if let Some(r) = repo.steps.teardown.as_ref().and_then(|s| s.runner()) {
            bail!(
                "repo `{}`: `teardown` runs on lockstep's own host, not on the runner `{}`; \
                 make it a command",
                repo.name,
                r.runner
            );
        }
    }
    if let Some(s) = config.showroom() {
        if s.max == 0 {
            bail!("`environments.showroom.max` must be at least 1");
        }
        if !s.url.is_empty() && !s.url.contains("{task}") {
            bail!(
                "`environments.showroom.url` must name `{{task}}`, e.g. \
                 `https://{{task}}.show.example.com`: each task has its own showroom"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::OnFull;
    use crate::config::Config;

    #[test]
    fn the_showroom_is_read_with_its_defaults() {
        let c = Config::parse_str(
            "[environments.showroom]\nurl = 'https://{task}.show.example.com'\nttl = '3d'\n\
             statuses = ['Awaiting Showroom']\nfollow = true\non_full = 'refuse'\n",
        )
        .unwrap();
        let s = c.showroom().unwrap();
        assert_eq!(s.url, "https://{task}.show.example.com");
        assert_eq!(s.max, 5);
        assert_eq!(s.on_full, OnFull::Refuse);
        assert_eq!(s.ttl, Some(std::time::Duration::from_secs(3 * 86400)));
        assert!(s.follow);
        assert!(Config::parse_str("").unwrap().showroom().is_none());
    }

    #[test]
    fn showroom_keys_belong_to_the_showroom() {
        let e = Config::parse_str("[environments.production]\nmax = 3\n").unwrap_err();
        assert!(
            format!("{e}").contains("[environments.showroom]` only"),
            "{e}"
        );
        let e = Config::parse_str("[environments.showroom]\nmax = 0\n").unwrap_err();
        assert!(format!("{e}").contains("at least 1"), "{e}");
        let e = Config::parse_str("[environments.showroom]\nurl = 'https://x'\n").unwrap_err();
        assert!(format!("{e}").contains("{task}"), "{e}");
    }
}
