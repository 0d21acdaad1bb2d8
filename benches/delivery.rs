//! What lockstep itself costs: a delivery of one task across three repositories whose steps
//! are all `true`, against the same git operations (clone, rebase, compare-and-swap push
//! through the same hooks) done by a plain shell script.
//!
//! Run with `cargo bench --bench delivery`; `LOCKSTEP_BENCH_RUNS` sets the runs per side
//! (default 7, after one warm-up run each). Every run gets a fresh sandbox, built outside the
//! measured time.

#[path = "../tests/util/mod.rs"]
mod util;

use std::process::Command;
use std::time::{Duration, Instant};

use util::Env;

const REPOS: [&str; 3] = ["api", "web", "db"];
const BRANCH: &str = "feature/TASK-1-bench";

/// The same git work as lockstep's rebase and merge phases, as a release manager would script
/// it: clone, find the task branch, rebase it, then push every master with a lease.
const SCRIPT: &str = r#"set -eu
for r in api web db; do
  git clone --quiet --no-tags "$GITROOT/$r.git" "$WORK/$r"
  cd "$WORK/$r"
  git for-each-ref --format='%(refname:strip=3)' refs/remotes/origin/ | grep -q "^$BRANCH\$"
  git checkout --quiet -B delivery "origin/$BRANCH"
  git rebase --quiet origin/master
done
for r in api web db; do
  cd "$WORK/$r"
  base=$(git rev-parse origin/master)
  git push --porcelain --quiet "--force-with-lease=refs/heads/master:$base" origin HEAD:refs/heads/master
done
"#;

/// A fresh sandbox: three guarded repositories, a task branch in each, master moved on since
/// (so the rebase has work to do), the task For Delivery, and every step `true`.
fn prepare() -> Env {
    let env = Env::new(&REPOS);
    env.set_steps(|_| "[\"true\"]".to_string());
    for repo in REPOS {
        env.task_branch(repo, BRANCH, "feature.txt", "feature\n");
        env.advance_master(repo, "hotfix.txt", "fix\n");
    }
    env.set_status(&[("TASK-1", "For Delivery")]);
    env
}

fn lockstep_once() -> Duration {
    let env = prepare();
    let before = env.masters();
    let start = Instant::now();
    let out = env.command(&["deliver", "TASK-1"]).output().unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = env.masters();
    assert!(before.iter().zip(&after).all(|(b, a)| b != a));
    took
}

fn script_once() -> Duration {
    let env = prepare();
    let before = env.masters();
    let work = env.sb.root.join("script");
    std::fs::create_dir_all(&work).unwrap();
    let start = Instant::now();
    let out = Command::new("sh")
        .args(["-c", SCRIPT])
        .env("GITROOT", env.sb.root.join("git"))
        .env("WORK", &work)
        .env("BRANCH", BRANCH)
        .env("HOME", env.home())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "lockstep-bot")
        .env("GIT_AUTHOR_EMAIL", "lockstep-bot@lockstep.invalid")
        .env("GIT_COMMITTER_NAME", "lockstep-bot")
        .env("GIT_COMMITTER_EMAIL", "lockstep-bot@lockstep.invalid")
        .env("GL_USER", "lockstep-bot")
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = env.masters();
    assert!(before.iter().zip(&after).all(|(b, a)| b != a));
    took
}

/// Median, min and max.
fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    };
    (median, v[0], v[n - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if util::bench_filtered_out("delivery") {
        return;
    }
    let runs: usize = std::env::var("LOCKSTEP_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
        .max(1);
    let started = Instant::now();
    // Warm the page cache and git's own start-up once per side.
    script_once();
    lockstep_once();
    let mut script = Vec::new();
    let mut lockstep = Vec::new();
    // Interleaved, so that a slow moment of the machine hits both sides alike.
    for _ in 0..runs {
        script.push(script_once());
        lockstep.push(lockstep_once());
    }
    let (s_med, s_min, s_max) = stats(script);
    let (l_med, l_min, l_max) = stats(lockstep);
    let overhead = l_med.saturating_sub(s_med);
    println!();
    println!("delivery of one task across 3 repositories, every step `true`, {runs} runs each");
    println!("{:<38} {:>9} {:>9} {:>9}", "", "median", "min", "max");
    println!(
        "{:<38} {:>9} {:>9} {:>9}",
        "plain git script (clone/rebase/push)",
        ms(s_med),
        ms(s_min),
        ms(s_max)
    );
    println!(
        "{:<38} {:>9} {:>9} {:>9}",
        "lockstep deliver",
        ms(l_med),
        ms(l_min),
        ms(l_max)
    );
    println!(
        "{:<38} {:>9}  ({:+.0}% of the plain script; 15 steps, journal, tracker)",
        "lockstep's own overhead",
        ms(overhead),
        (l_med.as_secs_f64() / s_med.as_secs_f64() - 1.0) * 100.0
    );
    println!("(took {:.1} s in all)", started.elapsed().as_secs_f64());
}
