//! The autotests a push asks for: every task branch it updates, with `git push -o autotest`
//! or `[autotest] on_push`. Called by the post-receive hook, after the push is accepted; the
//! worker (started in the background if none runs) does the testing.

use crate::config::Config;
use crate::domain::{RepoName, Source, TaskKey};
use crate::push::RefUpdate;
use crate::store::Store;

/// Records an autotest for each task branch of `repo` the push updated; returns what to tell
/// the pusher, one line each.
pub fn after_push(
    config: &Config,
    repo: &str,
    updates: &[RefUpdate],
    requester: &str,
) -> anyhow::Result<Vec<String>> {
    let Some(repo) = config.repo(repo).map(|r| r.name.clone()) else {
        return Ok(vec![format!(
            "no autotest: `{repo}` is not a repository of lockstep.toml"
        )]);
    };
    let heads: Vec<(TaskKey, &str, &str)> = updates
        .iter()
        .filter(|u| !u.deleted())
        .filter_map(|u| {
            let branch = u.name.strip_prefix("refs/heads/")?;
            // A candidate branch the bot pushed for a CI (an autotest's own, too) is no task's.
            if branch.starts_with(config.candidate_prefix()) {
                return None;
            }
            let task = config.tasks.task_of(branch)?;
            Some((TaskKey::new(task), branch, u.new.as_str()))
        })
        .collect();
    if heads.is_empty() {
        return Ok(Vec::new());
    }
    let rt = crate::runtime::current_thread()?;
    let (lines, fresh) = rt.block_on(record(config, &repo, &heads, requester))?;
    if fresh {
        super::super::worker::spawn_detached(config)?;
    }
    Ok(lines)
}

/// Records the requests; returns the lines to say and whether any is new.
async fn record(
    config: &Config,
    repo: &RepoName,
    heads: &[(TaskKey, &str, &str)],
    requester: &str,
) -> anyhow::Result<(Vec<String>, bool)> {
    let store = Store::for_config(config).await?;
    let mut lines = Vec::new();
    let mut fresh = false;
    for (task, branch, sha) in heads {
        let (id, new) =
            super::request(&store, task, repo, branch, sha, Source::Push, requester).await?;
        fresh |= new;
        lines.push(format!(
            "autotest #{id} of `{branch}` ({}) queued; follow it with `lockstep autotests {task}`",
            crate::git::short(sha)
        ));
    }
    store.close().await;
    Ok((lines, fresh))
}
