//! `lockstep show TASK`, `lockstep logs --autotest ID` and `lockstep logs --showroom TASK`:
//! what a task went through, read back after real autotests (run by the worker `lockstep
//! autotest` starts), a real delivery and a real showroom, in real repositories.

use crate::util::*;

const REPOS: [&str; 2] = ["api", "web"];

/// A sandbox with a showroom environment whose steps write under `$SANDBOX/showroom`, and
/// TASK-1 in progress.
fn sandbox() -> Env {
    let env = Env::new(&REPOS);
    let room = env.root().join("showroom");
    std::fs::create_dir_all(&room).unwrap();
    env.edit_config(|text| {
        format!(
            "{text}\n[environments.showroom]\nurl = \"https://{{task}}.show.example.com\"\n\
             vars = {{ SANDBOX = {} }}\n",
            toml_str(&room)
        )
    });
    env.set_status(&[("TASK-1", "In Progress")]);
    env
}

/// `lockstep show TASK --json`.
fn show_json(env: &Env, task: &str) -> serde_json::Value {
    let o = env.lockstep(&["show", task, "--json"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Times, durations and ages, which change from run to run, as placeholders.
fn redact_times(text: &str) -> String {
    let rules = [
        (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "[time]"),
        (r"\b\d+\.\d+s\b", "[secs]"),
        (r"age \d+[smhd]\b", "age [age]"),
    ];
    rules.iter().fold(text.to_string(), |t, (re, to)| {
        regex::Regex::new(re)
            .unwrap()
            .replace_all(&t, *to)
            .into_owned()
    })
}

#[test]
fn show_task_gathers_deliveries_autotests_and_the_showroom_and_logs_read_them() {
    let env = sandbox();
    let branch = "feature/TASK-1-views";
    let heads: Vec<String> = REPOS
        .iter()
        .map(|repo| env.task_branch(repo, branch, "views.txt", &format!("views in {repo}\n")))
        .collect();

    // A task nothing knows of yet.
    let o = env.lockstep(&["show", "TASK-1"]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(
            "lockstep knows no delivery, autotest or showroom of task `TASK-1`: `lockstep \
             deliver TASK-1`, `lockstep autotest TASK-1` or `lockstep showroom TASK-1` makes one"
        ),
        "{}",
        stderr(&o)
    );

    // web's test fails: its autotest fails, and so does a delivery of the task.
    env.fail_step("web", "test", true);
    let o = env.lockstep(&["autotest", "TASK-1"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let runs = wait_for("both autotests to end", || {
        let runs = env.autotests("TASK-1");
        (runs.len() == 2
            && runs
                .iter()
                .all(|a| !["queued", "running"].contains(&a["state"].as_str().unwrap_or(""))))
        .then_some(runs)
    });
    let by_repo = |repo: &str| runs.iter().find(|a| a["repo"] == repo).unwrap().clone();
    let (api, web) = (by_repo("api"), by_repo("web"));
    assert_eq!(
        (api["state"].as_str(), web["state"].as_str()),
        (Some("passed"), Some("failed"))
    );
    env.set_status(&[("TASK-1", "For Delivery")]);
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    env.fail_step("web", "test", false);

    // The showroom comes up.
    env.set_status(&[("TASK-1", "In Progress")]);
    let o = env.lockstep(&["showroom", "TASK-1"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));

    let o = env.lockstep(&["show", "TASK-1"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    insta::assert_snapshot!("show_task", redact_times(&env.redact(&stdout(&o))));

    let v = show_json(&env, "TASK-1");
    assert_eq!(v["task"], "TASK-1");
    let deliveries = v["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{v}");
    assert_eq!(deliveries[0]["id"], 1);
    assert_eq!(deliveries[0]["state"], "failed");
    assert!(
        deliveries[0]["error"].as_str().unwrap().contains("web"),
        "{v}"
    );
    let tests = v["autotests"].as_array().unwrap();
    assert_eq!(tests.len(), 2, "{v}");
    assert!(tests.iter().all(|a| a["latest"] == true), "{v}");
    // The latest of each branch, the newest first.
    assert_eq!(tests[0]["id"], web["id"]);
    assert_eq!(tests[0]["state"], "failed");
    assert_eq!(tests[0]["step"], "test");
    assert_eq!(tests[0]["sha"], heads[1].as_str());
    assert!(
        tests[0]["reason"]
            .as_str()
            .unwrap()
            .contains("failing on purpose"),
        "{v}"
    );
    assert_eq!(tests[1]["id"], api["id"]);
    assert_eq!(tests[1]["state"], "passed");
    assert_eq!(tests[1]["rebased_on"], api["rebased_on"]);
    for field in ["requested_at", "started_at", "finished_at"] {
        assert!(tests[1][field].is_i64(), "{field}: {v}");
    }
    let room = &v["showroom"];
    assert_eq!(room["state"], "up");
    assert_eq!(room["url"], "https://task-1.show.example.com");
    assert_eq!(room["shas"]["api"], heads[0].as_str());
    assert_eq!(room["requester"], "release-lead");

    // A new autotest of api: the latest of api's branch first, the earlier one after.
    let o = env.lockstep(&["autotest", "TASK-1", "--repo", "api"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let v = wait_for("the new autotest to pass", || {
        let v = show_json(&env, "TASK-1");
        (v["autotests"].as_array()?.len() == 3 && v["autotests"][0]["state"] == "passed")
            .then_some(v)
    });
    let order: Vec<(i64, bool)> = v["autotests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_i64().unwrap(), a["latest"].as_bool().unwrap()))
        .collect();
    let (api_id, web_id) = (api["id"].as_i64().unwrap(), web["id"].as_i64().unwrap());
    assert_eq!(order, [(3, true), (web_id, true), (api_id, false)]);
    let text = stdout(&env.lockstep(&["show", "TASK-1"]));
    let earlier = text.find("  earlier:").expect(&text);
    assert!(text[earlier..].contains(&format!("#{api_id} ")), "{text}");

    // `show 1` is still the delivery.
    let o = env.lockstep(&["show", "1"]);
    assert!(
        stdout(&o).starts_with("#1 TASK-1: failed"),
        "{}",
        stdout(&o)
    );

    // The failed autotest's logs: each step's, the failing one's output included.
    let id = web["id"].to_string();
    let o = env.lockstep(&["logs", "--autotest", &id]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let logs = stdout(&o);
    assert!(
        logs.starts_with(&format!(
            "autotest #{id} of `{branch}` in web ({}): failed at `test`: `test` exited with 1: \
             failing on purpose\n",
            &heads[1][..10]
        )),
        "{logs}"
    );
    let build = logs.find("==> web build (autotest #").expect(&logs);
    let test = logs.find("==> web test (autotest #").expect(&logs);
    assert!(build < test, "{logs}");
    assert!(
        logs[build..test].contains("passed) <==\nbuilding web at"),
        "{logs}"
    );
    assert!(
        logs[test..].contains("failed) <==\nfailing on purpose"),
        "{logs}"
    );
    let only = stdout(&env.lockstep(&["logs", "--autotest", &id, "--step", "test"]));
    assert!(
        !only.contains("==> web build") && only.contains("failing on purpose"),
        "{only}"
    );
    let other = stdout(&env.lockstep(&["logs", "--autotest", &id, "--repo", "api"]));
    assert!(other.contains("no step log of that repository"), "{other}");
    let o = env.lockstep(&["logs", "--autotest", "99"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("there is no autotest #99; `lockstep autotests` lists them"));

    // The showroom's logs: the build and deploy of its last deploy, in the order they ran.
    let o = env.lockstep(&["logs", "--showroom", "TASK-1"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let logs = stdout(&o);
    assert!(
        logs.starts_with("showroom of TASK-1: up at https://task-1.show.example.com\n"),
        "{logs}"
    );
    let headers: Vec<&str> = logs
        .lines()
        .filter(|l| l.starts_with("==> "))
        .map(|l| l.split(" (").next().unwrap())
        .collect();
    assert_eq!(
        headers,
        [
            "==> api build",
            "==> api deploy",
            "==> web build",
            "==> web deploy"
        ]
    );
    assert!(
        logs.contains(&format!("deployed api {} to showroom", heads[0])),
        "{logs}"
    );
    // Taken down, its teardown's logs come after (it has no teardown step here: none).
    let o = env.lockstep(&["showroom", "TASK-1", "--down"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let logs = stdout(&env.lockstep(&["logs", "--showroom", "TASK-1", "--step", "deploy"]));
    assert!(logs.starts_with("showroom of TASK-1: down at "), "{logs}");
    assert!(
        logs.contains("==> web deploy") && !logs.contains("==> web build"),
        "{logs}"
    );
    let o = env.lockstep(&["logs", "--showroom", "TASK-2"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("`TASK-2` has no showroom; `lockstep showrooms` lists them"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_hostile_task_key_is_escaped_in_show_and_logs() {
    let env = sandbox();
    let hostile = "TASK-9\x1b]0;owned\x07\x1b[2J";
    let escaped = "TASK-9\\x1b]0;owned\\x07\\x1b[2J";
    // Unknown: the error quotes it escaped.
    let o = env.lockstep(&["show", hostile]);
    assert_eq!(code(&o), 2);
    no_raw_control(&o.stderr);
    assert!(
        stderr(&o).contains(&format!("task `{escaped}`")),
        "{}",
        stderr(&o)
    );
    // The commands it suggests take the key as one quoted word, safe to paste in a shell.
    let o = env.lockstep(&["show", "TASK-1;rm -rf ~"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("`lockstep deliver 'TASK-1;rm -rf ~'`"),
        "{}",
        stderr(&o)
    );
    // A showroom asked for it (it has no branch: it fails, and is recorded).
    let o = env.lockstep(&["showroom", hostile]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    for args in [
        &["show", hostile][..],
        &["show", hostile, "--json"],
        &["logs", "--showroom", hostile],
    ] {
        let o = env.lockstep(args);
        assert_eq!(code(&o), 0, "{args:?}: {}{}", stdout(&o), stderr(&o));
        no_raw_control(&o.stdout);
    }
    let text = stdout(&env.lockstep(&["show", hostile]));
    assert!(text.starts_with(&format!("task {escaped}\n")), "{text}");
    assert!(
        text.contains("showroom: failed at https://task-9-0-owned-2j.show.example.com"),
        "{text}"
    );
    let v = show_json(&env, hostile);
    assert_eq!(v["task"], hostile);
}

fn no_raw_control(text: &[u8]) {
    let bad = text
        .iter()
        .any(|b| (*b < 0x20 && *b != b'\n' && *b != b'\t') || *b == 0x7f);
    assert!(
        !bad,
        "raw control bytes in:\n{}",
        String::from_utf8_lossy(text)
    );
}

#[test]
fn logs_names_one_of_a_delivery_an_autotest_or_a_showroom() {
    let logs = |args: &[&str]| {
        let mut cmd = lockstep_cmd();
        cmd.arg("logs").args(args);
        run(cmd)
    };
    let o = logs(&[]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).starts_with(
            "error: the following required arguments were not provided:\n  \
             <ID|--autotest <ID>|--showroom <TASK>>\n"
        ),
        "{}",
        stderr(&o)
    );
    for (args, refused) in [
        (
            &["3", "--autotest", "4"][..],
            "the argument '[ID]' cannot be used with '--autotest <ID>'",
        ),
        (
            &["3", "--showroom", "T-1"],
            "the argument '[ID]' cannot be used with '--showroom <TASK>'",
        ),
        (
            &["--autotest", "4", "--showroom", "T-1"],
            "the argument '--autotest <ID>' cannot be used with '--showroom <TASK>'",
        ),
    ] {
        let o = logs(args);
        assert_eq!(code(&o), 2, "{args:?}");
        assert!(
            stderr(&o).starts_with(&format!("error: {refused}\n")),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}
