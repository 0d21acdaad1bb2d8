//! Where the GitHub API is, how long to wait for it, and its errors in one line: what the
//! token client (`client.rs`) and the App's (`app.rs`) are both built from.

use std::time::Duration;

use anyhow::Context as _;
use octocrab::Octocrab;

type Builder = octocrab::OctocrabBuilder<
    octocrab::NoSvc,
    octocrab::DefaultOctocrabBuilderConfig,
    octocrab::NoAuth,
    octocrab::NotLayerReady,
>;

/// Where the API is and how long to wait for it: what every client is built from.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub api_url: String,
    pub timeout: Duration,
}

impl Endpoint {
    /// A builder for a client of the API, its authentication left to the caller.
    pub fn builder(&self) -> anyhow::Result<Builder> {
        crate::tls::install();
        Ok(Octocrab::builder()
            .base_uri(self.api_url.as_str())
            .with_context(|| format!("bad `github.api_url` `{}`", self.api_url))?
            .set_connect_timeout(Some(self.timeout))
            .set_read_timeout(Some(self.timeout))
            .set_write_timeout(Some(self.timeout)))
    }

    #[cfg(test)]
    pub fn for_tests() -> Endpoint {
        Endpoint {
            api_url: "http://127.0.0.1:9".into(),
            timeout: Duration::from_secs(1),
        }
    }
}

/// A GitHub error in one line: the status and GitHub's message, never a backtrace.
pub fn describe(e: &octocrab::Error) -> String {
    match e {
        octocrab::Error::GitHub { source, .. } => {
            format!("GitHub answered {}: {}", source.status_code, source.message)
        }
        other => {
            let text = other.to_string();
            text.lines()
                .next()
                .unwrap_or("GitHub call failed")
                .to_string()
        }
    }
}
