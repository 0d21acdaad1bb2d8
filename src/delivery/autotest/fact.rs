//! The `autotest` fact of the deliver rules: for each branch of the task, the state of the
//! autotest of its current head, so that a team can refuse a delivery whose branches are not
//! green. The delivery still builds and tests what it lands.

use std::sync::Arc;

use cel::Value;

use super::super::BranchFacts;
use crate::domain::{RepoName, TaskKey};
use crate::policy;
use crate::store::Store;

/// `[{repo, branch, sha, state}]`, one per branch of the task: `state` is that of the newest
/// autotest of the branch's current head (`passed`, `failed`, `running`, `queued`,
/// `superseded`, `interrupted`), or `none` when it has none.
pub async fn fact(
    store: &Store,
    task: &TaskKey,
    branches: &[BranchFacts],
) -> anyhow::Result<Value> {
    let runs = store.autotests(Some(task), 500).await?;
    let list = branches
        .iter()
        .map(|b| {
            let repo = RepoName::new(&b.repo);
            let state = runs
                .iter()
                .find(|a| a.repo == repo && a.branch == b.branch && a.sha == b.head)
                .map_or("none", |a| a.state.as_str());
            policy::map([
                ("repo", b.repo.as_str().into()),
                ("branch", b.branch.as_str().into()),
                ("sha", b.head.as_str().into()),
                ("state", state.into()),
            ])
        })
        .collect();
    Ok(Value::List(Arc::new(list)))
}
