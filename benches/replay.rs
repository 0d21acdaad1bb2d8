//! `cargo bench --bench replay`: `lockstep policy replay` of 10,000 logged pushes.
//!
//! The sandbox is the demo's (the shipped policies, the file tracker) with one repository,
//! `api`, holding 100 task branches of 100 commits each (made with `git fast-import`). The
//! decision log holds 10,000 pushes, each moving one branch forward by one commit, as the
//! hook would have logged them. The replay decides every push again with the shipped
//! policies, which read the new commits and whether the push fast-forwards: two git
//! processes per push.
//!
//! The baseline, measured in the same run, is the cheapest thing a replay cannot avoid: one
//! `git merge-base --is-ancestor` process per push, run one after the other. The figure to
//! watch is the ratio.

#[path = "../tests/util/mod.rs"]
mod util;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use util::{Env, run_with_stdin, scrub, stderr};

const BRANCHES: usize = 100;
const COMMITS: usize = 100;
const BASELINE_RUNS: usize = 1_000;

fn git(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    scrub(&mut cmd);
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    cmd
}

/// Writes the branches with `git fast-import`; returns each branch's commits, oldest first.
fn make_branches(bare: &Path, marks: &Path) -> Vec<Vec<String>> {
    let master = String::from_utf8(
        git(bare)
            .args(["rev-parse", "refs/heads/master"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let mut stream = String::new();
    let mut mark = 0;
    for b in 0..BRANCHES {
        for c in 0..COMMITS {
            mark += 1;
            let message = format!("TASK-1 branch {b} step {c}\n");
            stream.push_str(&format!(
                "commit refs/heads/feature/TASK-1-b{b}\nmark :{mark}\n\
                 author alice <alice@example.invalid> {t} +0000\n\
                 committer alice <alice@example.invalid> {t} +0000\ndata {}\n{message}",
                message.len(),
                t = 1_700_000_000 + mark
            ));
            if c == 0 {
                stream.push_str(&format!("from {master}\n"));
            }
            stream.push_str(&format!("M 644 inline f{b}.txt\ndata 2\n{c}\n\n"));
        }
    }
    let mut cmd = git(bare);
    cmd.args(["fast-import", "--quiet"])
        .arg(format!("--export-marks={}", marks.display()));
    let out = run_with_stdin(cmd, stream.as_bytes());
    assert!(out.status.success(), "fast-import failed: {}", stderr(&out));
    let text = std::fs::read_to_string(marks).unwrap();
    let mut ids = vec![String::new(); mark + 1];
    for line in text.lines() {
        let (m, sha) = line.split_once(' ').unwrap();
        ids[m.trim_start_matches(':').parse::<usize>().unwrap()] = sha.to_string();
    }
    (0..BRANCHES)
        .map(|b| {
            (0..COMMITS)
                .map(|c| ids[b * COMMITS + c + 1].clone())
                .collect()
        })
        .collect()
}

fn main() {
    let env = Env::new(&["api"]);
    let bare = std::fs::canonicalize(env.bare("api")).unwrap();
    let branches = make_branches(&bare, &env.dir.path().join("marks"));
    let state = env.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    let mut log = String::new();
    let now = chrono::Utc::now();
    let mut pushes = 0;
    for c in 1..COMMITS {
        for (b, commits) in branches.iter().enumerate() {
            let entry = serde_json::json!({
                "time": (now - chrono::Duration::seconds(20_000 - pushes as i64)).to_rfc3339(),
                "stage": "push",
                "repo": "api",
                "pusher": "alice",
                "git_dir": bare.to_string_lossy(),
                "tracker": "file",
                "tasks": {"TASK-1": {"exists": true, "status": "In Progress"}},
                "refs": [{
                    "ref": format!("refs/heads/feature/TASK-1-b{b}"),
                    "old": commits[c - 1],
                    "new": commits[c],
                    "verdicts": [],
                    "accepted": true,
                }],
                "accepted": true,
                "revision": "bench",
            });
            log.push_str(&entry.to_string());
            log.push('\n');
            pushes += 1;
        }
    }
    // 100 more: each branch's first commit, pushed as a new branch.
    for (b, commits) in branches.iter().enumerate() {
        let entry = serde_json::json!({
            "time": now.to_rfc3339(), "stage": "push", "repo": "api", "pusher": "alice",
            "git_dir": bare.to_string_lossy(), "tracker": "file",
            "tasks": {"TASK-1": {"exists": true, "status": "In Progress"}},
            "refs": [{"ref": format!("refs/heads/feature/TASK-1-b{b}"), "old": util::ZERO,
                      "new": commits[0], "verdicts": [], "accepted": true}],
            "accepted": true, "revision": "bench",
        });
        log.push_str(&entry.to_string());
        log.push('\n');
        pushes += 1;
    }
    assert_eq!(pushes, 10_000);
    std::fs::write(state.join("decisions.jsonl"), log).unwrap();

    let start = Instant::now();
    let out = env.lockstep(&["policy", "replay", "--since", "1d"]);
    let replay = start.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("replayed 10000 push(es): 0 accepted then would be refused now"),
        "{text}"
    );

    let (old, new) = (&branches[0][0], &branches[0][1]);
    let start = Instant::now();
    for _ in 0..BASELINE_RUNS {
        let ok = git(&bare)
            .args(["merge-base", "--is-ancestor", old, new])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    let per_spawn = start.elapsed() / BASELINE_RUNS as u32;
    let baseline = per_spawn * pushes as u32;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("replay of {pushes} logged pushes (shipped policies, {BRANCHES} branches)");
    println!(
        "  lockstep policy replay            {:>10.0} ms  ({:.2} ms a push)",
        ms(replay),
        ms(replay) / pushes as f64
    );
    println!(
        "  baseline: one git process a push  {:>10.0} ms  ({:.2} ms a process, serial)",
        ms(baseline),
        ms(per_spawn)
    );
    println!(
        "  ratio replay / baseline           {:>10.2}",
        replay.as_secs_f64() / baseline.as_secs_f64()
    );
}
