//! `lockstep show TASK`: everything lockstep knows of one task, its deliveries, its autotests
//! and its showroom, read from the store.

use serde::Serialize;

use super::{ago, say_line};
use crate::domain::{AutotestState, TaskKey};
use crate::exit::Exit;
use crate::store::{AutotestRow, DeliveryRow, ShowroomRow, Store};

/// At most this many of a task's deliveries, and of its earlier autotests, are shown.
const SHOWN: i64 = 50;

/// `lockstep show TASK --json`: the task's deliveries (newest first), its autotests (the
/// latest of each branch first, then the earlier ones, newest first) and its showroom.
#[derive(Debug, Serialize)]
struct TaskView {
    task: TaskKey,
    deliveries: Vec<DeliveryRow>,
    autotests: Vec<AutotestView>,
    showroom: Option<ShowroomRow>,
}

/// One autotest of the task, and whether it is the latest of its repository and branch.
#[derive(Debug, Serialize)]
struct AutotestView {
    #[serde(flatten)]
    row: AutotestRow,
    latest: bool,
}

impl TaskView {
    async fn read(store: &Store, task: TaskKey) -> anyhow::Result<TaskView> {
        let deliveries = store.deliveries_of_task(&task, SHOWN).await?;
        let latest = store.latest_autotests_of(&task).await?;
        let earlier: Vec<AutotestRow> = store
            .autotests(Some(&task), SHOWN)
            .await?
            .into_iter()
            .filter(|a| !latest.iter().any(|l| l.id == a.id))
            .collect();
        let autotests = latest
            .into_iter()
            .map(|row| AutotestView { row, latest: true })
            .chain(
                earlier
                    .into_iter()
                    .map(|row| AutotestView { row, latest: false }),
            )
            .collect();
        let showroom = store.showroom(task.as_str()).await?;
        Ok(TaskView {
            task,
            deliveries,
            autotests,
            showroom,
        })
    }

    fn is_unknown(&self) -> bool {
        self.deliveries.is_empty() && self.autotests.is_empty() && self.showroom.is_none()
    }
}

/// `lockstep show TASK [--json]`. A task none of the three knows is an error that says how
/// to give it one.
pub async fn show(store: &Store, task: TaskKey, json: bool) -> anyhow::Result<Exit> {
    let view = TaskView::read(store, task).await?;
    if view.is_unknown() {
        let t = crate::text::escape(view.task.as_str());
        let w = crate::text::shell_word(view.task.as_str());
        anyhow::bail!(
            "lockstep knows no delivery, autotest or showroom of task `{t}`: `lockstep deliver \
             {w}`, `lockstep autotest {w}` or `lockstep showroom {w}` makes one (`lockstep \
             queue`, `lockstep autotests` and `lockstep showrooms` list those there are)"
        );
    }
    if json {
        say!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(Exit::Success);
    }
    let task = &view.task;
    let word = crate::text::shell_word(task.as_str());
    say!("task {task}");
    if view.deliveries.is_empty() {
        say!("deliveries: none (`lockstep deliver {word}` asks for one)");
    } else {
        say!("deliveries (newest first):");
    }
    for d in &view.deliveries {
        say!("{}", delivery_line(d));
    }
    if view.autotests.is_empty() {
        say!("autotests: none (`lockstep autotest {word}` asks for them)");
    } else {
        say!("autotests (the latest of each branch first):");
    }
    let mut earlier = false;
    for a in &view.autotests {
        if !a.latest && !earlier {
            earlier = true;
            say!("  earlier:");
        }
        say!("{}", autotest_line(&a.row));
        if let Some(why) = autotest_why(&a.row) {
            say!("        {why}");
        }
    }
    match &view.showroom {
        None => say!("showroom: none (`lockstep showroom {word}` brings one up)"),
        Some(r) => {
            say!("showroom: {} at {}", r.state, r.url);
            let shas: Vec<String> = r
                .shas
                .iter()
                .map(|(repo, sha)| format!("{repo} {}", crate::git::short(sha)))
                .collect();
            let shas = if shas.is_empty() {
                "no commit deployed".to_string()
            } else {
                shas.join(", ")
            };
            say!(
                "  {shas}  age {}  by {}  (since {})",
                super::showroom::age(crate::store::now_ms() - r.created_at),
                r.requester,
                ago(Some(r.created_at))
            );
            if !r.reason.is_empty() {
                say!("  {}", r.reason);
            }
        }
    }
    Ok(Exit::Success)
}

/// A delivery of the task in one line: id, state (and phase while it runs), when, who asked,
/// and why it failed.
fn delivery_line(d: &DeliveryRow) -> String {
    let state = match d.phase {
        Some(p) if !d.state.is_final() => format!("{} ({})", d.state.as_str(), p.as_str()),
        _ => d.state.as_str().to_string(),
    };
    let who = if d.requester.is_empty() {
        "?"
    } else {
        &d.requester
    };
    let mut line = format!(
        "  #{:<4} {:<18} {}  by {who} via {}",
        d.id,
        state,
        ago(d.finished_at.or(d.started_at).or(Some(d.created_at))),
        d.source
    );
    if !d.error.is_empty() {
        line.push_str(&format!(": {}", crate::text::clip(&d.error, 300)));
    }
    line
}

/// An autotest in one line: id, repository, branch, head, state, what it was rebased on,
/// how long it waited and ran, and when.
fn autotest_line(a: &AutotestRow) -> String {
    let on = if a.rebased_on.is_empty() {
        String::new()
    } else {
        format!("  on {}", crate::git::short(&a.rebased_on))
    };
    format!(
        "  #{:<4} {:<10} {:<24} {} {:<11}{on}  {}  {}",
        a.id,
        a.repo,
        a.branch,
        crate::git::short(&a.sha),
        a.state.as_str(),
        timings(a),
        ago(a.finished_at.or(a.started_at).or(Some(a.requested_at)))
    )
}

/// How long an autotest waited for a slot and ran.
fn timings(a: &AutotestRow) -> String {
    let secs = |ms: i64| format!("{:.1}s", ms.max(0) as f64 / 1000.0);
    match (a.started_at, a.finished_at) {
        (Some(s), Some(f)) => format!("waited {}, ran {}", secs(s - a.requested_at), secs(f - s)),
        (Some(s), None) => format!("waited {}, running", secs(s - a.requested_at)),
        (None, Some(_)) => "never ran".to_string(),
        (None, None) => "waiting".to_string(),
    }
}

/// Where and why an autotest that did not pass stopped.
fn autotest_why(a: &AutotestRow) -> Option<String> {
    if matches!(a.state, AutotestState::Passed) || !a.state.is_final() {
        return None;
    }
    let step = if a.step.is_empty() {
        String::new()
    } else {
        format!("at `{}`: ", a.step)
    };
    (!a.reason.is_empty() || !step.is_empty()).then(|| format!("{step}{}", a.reason))
}

/// Whether `text` names a delivery (a number) rather than a task; `Err` for a number too
/// large to be one.
pub fn delivery_id(text: &str) -> anyhow::Result<Option<i64>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        anyhow::anyhow!(
            "`{text}` is too large to be a delivery's id; `lockstep queue` lists them, and \
             `--task` reads it as a task key"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_is_a_delivery_anything_else_a_task() {
        assert_eq!(delivery_id("12").unwrap(), Some(12));
        assert_eq!(delivery_id("0012").unwrap(), Some(12));
        assert_eq!(delivery_id("TASK-7").unwrap(), None);
        assert_eq!(delivery_id("#42").unwrap(), None);
        assert_eq!(delivery_id("").unwrap(), None);
        assert_eq!(delivery_id("1 2").unwrap(), None);
        assert!(delivery_id("99999999999999999999").is_err());
    }
}
