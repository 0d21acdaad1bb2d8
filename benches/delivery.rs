//! What lockstep itself costs: a delivery of one task across three repositories whose steps
//! are all `true`, against the same git operations (clone, rebase, compare-and-swap push
//! through the same hooks) done by a plain shell script.
//!
//! Run with `cargo bench --bench delivery`; `LOCKSTEP_BENCH_RUNS` sets the runs per side
//! (default 7, after one warm-up run each). Every run gets a fresh sandbox, built outside the
//! measured time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lockstep::demo::{Sandbox, commit, push, sandbox_git};

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

struct Run {
    _dir: tempfile::TempDir,
    sb: Sandbox,
    home: PathBuf,
}

/// A fresh sandbox: three guarded repositories, a task branch in each, master moved on since
/// (so the rebase has work to do), the task For Delivery, and every step `true`.
fn prepare(binary: &Path) -> Run {
    let dir = tempfile::Builder::new()
        .prefix("lockstep-bench-")
        .tempdir()
        .unwrap();
    let sb = Sandbox::create(&dir.path().join("sb"), binary, &REPOS).unwrap();
    let config = sb.meta.join("lockstep.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let steps: String = text
        .lines()
        .map(|l| {
            let step = ["build", "test", "deploy", "verify", "rollback"]
                .into_iter()
                .find(|s| l.starts_with(&format!("{s} = [")));
            match step {
                Some(s) => format!("{s} = [\"true\"]\n"),
                None => format!("{l}\n"),
            }
        })
        .collect();
    std::fs::write(&config, steps).unwrap();
    for repo in REPOS {
        let dev = sb.clone_for(repo, "alice").unwrap();
        let git = sandbox_git(&dev, "alice");
        git.run(&["switch", "--quiet", "-c", BRANCH]).unwrap();
        commit(&dev, "alice", "feature.txt", "feature\n", "TASK-1 feature").unwrap();
        assert!(push(&dev, "alice", &[BRANCH]).unwrap().accepted);
        let lead = sb.clone_for(repo, "release-lead").unwrap();
        commit(&lead, "release-lead", "hotfix.txt", "fix\n", "hotfix").unwrap();
        assert!(push(&lead, "release-lead", &["master"]).unwrap().accepted);
    }
    let tasks = std::fs::read_to_string(sb.meta.join("tasks.toml")).unwrap();
    let tasks = tasks.replacen("status = \"In Progress\"", "status = \"For Delivery\"", 1);
    std::fs::write(sb.meta.join("tasks.toml"), tasks).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    Run {
        _dir: dir,
        sb,
        home,
    }
}

fn masters(sb: &Sandbox) -> Vec<String> {
    sb.repos
        .iter()
        .map(|(_, bare)| {
            lockstep::git::Git::new(bare)
                .resolve("refs/heads/master")
                .unwrap()
                .unwrap()
        })
        .collect()
}

fn lockstep_once(binary: &Path) -> Duration {
    let run = prepare(binary);
    let before = masters(&run.sb);
    let start = Instant::now();
    let out = Command::new(binary)
        .arg("--config")
        .arg(run.sb.meta.join("lockstep.toml"))
        .args(["deliver", "TASK-1"])
        .env("HOME", &run.home)
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = masters(&run.sb);
    assert!(before.iter().zip(&after).all(|(b, a)| b != a));
    took
}

fn script_once(binary: &Path) -> Duration {
    let run = prepare(binary);
    let before = masters(&run.sb);
    let work = run.sb.root.join("script");
    std::fs::create_dir_all(&work).unwrap();
    let start = Instant::now();
    let out = Command::new("sh")
        .args(["-c", SCRIPT])
        .env("GITROOT", run.sb.root.join("git"))
        .env("WORK", &work)
        .env("BRANCH", BRANCH)
        .env("HOME", &run.home)
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
    let after = masters(&run.sb);
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
    // `cargo bench` passes `--bench`; a filter that is not this bench's name skips it.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args
        .iter()
        .any(|a| !a.starts_with('-') && !"delivery".contains(a.as_str()))
    {
        return;
    }
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_lockstep"));
    let runs: usize = std::env::var("LOCKSTEP_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
        .max(1);
    let started = Instant::now();
    // Warm the page cache and git's own start-up once per side.
    script_once(&binary);
    lockstep_once(&binary);
    let mut script = Vec::new();
    let mut lockstep = Vec::new();
    // Interleaved, so that a slow moment of the machine hits both sides alike.
    for _ in 0..runs {
        script.push(script_once(&binary));
        lockstep.push(lockstep_once(&binary));
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
