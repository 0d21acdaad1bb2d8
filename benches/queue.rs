//! What the pipeline buys: eight tasks across two repositories (build 2 s, test 6 s, deploy
//! and verify 0.25 s per repository, one task failing its test in `web`), delivered by one
//! `lockstep work` with `[delivery] window = 1` (the serial line) and with `window = 4`, in
//! the same run. Reports both wall times, their ratio, and the step runs each spent (what
//! speculation costs in CI time).
//!
//! Run with `cargo bench --bench queue`. `LOCKSTEP_BENCH_SCALE` multiplies every step's
//! duration (default 1; e.g. 0.1 for a quick look).
//!
//! With `BUILDBOT_URL` set (`scripts/buildbot.sh`), a third run delivers the same tasks with
//! `window = 4` and build and test on Buildbot's two workers (each repository's
//! `ci/build.sh` and `ci/test.sh` sleep as long and record the same way), and reports the
//! CPU time of lockstep's process tree against that of the Buildbot master and workers.

#[path = "../tests/util/mod.rs"]
mod util;

use std::time::{Duration, Instant};

use util::pipeline::*;

/// One run: the wall time of `lockstep work`, and the step runs by step name.
struct Run {
    wall: Duration,
    /// CPU time of `lockstep work` and everything it waited for (git, hooks, local steps).
    own_cpu: Duration,
    /// CPU time the Buildbot master and workers spent meanwhile.
    ci_cpu: Duration,
    builds: usize,
    tests: usize,
    landed: usize,
    discards: i64,
}

fn run(window: usize, durations: Durations, buildbot: Option<&str>) -> Run {
    let env = sandbox(window, durations);
    if let Some(url) = buildbot {
        on_buildbot(&env, url, durations);
    }
    let before = masters(&env);
    let ids = queue_all(&env, &EIGHT, Some(FAILING));
    let ci_before: Duration = buildbot_pids().into_iter().map(cpu_of).sum();
    let own_before = cpu_of_children();
    let start = Instant::now();
    work(&env);
    let wall = start.elapsed();
    let own_cpu = cpu_of_children().saturating_sub(own_before);
    let ci_cpu = buildbot_pids()
        .into_iter()
        .map(cpu_of)
        .sum::<Duration>()
        .saturating_sub(ci_before);
    let delivered = assert_landed_as_tested(&env, &ids, &before);
    assert_eq!(
        delivered.len(),
        EIGHT.len() - 1,
        "every task but the failing one lands"
    );
    let runs = step_runs(&env);
    let count = |step: &str| runs.iter().filter(|r| r.step == step).count();
    let discards = ids
        .iter()
        .map(|id| env.show(*id)["delivery"]["discards"].as_i64().unwrap_or(0))
        .sum();
    Run {
        wall,
        own_cpu,
        ci_cpu,
        builds: count("build"),
        tests: count("test"),
        landed: delivered.len(),
        discards,
    }
}

fn main() {
    if util::bench_filtered_out("queue") {
        return;
    }
    let scale: f64 = std::env::var("LOCKSTEP_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(1.0);
    let secs = |s: f64| Duration::from_secs_f64(s * scale);
    let durations = Durations {
        build: secs(2.0),
        test: secs(6.0),
        deploy: secs(0.25),
        verify: secs(0.25),
    };
    let serial = run(1, durations, None);
    let piped = run(4, durations, None);
    let ratio = piped.wall.as_secs_f64() / serial.wall.as_secs_f64();
    let spent = |r: &Run| r.builds + r.tests;
    println!();
    println!(
        "8 tasks across api and web (build {:.2} s, test {:.2} s, deploy and verify {:.2} s per \
         repository), TASK-5 failing its test",
        durations.build.as_secs_f64(),
        durations.test.as_secs_f64(),
        durations.deploy.as_secs_f64()
    );
    println!(
        "{:<12} {:>9} {:>9} {:>7} {:>7} {:>9} {:>8}",
        "", "wall", "per task", "builds", "tests", "discards", "landed"
    );
    for (name, r) in [("window = 1", &serial), ("window = 4", &piped)] {
        println!(
            "{:<12} {:>7.1} s {:>7.1} s {:>7} {:>7} {:>9} {:>8}",
            name,
            r.wall.as_secs_f64(),
            r.wall.as_secs_f64() / EIGHT.len() as f64,
            r.builds,
            r.tests,
            r.discards,
            r.landed
        );
    }
    println!(
        "window 4 / window 1: {ratio:.2}× the wall time (target ≤ 0.45×), {:.2}× the build and \
         test runs",
        spent(&piped) as f64 / spent(&serial) as f64
    );
    let Some(url) = std::env::var("BUILDBOT_URL").ok().filter(|u| !u.is_empty()) else {
        println!("(no BUILDBOT_URL: the run on Buildbot is left out; see scripts/buildbot.sh)");
        return;
    };
    let remote = run(4, durations, Some(&url));
    println!();
    println!("window = 4, build and test local against on Buildbot's two workers ({url}):");
    println!(
        "{:<12} {:>9} {:>7} {:>7} {:>8} {:>14} {:>14}",
        "", "wall", "builds", "tests", "landed", "lockstep CPU", "Buildbot CPU"
    );
    for (name, r) in [("local", &piped), ("Buildbot", &remote)] {
        println!(
            "{:<12} {:>7.1} s {:>7} {:>7} {:>8} {:>12.2} s {:>12.2} s",
            name,
            r.wall.as_secs_f64(),
            r.builds,
            r.tests,
            r.landed,
            r.own_cpu.as_secs_f64(),
            r.ci_cpu.as_secs_f64()
        );
    }
    assert_eq!(
        remote.landed, piped.landed,
        "the same tasks land either way"
    );
}

/// Moves build and test of the sandbox to the Buildbot at `url`: each repository gets a
/// `ci/build.sh` and `ci/test.sh` on master that sleep the step's share and record their run
/// in the sandbox's `steps.log` as the local steps do (a `FAIL-TEST` file fails the test).
fn on_buildbot(env: &util::Env, url: &str, durations: Durations) {
    let gate = env.sb.meta.join("steps").join("gate.sh");
    let steps = env.sb.meta.join("steps");
    let record = steps.join("record.sh");
    env.set_steps(|s| match s {
        "build" | "test" => format!("{{ runner = \"bb\", builder = \"{s}\" }}"),
        _ => format!(
            "[{}, \"{s}\", {}, \"{s}\", {}]",
            util::toml_str(&gate),
            util::toml_str(&record),
            util::toml_str(&steps.join(format!("{s}.sh")))
        ),
    });
    env.edit_config(|t| format!("{t}\n[runners.bb]\nkind = \"buildbot\"\nurl = \"{url}\"\n"));
    let log = env.root().join("steps.log");
    for repo in REPOS {
        let dir = env.clone_of(repo, "release-lead");
        let g = util::git(&dir, "release-lead");
        g.run(&["switch", "--quiet", "-C", "master", "origin/master"])
            .unwrap();
        std::fs::create_dir_all(dir.join("ci")).unwrap();
        for (step, d) in [("build", durations.build), ("test", durations.test)] {
            let fail = if step == "test" {
                "[ -e FAIL-TEST ] && rc=1\n"
            } else {
                ""
            };
            let script = format!(
                "sleep {:.3}\nrc=0\n{fail}echo \"$LOCKSTEP_DELIVERY $LOCKSTEP_REPO {step} \
                 $(git rev-parse HEAD) $rc\" >> '{}'\nexit $rc\n",
                d.as_secs_f64(),
                log.display()
            );
            std::fs::write(dir.join(format!("ci/{step}.sh")), script).unwrap();
        }
        g.run(&["add", "ci"]).unwrap();
        g.run(&["commit", "--quiet", "-m", "the CI's scripts"])
            .unwrap();
        let p = util::push(&dir, "release-lead", &["master"]).unwrap();
        assert!(p.accepted, "{repo}: {:?}", p.remote);
    }
}

/// The pids of the Buildbot master and workers `scripts/buildbot.sh` started.
fn buildbot_pids() -> Vec<i32> {
    let Some(master) = std::env::var_os("BUILDBOT_MASTER_DIR") else {
        return Vec::new();
    };
    let master = std::path::PathBuf::from(master);
    let state = master
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    [master, state.join("worker1"), state.join("worker2")]
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("twistd.pid")).ok())
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// Clock ticks per second of `/proc/*/stat`.
const TICKS: f64 = 100.0;

/// The fields of `/proc/<what>/stat` after the command's name.
fn stat_fields(what: &str) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/{what}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.to_string()))
        .map(|rest| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

fn ticks(t: u64) -> Duration {
    Duration::from_secs_f64(t as f64 / TICKS)
}

/// A process's CPU time with that of the children it waited for (utime, stime, cutime,
/// cstime).
fn cpu_of(pid: i32) -> Duration {
    let f = stat_fields(&pid.to_string());
    ticks(f.get(11..15).map_or(0, |x| x.iter().sum()))
}

/// The CPU time of this process's children it waited for (cutime, cstime).
fn cpu_of_children() -> Duration {
    let f = stat_fields("self");
    ticks(f.get(13..15).map_or(0, |x| x.iter().sum()))
}
