//! The pipeline's scenario, shared by its tests and its bench: tasks across `api` and `web`,
//! queued while no worker runs, with steps that take time and record the commit they ran on.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::*;

pub const REPOS: [&str; 2] = ["api", "web"];

/// The eight tasks of the scenario: which repositories each changes; TASK-5's change makes
/// `web`'s test fail (a `FAIL-TEST` file), and so does every change built on it.
pub const EIGHT: [(&str, &[&str]); 8] = [
    ("TASK-1", &["api"]),
    ("TASK-2", &["web"]),
    ("TASK-3", &["api", "web"]),
    ("TASK-4", &["api"]),
    ("TASK-5", &["web"]),
    ("TASK-6", &["api"]),
    ("TASK-7", &["web"]),
    ("TASK-8", &["api", "web"]),
];
pub const FAILING: &str = "TASK-5";

/// Runs the real step after sleeping its share, and records the commit it ran on and how it
/// ended in `$SANDBOX/steps.log`: `<delivery> <repo> <step> <sha> <exit code>`.
const RECORD: &str = r#"#!/bin/sh
step="$1"; shift
sleep "$(cat "$SANDBOX/durations/$step" 2>/dev/null || echo 0)"
"$@"; rc=$?
echo "$LOCKSTEP_DELIVERY $LOCKSTEP_REPO $step $LOCKSTEP_SHA $rc" >> "$SANDBOX/steps.log"
exit $rc
"#;

/// How long each step takes.
#[derive(Debug, Clone, Copy)]
pub struct Durations {
    pub build: Duration,
    pub test: Duration,
    pub deploy: Duration,
    pub verify: Duration,
}

/// A sandbox of `api` and `web` with `[delivery] window` set and recording steps.
pub fn sandbox(window: usize, durations: Durations) -> Env {
    let env = Env::new(&REPOS);
    env.set_delivery("window", &window.to_string());
    let record = env.sb.meta.join("steps").join("record.sh");
    std::fs::write(&record, RECORD).unwrap();
    std::fs::set_permissions(&record, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dir = env.sb.root.join("durations");
    std::fs::create_dir_all(&dir).unwrap();
    for (step, d) in [
        ("build", durations.build),
        ("test", durations.test),
        ("deploy", durations.deploy),
        ("verify", durations.verify),
    ] {
        std::fs::write(dir.join(step), format!("{:.3}\n", d.as_secs_f64())).unwrap();
    }
    let gate = env.sb.meta.join("steps").join("gate.sh");
    let steps = env.sb.meta.join("steps");
    env.set_steps(|s| {
        format!(
            "[{}, \"{s}\", {}, \"{s}\", {}]",
            toml_str(&gate),
            toml_str(&record),
            toml_str(&steps.join(format!("{s}.sh")))
        )
    });
    env
}

/// Pushes every task's branches and makes it For Delivery, then queues the tasks in order
/// while holding the worker lock (so that no worker starts before all are queued). Returns
/// the delivery ids, in queue order.
pub fn queue_all(env: &Env, tasks: &[(&str, &[&str])], failing: Option<&str>) -> Vec<i64> {
    for (task, repos) in tasks {
        env.set_status(&[(task, "In Progress")]);
        for repo in *repos {
            let mut files = vec![(format!("{task}.txt"), format!("{task} in {repo}\n"))];
            if failing == Some(*task) && *repo == "web" {
                files.push(("FAIL-TEST".into(), format!("{task} breaks web\n")));
            }
            let files: Vec<(&str, &str)> = files
                .iter()
                .map(|(f, t)| (f.as_str(), t.as_str()))
                .collect();
            env.task_branch_with(repo, &format!("feature/{task}-work"), &files, &[]);
        }
        env.set_status(&[(task, "For Delivery")]);
    }
    let lock = hold_worker_lock(env);
    let ids = tasks.iter().map(|(task, _)| queue(env, task, 0)).collect();
    drop(lock);
    ids
}

/// Queues a delivery without waiting for it; returns its id.
pub fn queue(env: &Env, task: &str, priority: i64) -> i64 {
    let p = priority.to_string();
    let o = env.lockstep(&["deliver", task, "--no-wait", "--priority", &p]);
    assert!(o.status.success(), "deliver {task}: {}", stderr(&o));
    let out = stdout(&o);
    out.strip_prefix('#')
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no delivery id in {out:?}"))
}

/// Takes the worker lock, as a running worker would: queued deliveries wait.
pub fn hold_worker_lock(env: &Env) -> std::fs::File {
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(env.worker_lock())
        .unwrap();
    f.try_lock().unwrap();
    f
}

/// One line of `steps.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRun {
    pub delivery: i64,
    pub repo: String,
    pub step: String,
    pub sha: String,
    pub passed: bool,
}

/// Every step run recorded so far.
pub fn step_runs(env: &Env) -> Vec<StepRun> {
    std::fs::read_to_string(env.sb.root.join("steps.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(StepRun {
                delivery: f.first()?.parse().ok()?,
                repo: f.get(1)?.to_string(),
                step: f.get(2)?.to_string(),
                sha: f.get(3)?.to_string(),
                passed: *f.get(4)? == "0",
            })
        })
        .collect()
}

/// The commits `master` of a repository gained, oldest first (first parents only).
pub fn landed(env: &Env, repo: &str, since: &str) -> Vec<String> {
    env.git_in(
        repo,
        &[
            "rev-list",
            "--first-parent",
            "--reverse",
            &format!("{since}..master"),
        ],
    )
    .lines()
    .map(String::from)
    .collect()
}

/// Each delivery's state, by id.
pub fn states(env: &Env, ids: &[i64]) -> BTreeMap<i64, String> {
    ids.iter().map(|id| (*id, env.state(*id))).collect()
}

/// Checks what the pipeline promises for delivered ones: in every repository, the commit that
/// landed is the one its last passing test and its deploy ran on, and the deliveries landed in
/// the order of `ids` (the queue's). Returns the delivered ids, sorted.
pub fn assert_landed_as_tested(
    env: &Env,
    ids: &[i64],
    before: &BTreeMap<String, String>,
) -> Vec<i64> {
    let runs = step_runs(env);
    let mut delivered = Vec::new();
    for repo in REPOS {
        let landed = landed(env, repo, &before[repo]);
        let mut order = Vec::new();
        for id in ids {
            let show = env.show(*id);
            if show["delivery"]["state"] != "delivered" {
                continue;
            }
            let Some(row) = show["repos"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["repo"] == repo)
            else {
                continue;
            };
            let sha = row["rebased_sha"].as_str().unwrap().to_string();
            let at = landed
                .iter()
                .position(|c| *c == sha)
                .unwrap_or_else(|| panic!("#{id}'s {repo} commit {sha} is not on master"));
            order.push((at, *id));
            for step in ["test", "deploy"] {
                let last = runs
                    .iter()
                    .rev()
                    .find(|r| r.delivery == *id && r.repo == repo && r.step == step && r.passed)
                    .unwrap_or_else(|| panic!("#{id} {repo}: no passing {step}"));
                assert_eq!(last.sha, sha, "#{id} {repo}: {step} ran on another commit");
            }
        }
        let by_position: Vec<i64> = {
            let mut o = order.clone();
            o.sort();
            o.into_iter().map(|(_, id)| id).collect()
        };
        let queue_order: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| by_position.contains(id))
            .collect();
        assert_eq!(
            by_position, queue_order,
            "{repo}: not landed in queue order"
        );
        delivered.extend(by_position);
    }
    delivered.sort();
    delivered.dedup();
    delivered
}

/// Every repository's `master`, by name.
pub fn masters(env: &Env) -> BTreeMap<String, String> {
    REPOS
        .iter()
        .map(|r| (r.to_string(), env.master(r)))
        .collect()
}

/// Runs `lockstep work` to the end of the queue.
pub fn work(env: &Env) -> Output {
    let o = env.lockstep(&["work"]);
    assert!(o.status.success(), "work: {}{}", stdout(&o), stderr(&o));
    o
}

/// Whether a path exists (for waits).
pub fn exists(p: &Path) -> Option<()> {
    p.exists().then_some(())
}

/// Whether a delivery has a test step running (held at its gate, say).
pub fn testing(env: &Env, id: i64) -> bool {
    env.show(id)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["step"] == "test" && s["outcome"] == "running")
}

/// Why each preparation of a delivery was discarded, from its journal, oldest first.
pub fn discards(env: &Env, id: i64) -> Vec<String> {
    env.show(id)["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["event"] == "discarded")
        .map(|j| j["detail"].as_str().unwrap().to_string())
        .collect()
}

/// Waits for a spawned `worker` to end, and checks it succeeded.
pub fn worker_succeeds(env: &Env, mut worker: std::process::Child) {
    assert!(
        worker.wait().unwrap().success(),
        "{:?}",
        env.spawned_output("worker")
    );
}
