//! Autotests: a task branch's head, rebased on its upstream, built and tested on its own when
//! it is pushed, by the worker the push starts; real repositories, hooks and step processes.

use std::path::PathBuf;

use std::time::Duration;

use crate::util::fake_github::FakeGitHub;
use crate::util::serve::{ServeProc, TOKEN, configure, github_section, wait_until};
use crate::util::webhooks;
use crate::util::*;

const REPOS: [&str; 2] = ["api", "web"];

/// Wraps every step: records `<purpose> <step> <repo> <sha>` in `$SANDBOX/purposes.log`, and
/// holds an autotest's step (only an autotest's) while `$SANDBOX/gates/autotest.<step>.hold`
/// exists, announcing its pid in `autotest.<step>.waiting.<autotest id>`.
const PURPOSE: &str = r#"#!/bin/sh
step="$1"
shift
echo "$LOCKSTEP_PURPOSE $step $LOCKSTEP_REPO $LOCKSTEP_SHA" >> "$SANDBOX/purposes.log"
g="$SANDBOX/gates/autotest.$step"
if [ "$LOCKSTEP_PURPOSE" = autotest ] && [ -e "$g.hold" ]; then
  echo $$ > "$g.waiting.tmp.$LOCKSTEP_AUTOTEST" && mv "$g.waiting.tmp.$LOCKSTEP_AUTOTEST" "$g.waiting.$LOCKSTEP_AUTOTEST"
  while [ ! -e "$g.open" ]; do
    [ -d "$SANDBOX/gates" ] || exit 99
    sleep 0.05
  done
fi
exec "$@"
"#;

/// A sandbox testing every push of a task branch (`[autotest] on_push`), each step wrapped
/// by [`PURPOSE`].
fn sandbox() -> Env {
    sandbox_with(true)
}

/// A sandbox whose steps are wrapped by [`PURPOSE`], with an `[autotest]` section.
fn sandbox_with(on_push: bool) -> Env {
    let env = Env::new(&REPOS);
    let wrapper = env.sb.meta.join("steps").join("purpose.sh");
    std::fs::write(&wrapper, PURPOSE).unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let steps = env.sb.meta.join("steps");
    env.set_steps(|s| {
        format!(
            "[{}, \"{s}\", {}, \"{s}\", {}]",
            toml_str(&wrapper),
            toml_str(&steps.join("gate.sh")),
            toml_str(&steps.join(format!("{s}.sh")))
        )
    });
    env.edit_config(|t| format!("{t}\n[autotest]\non_push = {on_push}\n"));
    env.set_status(&[("TASK-1", "In Progress")]);
    env
}

/// Waits until autotest `id` of `task` has ended; returns it.
fn ended(env: &Env, task: &str, id: i64) -> serde_json::Value {
    wait_for(&format!("autotest #{id} to end"), || {
        env.autotests(task).into_iter().find(|a| {
            a["id"] == id && !["queued", "running"].contains(&a["state"].as_str().unwrap_or(""))
        })
    })
}

/// The lines the steps wrote to `purposes.log`.
fn purposes(env: &Env) -> Vec<String> {
    std::fs::read_to_string(env.root().join("purposes.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn gate(env: &Env, what: &str) -> PathBuf {
    env.root().join("gates").join(format!("autotest.{what}"))
}

/// Waits until autotest `id`'s `step` is held at its gate; returns the step's pid.
fn held(env: &Env, step: &str, id: i64) -> i32 {
    let path = gate(env, &format!("{step}.waiting.{id}"));
    wait_for(&format!("autotest #{id} {step} at its gate"), || {
        std::fs::read_to_string(&path).ok()?.trim().parse().ok()
    })
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, r)| !r.starts_with('Z'))
    })
}

/// alice commits `file` on top of `branch` of `repo` (created from master if new) and pushes
/// it; returns the new head.
fn push_on(env: &Env, repo: &str, branch: &str, file: &str) -> String {
    let dir = env.clone_of(repo, "alice");
    let g = git(&dir, "alice");
    let start = if env.rev(repo, &format!("refs/heads/{branch}")).is_some() {
        format!("origin/{branch}")
    } else {
        "origin/master".to_string()
    };
    g.run(&["switch", "--quiet", "-C", branch, &start]).unwrap();
    std::fs::write(dir.join(file), format!("{file}\n")).unwrap();
    g.run(&["add", file]).unwrap();
    g.run(&["commit", "--quiet", "-m", &format!("TASK-1 {file}")])
        .unwrap();
    let p = push(&dir, "alice", &["--set-upstream", branch]).unwrap();
    assert!(p.accepted, "alice's push: {:?}", p.remote);
    g.resolve("HEAD").unwrap().unwrap()
}

fn id_of(a: &serde_json::Value) -> i64 {
    a["id"].as_i64().unwrap()
}

#[test]
fn a_push_builds_and_tests_its_head_rebased_on_upstream_and_merges_nothing() {
    let env = sandbox();
    let head = push_on(&env, "api", "feature/TASK-1-x", "x.txt");
    let before = env.masters();
    let runs = env.autotests("TASK-1");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let a = ended(&env, "TASK-1", id_of(&runs[0]));
    assert_eq!(a["state"], "passed", "{a}");
    assert_eq!(a["repo"], "api");
    assert_eq!(a["branch"], "feature/TASK-1-x");
    assert_eq!(a["sha"], head.as_str());
    assert_eq!(a["rebased_on"], before[0].as_str());
    assert!(a["started_at"].is_i64() && a["finished_at"].is_i64(), "{a}");
    let tested = a["tested_sha"].as_str().unwrap().to_string();
    // Rebased on an upstream that had not moved: the head itself.
    assert_eq!(tested, head);
    let lines = purposes(&env);
    assert_eq!(
        lines,
        [
            format!("autotest build api {tested}"),
            format!("autotest test api {tested}")
        ]
    );
    // Nothing merged, nothing deployed, the task left where it was.
    assert_eq!(env.masters(), before);
    assert_eq!(env.deployed("api"), None);
    assert_eq!(env.task("TASK-1").0, "In Progress");
    let text = env.lockstep(&["autotests", "TASK-1"]);
    assert!(stdout(&text).contains("passed"), "{}", stdout(&text));

    // Upstream moves on; `lockstep autotest` tests the branch again, rebased onto it.
    let master = env.advance_master("api", "other.txt", "other\n");
    let o = env.lockstep(&["autotest", "TASK-1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("autotest #"), "{}", stdout(&o));
    let runs = env.autotests("TASK-1");
    let again = ended(&env, "TASK-1", id_of(&runs[0]));
    assert_eq!(again["state"], "passed", "{again}");
    assert_eq!(again["source"], "cli");
    assert_eq!(again["rebased_on"], master.as_str());
    let tested = again["tested_sha"].as_str().unwrap();
    assert_ne!(tested, head);
    assert!(purposes(&env).contains(&format!("autotest test api {tested}")));
    assert_eq!(env.master("api"), master);
    assert_eq!(env.master("web"), before[1]);
}

#[test]
fn a_failing_test_is_failed_with_its_log_and_a_note_on_the_task() {
    let env = sandbox();
    env.fail_step("web", "test", true);
    push_on(&env, "web", "feature/TASK-1-y", "y.txt");
    let id = id_of(&env.autotests("TASK-1")[0]);
    let a = ended(&env, "TASK-1", id);
    assert_eq!(a["state"], "failed", "{a}");
    assert_eq!(a["step"], "test");
    assert!(
        a["reason"].as_str().unwrap().contains("failing on purpose"),
        "{a}"
    );
    let log = env.lockstep(&["autotests", "--log", &id.to_string()]);
    assert!(
        stdout(&log).contains("failing on purpose"),
        "{}",
        stdout(&log)
    );
    assert!(
        stdout(&log).contains("== build (passed) =="),
        "{}",
        stdout(&log)
    );
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    let note = notes.last().expect("a note on the task");
    assert!(note.contains(&format!("autotest #{id} failed")), "{note}");
    assert!(note.contains("`web`") && note.contains("`test`"), "{note}");
    assert!(note.contains("failing on purpose"), "{note}");
    // Nothing was merged.
    assert!(env.rev("web", "refs/heads/master").is_some());
    assert_eq!(env.deployed("web"), None);
}

#[test]
fn a_newer_push_supersedes_the_running_autotest_and_stops_its_steps() {
    let env = sandbox();
    std::fs::write(gate(&env, "build.hold"), "").unwrap();
    push_on(&env, "api", "feature/TASK-1-z", "one.txt");
    let first = id_of(&env.autotests("TASK-1")[0]);
    let pid = held(&env, "build", first);
    let second_head = push_on(&env, "api", "feature/TASK-1-z", "two.txt");
    let a = ended(&env, "TASK-1", first);
    assert_eq!(a["state"], "superseded", "{a}");
    wait_for("the superseded step to be stopped", || {
        (!alive(pid)).then_some(())
    });
    let runs = env.autotests("TASK-1");
    let second = id_of(&runs[0]);
    assert_ne!(second, first);
    assert_eq!(runs[0]["sha"], second_head.as_str());
    held(&env, "build", second);
    std::fs::write(gate(&env, "open"), "").unwrap();
    std::fs::write(gate(&env, "build.open"), "").unwrap();
    let b = ended(&env, "TASK-1", second);
    assert_eq!(b["state"], "passed", "{b}");
    // The first never got to its test.
    let tests: Vec<String> = purposes(&env)
        .into_iter()
        .filter(|l| l.starts_with("autotest test"))
        .collect();
    assert_eq!(tests.len(), 1, "{tests:?}");
}

#[test]
fn a_delivery_queued_while_an_autotest_runs_starts_at_once_and_lands() {
    let env = sandbox();
    std::fs::write(gate(&env, "test.hold"), "").unwrap();
    push_on(&env, "web", "feature/TASK-1-w", "w.txt");
    let id = id_of(&env.autotests("TASK-1")[0]);
    held(&env, "test", id);
    env.set_status(&[("TASK-1", "For Delivery")]);
    let o = env.lockstep(&["deliver", "TASK-1", "--no-wait"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The worker the push started runs it beside the autotest held at its gate.
    wait_for("the delivery to land", || {
        let q = env.queue();
        q["recent"]
            .as_array()?
            .iter()
            .find(|d| d["task"] == "TASK-1" && d["state"] == "delivered")
            .map(|_| ())
    });
    assert!(
        env.git_in("web", &["log", "--format=%s", "master"])
            .contains("TASK-1 w.txt")
    );
    let a = env.autotests("TASK-1");
    assert_eq!(a[0]["state"], "running", "{a:?}");
    std::fs::write(gate(&env, "test.open"), "").unwrap();
    assert_eq!(ended(&env, "TASK-1", id)["state"], "passed");
    let lines = purposes(&env);
    assert!(
        lines.iter().any(|l| l.starts_with("delivery build web")),
        "{lines:?}"
    );
}

#[test]
fn an_autotest_cut_by_a_killed_worker_is_interrupted_and_run_again() {
    let env = sandbox();
    std::fs::write(gate(&env, "build.hold"), "").unwrap();
    push_on(&env, "api", "feature/TASK-1-k", "k.txt");
    let id = id_of(&env.autotests("TASK-1")[0]);
    let step = held(&env, "build", id);
    let lock = std::fs::read_to_string(env.worker_lock()).unwrap();
    let worker: i32 = lock.trim().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the worker to die", || (!alive(worker)).then_some(()));
    assert_eq!(ended_or_running(&env, id), "running");
    let _ = std::fs::remove_file(gate(&env, "build.hold"));
    let o = env.lockstep(&["work"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = env.autotests("TASK-1");
    let first = runs.iter().find(|a| id_of(a) == id).unwrap();
    assert_eq!(first["state"], "interrupted", "{runs:?}");
    assert_eq!(runs[0]["state"], "passed", "{runs:?}");
    assert_eq!(runs[0]["sha"], first["sha"]);
    assert!(runs.iter().all(|a| a["state"] != "running"), "{runs:?}");
    // What the killed worker left running was stopped, and its workspace removed.
    wait_for("the orphaned step to be stopped", || {
        (!alive(step)).then_some(())
    });
    let left = env.state_dir().join("autotests").join(id.to_string());
    assert!(!left.exists(), "{} is left", left.display());
}

fn ended_or_running(env: &Env, id: i64) -> String {
    env.autotests("TASK-1")
        .into_iter()
        .find(|a| id_of(a) == id)
        .and_then(|a| a["state"].as_str().map(String::from))
        .unwrap_or_default()
}

#[test]
fn tasks_awaiting_autotests_move_on_when_their_branches_pass_and_back_when_one_fails() {
    let env = sandbox_with(false);
    env.edit_config(|t| {
        t.replace(
            "[autotest]\n",
            "[autotest]\nstatuses = [\"Awaiting Autotests\"]\npassed = \"Awaiting Review\"\n",
        )
    });
    configure(&env, "200ms", "");
    let api = push_on(&env, "api", "feature/TASK-1-s", "s.txt");
    let web = push_on(&env, "web", "feature/TASK-1-s", "s.txt");
    assert!(env.autotests("TASK-1").is_empty(), "on_push is off");
    env.set_status(&[("TASK-1", "Awaiting Autotests")]);
    let serve = ServeProc::start(&env);
    wait_until(
        "TASK-1 to pass its autotests",
        Duration::from_secs(60),
        Some(&serve.log),
        || env.task("TASK-1").0 == "Awaiting Review",
    );
    let runs = env.autotests("TASK-1");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs.iter()
            .all(|a| a["state"] == "passed" && a["source"] == "tracker")
    );
    let mut heads: Vec<&str> = runs.iter().map(|a| a["sha"].as_str().unwrap()).collect();
    heads.sort();
    let mut pushed = [api.as_str(), web.as_str()];
    pushed.sort();
    assert_eq!(heads, pushed);
    let note = env.task("TASK-1").1.pop().unwrap();
    assert!(note.contains("autotests passed"), "{note}");

    // A failing test sends the task back, naming the repository, the step and the log.
    env.fail_step("web", "test", true);
    env.set_status(&[("TASK-2", "In Progress")]);
    let dir = env.clone_of("web", "alice");
    let g = git(&dir, "alice");
    g.run(&[
        "switch",
        "--quiet",
        "-C",
        "feature/TASK-2-f",
        "origin/master",
    ])
    .unwrap();
    std::fs::write(dir.join("f.txt"), "f\n").unwrap();
    g.run(&["add", "f.txt"]).unwrap();
    g.run(&["commit", "--quiet", "-m", "TASK-2 f"]).unwrap();
    assert!(
        push(&dir, "alice", &["--set-upstream", "feature/TASK-2-f"])
            .unwrap()
            .accepted
    );
    env.set_status(&[("TASK-2", "Awaiting Autotests")]);
    wait_until(
        "TASK-2 to be sent back",
        Duration::from_secs(60),
        Some(&serve.log),
        || env.task("TASK-2").0 == "In Progress",
    );
    let notes = env.task("TASK-2").1;
    assert_eq!(notes.len(), 1, "one note: {notes:?}");
    let note = &notes[0];
    assert!(note.contains("`web`") && note.contains("`test`"), "{note}");
    assert!(note.contains("failing on purpose"), "{note}");
    assert_eq!(env.autotests("TASK-2")[0]["state"], "failed");
    // The queue page lists them.
    let page = serve.get("/").body;
    let section = &page[page
        .find("<section id=\"autotests\">")
        .expect("an autotests section")..];
    assert!(
        section.contains("feature/TASK-2-f") && section.contains("pill failed"),
        "{section}"
    );
    assert!(
        section.contains("feature/TASK-1-s") && section.contains("pill passed"),
        "{section}"
    );
    serve.stop(Duration::from_secs(30));
}

#[test]
fn the_example_rule_refuses_a_delivery_until_the_heads_passed() {
    let env = sandbox();
    env.add_policy(
        "60-autotests-green.toml",
        include_str!("../examples/policies/autotests-green.toml"),
    );
    std::fs::write(gate(&env, "test.hold"), "").unwrap();
    push_on(&env, "api", "feature/TASK-1-g", "g.txt");
    let id = id_of(&env.autotests("TASK-1")[0]);
    held(&env, "test", id);
    env.set_status(&[("TASK-1", "For Delivery")]);
    let o = env.lockstep(&["deliver", "TASK-1", "--no-wait"]);
    assert!(!o.status.success());
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        said.contains("[autotests-green] `feature/TASK-1-g` of api: its autotest is running"),
        "{said}"
    );
    std::fs::write(gate(&env, "test.open"), "").unwrap();
    assert_eq!(ended(&env, "TASK-1", id)["state"], "passed");
    env.set_status(&[("TASK-1", "For Delivery")]);
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        env.git_in("api", &["log", "--format=%s", "master"])
            .contains("TASK-1 g.txt")
    );
}

#[test]
fn an_autotest_comment_tests_the_pull_requests_head() {
    let env = sandbox_with(false);
    let head = push_on(&env, "api", "feature/TASK-1-pr", "pr.txt");
    let gh = FakeGitHub::start(TOKEN);
    configure(
        &env,
        "0s",
        &format!(
            "[server]\npublic_url = \"http://lockstep.test/\"\n\n{}",
            github_section(gh.url())
        ),
    );
    gh.add_pull("acme/api", 7, "alice", "feature/TASK-1-pr", &head);
    gh.permit("acme/api", "alice", "write");
    let serve = ServeProc::start(&env);
    let comment = webhooks::comment("acme/api", 7, "alice", "/autotest");
    let r = webhooks::post(
        &serve.url,
        "issue_comment",
        "c-1",
        &comment,
        Some(webhooks::SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let replies = gh.comments("acme/api", 7);
    assert!(
        replies
            .iter()
            .any(|c| c.contains("autotest #1 of `feature/TASK-1-pr`")),
        "{replies:?}"
    );
    let a = ended(&env, "TASK-1", 1);
    assert_eq!(
        (a["state"].as_str(), a["source"].as_str()),
        (Some("passed"), Some("github"))
    );
    assert_eq!(a["sha"], head.as_str());
    assert!(
        purposes(&env)
            .iter()
            .any(|l| l.starts_with("autotest test api"))
    );
    // The head's commit status says so, pending then success (set right after the verdict).
    let states = wait_for("the success status", || {
        let states: Vec<String> = gh
            .statuses()
            .into_iter()
            .filter(|st| st.context == "lockstep/autotest" && st.sha == head)
            .map(|st| st.state)
            .collect();
        (states.len() == 2).then_some(states)
    });
    assert_eq!(states, ["pending", "success"]);
    serve.stop(Duration::from_secs(30));
}
