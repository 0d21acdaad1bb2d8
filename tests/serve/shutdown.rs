//! Issue 22: SIGTERM of `lockstep serve` with a pipeline (`[delivery] window` > 1). Every
//! running step, the head's and each candidate's, gets `[server] shutdown_grace` to finish;
//! what is left past it is stopped, and the next start recovers it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::util::pipeline::queue_all;

/// A build that says when it starts, takes four seconds, and says when it is done:
/// `$SANDBOX/marks/<delivery>.<repo>.started` and `.built`.
const SLOW_BUILD: &str = r#"#!/bin/sh
m="$SANDBOX/marks/$LOCKSTEP_DELIVERY.$LOCKSTEP_REPO"
: > "$m.started"
sleep 4
echo done > "$m.built"
exec "$@"
"#;

/// The head and two candidates: TASK-1 in api, TASK-2 in web, TASK-3 in api.
const TASKS: [(&str, &[&str]); 3] = [
    ("TASK-1", &["api"]),
    ("TASK-2", &["web"]),
    ("TASK-3", &["api"]),
];

/// A sandbox with `window = 4`, slow builds, the grace given, and the three tasks queued.
fn pipeline(grace: &str) -> (Env, Vec<i64>) {
    let env = Env::new(&["api", "web"]);
    env.set_delivery("window", "4");
    let steps = env.sb.meta.join("steps");
    let build = steps.join("slow-build.sh");
    std::fs::write(&build, SLOW_BUILD).unwrap();
    std::fs::set_permissions(&build, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(env.root().join("marks")).unwrap();
    let gate = steps.join("gate.sh");
    env.set_steps(|s| {
        let real = toml_str(&steps.join(format!("{s}.sh")));
        if s == "build" {
            format!("[{}, {real}]", toml_str(&build))
        } else {
            format!("[{}, \"{s}\", {real}]", toml_str(&gate))
        }
    });
    configure(
        &env,
        "0s",
        &format!("[server]\nshutdown_grace = \"{grace}\"\n"),
    );
    let ids = queue_all(&env, &TASKS, None);
    (env, ids)
}

fn mark(env: &Env, id: i64, repo: &str, what: &str) -> PathBuf {
    env.root().join("marks").join(format!("{id}.{repo}.{what}"))
}

/// Whether the three builds have started.
fn all_started(env: &Env, ids: &[i64]) -> bool {
    ids.iter()
        .zip(TASKS)
        .all(|(id, (_, repos))| mark(env, *id, repos[0], "started").exists())
}

/// Starts the server and waits until the three builds run at once.
fn building(env: &Env, ids: &[i64]) -> ServeProc {
    let serve = ServeProc::start(env);
    wait_until("three builds running", LONG, Some(&serve.log), || {
        all_started(env, ids)
    });
    serve
}

#[test]
fn issue22_sigterm_gives_the_candidates_builds_their_grace() {
    let (env, ids) = pipeline("30s");
    let serve = building(&env, &ids);
    let log = serve.log.clone();
    let started = Instant::now();
    let status = serve.stop(Duration::from_secs(40));
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    // Every build finished before the server exited: the head's and both candidates'.
    for (id, (_, repos)) in ids.iter().zip(TASKS) {
        assert!(
            mark(&env, *id, repos[0], "built").exists(),
            "#{id}'s build was cut short after {:?}\n{text}",
            started.elapsed()
        );
    }
    assert!(
        text.contains("shutting down: the steps running get 30s to finish"),
        "{text}"
    );
    assert!(!text.contains("stopped past the shutdown grace"), "{text}");
    assert!(
        env.step_processes().is_empty(),
        "{:?}",
        env.step_processes()
    );
}

#[test]
fn issue22_sigterm_past_a_short_grace_stops_the_builds_and_the_next_start_recovers_them() {
    let (env, ids) = pipeline("300ms");
    let serve = building(&env, &ids);
    let log = serve.log.clone();
    let started = Instant::now();
    let status = serve.stop(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    for id in &ids {
        assert!(
            text.contains(&format!(
                "#{id} TASK-{id}: stopped past the shutdown grace; it is recovered at the next start"
            )),
            "#{id}\n{text}"
        );
    }
    // Stopped, not left running: once no step process is left, no build got to its end.
    wait_for("the stopped steps to be gone", || {
        env.step_processes().is_empty().then_some(())
    });
    for (id, (_, repos)) in ids.iter().zip(TASKS) {
        assert!(!mark(&env, *id, repos[0], "built").exists(), "#{id}");
    }

    // The next start recovers them: the head resumes its build, the candidates start over.
    let serve = ServeProc::start(&env);
    wait_until("the three delivered", LONG, Some(&serve.log), || {
        let all = deliveries(&env);
        all.len() == 3 && all.iter().all(|d| d["state"] == "delivered")
    });
    let text = serve.log_text();
    assert!(
        text.contains("recovered: #1 TASK-1: was interrupted in build; queued again to resume it"),
        "{text}"
    );
    for id in &ids[1..] {
        assert!(
            text.contains(&format!(
                "recovered: #{id} TASK-{id}: was a candidate in build; queued again, from its rebase"
            )),
            "{text}"
        );
    }
    for (id, (_, repos)) in ids.iter().zip(TASKS) {
        assert!(mark(&env, *id, repos[0], "built").exists(), "#{id}");
    }
    assert!(serve.stop(Duration::from_secs(10)).success());
}

#[test]
fn issue22_sigterm_of_lockstep_work_gives_the_builds_their_grace() {
    let (env, ids) = pipeline("30s");
    let mut worker = env.spawn("worker", &["work"]);
    wait_for("three builds running", || {
        all_started(&env, &ids).then_some(())
    });
    let pid = nix::unistd::Pid::from_raw(worker.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = wait_for("the worker to exit", || worker.try_wait().unwrap());
    let out = std::fs::read_to_string(env.dir.path().join("worker.out")).unwrap();
    assert!(status.success(), "{status:?}\n{out}");
    for (id, (_, repos)) in ids.iter().zip(TASKS) {
        assert!(
            mark(&env, *id, repos[0], "built").exists(),
            "#{id}'s build was cut short\n{out}"
        );
    }
    assert!(
        out.contains("stopped; a delivery left unfinished is recovered by the next worker"),
        "{out}"
    );
}
