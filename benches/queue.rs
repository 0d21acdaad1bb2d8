//! What the pipeline buys: eight tasks across two repositories (build 2 s, test 6 s, deploy
//! and verify 0.25 s per repository, one task failing its test in `web`), delivered by one
//! `lockstep work` with `[delivery] window = 1` (the serial line) and with `window = 4`, in
//! the same run. Reports both wall times, their ratio, and the step runs each spent (what
//! speculation costs in CI time).
//!
//! Run with `cargo bench --bench queue`. `LOCKSTEP_BENCH_SCALE` multiplies every step's
//! duration (default 1; e.g. 0.1 for a quick look).

#[path = "../tests/util/mod.rs"]
mod util;

use std::time::{Duration, Instant};

use util::pipeline::*;

/// One run: the wall time of `lockstep work`, and the step runs by step name.
struct Run {
    wall: Duration,
    builds: usize,
    tests: usize,
    landed: usize,
    discards: i64,
}

fn run(window: usize, durations: Durations) -> Run {
    let env = sandbox(window, durations);
    let before = masters(&env);
    let ids = queue_all(&env, &EIGHT, Some(FAILING));
    let start = Instant::now();
    work(&env);
    let wall = start.elapsed();
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
    let serial = run(1, durations);
    let piped = run(4, durations);
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
}
