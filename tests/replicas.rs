//! Several `lockstep serve` replicas sharing one PostgreSQL store: one works the queue at a
//! time; killed or cut off, it is replaced within the lease, the delivery it left lands once
//! and all or nothing, and its late writes are refused. Requests sent to every replica are
//! acted on once. Each replica has a state folder of its own, as on a machine of its own.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::fake_github::FakeGitHub;
use crate::util::serve::*;
use crate::util::webhooks::{self, SECRET};
use crate::util::*;

const REPOS: [&str; 2] = ["api", "web"];
const LONG: Duration = Duration::from_secs(60);
/// The lease of these tests' replicas: short, for quick failovers.
const LEASE: Duration = Duration::from_secs(2);

/// A sandbox on PostgreSQL whose TASK-1 is ready for delivery in every repository.
fn ready_env(test: &str) -> Option<Env> {
    let env = Env::on_postgres(test, &REPOS, "2s")?;
    env.set_status(&[("TASK-1", "In Progress")]);
    for repo in REPOS {
        env.task_branch(repo, "feature/TASK-1-work", "TASK-1.txt", "TASK-1\n");
    }
    env.set_status(&[("TASK-1", "For Delivery")]);
    Some(env)
}

fn landed(env: &Env, task: &str) -> Vec<bool> {
    REPOS
        .iter()
        .map(|r| {
            git(&env.bare(r), "admin")
                .succeeds(&["cat-file", "-e", &format!("refs/heads/master:{task}.txt")])
                .unwrap()
        })
        .collect()
}

/// Journal entries of a delivery as `(phase, repo, event, detail)`.
fn journal(env: &Env, id: i64) -> Vec<(String, String, String, String)> {
    env.show(id)["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            let s = |k: &str| j[k].as_str().unwrap_or_default().to_string();
            (s("phase"), s("repo"), s("event"), s("detail"))
        })
        .collect()
}

/// Starts replica `a`, waits until it leads, then replica `b`, standing by.
fn two_replicas(env: &Env) -> (ServeProc, ServeProc) {
    let a = ServeProc::replica(env, "a");
    wait_until("replica a to lead", LONG, Some(&a.log), || {
        a.role() == "leader"
    });
    let b = ServeProc::replica(env, "b");
    wait_until("replica b to stand by", LONG, Some(&b.log), || {
        b.role() == "standby"
    });
    (a, b)
}

#[test]
fn a_killed_leader_is_replaced_within_the_lease_and_its_delivery_lands_once() {
    let Some(env) = ready_env("failover") else {
        return;
    };
    env.hold("api", "test");
    let (mut a, b) = two_replicas(&env);
    let o = env.lockstep(&["deliver", "TASK-1", "--no-wait"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let left_running = env.wait_at_gate("api", "test");
    std::fs::remove_file(env.root().join("gates/api.test.waiting")).unwrap();

    let killed = Instant::now();
    a.kill();
    wait_until("replica b to take over", LONG, Some(&b.log), || {
        b.role() == "leader"
    });
    let failover = killed.elapsed();
    assert!(
        failover < LEASE + Duration::from_secs(2),
        "took over after {failover:?}"
    );
    // b recovered the delivery: the dead leader's step is stopped (on this one host b can
    // reach it), and the test runs again on b, which has no checkout of it yet.
    let rerun = env.wait_at_gate("api", "test");
    assert_ne!(rerun, left_running);
    assert!(
        std::fs::read(format!("/proc/{left_running}/stat")).is_err()
            || std::fs::read_to_string(format!("/proc/{left_running}/stat"))
                .unwrap()
                .contains(") Z"),
        "the dead leader's step still runs"
    );
    assert_eq!(landed(&env, "TASK-1"), [false, false]);
    env.unhold("api", "test");
    env.open_gate("api", "test");
    wait_until("the delivery to end", LONG, Some(&b.log), || {
        env.state(1) != "running" && env.state(1) != "queued"
    });
    assert_eq!(env.state(1), "delivered", "{}", b.log_text());
    assert_eq!(landed(&env, "TASK-1"), [true, true], "all or nothing");
    let q = env.queue();
    assert_eq!(
        q["recent"].as_array().unwrap().len(),
        1,
        "one delivery: {q}"
    );
    assert_eq!(runs_of_step(&env, 1, "api", "deploy"), 1, "deployed once");
    assert_eq!(runs_of_step(&env, 1, "api", "test"), 2);
    let j = journal(&env, 1);
    assert!(
        j.iter()
            .any(|(_, repo, event, _)| repo == "api" && event == "step interrupted"),
        "{j:?}"
    );
    assert!(
        b.log_text().contains("recovered: #1 TASK-1"),
        "{}",
        b.log_text()
    );
    let metrics = b.get("/metrics").body;
    assert!(
        metrics.contains("lockstep_leader{ecosystem=\"meta\"} 1"),
        "{metrics}"
    );
    assert!(b.get("/healthz").body.contains("store: postgres"));
    assert!(b.stop(Duration::from_secs(10)).success());
}

#[test]
fn a_leader_that_loses_its_lease_stops_its_pipelines_steps() {
    let Some(env) = ready_env("lost-lease-pipeline") else {
        return;
    };
    // The pipeline runs each delivery's preparation as a task of its own.
    env.set_delivery("window", "2");
    env.hold("api", "test");
    let a = ServeProc::replica(&env, "a");
    wait_until("replica a to lead", LONG, Some(&a.log), || {
        a.role() == "leader"
    });
    let o = env.lockstep(&["deliver", "TASK-1", "--no-wait"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let step = env.wait_at_gate("api", "test");

    // Another holder takes the lease (no replica here would kill the step for it): the
    // leader finds its lease gone at its next renewal and must stop its own work.
    let taken = env.db().execute(
        "UPDATE leases SET holder = 'elsewhere', epoch = epoch + 1, \
         expires_at = (extract(epoch from clock_timestamp()) * 1000)::bigint + 600000",
    );
    assert!(taken >= 1, "no lease row to take");
    wait_until("replica a to notice", LONG, Some(&a.log), || {
        a.log_text().contains("lost the lease of the queue")
    });
    // Stopped by the replica itself, at once: nothing else here would stop it (a step left
    // running holds its gate until the sandbox goes).
    let stopped_within = Duration::from_secs(15);
    wait_until(
        "the step of the lost lease to be stopped",
        stopped_within,
        Some(&a.log),
        || {
            std::fs::read_to_string(format!("/proc/{step}/stat"))
                .map_or(true, |stat| stat.contains(") Z"))
        },
    );
    wait_until("every step process to end", LONG, Some(&a.log), || {
        env.step_processes().is_empty()
    });
    assert_eq!(landed(&env, "TASK-1"), [false, false]);
    assert!(a.stop(Duration::from_secs(10)).success());
}

#[test]
fn a_paused_leader_is_replaced_and_its_late_writes_are_refused() {
    let Some(env) = ready_env("partition") else {
        return;
    };
    env.hold("api", "test");
    let (a, b) = two_replicas(&env);
    let o = env.lockstep(&["deliver", "TASK-1", "--no-wait"]);
    assert!(o.status.success(), "{}", stderr(&o));
    env.wait_at_gate("api", "test");
    std::fs::remove_file(env.root().join("gates/api.test.waiting")).unwrap();

    // The leader stops renewing (as if cut off from the database, or frozen).
    let paused = Pid::from_raw(a.pid());
    kill(paused, Signal::SIGSTOP).unwrap();
    wait_until("replica b to take over", LONG, Some(&b.log), || {
        b.role() == "leader"
    });
    env.wait_at_gate("api", "test");
    // The former leader wakes up: it finds its step killed and the lease gone. Whatever it
    // still tries to write is refused.
    kill(paused, Signal::SIGCONT).unwrap();
    wait_until("replica a to notice", LONG, Some(&a.log), || {
        a.log_text().contains("lost the lease of the queue")
    });
    wait_until("replica a to stand by", LONG, Some(&a.log), || {
        a.role() == "standby"
    });
    let metrics = a.get("/metrics").body;
    assert!(
        metrics.contains("lockstep_leader{ecosystem=\"meta\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lockstep_lease_losses_total 1"),
        "{metrics}"
    );

    env.unhold("api", "test");
    env.open_gate("api", "test");
    wait_until("the delivery to end", LONG, Some(&b.log), || {
        env.state(1) == "delivered"
    });
    assert_eq!(landed(&env, "TASK-1"), [true, true]);
    // The killed step is recorded once, as b's recovery saw it: a's own record of it (the
    // step failed, killed by a signal) was refused.
    let j = journal(&env, 1);
    let finished_api_tests: Vec<_> = j
        .iter()
        .filter(|(phase, repo, event, _)| {
            phase == "test" && repo == "api" && event == "step finished"
        })
        .collect();
    assert_eq!(finished_api_tests.len(), 1, "{j:?}");
    assert_eq!(finished_api_tests[0].3, "passed", "{j:?}");
    assert!(!j.iter().any(|(_, _, event, _)| event == "failed"), "{j:?}");
    assert_eq!(runs_of_step(&env, 1, "api", "deploy"), 1);
    assert!(b.stop(Duration::from_secs(10)).success());
    assert!(a.stop(Duration::from_secs(10)).success());
}

/// A sandbox on PostgreSQL with `tasks` ready, each with a pull request in api (approved,
/// alice may write), and a fake GitHub.
fn github_env(test: &str, tasks: usize) -> Option<(Env, FakeGitHub)> {
    let env = Env::on_postgres(test, &REPOS, "2s")?;
    let gh = FakeGitHub::start(TOKEN);
    let tracker = |status: &str| -> String {
        (1..=tasks)
            .map(|n| {
                format!(
                    "[TASK-{n}]\nstatus = \"{status}\"\ntitle = \"task {n}\"\n\
                     assignee = \"alice\"\n\n"
                )
            })
            .collect()
    };
    // Branches are pushed while their tasks are In Progress, then the tasks are ready.
    env.set_tasks(&tracker("In Progress"));
    for n in 1..=tasks {
        let branch = format!("feature/TASK-{n}-work");
        let heads = push_task_branch(&env, &branch, &["api"], &[]);
        gh.add_pull("acme/api", n as u64, "alice", &branch, &heads[0]);
        gh.review("acme/api", n as u64, "bob", "APPROVED");
        gh.review("acme/api", n as u64, "carol", "APPROVED");
    }
    env.set_tasks(&tracker("For Delivery"));
    gh.permit("acme/api", "alice", "write");
    configure(&env, "0s", &github_section(gh.url()));
    Some((env, gh))
}

#[test]
fn commands_sent_to_both_replicas_are_each_acted_on_once() {
    const TASKS: usize = 4;
    const COMMANDS: usize = 200;
    let Some((env, gh)) = github_env("two replicas, 200 commands", TASKS) else {
        return;
    };
    // Nothing ends during the storm, so each task has one delivery to be asked for.
    env.hold("api", "build");
    let (a, b) = two_replicas(&env);
    let urls = [a.url.clone(), b.url.clone()];
    std::thread::scope(|s| {
        for worker in 0..8 {
            let urls = &urls;
            s.spawn(move || {
                for c in (worker..COMMANDS).step_by(8) {
                    let task = c % TASKS + 1;
                    let body = webhooks::comment("acme/api", task as u64, "alice", "/deliver");
                    let id = format!("d-{c}");
                    // Every command reaches both replicas, as a redelivery would.
                    for url in urls.iter().cycle().skip(c % 2).take(2) {
                        let r = webhooks::post(url, "issue_comment", &id, &body, Some(SECRET));
                        assert_eq!(r.status, 200, "{}", r.body);
                    }
                }
            });
        }
    });
    let deliveries: Vec<serde_json::Value> = {
        let q = env.queue();
        ["running", "queued"]
            .iter()
            .flat_map(|k| q[*k].as_array().unwrap().clone())
            .collect()
    };
    let mut tasks: Vec<&str> = deliveries
        .iter()
        .map(|d| d["task"].as_str().unwrap())
        .collect();
    tasks.sort();
    assert_eq!(
        tasks,
        ["TASK-1", "TASK-2", "TASK-3", "TASK-4"],
        "one delivery per task"
    );
    // One answer per command, whichever replica took it.
    let answers: usize = (1..=TASKS)
        .map(|n| gh.comments("acme/api", n as u64).len())
        .sum();
    assert_eq!(answers, COMMANDS);
    let count = |serve: &ServeProc, result: &str| -> u64 {
        let m = serve.get("/metrics").body;
        let prefix =
            format!("lockstep_webhook_requests_total{{source=\"github\",result=\"{result}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map_or(0, |n| n.parse().unwrap())
    };
    assert_eq!(
        count(&a, "accepted") + count(&b, "accepted"),
        COMMANDS as u64
    );
    assert_eq!(
        count(&a, "replayed") + count(&b, "replayed"),
        COMMANDS as u64
    );
    env.unhold("api", "build");
    env.open_gate("api", "build");
    assert!(a.stop(Duration::from_secs(10)).success());
    assert!(b.stop(Duration::from_secs(10)).success());
}
