//! `lockstep showroom` and `lockstep showrooms`: a task's showroom brought up or taken down by
//! hand, and the list of them.

use clap::Args;

use super::{ago, load, printer, runtime, say_line, whoami};
use crate::config::Located;
use crate::delivery::showroom::{self, Outcome};
use crate::delivery::worker;
use crate::domain::TaskKey;
use crate::exit::Exit;

#[derive(Debug, Args)]
pub struct ShowroomArgs {
    /// The task, e.g. `TASK-7`
    pub task: String,
    /// Tear the showroom down (its `teardown` steps) instead of bringing it up
    #[arg(long)]
    pub down: bool,
    /// Who asked, for `lockstep showrooms` (the hooks name the pusher) [default: $USER]
    #[arg(long, value_name = "NAME", hide = true)]
    pub by: Option<String>,
}

/// `lockstep showroom TASK [--down]`.
pub fn showroom(at: &Located, args: &ShowroomArgs) -> anyhow::Result<Exit> {
    let config = load(at)?;
    runtime()?.block_on(async move {
        let engine = worker::engine(config, printer()).await?;
        let task = TaskKey::new(args.task.trim());
        showroom::expire(&engine).await?;
        let outcome = if args.down {
            let who = args.by.clone().unwrap_or_else(whoami);
            showroom::down(&engine, &task, &format!("taken down by {who}")).await?
        } else {
            let who = args.by.clone().unwrap_or_else(whoami);
            showroom::up(&engine, &task, &who).await?
        };
        Ok(match outcome {
            Outcome::Up { url } => {
                say!("the showroom of {task} is up: {url}");
                Exit::Success
            }
            Outcome::Down => {
                say!("the showroom of {task} is down");
                Exit::Success
            }
            Outcome::Failed(why) => {
                eprintln!(
                    "lockstep: the showroom of {} failed: {}",
                    crate::text::escape(task.as_str()),
                    crate::text::escape(&why)
                );
                Exit::Failed
            }
            Outcome::Refused(why) => {
                eprintln!(
                    "lockstep: no showroom for {}: {}",
                    crate::text::escape(task.as_str()),
                    crate::text::escape(&why)
                );
                Exit::Failed
            }
        })
    })
}

/// `lockstep showrooms [--json]`.
pub fn showrooms(at: &Located, json: bool) -> anyhow::Result<Exit> {
    runtime()?.block_on(async move {
        let (_, store) = super::store_of(at).await?;
        let rows = store.showrooms().await?;
        if json {
            say!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(Exit::Success);
        }
        if rows.is_empty() {
            say!("no showroom is up");
        }
        let now = crate::store::now_ms();
        for r in &rows {
            let shas: Vec<String> = r
                .shas
                .iter()
                .map(|(repo, sha)| format!("{repo} {}", crate::git::short(sha)))
                .collect();
            say!(
                "{:<14} {:<12} {}  {}  age {}  by {}  (since {})",
                r.task,
                r.state.as_str(),
                r.url,
                shas.join(", "),
                age(now - r.created_at),
                r.requester,
                ago(Some(r.created_at))
            );
            if !r.reason.is_empty() {
                say!("{:<14} {}", "", r.reason);
            }
        }
        Ok(Exit::Success)
    })
}

/// An age in its largest unit: `42s`, `5m`, `3h`, `2d`.
pub(super) fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_are_said_in_their_largest_unit() {
        assert_eq!(super::age(42_000), "42s");
        assert_eq!(super::age(5 * 60_000), "5m");
        assert_eq!(super::age(3 * 3_600_000), "3h");
        assert_eq!(super::age(2 * 86_400_000), "2d");
        assert_eq!(super::age(-5), "0s");
    }
}
