//! The container image (Containerfile), built around the `lockstep` under test FROM the
//! local base `scripts/container.sh` makes, and run with podman as a user would run it.

use std::time::{Duration, Instant};

use crate::util::container::{Container, image, podman, podman_output, root};
use crate::util::http;
use crate::util::serve::{configure, push_task_branch, wait_until};
use crate::util::{Env, wait_for};

/// The image's user: not root, and the owner of /var/lib/lockstep.
const UID: &str = "10001";

#[test]
fn the_image_runs_the_demo_and_checks_its_shipped_config() {
    let Some(image) = image("the_image_runs_the_demo_and_checks_its_shipped_config") else {
        return;
    };
    let demo = podman_output(&["run", "--rm", "--network", "none", image, "demo"]);
    let said = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    assert!(said.contains("rolled back"), "{said}");

    // The config in the image is the one deploy/ ships (and docs/serve.md shows), and it
    // loads with the policies beside it.
    let shipped = std::fs::read_to_string(root().join("deploy/lockstep.toml")).unwrap();
    let inside = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "cat",
        image,
        "/etc/lockstep/lockstep.toml",
    ]);
    assert_eq!(inside, shipped);
    let check = podman(&["run", "--rm", "--network", "none", image, "policy", "check"]);
    assert!(check.contains("ok: "), "{check}");
}

#[test]
fn the_image_serves_healthz_as_a_non_root_user() {
    let Some(image) = image("the_image_serves_healthz_as_a_non_root_user") else {
        return;
    };
    // As a user starts it: its own config, the default command, a published port.
    let c = Container::start(&["-p", "127.0.0.1::8080", image]);
    let url = c.url();
    // Up first, then the leader once its worker has taken the queue's lease.
    let health = wait_for("/healthz in the container to say it leads", || {
        http::request(&url, "GET", "/healthz", &[], b"")
            .ok()
            .filter(|r| r.status == 200 && r.body.contains("role: leader"))
    });
    assert_eq!(health.body, "ok\nrole: leader\nstore: sqlite\n");
    // The image's HEALTHCHECK (kept by --format docker) passes too.
    podman(&["healthcheck", "run", &c.0]);

    // Every process of the container runs as the image's user (uid on the host, too).
    let top = podman(&["top", &c.0, "huser", "args"]);
    let rows: Vec<&str> = top.lines().skip(1).collect();
    assert!(rows.iter().any(|r| r.contains("lockstep serve")), "{top}");
    for row in &rows {
        assert_eq!(row.split_whitespace().next(), Some(UID), "{top}");
    }

    // Idle, it stops at once on SIGTERM, and cleanly.
    let started = Instant::now();
    podman(&["stop", "-t", "60", &c.0]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(c.inspect("{{.State.ExitCode}}"), "0", "{}", c.logs());
    assert!(c.logs().contains("lockstep serve stopped"), "{}", c.logs());
}

/// SIGTERM reaches lockstep through the image's init; a delivery in flight gets the
/// configured `shutdown_grace`, is then stopped where it is (journaled, for the next start
/// to recover), and the container exits 0 well before podman's own deadline.
#[test]
fn sigterm_gives_a_running_delivery_its_grace_then_exits_0() {
    let Some(image) = image("sigterm_gives_a_running_delivery_its_grace_then_exits_0") else {
        return;
    };
    let env = Env::new(&["api"]);
    push_task_branch(&env, "feature/TASK-1-login", &["api"], &[]);
    env.set_tasks(
        "[TASK-1]\nstatus = \"For Delivery\"\ntitle = \"Log in\"\nassignee = \"alice\"\n",
    );
    configure(&env, "0s", "[server]\nshutdown_grace = \"3s\"\n");
    env.hold("api", "test");
    // The sandbox is mounted at the same path, so its config's paths hold; the image's user
    // must own it to run the queue there.
    let dir = env.dir.path().to_str().unwrap().to_string();
    let chown = std::process::Command::new("chown")
        .args(["-R", &format!("{UID}:{UID}"), &dir])
        .status()
        .unwrap();
    assert!(chown.success(), "cannot hand the sandbox to uid {UID}");
    let config = env.config().to_str().unwrap().to_string();
    let c = Container::start(&[
        "-p",
        "127.0.0.1::8080",
        "-v",
        &format!("{dir}:{dir}"),
        image,
        "--config",
        &config,
        "serve",
        "--listen",
        "0.0.0.0:8080",
    ]);
    let url = c.url();
    wait_for("/healthz in the container", || {
        http::request(&url, "GET", "/healthz", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    });
    let queued = podman(&[
        "exec",
        &c.0,
        "lockstep",
        "--config",
        &config,
        "deliver",
        "TASK-1",
        "--no-wait",
    ]);
    assert!(queued.contains("#1"), "{queued}");
    env.wait_at_gate("api", "test");
    wait_until(
        "the test step in the queue",
        Duration::from_secs(30),
        None,
        || {
            http::get(&url, "/api/queue")
                .body
                .contains("\"step\":\"test\"")
        },
    );

    let started = Instant::now();
    podman(&["stop", "-t", "60", &c.0]);
    let took = started.elapsed();
    let logs = c.logs();
    assert_eq!(c.inspect("{{.State.ExitCode}}"), "0", "{logs}");
    assert!(
        took >= Duration::from_secs(3),
        "stopped before the grace: {took:?}\n{logs}"
    );
    assert!(
        took < Duration::from_secs(30),
        "not stopped by lockstep: {took:?}\n{logs}"
    );
    assert!(logs.contains("recovered at the next start"), "{logs}");
    assert_eq!(env.state(1), "running", "{logs}");
}
