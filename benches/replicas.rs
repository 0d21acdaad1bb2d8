//! Replicas on PostgreSQL: how long the queue goes unworked when its leader is killed, and
//! what a second replica adds to webhook throughput.
//!
//! - Failover: two `lockstep serve` replicas with the default `[store] lease` (10s); the
//!   leader is killed with SIGKILL, and the time until the other's `/healthz` says `leader`
//!   is measured; then a new replica takes the dead one's place. Five kills; the median is
//!   the figure (target: under 10 s).
//! - Throughput: the same signed `/status` comments (each answered on the pull request
//!   through a fake GitHub) posted to one replica, then spread over two, 16 at a time: the
//!   ratio of requests/s.
//!
//! Needs `scripts/postgres.sh start` and its env (`LOCKSTEP_TEST_ADMIN_DATABASE_URL`).
//! `cargo bench --bench replicas` (`-- --kills N --requests N` to change it).

#[path = "../tests/util/mod.rs"]
mod util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use util::fake_github::FakeGitHub;
use util::serve::{ServeProc, TOKEN, configure, github_section};
use util::webhooks;
use util::{Env, bench_arg as arg};

fn wait(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let kills = arg("--kills", 5);
    let requests = arg("--requests", 1000);
    let Some(env) = Env::on_postgres("bench replicas", &["api"], "10s") else {
        eprintln!("no PostgreSQL: run `scripts/postgres.sh start` and load its env");
        std::process::exit(1);
    };
    env.set_tasks("[BENCH-1]\nstatus = \"In Progress\"\n");
    let gh = FakeGitHub::start(TOKEN);
    gh.permit("acme/api", "alice", "write");
    gh.add_pull("acme/api", 1, "alice", "feature/BENCH-1", &"1".repeat(40));
    configure(&env, "0s", &github_section(gh.url()));

    // Failover.
    let mut names = 0;
    let mut start = |env: &Env| {
        names += 1;
        ServeProc::replica(env, &format!("r{names}"))
    };
    let mut leader = start(&env);
    wait("the first leader", Duration::from_secs(30), || {
        leader.role() == "leader"
    });
    let mut standby = start(&env);
    wait("a standby", Duration::from_secs(30), || {
        standby.role() == "standby"
    });
    let mut times = Vec::new();
    for k in 0..kills {
        // A kill at a random moment of the lease's renewal cycle (every third of 10 s).
        std::thread::sleep(Duration::from_millis(700 * (k as u64 % 5) + 300));
        let killed = Instant::now();
        leader.kill();
        wait("the standby to take over", Duration::from_secs(30), || {
            standby.role() == "leader"
        });
        let took = killed.elapsed();
        println!(
            "kill {}: the standby led after {:.2} s",
            k + 1,
            took.as_secs_f64()
        );
        times.push(took);
        leader = std::mem::replace(&mut standby, start(&env));
        wait("the new standby", Duration::from_secs(30), || {
            standby.role() == "standby"
        });
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "failover: median {:.2} s of {} kills (min {:.2} s, max {:.2} s), lease 10 s: {}",
        median.as_secs_f64(),
        times.len(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64(),
        if median < Duration::from_secs(10) {
            "target met (< 10 s)"
        } else {
            "TARGET MISSED (< 10 s)"
        }
    );

    // Throughput: one replica, then two.
    let urls = [leader.url.clone(), standby.url.clone()];
    let one = throughput(&urls[..1], requests, "one");
    let two = throughput(&urls, requests, "two");
    println!(
        "webhooks: one replica {one:.0} req/s, two replicas {two:.0} req/s: x{:.2}",
        two / one
    );
}

/// Posts `requests` `/status` comments over `urls` in turn, 16 at a time; requests/s.
fn throughput(urls: &[String], requests: usize, run: &str) -> f64 {
    const CONCURRENCY: usize = 16;
    let next = AtomicUsize::new(0);
    let body = webhooks::comment("acme/api", 1, "alice", "/status");
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CONCURRENCY {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        return;
                    }
                    let url = &urls[i % urls.len()];
                    let id = format!("{run}-{i}");
                    let r =
                        webhooks::post(url, "issue_comment", &id, &body, Some(webhooks::SECRET));
                    assert!(r.status / 100 == 2, "{}: {}", r.status, r.body);
                }
            });
        }
    });
    requests as f64 / started.elapsed().as_secs_f64()
}
