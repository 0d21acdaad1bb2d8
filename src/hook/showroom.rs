//! What `post-receive` does for showrooms: `git push -o showroom` of a task branch brings the
//! task's showroom up, and with `[environments.showroom] follow = true` a push to the branch
//! of a task whose showroom is up deploys it again. Either starts `lockstep showroom` in the
//! background: the push does not wait for the deploy.

use crate::config::Config;
use crate::delivery::showroom;
use crate::domain::TaskKey;
use crate::push::{self, RefUpdate};
use crate::store::{ShowroomState, Store};
use crate::text::escape;

/// The push option that asks for a showroom.
const OPTION: &str = "showroom";

/// The config, found as the hook finds it.
type Load<'a, 'c> = &'a dyn Fn() -> anyhow::Result<&'c Config>;

/// Acts on an accepted push for showrooms (`load` reads the config, when a pushed branch may
/// name a task); says what it did or why it could not on stderr (the pusher's terminal), and
/// never fails the hook.
pub(super) fn after_push<'c>(
    updates: &[RefUpdate],
    options: &[String],
    load: impl Fn() -> anyhow::Result<&'c Config>,
) {
    let asked = options.iter().any(|o| o == OPTION);
    if let Err(e) = act(&load, updates, asked) {
        eprintln!("lockstep: showroom: {}", escape(&format!("{e:#}")));
    }
}

fn act(load: Load<'_, '_>, updates: &[RefUpdate], asked: bool) -> anyhow::Result<()> {
    let branches: Vec<&str> = updates
        .iter()
        .filter(|u| !u.deleted())
        .filter_map(|u| u.name.strip_prefix("refs/heads/"))
        .collect();
    if branches.is_empty() {
        if asked {
            eprintln!("lockstep: `-o showroom` ignored: no pushed branch names a task");
        }
        return Ok(());
    }
    let config = load()?;
    let Some(settings) = config.showroom() else {
        if asked {
            eprintln!(
                "lockstep: `-o showroom` ignored: lockstep.toml has no `[environments.showroom]`"
            );
        }
        return Ok(());
    };
    if !asked && !settings.follow {
        return Ok(());
    }
    // A candidate branch the bot pushed for a CI (a showroom's own, too) names no task.
    let mut tasks: Vec<&str> = branches
        .iter()
        .filter(|b| !b.starts_with(config.candidate_prefix()))
        .filter_map(|b| config.tasks.task_of(b))
        .collect();
    tasks.sort_unstable();
    tasks.dedup();
    if tasks.is_empty() {
        if asked {
            eprintln!("lockstep: `-o showroom` ignored: no pushed branch names a task");
        }
        return Ok(());
    }
    let followed = if asked {
        tasks.clone()
    } else {
        up_of(config, &tasks)?
    };
    let by = push::pusher_from_env(config);
    for task in followed {
        let key = TaskKey::new(task);
        showroom::spawn_detached(config, &key, &by)?;
        eprintln!(
            "lockstep: the showroom of `{}` is being deployed; `lockstep showrooms` shows it",
            escape(task)
        );
    }
    Ok(())
}

/// Of `tasks`, those whose showroom is up (or deploying): the ones a push redeploys.
fn up_of<'a>(config: &Config, tasks: &[&'a str]) -> anyhow::Result<Vec<&'a str>> {
    let rt = crate::runtime::current_thread()?;
    rt.block_on(async {
        let store = Store::for_config(config).await?;
        let mut out = Vec::new();
        for task in tasks {
            if let Some(row) = store.showroom(task).await?
                && matches!(row.state, ShowroomState::Up | ShowroomState::Deploying)
            {
                out.push(*task);
            }
        }
        store.close().await;
        Ok(out)
    })
}
