//! Runners beyond deliveries' build and test: autotests, showrooms and every stage of a
//! staged deploy run their steps on the real Buildbot of `scripts/buildbot.sh`, which is
//! told why (`lockstep_purpose`), where (`lockstep_env`) and that environment's vars
//! (`lockstep_vars`). Its builders run the repository's `ci/<builder>.sh` (see
//! `runners::sandbox`); `ci/deploy.sh` writes what it was told to `$SANDBOX/ci-deploys.log`.
//!
//! Without `BUILDBOT_URL` these tests say they are skipped, or fail when `CI` is set.

use serde_json::Value;

use crate::runners::{REPOS, buildbot, candidate_branches, prop, ready, sandbox, try_api};
use crate::util::*;

/// Runs `step` of every repository on the Buildbot builder of its name.
fn on_buildbot(env: &Env, step: &str) {
    env.edit_config(|t| {
        t.lines()
            .map(|l| {
                if l.starts_with(&format!("{step} = [")) {
                    format!("{step} = {{ runner = \"bb\", builder = \"{step}\" }}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect()
    });
}

/// The builds Buildbot ran of this sandbox's repositories for `purpose`, oldest first.
fn builds_for(env: &Env, url: &str, purpose: &str) -> Vec<Value> {
    let sandbox = env.dir.path().display().to_string();
    // The newest builds, with the properties these tests read: this test's are among them.
    let path = format!(
        "builds?order=-buildid&limit=200{}",
        [
            "branch",
            "buildername",
            "got_revision",
            "repository",
            "lockstep_delivery",
            "lockstep_env",
            "lockstep_phase",
            "lockstep_purpose",
            "lockstep_repo",
            "lockstep_task",
            "lockstep_vars",
        ]
        .map(|p| format!("&property={p}"))
        .concat()
    );
    // A master busy with the other tests' builds may not answer at once: asked again.
    let Some(listed) = (0..5).find_map(|i| {
        std::thread::sleep(std::time::Duration::from_millis(500 * i));
        try_api(url, &path)
    }) else {
        return Vec::new();
    };
    let mut builds: Vec<Value> = listed["builds"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|b| {
            prop(b, "repository").starts_with(&sandbox) && prop(b, "lockstep_purpose") == purpose
        })
        .cloned()
        .collect();
    builds.reverse();
    builds
}

/// The lines `ci/deploy.sh` wrote.
fn ci_deploys(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("ci-deploys.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// Polls `f` until it holds, at a pace the shared Buildbot master bears, for as long as
/// builds of the tests running beside this one may keep its two workers busy.
fn wait_on_ci<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Waits until the autotest of `repo` of `task` has ended; returns it.
fn ended(env: &Env, task: &str, repo: &str) -> Value {
    wait_on_ci(&format!("the autotest of {repo} to end"), || {
        env.autotests(task).into_iter().find(|a| {
            a["repo"] == repo && !["queued", "running"].contains(&a["state"].as_str().unwrap_or(""))
        })
    })
}

#[test]
fn autotests_build_and_test_on_buildbot_and_a_failure_there_fails_them_with_the_builds_reason() {
    let Some(url) = buildbot(
        "autotests_build_and_test_on_buildbot_and_a_failure_there_fails_them_with_the_builds_reason",
    ) else {
        return;
    };
    let env = sandbox(&url, "");
    env.edit_config(|t| format!("{t}\n[autotest]\non_push = true\n"));
    env.set_status(&[("TASK-1", "In Progress")]);
    let before = env.masters();

    // A push of api's branch: its head built and tested on Buildbot, and passed.
    let head = env.task_branch("api", "feature/TASK-1-x", "x.txt", "x\n");
    let a = ended(&env, "TASK-1", "api");
    assert_eq!(a["state"], "passed", "{a}");
    let id = a["id"].as_i64().unwrap();
    let tested = a["tested_sha"].as_str().unwrap();
    assert_eq!(tested, head, "nothing was ahead on master");
    let ran = builds_for(&env, &url, "autotest");
    let names: Vec<&str> = ran.iter().map(|b| prop(b, "buildername")).collect();
    assert_eq!(names, ["build", "test"], "{ran:#?}");
    for b in &ran {
        assert_eq!(b["results"], 0, "{b}");
        assert_eq!(prop(b, "got_revision"), tested, "{b}");
        assert_eq!(prop(b, "branch"), format!("lockstep/autotest-{id}"));
        assert_eq!(prop(b, "lockstep_task"), "TASK-1");
        assert_eq!(prop(b, "lockstep_repo"), "api");
        assert_eq!(prop(b, "lockstep_delivery"), "");
        assert_eq!(prop(b, "lockstep_env"), "production");
        // The delivery environment's vars, as the autotest's local steps get them.
        let vars: Value = serde_json::from_str(prop(b, "lockstep_vars")).unwrap();
        assert_eq!(
            vars["SANDBOX"].as_str().map(std::path::Path::new),
            Some(env.root().as_path()),
            "{vars}"
        );
    }
    let log = stdout(&env.lockstep(&["autotests", "--log", &id.to_string()]));
    assert!(log.contains("runs on runner `bb`"), "{log}");
    assert_eq!(
        candidate_branches(&env, "api"),
        "",
        "the candidate is deleted"
    );
    assert_eq!(env.masters(), before, "nothing merged");

    // web's branch breaks its tests: failed, with the build's page and its last line.
    env.task_branch_with(
        "web",
        "feature/TASK-1-y",
        &[("y.txt", "y\n"), ("BROKEN", "rows mismatch\n")],
        &[],
    );
    let a = ended(&env, "TASK-1", "web");
    assert_eq!(a["state"], "failed", "{a}");
    assert_eq!(a["step"], "test");
    let reason = a["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "`test` failed on runner `bb`: build {url}#/builders/"
        )),
        "{reason}"
    );
    assert!(
        reason.ends_with("ended in failure, step `test` failed: 3 tests failed: rows mismatch"),
        "{reason}"
    );
    let note = env.task("TASK-1").1.last().cloned().unwrap_or_default();
    assert!(note.contains(reason), "{note}");
    // `logs --autotest` follows its local log with the end of the failed build's, fetched
    // from the master.
    let failed = a["id"].as_i64().unwrap().to_string();
    let o = env.lockstep(&["logs", "--autotest", &failed, "--step", "test"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let logs = stdout(&o);
    assert!(
        logs.contains("--- from runner `bb` (") && logs.contains("rows mismatch"),
        "{logs}"
    );
    assert_eq!(candidate_branches(&env, "web"), "");
    assert_eq!(env.masters(), before, "nothing merged");
}

#[test]
fn a_restart_stops_the_buildbot_build_a_killed_worker_left_and_runs_the_autotest_again() {
    let Some(url) = buildbot(
        "a_restart_stops_the_buildbot_build_a_killed_worker_left_and_runs_the_autotest_again",
    ) else {
        return;
    };
    let env = sandbox(&url, "");
    env.edit_config(|t| format!("{t}\n[autotest]\non_push = true\n"));
    env.set_status(&[("TASK-1", "In Progress")]);
    // The head's test build holds at a gate of this test's own.
    let gate = env.root().join("gates").join("ci-test");
    env.task_branch_with(
        "api",
        "feature/TASK-1-k",
        &[("k.txt", "k\n"), ("HOLD", &gate.display().to_string())],
        &[],
    );
    let first = wait_on_ci("the autotest", || {
        env.autotests("TASK-1")
            .first()
            .and_then(|a| a["id"].as_i64())
    });
    wait_on_ci("its test build to run on a worker", || {
        gate.with_extension("running").exists().then_some(())
    });
    // The worker that follows the build is killed outright.
    let lock = std::fs::read_to_string(env.worker_lock()).unwrap();
    let worker = nix::unistd::Pid::from_raw(lock.trim().parse().unwrap());
    nix::sys::signal::kill(worker, nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_on_ci("the worker to die", || {
        std::fs::read_to_string(format!("/proc/{worker}/stat"))
            .map_or(true, |s| s.contains(") Z"))
            .then_some(())
    });

    // The next worker stops the build it left, and runs the autotest again.
    let mut next = env.spawn("worker", &["work"]);
    let stopped = wait_on_ci("the left build to be stopped", || {
        builds_for(&env, &url, "autotest").into_iter().find(|b| {
            prop(b, "buildername") == "test"
                && prop(b, "branch") == format!("lockstep/autotest-{first}")
                && b["complete"] == true
        })
    });
    assert_eq!(stopped["results"], 6, "cancelled: {stopped}");
    std::fs::write(gate.with_extension("open"), "").unwrap();
    let again = wait_on_ci("the autotest asked for again to end", || {
        env.autotests("TASK-1").into_iter().find(|a| {
            a["id"] != first && !["queued", "running"].contains(&a["state"].as_str().unwrap_or(""))
        })
    });
    assert_eq!(again["state"], "passed", "{again}");
    let runs = env.autotests("TASK-1");
    let cut = runs.iter().find(|a| a["id"] == first).unwrap();
    assert_eq!(cut["state"], "interrupted", "{runs:?}");
    assert!(next.wait().unwrap().success());
    assert_eq!(candidate_branches(&env, "api"), "");
}

#[test]
fn a_showroom_deployed_on_buildbot_is_up_and_its_builds_were_told_they_are_for_the_showroom() {
    let Some(url) = buildbot(
        "a_showroom_deployed_on_buildbot_is_up_and_its_builds_were_told_they_are_for_the_showroom",
    ) else {
        return;
    };
    let env = sandbox(&url, "");
    on_buildbot(&env, "deploy");
    let room = env.root().join("showroom");
    std::fs::create_dir_all(&room).unwrap();
    env.edit_config(|t| {
        format!(
            "{t}\n[environments.showroom]\nurl = \"https://{{task}}.show.example.com\"\n\
             vars = {{ SANDBOX = {}, TARGET = \"showroom-cluster\" }}\n",
            toml_str(&room)
        )
    });
    env.set_status(&[("TASK-1", "In Progress")]);
    let heads: Vec<String> = REPOS
        .iter()
        .map(|repo| env.task_branch(repo, "feature/TASK-1-work", "t.txt", repo))
        .collect();
    let before = env.masters();

    let o = env.lockstep(&["showroom", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let show = "https://task-1.show.example.com";
    assert!(
        stdout(&o).contains(&format!("the showroom of TASK-1 is up: {show}")),
        "{}",
        stdout(&o)
    );
    // Each repository's deploy ran on Buildbot, at its branch's head, with the showroom's
    // variables, its URL and label among them.
    assert_eq!(
        ci_deploys(&room),
        REPOS
            .iter()
            .zip(&heads)
            .map(|(repo, sha)| format!(
                "showroom|showroom|{repo}|{sha}|{show}|task-1|showroom-cluster"
            ))
            .collect::<Vec<_>>()
    );
    let ran = builds_for(&env, &url, "showroom");
    let names: Vec<(&str, &str)> = ran
        .iter()
        .map(|b| (prop(b, "lockstep_repo"), prop(b, "buildername")))
        .collect();
    assert_eq!(
        names,
        [
            ("api", "build"),
            ("api", "deploy"),
            ("web", "build"),
            ("web", "deploy")
        ],
        "{ran:#?}"
    );
    for b in &ran {
        assert_eq!(b["results"], 0, "{b}");
        assert_eq!(prop(b, "branch"), "lockstep/showroom-task-1");
        assert_eq!(prop(b, "lockstep_env"), "showroom");
        assert_eq!(prop(b, "lockstep_task"), "TASK-1");
    }
    let rooms: Value =
        serde_json::from_slice(&env.lockstep(&["showrooms", "--json"]).stdout).unwrap();
    assert_eq!(rooms[0]["state"], "up", "{rooms}");
    for repo in REPOS {
        assert_eq!(candidate_branches(&env, repo), "", "{repo}");
    }
    assert_eq!(env.masters(), before, "nothing merged");
}

#[test]
fn a_two_stage_delivery_deploys_on_buildbot_to_staging_then_production() {
    let Some(url) = buildbot("a_two_stage_delivery_deploys_on_buildbot_to_staging_then_production")
    else {
        return;
    };
    let env = sandbox(&url, "");
    on_buildbot(&env, "deploy");
    let sandbox_dir = env.root();
    let at = toml_str(&sandbox_dir);
    env.edit_config(|t| {
        t.lines()
            .map(|l| {
                if l.starts_with("vars = { SANDBOX") {
                    format!(
                        "vars = {{ SANDBOX = {at}, TARGET = \"prod-cluster\" }}\n\n\
                         [environments.staging]\n\
                         vars = {{ SANDBOX = {at}, TARGET = \"staging-cluster\" }}\n"
                    )
                } else {
                    format!("{l}\n")
                }
            })
            .collect()
    });
    env.set_delivery("stages", r#"["staging", "production"]"#);
    ready(&env, "TASK-1", &[]);

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let landed = env.masters();
    // Every repository in staging, then every one in production, each told its stage and
    // that stage's vars.
    let mut want = Vec::new();
    for (stage, target) in [
        ("staging", "staging-cluster"),
        ("production", "prod-cluster"),
    ] {
        for (repo, sha) in REPOS.iter().zip(&landed) {
            want.push(format!("delivery|{stage}|{repo}|{sha}|||{target}"));
        }
    }
    assert_eq!(ci_deploys(&sandbox_dir), want);
    let deploys: Vec<(String, String)> = builds_for(&env, &url, "delivery")
        .iter()
        .filter(|b| prop(b, "buildername") == "deploy")
        .map(|b| {
            assert_eq!(b["results"], 0, "{b}");
            assert_eq!(prop(b, "lockstep_delivery"), "1");
            assert_eq!(prop(b, "lockstep_phase"), "deploy");
            (
                prop(b, "lockstep_env").to_string(),
                prop(b, "lockstep_repo").to_string(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = deploys
        .iter()
        .map(|(s, r)| (s.as_str(), r.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("staging", "api"),
            ("staging", "web"),
            ("production", "api"),
            ("production", "web")
        ]
    );
    // Each stage's step has a log of its own, saying where it ran, and its build's output.
    let logs = stdout(&env.lockstep(&["logs", "1", "--repo", "web", "--step", "deploy"]));
    for stage in ["staging", "production"] {
        assert!(
            logs.contains(&format!("==> web deploy {stage} (passed")),
            "{logs}"
        );
        assert!(logs.contains(&format!("(delivery in `{stage}`)")), "{logs}");
        assert!(
            logs.contains(&format!(
                "--- step `deploy` (success) ---\ndeployed web to {stage}\n"
            )),
            "{logs}"
        );
    }
    for repo in REPOS {
        assert_eq!(candidate_branches(&env, repo), "", "{repo}");
    }
}

#[test]
fn a_newer_push_stops_the_superseded_autotests_build_on_buildbot() {
    let Some(url) = buildbot("a_newer_push_stops_the_superseded_autotests_build_on_buildbot")
    else {
        return;
    };
    let env = sandbox(&url, "");
    env.edit_config(|t| format!("{t}\n[autotest]\non_push = true\n"));
    env.set_status(&[("TASK-1", "In Progress")]);
    // The first head's test build holds at a gate of this test's own.
    let gate = env.root().join("gates").join("ci-test");
    let branch = "feature/TASK-1-z";
    env.task_branch_with(
        "api",
        branch,
        &[("z.txt", "z\n"), ("HOLD", &gate.display().to_string())],
        &[],
    );
    let first = wait_on_ci("the first autotest", || {
        env.autotests("TASK-1").first().map(|a| a["id"].as_i64())
    })
    .unwrap();
    let running = gate.with_extension("running");
    wait_on_ci("its test build to run on a worker", || {
        running.exists().then_some(())
    });

    // A newer push of the branch (without the hold) supersedes it.
    let dir = env.clone_of("api", "alice");
    let g = git(&dir, "alice");
    g.run(&[
        "switch",
        "--quiet",
        "-C",
        branch,
        &format!("origin/{branch}"),
    ])
    .unwrap();
    g.run(&["rm", "--quiet", "HOLD"]).unwrap();
    g.run(&["commit", "--quiet", "-m", "TASK-1 no hold"])
        .unwrap();
    let p = push(&dir, "alice", &[branch]).unwrap();
    assert!(p.accepted, "alice's push: {:?}", p.remote);

    let a = wait_on_ci("the first autotest to end", || {
        env.autotests("TASK-1")
            .into_iter()
            .find(|a| a["id"] == first && a["state"] != "running")
    });
    assert_eq!(a["state"], "superseded", "{a}");
    // Its build was stopped on Buildbot, which records it cancelled.
    let stopped = wait_on_ci("Buildbot to finish the stopped build", || {
        builds_for(&env, &url, "autotest").into_iter().find(|b| {
            prop(b, "buildername") == "test"
                && prop(b, "branch") == format!("lockstep/autotest-{first}")
                && b["complete"] == true
        })
    });
    std::fs::write(gate.with_extension("open"), "").unwrap();
    assert_eq!(stopped["results"], 6, "{stopped}");
    let b = wait_on_ci("the newer autotest to end", || {
        env.autotests("TASK-1").into_iter().find(|a| {
            a["id"] != first && !["queued", "running"].contains(&a["state"].as_str().unwrap_or(""))
        })
    });
    assert_eq!(b["state"], "passed", "{b}");
    assert_eq!(candidate_branches(&env, "api"), "");
}
