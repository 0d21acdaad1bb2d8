//! Load on `POST /webhooks/github`: `lockstep serve` runs as its own process on loopback
//! against a fake GitHub; signed webhooks are posted with a fixed concurrency, mostly
//! `/status` comments and events lockstep ignores, some `/deliver`s of distinct tasks.
//! Reports requests/s and latency percentiles, then checks that nothing was lost: every
//! request got a 2xx and every accepted `/deliver` is a delivery in the store.
//!
//! `cargo bench --bench webhooks` (`-- --requests N --concurrency C` to change the load).

#[path = "../tests/util/mod.rs"]
mod util;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use util::fake_github::FakeGitHub;
use util::serve::{ServeProc, TOKEN, configure, github_section};
use util::webhooks;
use util::{Env, bench_arg as arg};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Status,
    Ignored,
    Deliver,
}

fn main() {
    let requests = arg("--requests", 2000);
    let concurrency = arg("--concurrency", 16).max(1);
    let delivers = requests / 10;
    let budget = Duration::from_secs(120);

    // The shipped policies, the file tracker and one repository without task branches: a
    // queued delivery fails fast in rebase, which is all this benchmark needs of the worker.
    let env = Env::new(&["api"]);
    let mut tasks = String::new();
    for i in 0..delivers {
        tasks.push_str(&format!("[BENCH-{i}]\nstatus = \"For Delivery\"\n\n"));
    }
    tasks.push_str("[BENCH-STATUS]\nstatus = \"In Progress\"\n");
    env.set_tasks(&tasks);

    let gh = FakeGitHub::start(TOKEN);
    gh.permit("acme/api", "alice", "write");
    gh.add_pull(
        "acme/api",
        1,
        "alice",
        "feature/BENCH-STATUS",
        &"1".repeat(40),
    );
    for i in 0..delivers as u64 {
        let n = 1000 + i;
        gh.add_pull(
            "acme/api",
            n,
            "alice",
            &format!("feature/BENCH-{i}"),
            &"a".repeat(40),
        );
        gh.review("acme/api", n, "bob", "APPROVED");
        gh.review("acme/api", n, "carol", "APPROVED");
    }
    configure(&env, "0s", &github_section(gh.url()));
    let serve = ServeProc::start_quiet(&env);
    let url = serve.url.clone();

    // The work: every 10th request a /deliver, every 5th an ignored event, else /status.
    let plan: Vec<(Kind, Vec<u8>, &str)> = (0..requests)
        .map(|i| {
            if i % 10 == 0 && i / 10 < delivers {
                let n = 1000 + (i / 10) as u64;
                let body = webhooks::comment("acme/api", n, "alice", "LGTM\n/deliver\n");
                (Kind::Deliver, body, "issue_comment")
            } else if i % 5 == 0 {
                let body = serde_json::to_vec(&webhooks::sample("push.json")).unwrap();
                (Kind::Ignored, body, "push")
            } else {
                let body = webhooks::comment("acme/api", 1, "alice", "/status");
                (Kind::Status, body, "issue_comment")
            }
        })
        .collect();

    println!(
        "lockstep serve under load: {requests} signed webhooks, concurrency {concurrency} \
         ({delivers} /deliver, {} ignored events, {} /status)",
        plan.iter().filter(|p| p.0 == Kind::Ignored).count(),
        plan.iter().filter(|p| p.0 == Kind::Status).count(),
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(Kind, u16, Duration)>> = Mutex::new(Vec::with_capacity(requests));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= plan.len() || start.elapsed() > budget {
                        return;
                    }
                    let (kind, body, event) = &plan[i];
                    let t = Instant::now();
                    let status = webhooks::post(
                        &url,
                        event,
                        &format!("bench-{i}"),
                        body,
                        Some(webhooks::SECRET),
                    )
                    .status;
                    results.lock().unwrap().push((*kind, status, t.elapsed()));
                }
            });
        }
    });
    let wall = start.elapsed();
    let results = results.into_inner().unwrap();

    let mut all: Vec<Duration> = results.iter().map(|r| r.2).collect();
    all.sort();
    let pct = |v: &[Duration], p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let idx = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[idx].as_secs_f64() * 1000.0
    };
    println!(
        "  {} requests in {:.2}s: {:.0} requests/s",
        results.len(),
        wall.as_secs_f64(),
        results.len() as f64 / wall.as_secs_f64()
    );
    println!(
        "  latency ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        pct(&all, 0.50),
        pct(&all, 0.90),
        pct(&all, 0.99),
        pct(&all, 1.0)
    );
    for kind in [Kind::Status, Kind::Ignored, Kind::Deliver] {
        let mut v: Vec<Duration> = results
            .iter()
            .filter(|r| r.0 == kind)
            .map(|r| r.2)
            .collect();
        v.sort();
        println!(
            "    {:<8} n={:<5} p50 {:.1}  p99 {:.1}",
            format!("{kind:?}").to_lowercase(),
            v.len(),
            pct(&v, 0.5),
            pct(&v, 0.99)
        );
    }

    // Nothing lost: every request answered 2xx, every accepted /deliver is in the store,
    // every /status and /deliver got its reply on the pull request.
    let failed: Vec<_> = results
        .iter()
        .filter(|r| !(200..300).contains(&r.1))
        .collect();
    let accepted_delivers = results
        .iter()
        .filter(|r| r.0 == Kind::Deliver && r.1 == 200)
        .count();
    let statuses = results
        .iter()
        .filter(|r| r.0 == Kind::Status && r.1 == 200)
        .count();
    let queued = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = lockstep::Store::open(&env.state_dir()).await.unwrap();
            store
                .count_by_source()
                .await
                .unwrap()
                .into_iter()
                .find(|(s, _)| s == "github")
                .map_or(0, |(_, n)| n)
        });
    let replies_status = gh.comments("acme/api", 1).len();
    let replies_deliver: usize = (0..delivers as u64)
        .map(|i| {
            gh.comments("acme/api", 1000 + i)
                .iter()
                .filter(|c| c.contains("queued the delivery"))
                .count()
        })
        .sum();
    println!(
        "  answered: {} of {requests} (non-2xx: {}); /deliver accepted {accepted_delivers}, \
         deliveries in the store {queued}, queue replies {replies_deliver}; /status replies \
         {replies_status} of {statuses}",
        results.len(),
        failed.len()
    );
    let log = serve.log_text();
    serve.stop(Duration::from_secs(10));
    let lost = results.len() != requests
        || !failed.is_empty()
        || accepted_delivers != delivers
        || queued as usize != accepted_delivers
        || replies_deliver != accepted_delivers
        || replies_status != statuses;
    if lost {
        eprintln!("LOST WORK; serve log:\n{log}");
        std::process::exit(1);
    }
    println!("  nothing lost");
}
