//! Steps on a runner: a real Buildbot (`scripts/buildbot.sh`: a master and two workers on
//! 127.0.0.1) builds and tests the candidates lockstep pushes through the real hooks. Its
//! builders clone `repository`, check out `revision` and run the repository's
//! `ci/<builder>.sh`, which each test commits to its own repositories.
//!
//! Without `BUILDBOT_URL` these tests say they are skipped, or fail when `CI` is set.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

pub(crate) const REPOS: [&str; 2] = ["api", "web"];

/// The Buildbot master's web root, or `None` (after saying the test is skipped).
pub(crate) fn buildbot(test: &str) -> Option<String> {
    match std::env::var("BUILDBOT_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip(
                test,
                "a Buildbot master (BUILDBOT_URL)",
                "run scripts/buildbot.sh start, then \
                 `set -a; . \"$(scripts/buildbot.sh env)\"; set +a`",
            );
            None
        }
    }
}

/// A GET of the master's REST API.
pub(crate) fn api(url: &str, path: &str) -> Value {
    let body = http::get(url, &format!("api/v2/{path}")).body;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The same, `None` when the master, busy with other tests' builds, answers no JSON this
/// time: for a test that polls.
pub(crate) fn try_api(url: &str, path: &str) -> Option<Value> {
    let resp = http::request(url, "GET", &format!("api/v2/{path}"), &[], b"").ok()?;
    serde_json::from_str(&resp.body).ok()
}

/// A sandbox of `api` and `web` whose build and test run on the Buildbot at `url`
/// (`[runners.bb]`, with `runner` added to its table), each repository's `ci/build.sh`,
/// `ci/test.sh` and `ci/deploy.sh` on master. The test fails when a file `BROKEN` is in the candidate; with a
/// file `HOLD` naming a path `P`, it creates `P.running` and waits for `P.open`.
pub(crate) fn sandbox(url: &str, runner: &str) -> Env {
    let env = Env::new(&REPOS);
    let gate = env.sb.meta.join("steps").join("gate.sh");
    let steps = env.sb.meta.join("steps");
    env.set_steps(|s| match s {
        "build" | "test" => format!("{{ runner = \"bb\", builder = \"{s}\" }}"),
        _ => format!(
            "[{}, \"{s}\", {}]",
            toml_str(&gate),
            toml_str(&steps.join(format!("{s}.sh")))
        ),
    });
    env.edit_config(|t| {
        format!("{t}\n[runners.bb]\nkind = \"buildbot\"\nurl = \"{url}\"\n{runner}\n")
    });
    for repo in REPOS {
        let dir = env.clone_of(repo, "release-lead");
        let g = git(&dir, "release-lead");
        g.run(&["switch", "--quiet", "-C", "master", "origin/master"])
            .unwrap();
        std::fs::create_dir_all(dir.join("ci")).unwrap();
        std::fs::write(
            dir.join("ci/build.sh"),
            "echo \"building $LOCKSTEP_REPO for $LOCKSTEP_TASK at $(git rev-parse HEAD)\"\n\
             echo \"for a $LOCKSTEP_PURPOSE in $LOCKSTEP_ENV\"\n",
        )
        .unwrap();
        // A deploy records what it was told in `$SANDBOX/ci-deploys.log`: `SANDBOX` comes
        // with the environment's vars, and without it the deploy fails.
        std::fs::write(
            dir.join("ci/deploy.sh"),
            "echo \"$LOCKSTEP_PURPOSE|$LOCKSTEP_ENV|$LOCKSTEP_REPO|$(git rev-parse HEAD)|\
             $LOCKSTEP_URL|$LOCKSTEP_SHOWROOM|$TARGET\" >> \"${SANDBOX:?not given}/ci-deploys.log\"\n\
             echo \"deployed $LOCKSTEP_REPO to $LOCKSTEP_ENV\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("ci/test.sh"),
            "if [ -e BROKEN ]; then echo \"3 tests failed: $(cat BROKEN)\"; exit 1; fi\n\
             if [ -e HOLD ]; then\n\
             \x20 g=$(cat HOLD); : > \"$g.running\"; i=0\n\
             \x20 while [ ! -e \"$g.open\" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\n\
             fi\n\
             echo \"all tests passed\"\n",
        )
        .unwrap();
        g.run(&["add", "ci"]).unwrap();
        g.run(&[
            "commit",
            "--quiet",
            "-m",
            &format!("{repo}: the CI's scripts"),
        ])
        .unwrap();
        let p = push(&dir, "release-lead", &["master"]).unwrap();
        assert!(p.accepted, "release-lead's push to {repo}: {:?}", p.remote);
    }
    env
}

/// Puts `task` In Progress, pushes a branch for it in each repository (`extra` files for the
/// repository named with them), then moves it to For Delivery.
pub(crate) fn ready(env: &Env, task: &str, extra: &[(&str, &str, &str)]) {
    env.set_status(&[(task, "In Progress")]);
    for repo in REPOS {
        let mut files = vec![(format!("{task}.txt"), format!("{task} in {repo}\n"))];
        for (r, file, text) in extra {
            if *r == repo {
                files.push((file.to_string(), text.to_string()));
            }
        }
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(f, t)| (f.as_str(), t.as_str()))
            .collect();
        env.task_branch_with(repo, &format!("feature/{task}-work"), &files, &[]);
    }
    env.set_status(&[(task, "For Delivery")]);
}

/// The builds a delivery's journal names: `(repo, phase, build page)`.
pub(crate) fn builds(env: &Env, id: i64) -> Vec<(String, String, String)> {
    env.show(id)["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["event"] == "on runner")
        .filter_map(|j| {
            let detail = j["detail"].as_str()?;
            let url = detail.strip_prefix("bb: build http")?;
            Some((
                j["repo"].as_str()?.to_string(),
                j["phase"].as_str()?.to_string(),
                format!("http{url}"),
            ))
        })
        .collect()
}

/// A build from its page (`…#/builders/<id>/builds/<number>`), with its properties.
pub(crate) fn build_of(url: &str, page: &str) -> Value {
    let (_, path) = page.split_once("#/").unwrap();
    api(url, &format!("{path}?property=*"))["builds"][0].clone()
}

pub(crate) fn prop<'a>(build: &'a Value, name: &str) -> &'a str {
    build["properties"][name][0].as_str().unwrap_or_default()
}

/// The candidate branches left in a repository.
pub(crate) fn candidate_branches(env: &Env, repo: &str) -> String {
    env.git_in(
        repo,
        &[
            "for-each-ref",
            "--format=%(refname)",
            "refs/heads/lockstep/",
        ],
    )
}

#[test]
fn a_delivery_built_and_tested_on_buildbot_lands_what_was_built() {
    let Some(url) = buildbot("a_delivery_built_and_tested_on_buildbot_lands_what_was_built") else {
        return;
    };
    let env = sandbox(&url, "");
    ready(&env, "TASK-1", &[]);
    let before = env.masters();

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let after = env.masters();
    assert_ne!(after, before);

    // Every build and test ran as a Buildbot build of the sha that landed.
    let ran = builds(&env, 1);
    assert_eq!(ran.len(), 4, "{ran:?}");
    for (i, repo) in REPOS.iter().enumerate() {
        for phase in ["build", "test"] {
            let (_, _, page) = ran
                .iter()
                .find(|(r, p, _)| r == repo && p == phase)
                .unwrap_or_else(|| panic!("no {phase} build of {repo}: {ran:?}"));
            let b = build_of(&url, page);
            assert_eq!(b["results"], 0, "{b}");
            assert_eq!(prop(&b, "revision"), after[i], "{repo} {phase}: {b}");
            assert_eq!(prop(&b, "got_revision"), after[i], "{repo} {phase}: {b}");
            assert_eq!(prop(&b, "branch"), "lockstep/1");
            assert_eq!(prop(&b, "buildername"), phase);
            assert_eq!(prop(&b, "lockstep_task"), "TASK-1");
            assert_eq!(prop(&b, "lockstep_delivery"), "1");
            assert_eq!(prop(&b, "lockstep_phase"), phase);
            assert_eq!(prop(&b, "lockstep_repo"), *repo);
            assert_eq!(prop(&b, "lockstep_purpose"), "delivery");
            assert_eq!(prop(&b, "lockstep_env"), "production");
        }
        assert_eq!(candidate_branches(&env, repo), "", "{repo}");
    }
    // `show --json` (and `/api/queue`) say which runner each step ran on, and its build.
    let steps = env.show(1)["steps"].clone();
    for s in steps.as_array().unwrap() {
        let build = s["runner_build"].as_str().unwrap_or_default();
        if s["step"] == "build" || s["step"] == "test" {
            assert!(build.starts_with("bb "), "{s}");
        } else {
            assert_eq!(s["runner_build"], Value::Null, "deploy runs here: {s}");
        }
    }
    // The step's log says where it ran.
    let logs = stdout(&env.lockstep(&["logs", "1", "--repo", "api", "--step", "test"]));
    assert!(logs.contains("runs on runner `bb`"), "{logs}");
    assert!(logs.contains(&format!("build {url}#/builders/")), "{logs}");
    // After it, fetched from the master, the end of the build's logs: the builder's output.
    assert!(
        logs.contains(&format!(
            "--- from runner `bb` ({url}): build {url}#/builders/"
        )),
        "{logs}"
    );
    assert!(
        logs.contains("--- step `test` (success) ---\nall tests passed\n"),
        "{logs}"
    );
    let o = env.lockstep(&["logs", "1", "--repo", "web", "--step", "build"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let logs = stdout(&o);
    assert!(
        logs.contains(&format!(
            "--- step `build` (success) ---\nbuilding web for TASK-1 at {}\n\
             for a delivery in production\n",
            after[1]
        )),
        "{logs}"
    );
    // A master out of reach is said; the local log is still shown, and that is no error.
    env.edit_config(|t| t.replace(&format!("url = \"{url}\""), "url = \"http://127.0.0.1:9/\""));
    let o = env.lockstep(&["logs", "1", "--repo", "api", "--step", "test"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let logs = stdout(&o);
    assert!(logs.contains("runs on runner `bb`"), "{logs}");
    assert!(
        logs.contains(
            "--- the build's log on runner `bb` (http://127.0.0.1:9/) is out of reach: cannot \
             reach http://127.0.0.1:9/api/v2/buildrequests/"
        ),
        "{logs}"
    );
}

#[test]
fn a_failing_buildbot_build_fails_the_delivery_naming_the_build_and_its_step() {
    let Some(url) =
        buildbot("a_failing_buildbot_build_fails_the_delivery_naming_the_build_and_its_step")
    else {
        return;
    };
    let env = sandbox(&url, "");
    ready(&env, "TASK-1", &[("web", "BROKEN", "rows mismatch\n")]);
    let before = env.masters();

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(env.masters(), before, "something was merged");
    let ran = builds(&env, 1);
    let (_, _, page) = ran
        .iter()
        .find(|(r, p, _)| r == "web" && p == "test")
        .unwrap_or_else(|| panic!("no test build of web: {ran:?}"));
    assert_eq!(build_of(&url, page)["results"], 2);

    let show = stdout(&env.lockstep(&["show", "1"]));
    assert!(show.contains(page.as_str()), "{show}");
    assert!(show.contains("step `test` failed"), "{show}");
    assert!(show.contains("3 tests failed: rows mismatch"), "{show}");
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    let note = notes.last().unwrap();
    assert!(note.contains(page.as_str()), "{note}");
    assert!(note.contains("nothing was merged"), "{note}");
    for repo in REPOS {
        assert_eq!(candidate_branches(&env, repo), "", "{repo}");
    }
}

#[test]
fn an_unreachable_master_fails_the_step_at_once_naming_the_runner_and_url() {
    // A port nothing listens on: what lockstep meets when the master is stopped.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/");
    let env = sandbox(&url, "");
    ready(&env, "TASK-1", &[]);
    let before = env.masters();

    let started = Instant::now();
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let err = stderr(&o);
    assert!(err.contains(&format!("runner `bb` ({url})")), "{err}");
    assert!(err.contains("could not start"), "{err}");
    assert_eq!(env.masters(), before);
}

#[test]
fn a_build_no_worker_takes_fails_at_start_within_saying_the_ci_never_started_it() {
    let Some(url) =
        buildbot("a_build_no_worker_takes_fails_at_start_within_saying_the_ci_never_started_it")
    else {
        return;
    };
    let env = sandbox(&url, "start_within = \"2s\"\n");
    // The `idle` builder's only worker never connects.
    env.edit_config(|t| t.replace("builder = \"test\"", "builder = \"idle\""));
    ready(&env, "TASK-1", &[]);

    let started = Instant::now();
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let err = stderr(&o);
    assert!(
        err.contains("was never started on runner `bb`: no worker took build request"),
        "{err}"
    );
    // The request was cancelled on the master.
    let request = err
        .split("#/buildrequests/")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap()
        .to_string();
    let r = &api(&url, &format!("buildrequests/{request}"))["buildrequests"][0];
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(r["results"], 6, "{r}");
}

/// The test builds Buildbot ran of this sandbox's `repo` for delivery `id` (found by the
/// repository they cloned, which is in the sandbox's folder).
fn test_builds_of(env: &Env, url: &str, repo: &str, id: i64) -> Vec<Value> {
    let sandbox = env.dir.path().display().to_string();
    api(
        url,
        "builders/test/builds?property=*&order=-buildid&limit=200",
    )["builds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| {
            prop(b, "repository").starts_with(&sandbox)
                && prop(b, "lockstep_repo") == repo
                && prop(b, "lockstep_delivery") == id.to_string()
        })
        .cloned()
        .collect()
}

/// Delivers TASK-1 in the background with api's test build held on Buildbot; returns the
/// worker and the gate's path once the build runs on a worker.
fn deliver_with_a_held_test(env: &Env) -> (std::process::Child, std::path::PathBuf) {
    let gate = env.root().join("gates").join("ci-test");
    ready(
        env,
        "TASK-1",
        &[("api", "HOLD", &gate.display().to_string())],
    );
    let worker = env.spawn("worker", &["deliver", "TASK-1"]);
    let running = gate.with_extension("running");
    wait_for("api's test build to run on a worker", || {
        running.exists().then_some(())
    });
    (worker, gate)
}

#[test]
fn cancelling_a_delivery_stops_its_buildbot_build() {
    let Some(url) = buildbot("cancelling_a_delivery_stops_its_buildbot_build") else {
        return;
    };
    let env = sandbox(&url, "");
    let before = env.masters();
    let (mut worker, _gate) = deliver_with_a_held_test(&env);

    let o = env.lockstep(&["cancel", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let status = worker.wait().unwrap();
    let (out, err) = env.spawned_output("worker");
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert_eq!(env.state(1), "cancelled");
    assert!(
        err.contains("`test` was stopped on runner `bb`: build"),
        "{err}"
    );
    // Buildbot records the build cancelled.
    let ran = builds(&env, 1);
    let (_, _, page) = ran
        .iter()
        .find(|(r, p, _)| r == "api" && p == "test")
        .unwrap_or_else(|| panic!("no test build of api: {ran:?}"));
    let build = wait_for("Buildbot to finish the stopped build", || {
        let b = build_of(&url, page);
        (b["complete"] == true).then_some(b)
    });
    assert_eq!(build["results"], 6, "{build}");
    assert_eq!(env.masters(), before);
    for repo in REPOS {
        assert_eq!(candidate_branches(&env, repo), "", "{repo}");
    }
}

#[test]
fn after_a_crash_recovery_follows_the_same_buildbot_build() {
    let Some(url) = buildbot("after_a_crash_recovery_follows_the_same_buildbot_build") else {
        return;
    };
    let env = sandbox(&url, "");
    let (mut worker, gate) = deliver_with_a_held_test(&env);
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert_eq!(env.state(1), "running");

    let o = env.lockstep(&["recover"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("#1 TASK-1: was interrupted in test; queued again to resume it"),
        "{}",
        stdout(&o)
    );
    // The build lockstep forced before it died still runs on Buildbot; it finishes now.
    std::fs::write(gate.with_extension("open"), "").unwrap();
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(env.state(1), "delivered");

    let landed = env.master("api");
    let tests = test_builds_of(&env, &url, "api", 1);
    assert_eq!(tests.len(), 1, "one test build of api, not two: {tests:#?}");
    assert_eq!(prop(&tests[0], "revision"), landed);
    assert_eq!(tests[0]["results"], 0);
    let journal = env.show(1)["journal"].clone();
    assert!(
        journal
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["event"] == "on runner"
                && j["repo"] == "api"
                && j["detail"]
                    .as_str()
                    .unwrap()
                    .ends_with("(followed again after a restart)")),
        "{journal:#}"
    );
}

/// `[delivery] push_candidates`: a command step that hands the candidate to a CI of its own
/// (a Kubernetes Job, say) finds it pushed as the candidate branch, at the sha it runs for.
#[test]
fn push_candidates_hands_a_command_step_the_candidate_branch() {
    let env = Env::new(&REPOS);
    env.set_delivery("push_candidates", "true");
    let check = "test \"$(git ls-remote origin \"refs/heads/$LOCKSTEP_CANDIDATE_BRANCH\" | cut -f1)\" \
                 = \"$LOCKSTEP_SHA\" && echo \"candidate $LOCKSTEP_CANDIDATE_BRANCH at $LOCKSTEP_SHA\"";
    let gate = env.sb.meta.join("steps").join("gate.sh");
    let steps = env.sb.meta.join("steps");
    env.set_steps(|s| match s {
        "test" => format!("[\"sh\", \"-c\", {}]", toml::Value::String(check.into())),
        _ => format!(
            "[{}, \"{s}\", {}]",
            toml_str(&gate),
            toml_str(&steps.join(format!("{s}.sh")))
        ),
    });
    ready(&env, "TASK-1", &[]);

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    for repo in REPOS {
        let logs = stdout(&env.lockstep(&["logs", "1", "--repo", repo, "--step", "test"]));
        assert!(
            logs.contains(&format!("candidate lockstep/1 at {}", env.master(repo))),
            "{repo}: {logs}"
        );
        assert_eq!(candidate_branches(&env, repo), "", "{repo}");
    }
}

/// A TCP proxy on 127.0.0.1 to the master at `url`, which the test can cut: from then on
/// every open connection is closed and new ones are accepted but never answered, as a master
/// that stopped, or a network that went silent, looks from lockstep.
struct Proxy {
    url: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(url: &str) -> Proxy {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let target = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy {
            url: format!("http://{}/", listener.local_addr().unwrap()),
            cut: Default::default(),
            open: Default::default(),
        };
        let (cut, open) = (proxy.cut.clone(), proxy.open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut.load(Ordering::SeqCst) {
                    // Accepted, never answered.
                    open.lock().unwrap().push(client);
                    continue;
                }
                let Ok(master) = TcpStream::connect(&target) else {
                    continue;
                };
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                {
                    let mut open = open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(master.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), master.try_clone().unwrap());
                pipe(master, client);
            }
        });
        proxy
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn a_master_lost_mid_build_fails_the_step_within_its_bound_naming_the_runner_and_url() {
    let Some(url) = buildbot(
        "a_master_lost_mid_build_fails_the_step_within_its_bound_naming_the_runner_and_url",
    ) else {
        return;
    };
    // lockstep reaches the shared master through a proxy of this test's own, which the test
    // cuts while api's test build runs: the master itself is not disturbed.
    let proxy = Proxy::start(&url);
    let env = sandbox(&proxy.url, "");
    let before = env.masters();
    let (mut worker, gate) = deliver_with_a_held_test(&env);
    proxy.cut();
    let cut_at = Instant::now();
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        // The bound: 30 s without an answer, plus one request's own 10 s timeout.
        if cut_at.elapsed() > Duration::from_secs(55) {
            let _ = worker.kill();
            std::fs::write(gate.with_extension("open"), "").unwrap();
            panic!("the delivery still waits for a master lost 55 s ago");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = cut_at.elapsed();
    // Let the held build end on the master.
    std::fs::write(gate.with_extension("open"), "").unwrap();
    let (out, err) = env.spawned_output("worker");
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(took >= Duration::from_secs(25), "{took:?}: {err}");
    assert!(
        err.contains(&format!(
            "`test` failed on runner `bb`: lost runner `bb` ({}) while following build request",
            proxy.url
        )),
        "{err}"
    );
    assert_eq!(env.masters(), before, "nothing merged");
}
