//! `lockstep autotest` (ask for autotests of a task's branches) and `lockstep autotests`
//! (their results).

use super::{ago, runtime, say_line, store_of, whoami};
use crate::config::Located;
use crate::delivery::{autotest, worker};
use crate::domain::{AutotestState, RepoName, Source, TaskKey};
use crate::exit::Exit;
use crate::store::AutotestRow;

/// `lockstep autotest TASK [--repo NAME]`: asks for an autotest of each of the task's
/// branches as the repositories hold them now, and starts a worker in the background if none
/// runs.
pub fn autotest(at: &Located, task: &str, repo: Option<&str>) -> anyhow::Result<Exit> {
    runtime()?.block_on(async move {
        let (config, store) = store_of(at).await?;
        let task = TaskKey::new(task);
        let only = repo.map(RepoName::new);
        if let Some(r) = &only
            && config.repo(r.as_str()).is_none()
        {
            anyhow::bail!("`{r}` is not a repository of lockstep.toml; name one of its [[repo]]");
        }
        let asked = autotest::request_task(
            &config,
            &store,
            &task,
            only.as_ref(),
            Source::Cli,
            &whoami(),
        )
        .await?;
        if asked.is_empty() {
            let where_ = only.map_or("any repository".to_string(), |r| format!("`{r}`"));
            anyhow::bail!("task `{task}` has no branch in {where_}; push one named after it first");
        }
        for (repo, branch, id) in &asked {
            say!("autotest #{id} of `{branch}` in {repo} queued");
        }
        worker::spawn_detached(&config)?;
        say!("follow them with `lockstep autotests {task}`");
        Ok(Exit::Success)
    })
}

/// `lockstep autotests [TASK] [--json] [--log ID]`: the autotests, newest first, or the log
/// of one.
pub fn autotests(
    at: &Located,
    task: Option<&str>,
    json: bool,
    log: Option<i64>,
) -> anyhow::Result<Exit> {
    runtime()?.block_on(async move {
        let (_, store) = store_of(at).await?;
        if let Some(id) = log {
            let Some(a) = store.autotest(id).await? else {
                anyhow::bail!("there is no autotest #{id}; `lockstep autotests` lists them");
            };
            if a.log.is_empty() {
                say!("autotest #{id} ({}) has no log yet", a.state);
            }
            for line in a.log.lines() {
                say!("{line}");
            }
            return Ok(Exit::Success);
        }
        let task = task.map(TaskKey::new);
        let rows = store.autotests(task.as_ref(), 50).await?;
        if json {
            say!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(Exit::Success);
        }
        if rows.is_empty() {
            match &task {
                Some(t) => say!("no autotest of `{t}` yet"),
                None => say!("no autotest yet"),
            }
        }
        for a in &rows {
            say!("{}", line(a));
            if a.state == AutotestState::Failed {
                say!("        {}", a.reason);
            }
        }
        Ok(Exit::Success)
    })
}

/// One autotest in one line.
fn line(a: &AutotestRow) -> String {
    let on = if a.rebased_on.is_empty() {
        String::new()
    } else {
        format!(" on {}", crate::git::short(&a.rebased_on))
    };
    format!(
        "#{:<4} {:<12} {:<12} {:<24} {} {:<11} {}{on}",
        a.id,
        a.task,
        a.repo,
        a.branch,
        crate::git::short(&a.sha),
        a.state.as_str(),
        ago(a.finished_at.or(a.started_at).or(Some(a.requested_at)))
    )
}
