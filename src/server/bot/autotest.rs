//! `/autotest`: the pull request's head rebased on its upstream, built and tested on its own;
//! nothing is deployed or merged. The worker runs it beside the queue.

use super::Asked;
use crate::delivery::autotest;
use crate::domain::Source;
use crate::text::markdown::code;

/// `/autotest`: asks for an autotest of the pull request's head.
pub(super) async fn autotest(asked: &Asked<'_>) -> anyhow::Result<String> {
    let config = asked.app.config();
    let name = asked.repo.to_string();
    let Some(repo) = config.repos.iter().find(|r| {
        r.github
            .as_deref()
            .is_some_and(|g| g.eq_ignore_ascii_case(&name))
    }) else {
        return Ok(format!(
            "{} is no repository of lockstep.toml (`github = \"owner/name\"` of a `[[repo]]`); \
             nothing to test.",
            code(&name)
        ));
    };
    let pull = asked.pull;
    if !pull.head_repo.is_empty() && !pull.head_repo.eq_ignore_ascii_case(&name) {
        return Ok(format!(
            "the branch is in {}, a fork: lockstep tests the branches of {} only.",
            code(&pull.head_repo),
            code(&name)
        ));
    }
    let (id, new) = autotest::request(
        &asked.app.engine.store,
        asked.task,
        &repo.name,
        &pull.head_ref,
        &pull.head_sha,
        Source::GitHub,
        asked.user,
    )
    .await?;
    let head = code(crate::git::short(&pull.head_sha));
    Ok(if new {
        format!(
            "autotest #{id} of {} at {head} queued: rebased on {}, then built and tested; \
             nothing is merged. `lockstep autotests {}` shows it.",
            code(&pull.head_ref),
            code(&repo.upstream),
            asked.task
        )
    } else {
        format!("autotest #{id} of {head} is already queued or running.")
    })
}
