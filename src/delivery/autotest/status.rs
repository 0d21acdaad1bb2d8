//! The commit status `lockstep/autotest` of a tested head on GitHub (pending, success,
//! failure), linking the queue page's autotests, when its repository is on GitHub.

use super::super::engine::Engine;
use crate::domain::{AutotestState, GitHubRepo};
use crate::github::{GitHub, StatusState};
use crate::store::AutotestRow;

/// The context of the status.
const CONTEXT: &str = "lockstep/autotest";

/// Sets the status of autotest `a`'s head for `state`; one that cannot be set is logged,
/// never the autotest's failure.
pub(super) async fn report(engine: &Engine, a: &AutotestRow, state: AutotestState, why: &str) {
    let config = &engine.config;
    let Some(gh) = &config.github else {
        return;
    };
    let Some(name) = config
        .repo(a.repo.as_str())
        .and_then(|r| r.github.as_deref())
        .and_then(GitHubRepo::parse)
    else {
        return;
    };
    let (status, description) = match state {
        AutotestState::Running => (StatusState::Pending, format!("autotest #{} running", a.id)),
        AutotestState::Passed => (
            StatusState::Success,
            format!("autotest #{}: build and test passed", a.id),
        ),
        AutotestState::Failed => (
            StatusState::Failure,
            format!("autotest #{}: {}", a.id, crate::text::escape(why)),
        ),
        AutotestState::Superseded => (
            StatusState::Error,
            format!("autotest #{}: superseded by a newer push", a.id),
        ),
        // Run again: the next run says.
        AutotestState::Queued | AutotestState::Interrupted => return,
    };
    let url = format!("{}/#autotests", config.server.public_url());
    let set = async {
        GitHub::api_only(config, gh)?
            .status_of(CONTEXT, &name, &a.sha, status, &description, &url)
            .await
    };
    if let Err(e) = set.await {
        tracing::warn!("autotest #{}: {e:#}", a.id);
    }
}
