//! `[server]` and `[github]`: where `lockstep serve` listens and links back to, and how it
//! talks to GitHub.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use super::duration;

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
    /// The variable holding the token that the queue page, step logs, `/api/*` and
    /// `/metrics` ask for (`Authorization: Bearer <token>`, or HTTP Basic auth with the token
    /// as password). Default: none, and they are public; the webhooks and `/healthz` never
    /// ask for it.
    pub read_token_env: Option<String>,
    /// The largest webhook body accepted, in bytes. Default 5 MiB (GitHub sends at most 25 MiB,
    /// but the events lockstep reads are far smaller).
    #[serde(default = "default_body_limit")]
    pub body_limit: usize,
    /// How often the queue page reloads itself. Default `5s`.
    #[serde(default = "default_refresh", with = "duration")]
    pub refresh: Duration,
    /// On SIGTERM or ctrl-c (of `lockstep serve` or `lockstep work`), how long what runs (a
    /// delivery; with a pipeline, the head's release and every candidate's preparation) may
    /// take to finish before it is stopped where it is (and recovered at the next start).
    /// Default `20s`.
    #[serde(default = "default_shutdown_grace", with = "duration")]
    pub shutdown_grace: Duration,
    /// How long a client has to send a request's head (its line and headers), from the
    /// connection's start or its first byte after an answer; past that the connection is
    /// closed. Default `10s`.
    #[serde(default = "default_header_timeout", with = "duration")]
    pub header_timeout: Duration,
    /// How long a connection may sit without a request after an answer (keep-alive), or
    /// without taking any of an answer, before it is closed. Default `60s`.
    #[serde(default = "default_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// The most connections held at once; past it a new connection is answered `503` and
    /// closed. Keep it below the process's file limit (`LimitNOFILE`, `ulimit -n`), with room
    /// for the store, logs and steps. Default 512.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: default_listen(),
            public_url: None,
            tracker_secret_env: None,
            read_token_env: None,
            body_limit: default_body_limit(),
            refresh: default_refresh(),
            shutdown_grace: default_shutdown_grace(),
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

impl Server {
    /// Limits that would leave the server unusable are an error.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self.max_connections == 0 {
            bail!("`server.max_connections` must be at least 1 (512 by default)");
        }
        if self.header_timeout.is_zero() || self.idle_timeout.is_zero() {
            bail!(
                "`server.header_timeout` and `server.idle_timeout` must be longer than 0s \
                 (10s and 60s by default)"
            );
        }
        Ok(())
    }

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
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_connections() -> usize {
    512
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
    #[serde(default = "default_github_timeout", with = "duration")]
    pub timeout: Duration,
}

impl GitHubConfig {
    /// One way to authenticate: a token, or an App with its key.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        match (&self.app_id, &self.private_key_path, &self.token_env) {
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
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use crate::config::Config;

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
        assert_eq!(c.server.header_timeout, std::time::Duration::from_secs(10));
        assert_eq!(c.server.idle_timeout, std::time::Duration::from_secs(60));
        assert_eq!(c.server.max_connections, 512);
        assert_eq!(c.server.read_token_env, None);
        let c = Config::parse_str(
            "[server]\nheader_timeout = '2s'\nidle_timeout = '5s'\nmax_connections = 20\n",
        )
        .unwrap();
        assert_eq!(c.server.header_timeout, std::time::Duration::from_secs(2));
        assert_eq!(c.server.max_connections, 20);
        let c = Config::parse_str("[server]\nread_token_env = 'LOCKSTEP_READ_TOKEN'\n").unwrap();
        assert_eq!(
            c.server.read_token_env.as_deref(),
            Some("LOCKSTEP_READ_TOKEN")
        );
        let err = Config::parse_str("[server]\nmax_connections = 0\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("`server.max_connections`"),
            "{err:#}"
        );
        let err = Config::parse_str("[server]\nheader_timeout = '0s'\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("`server.header_timeout`"),
            "{err:#}"
        );
        let err = Config::parse_str("[server]\nlisten_on = 'x'\n").unwrap_err();
        assert!(format!("{err:#}").contains("unknown field `listen_on`"));
        let err = Config::parse_str("[[repo]]\nname='a'\nurl='x'\ngithub='nope'\n").unwrap_err();
        assert!(format!("{err:#}").contains("owner/name"));
    }
}
