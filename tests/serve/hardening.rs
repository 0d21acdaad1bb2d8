//! What the reshaping and the hardening found in `lockstep serve`, each reproduced.

use std::process::Command;

use super::*;

/// A `GET /metrics` that fails inside the server (a counts file the hooks did not write)
/// answers 500 with an id, not the error's chain: the request is not authenticated, and the
/// chain names files and SQL. The log has the chain under that id.
#[test]
fn issue9_internal_errors_answer_an_id_not_the_chain() {
    let env = Env::new(&["api"]);
    configure(&env, "0s", "");
    let serve = ServeProc::start(&env);
    std::fs::write(env.state_dir().join("hook-decisions.json"), "not json").unwrap();
    let r = serve.get("/metrics");
    assert_eq!(r.status, 500, "{}", r.body);
    let state = env.state_dir().display().to_string();
    assert!(!r.body.contains(&state), "{}", r.body);
    assert!(!r.body.contains("not valid"), "{}", r.body);
    let id = r
        .body
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no error id in {:?}", r.body))
        .to_string();
    let log = serve.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(&id) && l.contains(&state) && l.contains("not valid")),
        "{log}"
    );
    assert!(serve.stop(Duration::from_secs(10)).success());
}

/// A step log that cannot be read yet (a FIFO with no writer stands for a stalled disk)
/// holds the requests for it, not the server: `/healthz` still answers.
#[test]
fn issue9_a_log_read_that_hangs_does_not_stall_the_server() {
    let env = Env::new(&["api"]);
    push_task_branch(&env, "feature/TASK-1-login", &["api"], &[]);
    env.set_tasks(TASKS_READY);
    configure(&env, "0s", "");
    let out = env.lockstep(&["deliver", "TASK-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let serve = ServeProc::start(&env);
    let api: serde_json::Value =
        serde_json::from_str(&serve.get("/api/deliveries/1").body).unwrap();
    let step = &api["steps"][0];
    let log = step["log_path"].as_str().unwrap();
    std::fs::remove_file(log).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(log)
        .status()
        .unwrap();
    assert!(made.success());

    // More stalled reads than the server has threads for async work.
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get()) + 2;
    let path = format!("/deliveries/1/steps/{}/log", step["id"]);
    let stalled: Vec<_> = (0..threads)
        .map(|_| {
            let (url, path) = (serve.url.clone(), path.clone());
            std::thread::spawn(move || {
                let _ = crate::util::http::request(&url, "GET", &path, &[], b"");
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let (tx, rx) = std::sync::mpsc::channel();
    let url = serve.url.clone();
    std::thread::spawn(move || {
        let _ = tx.send(crate::util::http::get(&url, "/healthz"));
    });
    let health = rx.recv_timeout(Duration::from_secs(10));
    // The stalled reads never end: stop the server the hard way, which lets them go.
    drop(serve);
    for t in stalled {
        let _ = t.join();
    }
    let health = health.expect("`/healthz` did not answer while step logs were being read");
    assert!(health.body.starts_with("ok\n"), "{}", health.body);
}

/// A review that breaks the delivery rules of a queued delivery cancels it, and the comment
/// says who changed the reviews (the event's sender).
#[test]
fn issue9_a_review_that_cancels_a_delivery_names_its_sender() {
    let (env, gh, _) = github_env();
    // Another worker holds the queue: the delivery waits while the reviews change.
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(env.worker_lock())
        .unwrap();
    lock.lock().unwrap();
    let serve = ServeProc::start(&env);
    let deliver = webhooks::comment("acme/api", 7, "alice", "/deliver");
    let r = webhooks::post(&serve.url, "issue_comment", "v-1", &deliver, Some(SECRET));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(deliveries(&env)[0]["state"], "queued");

    // carol's approval is dismissed: one approval by someone other than the author is left.
    gh.review("acme/api", 7, "carol", "DISMISSED");
    let review = webhooks::review("acme/api", 7, "feature/TASK-1-login", "alice", "dismissed");
    let mut review: serde_json::Value = serde_json::from_slice(&review).unwrap();
    review["sender"]["login"] = "carol".into();
    let review = serde_json::to_vec(&review).unwrap();
    let r = webhooks::post(
        &serve.url,
        "pull_request_review",
        "v-2",
        &review,
        Some(SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("`carol` dismissed a review"), "{}", r.body);
    let c = gh.comments("acme/api", 7);
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(
        c[1].starts_with(
            "`carol` dismissed a review and the delivery rules no longer hold, so the queued \
             delivery [#1](http://lockstep.test/deliveries/1) of `TASK-1` was cancelled:"
        ),
        "{}",
        c[1]
    );
    assert_eq!(deliveries(&env)[0]["state"], "cancelled");
    drop(lock);
    assert!(serve.stop(Duration::from_secs(10)).success());
}

#[test]
fn issue10_a_signed_comment_replayed_under_new_delivery_ids_runs_once() {
    let (env, gh, _) = github_env();
    let serve = ServeProc::start(&env);
    let status = webhooks::comment("acme/api", 7, "alice", "/status");
    for id in ["replay-1", "replay-2", "replay-3"] {
        let r = webhooks::post(&serve.url, "issue_comment", id, &status, Some(SECRET));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(
        gh.comments("acme/api", 7).len(),
        1,
        "{:?}",
        gh.comments("acme/api", 7)
    );
    // Refused across restarts too.
    assert!(serve.stop(Duration::from_secs(10)).success());
    let serve = ServeProc::start(&env);
    let r = webhooks::post(
        &serve.url,
        "issue_comment",
        "replay-4",
        &status,
        Some(SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("already handled"), "{}", r.body);
    assert_eq!(gh.comments("acme/api", 7).len(), 1);
    // Another comment with the same text is another command.
    let mut again: serde_json::Value = serde_json::from_slice(&status).unwrap();
    again["comment"]["id"] = (again["comment"]["id"].as_u64().unwrap() + 1).into();
    let again = serde_json::to_vec(&again).unwrap();
    let r = webhooks::post(
        &serve.url,
        "issue_comment",
        "replay-5",
        &again,
        Some(SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(gh.comments("acme/api", 7).len(), 2);
}

#[test]
fn issue10_a_git_maintainer_name_is_no_github_login() {
    let (env, gh, _) = github_env();
    // `mallory` is a maintainer on the git server; on GitHub, that login may only read.
    env.edit_config(|t| {
        t.replace(
            "maintainers = [\"release-lead\"]",
            "maintainers = [\"release-lead\", \"mallory\"]",
        )
    });
    let serve = ServeProc::start(&env);
    let r = webhooks::post(
        &serve.url,
        "issue_comment",
        "m-1",
        &webhooks::comment("acme/api", 7, "mallory", "/status"),
        Some(SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let c = gh.comments("acme/api", 7);
    assert!(
        c[0].starts_with("@mallory only people with write access to `acme/api`"),
        "{}",
        c[0]
    );
    assert!(serve.stop(Duration::from_secs(10)).success());

    // Named as a GitHub login, explicitly: mallory may command the bot.
    env.edit_config(|t| {
        t.replace(
            "maintainers = [\"release-lead\", \"mallory\"]",
            "maintainers = [\"release-lead\"]\ngithub_maintainers = [\"mallory\"]",
        )
    });
    let serve = ServeProc::start(&env);
    let r = webhooks::post(
        &serve.url,
        "issue_comment",
        "m-2",
        &webhooks::comment("acme/api", 7, "mallory", "/status"),
        Some(SECRET),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let c = gh.comments("acme/api", 7);
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(!c[1].contains("only people with write access"), "{}", c[1]);
}

#[test]
fn issue10_the_poller_leaves_a_task_with_a_delivery_in_flight_alone() {
    let env = Env::new(&["api"]);
    push_task_branch(&env, "feature/TASK-1-login", &["api"], &[]);
    configure(
        &env,
        "0s",
        &format!("[server]\ntracker_secret_env = \"{TRACKER_VAR}\"\n"),
    );
    // The bot may not ask for deliveries itself.
    env.add_policy(
        "60-people-only.toml",
        "[[rule]]\nname = \"people-only\"\non = [\"deliver\"]\nrequire = 'requester != bot'\nmessage = \"only people ask for deliveries\"\n",
    );
    env.set_tasks(TASKS_READY);
    // A person's delivery, held in its build.
    env.hold("api", "build");
    let mut deliver = env.spawn("deliver", &["deliver", "TASK-1"]);
    env.wait_at_gate("api", "build");
    let serve = ServeProc::start(&env);
    let r = crate::util::http::request(
        &serve.url,
        "POST",
        "/webhooks/tracker",
        &[("X-Lockstep-Token", TRACKER_SECRET)],
        b"{}",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .contains("TASK-1 is For Delivery: already running as #1"),
        "{}",
        r.body
    );
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "For Delivery");
    assert!(
        !notes.iter().any(|n| n.contains("did not deliver")),
        "{notes:?}"
    );
    env.open_gate("api", "build");
    assert!(
        deliver.wait().unwrap().success(),
        "{:?}",
        env.spawned_output("deliver")
    );
    assert_eq!(task_status(&env, "TASK-1"), "Closed");
    assert!(serve.stop(Duration::from_secs(10)).success());
}

/// Whether a log line carries a colour code (an ANSI escape sequence).
fn coloured(line: &str) -> bool {
    line.contains("\x1b[")
}

/// The log of `serve` read by a container runtime, systemd or from a file keeps escape codes
/// as text: off a terminal it is plain. So is every command's (`queue`, logging to a pipe).
#[test]
fn the_log_has_no_colour_codes_off_a_terminal() {
    let env = Env::new(&["api"]);
    configure(&env, "0s", "");
    let serve = ServeProc::start(&env);
    assert_eq!(serve.get("/healthz").status, 200);
    let path = serve.log.clone();
    assert!(serve.stop(Duration::from_secs(10)).success());
    let log = std::fs::read_to_string(path).unwrap();
    assert!(
        log.contains(" INFO ") && log.contains("lockstep serve stopped"),
        "{log}"
    );
    assert!(!log.lines().any(coloured), "{log:?}");

    let out = env
        .command(&["queue"])
        .env("LOCKSTEP_LOG", "debug")
        .output()
        .unwrap();
    let log = stderr(&out);
    assert!(log.contains(" DEBUG "), "{log}");
    assert!(!log.lines().any(coloured), "{log:?}");
}

/// On a terminal the log is coloured, unless `NO_COLOR` is set (<https://no-color.org>). The
/// terminal is a pseudo-terminal made by `script` (util-linux).
#[test]
fn the_log_is_coloured_on_a_terminal_unless_no_color() {
    let env = Env::new(&["api"]);
    let quote =
        |p: &std::path::Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let command = format!("{} --config {} queue", quote(&bin()), quote(&env.config()));
    let on_a_terminal = |no_color: Option<&str>| {
        // `script` runs the command line on a terminal of its own and copies what it shows.
        let mut script = Command::new("script");
        copy_env(&env.command(&[]), &mut script);
        script
            .args(["-qec", &command, "/dev/null"])
            .env("LOCKSTEP_LOG", "debug")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            script.env("NO_COLOR", v);
        }
        let out = run(script);
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        let shown = stdout(&out);
        let log: Vec<String> = shown
            .lines()
            .filter(|l| l.contains("DEBUG"))
            .map(str::to_string)
            .collect();
        assert!(!log.is_empty(), "{shown}");
        log
    };
    assert!(on_a_terminal(None).iter().all(|l| coloured(l)));
    assert!(on_a_terminal(Some("")).iter().all(|l| coloured(l)));
    assert!(!on_a_terminal(Some("1")).iter().any(|l| coloured(l)));
}

/// Issue 22: a test that prints a team mention, a remote image, a link and HTML fails the
/// delivery; what it printed reaches the pull request (the failure's reason, the log's last
/// lines, the `/status` reply) only inside code spans and fenced blocks.
#[test]
fn issue22_step_output_reaches_comments_only_as_code() {
    use crate::util::markdown::{PAYLOAD, assert_inert};
    let (_env, gh, serve, _) = failing_pull_request(&format!("{PAYLOAD}\n"));
    let say = |id: &str, text: &str| alice_says(&serve, id, text);
    let comments = || gh.comments("acme/api", 8);
    say("p-1", "/deliver");
    wait_until("the failure", LONG, Some(&serve.log), || {
        comments().len() >= 2
    });
    let failure = &comments()[1];
    // The reason quotes the step's last line, and the log's last lines are there too.
    assert_eq!(
        failure
            .matches("assertion failed: @org/team ![x](http://127.0.0.1/x)")
            .count(),
        2,
        "{failure}"
    );
    assert_inert(failure);
    say("p-2", "/status");
    let reply = &comments()[2];
    assert!(reply.contains("assertion failed: @org/team"), "{reply}");
    assert_inert(reply);
    assert!(serve.stop(Duration::from_secs(10)).success());
}
