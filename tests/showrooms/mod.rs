//! Showrooms: `lockstep showroom` against real repositories guarded by the real hooks, with
//! real deploy and teardown steps that write what they were given under the sandbox.
//!
//! `life`: a showroom follows its task (returned, closed, a failed delivery) and `/showroom`
//! on a pull request.

mod life;

use crate::util::*;

const REPOS: [&str; 2] = ["api", "web"];

/// The deploy step: every variable a showroom's step gets, one line per run, in
/// `$SANDBOX/deploys.log`; then the sandbox's own deploy.
const DEPLOY: &str = r#"#!/bin/sh
set -e
echo "$LOCKSTEP_ENV|$LOCKSTEP_REPO|$LOCKSTEP_SHA|$LOCKSTEP_URL|$LOCKSTEP_SHOWROOM|$LOCKSTEP_PURPOSE|$LOCKSTEP_TASK" >> "$SANDBOX/deploys.log"
mkdir -p "$SANDBOX/deployed"
echo "$LOCKSTEP_SHA" > "$SANDBOX/deployed/$LOCKSTEP_REPO"
"#;

/// The teardown step: what it removed, in `$SANDBOX/teardowns.log`.
const TEARDOWN: &str = r#"#!/bin/sh
echo "$LOCKSTEP_ENV|$LOCKSTEP_REPO|$LOCKSTEP_URL|$LOCKSTEP_SHOWROOM" >> "$SANDBOX/teardowns.log"
"#;

fn script(env: &Env, name: &str, text: &str) -> std::path::PathBuf {
    let path = env.sb.meta.join("steps").join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

/// A sandbox whose repositories deploy with [`DEPLOY`] and tear down with [`TEARDOWN`], and a
/// showroom environment writing under `$SANDBOX/showroom` (`extra` keys added to it).
fn sandbox(extra: &str) -> Env {
    let env = Env::new(&REPOS);
    let deploy = script(&env, "deploy.sh", DEPLOY);
    let teardown = script(&env, "teardown.sh", TEARDOWN);
    let room = env.root().join("showroom");
    std::fs::create_dir_all(&room).unwrap();
    env.edit_config(|text| {
        let mut out = String::new();
        for line in text.lines() {
            out.push_str(line);
            out.push('\n');
            if line.starts_with("rollback = [") {
                out.push_str(&format!("teardown = [{}]\n", toml_str(&teardown)));
            }
        }
        format!(
            "{out}\n[environments.showroom]\nurl = \"https://{{task}}.show.example.com\"\n\
             vars = {{ SANDBOX = {} }}\n{extra}\n",
            toml_str(&room)
        )
    });
    assert!(deploy.exists());
    env
}

/// Puts `task` In Progress and pushes a branch for it in each repository.
fn branches(env: &Env, task: &str) -> Vec<String> {
    env.set_status(&[(task, "In Progress")]);
    REPOS
        .iter()
        .map(|repo| {
            env.task_branch(
                repo,
                &format!("feature/{task}-work"),
                &format!("{task}.txt"),
                &format!("{task} in {repo}\n"),
            )
        })
        .collect()
}

fn lines(env: &Env, file: &str) -> Vec<String> {
    std::fs::read_to_string(env.root().join("showroom").join(file))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn showrooms(env: &Env) -> serde_json::Value {
    let o = env.lockstep(&["showrooms", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn showroom(env: &Env, args: &[&str]) -> std::process::Output {
    let mut all = vec!["showroom"];
    all.extend(args);
    env.lockstep(&all)
}

#[test]
fn a_showroom_is_up_with_the_showroom_variables_and_delivery_tears_it_down() {
    let env = sandbox("");
    let heads = branches(&env, "TASK-1");
    let before = env.masters();

    let o = showroom(&env, &["TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let url = "https://task-1.show.example.com";
    assert!(
        stdout(&o).contains(&format!("the showroom of TASK-1 is up: {url}")),
        "{}",
        stdout(&o)
    );
    // Each repository's deploy ran once, with the showroom's variables, at the branch's head
    // (nothing was ahead of it on master, so the rebase kept it).
    let deploys = lines(&env, "deploys.log");
    assert_eq!(
        deploys,
        [
            format!("showroom|api|{}|{url}|task-1|showroom|TASK-1", heads[0]),
            format!("showroom|web|{}|{url}|task-1|showroom|TASK-1", heads[1]),
        ]
    );
    // Nothing merged, nothing queued.
    assert_eq!(env.masters(), before);
    assert!(env.queue()["running"].as_array().unwrap().is_empty());

    let list = showrooms(&env);
    let rooms = list.as_array().unwrap();
    assert_eq!(rooms.len(), 1, "{list}");
    assert_eq!(rooms[0]["task"], "TASK-1");
    assert_eq!(rooms[0]["state"], "up");
    assert_eq!(rooms[0]["url"], url);
    assert_eq!(rooms[0]["requester"], "release-lead");
    assert_eq!(rooms[0]["shas"]["api"], heads[0].as_str());
    let text = stdout(&env.lockstep(&["showrooms"]));
    assert!(
        text.contains(url) && text.contains("by release-lead"),
        "{text}"
    );
    assert!(text.contains(&format!("api {}", &heads[0][..10])), "{text}");

    // Delivering the task tears its showroom down: teardown ran in each repository, the
    // last first, with the same variables.
    env.set_status(&[("TASK-1", "For Delivery")]);
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        lines(&env, "teardowns.log"),
        [
            format!("showroom|web|{url}|task-1"),
            format!("showroom|api|{url}|task-1"),
        ]
    );
    assert!(showrooms(&env).as_array().unwrap().is_empty());
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "Closed");
    assert_eq!(
        notes.last().unwrap(),
        &format!("showroom {url} taken down: the task was delivered (lockstep #1)"),
        "{notes:?}"
    );
}

#[test]
fn max_evicts_the_oldest_or_refuses() {
    let env = sandbox("max = 1\n");
    branches(&env, "TASK-1");
    branches(&env, "TASK-3");
    let o = showroom(&env, &["TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));

    // Full: the oldest goes (its teardown runs) to make room.
    let o = showroom(&env, &["TASK-3"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let torn = lines(&env, "teardowns.log");
    assert_eq!(torn.len(), 2, "{torn:?}");
    assert!(torn.iter().all(|l| l.ends_with("|task-1")), "{torn:?}");
    let list = showrooms(&env);
    let tasks: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["task"].as_str().unwrap())
        .collect();
    assert_eq!(tasks, ["TASK-3"]);
    // The evicted task's note says why.
    assert_eq!(
        env.task("TASK-1").1.last().unwrap(),
        "showroom https://task-1.show.example.com taken down: evicted to make room for \
         `TASK-3` (`max = 1`)"
    );

    // With `on_full = "refuse"`, the request is refused and nothing is torn down.
    env.edit_config(|t| t.replace("max = 1\n", "max = 1\non_full = \"refuse\"\n"));
    let o = showroom(&env, &["TASK-1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("no showroom for TASK-1: 1 showrooms are up (`max = 1`)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(lines(&env, "teardowns.log").len(), 2);

    // Taken down by hand, it frees its place.
    let o = showroom(&env, &["TASK-3", "--down"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(lines(&env, "teardowns.log").len(), 4);
    let o = showroom(&env, &["TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn a_hostile_task_key_becomes_a_safe_label() {
    let env = sandbox("");
    let o = showroom(&env, &["TASK-1;rm -rf"]);
    // No branch names it: its deploy fails, and says so.
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("has no branch in any repository"),
        "{}",
        stderr(&o)
    );
    let list = showrooms(&env);
    let room = &list.as_array().unwrap()[0];
    assert_eq!(room["label"], "task-1-rm-rf");
    assert_eq!(room["url"], "https://task-1-rm-rf.show.example.com");
    assert_eq!(room["state"], "failed");
    assert!(lines(&env, "deploys.log").is_empty());
}

/// The state of a task's showroom in `lockstep showrooms --json`, if listed.
fn state_of(env: &Env, task: &str) -> Option<String> {
    showrooms(env)
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == task)
        .map(|r| r["state"].as_str().unwrap().to_string())
}

/// alice pushes one more commit on her branch of TASK-1 in `api`; returns its head.
fn push_more(env: &Env, text: &str) -> String {
    let dir = env.clone_of("api", "alice");
    let msg = format!("TASK-1 {}", text.trim());
    commit(&dir, "alice", "TASK-1.txt", text, &msg).unwrap();
    let p = push(&dir, "alice", &["feature/TASK-1-work"]).unwrap();
    assert!(p.accepted, "{:?}", p.remote);
    head(&dir, "HEAD")
}

#[test]
fn a_push_asks_for_a_showroom_and_a_new_push_redeploys_it() {
    let env = sandbox("follow = true\n");
    env.set_status(&[("TASK-1", "In Progress")]);
    // `git push -o showroom`: the push does not wait; the showroom comes up behind it.
    let first = env.task_branch_with(
        "api",
        "feature/TASK-1-work",
        &[("TASK-1.txt", "one\n")],
        &["-o", "showroom"],
    );
    wait_for("the showroom asked by the push", || {
        (state_of(&env, "TASK-1").as_deref() == Some("up")).then_some(())
    });
    let deploys = lines(&env, "deploys.log");
    assert_eq!(deploys.len(), 1, "{deploys:?}");
    assert!(
        deploys[0].starts_with(&format!("showroom|api|{first}|")),
        "{deploys:?}"
    );
    assert_eq!(showrooms(&env)[0]["requester"], "alice");

    // A new push to the task's branch deploys the showroom again, at the new head.
    let second = push_more(&env, "two\n");
    wait_for("the showroom following its branch", || {
        let d = lines(&env, "deploys.log");
        (d.len() == 2 && state_of(&env, "TASK-1").as_deref() == Some("up")).then_some(d)
    });
    let deploys = lines(&env, "deploys.log");
    assert!(
        deploys[1].starts_with(&format!("showroom|api|{second}|")),
        "{deploys:?}"
    );
    assert_eq!(showrooms(&env)[0]["shas"]["api"], second.as_str());

    // Without `follow`, a push leaves the showroom as it is.
    env.edit_config(|t| t.replace("follow = true\n", ""));
    push_more(&env, "three\n");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(lines(&env, "deploys.log").len(), 2);
}

#[test]
fn a_showroom_past_its_ttl_is_torn_down() {
    let env = sandbox("ttl = \"1s\"\n");
    branches(&env, "TASK-1");
    branches(&env, "TASK-3");
    let o = showroom(&env, &["TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The next request looks at the ttl first.
    let o = showroom(&env, &["TASK-3"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("showroom TASK-1: down (its ttl of 1s passed)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(lines(&env, "teardowns.log").len(), 2);
    assert_eq!(state_of(&env, "TASK-1"), None);
    assert_eq!(state_of(&env, "TASK-3").as_deref(), Some("up"));
    assert_eq!(
        env.task("TASK-1").1.last().unwrap(),
        "showroom https://task-1.show.example.com taken down: its ttl of 1s passed"
    );
}

#[test]
fn a_showroom_killed_while_it_deploys_is_recorded_and_torn_down_by_recover() {
    let env = sandbox("");
    branches(&env, "TASK-1");
    // `web` deploys second: its deploy is held at its gate (under the showroom's SANDBOX).
    let gates = env.root().join("showroom").join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    std::fs::write(gates.join("web.deploy.hold"), "").unwrap();
    let mut child = env.spawn("showroom", &["showroom", "TASK-1"]);
    wait_for("web's deploy at its gate", || {
        gates.join("web.deploy.waiting").exists().then_some(())
    });
    let step: i32 = std::fs::read_to_string(gates.join("web.deploy.waiting"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // The held step outlives the process that started it.
    assert!(std::path::Path::new(&format!("/proc/{step}")).exists());
    assert_eq!(state_of(&env, "TASK-1").as_deref(), Some("deploying"));

    let o = env.lockstep(&["recover"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("showroom TASK-1: left deploying by a process that stopped; torn down"),
        "{}",
        stdout(&o)
    );
    // What it had deployed is removed: teardown ran in both repositories, the last first.
    let torn = lines(&env, "teardowns.log");
    assert_eq!(torn.len(), 2, "{torn:?}");
    assert!(torn[0].starts_with("showroom|web|") && torn[1].starts_with("showroom|api|"));
    assert_eq!(state_of(&env, "TASK-1"), None);
    // The step left running was stopped, before the teardown: web's deploy never ran.
    wait_for("the leftover step gone", || {
        (!std::path::Path::new(&format!("/proc/{step}")).exists()).then_some(())
    });
    assert!(
        lines(&env, "deploys.log")
            .iter()
            .all(|l| !l.contains("|web|"))
    );
    let o = env.lockstep(&["recover"]);
    assert!(stdout(&o).contains("nothing to recover"), "{}", stdout(&o));
}

#[test]
fn tracker_statuses_bring_a_showroom_up_and_take_it_down_under_serve() {
    use crate::util::serve::{ServeProc, configure, wait_until};
    let long = std::time::Duration::from_secs(60);
    let env = sandbox("statuses = [\"Awaiting Showroom\", \"In QA\"]\n");
    branches(&env, "TASK-1");
    configure(&env, "200ms", "");
    let serve = ServeProc::start(&env);
    let url = "https://task-1.show.example.com";

    // Moved to Awaiting Showroom: its showroom comes up, and a note on the task says where.
    env.set_status(&[("TASK-1", "Awaiting Showroom")]);
    wait_until("the showroom up", long, Some(&serve.log), || {
        state_of(&env, "TASK-1").as_deref() == Some("up")
            && env.task("TASK-1").1.iter().any(|n| n.contains(url))
    });
    assert_eq!(lines(&env, "deploys.log").len(), 2);
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "Awaiting Showroom");
    assert!(
        notes
            .last()
            .unwrap()
            .contains(&format!("showroom up at {url}")),
        "{notes:?}"
    );
    // The queue page lists it, with its link.
    let page = serve.get("/").body;
    assert!(
        page.contains(&format!("<a href=\"{url}\">{url}</a>")),
        "{page}"
    );

    // In QA is a showroom status too: it stays, not deployed again.
    env.set_status(&[("TASK-1", "In QA")]);
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(lines(&env, "deploys.log").len(), 2);
    assert!(lines(&env, "teardowns.log").is_empty());

    // Back to In Progress: it has left them all; its showroom is torn down, and the note says
    // why.
    env.set_status(&[("TASK-1", "In Progress")]);
    wait_until("the showroom down", long, Some(&serve.log), || {
        state_of(&env, "TASK-1").is_none()
            && env
                .task("TASK-1")
                .1
                .iter()
                .any(|n| n.contains("taken down"))
    });
    assert_eq!(lines(&env, "teardowns.log").len(), 2);
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    assert!(
        notes.last().unwrap().contains(&format!(
            "showroom {url} taken down: the task left `Awaiting Showroom`, `In QA`"
        )),
        "{notes:?}"
    );
}
