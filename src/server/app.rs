//! What every part of the server shares: the [`App`] each handler gets, the [`Job`]s the
//! bot hands the worker, and what became of a webhook ([`Handled`]).

use std::sync::Arc;

use secrecy::SecretString;
use tokio::sync::{Notify, mpsc};

use super::metrics;
use crate::config::Config;
use crate::delivery::Engine;
use crate::domain::DeliveryId;
use crate::github::{GitHub, GitHubRepo};

/// What became of a webhook, for the answer and the metrics.
#[derive(Debug)]
pub enum Handled {
    /// Something was done (a reply posted, a delivery queued, …).
    Acted(String),
    /// Nothing to do for lockstep.
    Ignored(String),
}

/// Work the worker does besides the queue, whenever no delivery is deploying.
#[derive(Debug)]
pub enum Job {
    /// `/rollback`: run the rollback steps of a finished delivery, then report on the PR.
    Rollback {
        id: DeliveryId,
        requester: String,
        repo: GitHubRepo,
        number: u64,
    },
    /// A firing alert names a watched delivery: roll it back and revert it, then report on
    /// the pull request it came from.
    AlertRollback {
        id: DeliveryId,
        /// The alert, quoted and escaped.
        quote: String,
        /// When it started firing (ms since the epoch).
        fired_ms: Option<i64>,
    },
    /// A gate failed during the watch of a landed delivery (`[delivery] watch_gates`): roll
    /// it back and revert it, then report on its pull request.
    GateRollback {
        id: DeliveryId,
        /// The gate's failure.
        why: String,
    },
}

/// What every handler shares.
pub struct App {
    pub engine: Engine,
    /// Shared with the webhook extractor, which hands a verified event its client.
    pub github: Option<Arc<GitHub>>,
    pub metrics: metrics::Metrics,
    pub tracker_secret: Option<SecretString>,
    /// The bearer token of `POST /webhooks/alertmanager` (`[alertmanager] token_env`).
    pub alertmanager_token: Option<SecretString>,
    /// The token every route but the webhooks and `/healthz` asks for (`[server]
    /// read_token_env`); none: they are public.
    pub read_token: Option<SecretString>,
    /// Wakes the worker when a delivery was queued.
    pub wake: Notify,
    /// Serialises tracker polls (the timer and `/webhooks/tracker`).
    pub poll_lock: tokio::sync::Mutex<()>,
    pub jobs: mpsc::UnboundedSender<Job>,
    pub public_url: String,
}

impl App {
    pub fn config(&self) -> &Config {
        &self.engine.config
    }

    /// The ecosystem's name in the metrics: the meta-project's folder.
    pub fn ecosystem(&self) -> String {
        self.config()
            .base_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "lockstep".into())
    }

    /// The page of a delivery, for links in comments and statuses.
    pub fn delivery_url(&self, id: DeliveryId) -> String {
        format!("{}/deliveries/{id}", self.public_url)
    }
}
