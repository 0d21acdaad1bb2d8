//! `[store]`: where the queue and the journal live, and how replicas share them.

use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use super::duration;

/// `[store]`: SQLite in `state_dir` (the default), or PostgreSQL shared by replicas.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The environment variable holding the PostgreSQL URL
    /// (`postgres://user:password@host:port/database`), never the URL itself: it holds a
    /// password. Default: none, and the store is SQLite in `state_dir`.
    pub url_env: Option<String>,
    /// How long the replica working the queue holds it without renewing (it renews every
    /// third of it); after a crash, another replica takes over within it. Default `10s`.
    #[serde(default = "default_lease", with = "duration")]
    pub lease: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url_env: None,
            lease: default_lease(),
        }
    }
}

fn default_lease() -> Duration {
    Duration::from_secs(10)
}

impl StoreConfig {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if let Some(var) = &self.url_env
            && (var.is_empty() || var.contains("://") || var.contains(['=', ' ', '/']))
        {
            bail!(
                "`[store] url_env` names the environment variable holding the URL, not the URL: \
                 write `url_env = \"LOCKSTEP_DATABASE_URL\"` and put the URL in that variable"
            );
        }
        if self.lease < Duration::from_secs(1) {
            bail!(
                "`[store] lease` is {}; make it at least 1s (the replicas renew it every third)",
                duration::humanize(self.lease)
            );
        }
        Ok(())
    }
}
