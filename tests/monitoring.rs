//! Monitoring rolls a release back: `[[gate]]`s checked against a real Prometheus in verify,
//! and alerts of a real Prometheus, routed by a real Alertmanager to `lockstep serve`, revert
//! a watched delivery after it landed. Both scrape a service the test runs on 127.0.0.1,
//! whose error rate a deploy step (or the test) raises.

use std::time::Duration;

use crate::util::fake_github::FakeGitHub;
use crate::util::http;
use crate::util::monitoring::{self, ERROR_RATIO, Service};
use crate::util::serve::*;
use crate::util::webhooks::{self, SECRET};
use crate::util::*;

const LONG: Duration = Duration::from_secs(90);

/// Wraps the sandbox's steps: deploy raises the service's error rate to 50% when the checkout
/// has a `BREAKS-PROD` file; rollback lowers it again.
const PROD: &str = r#"#!/bin/sh
set -e
step=$1
if [ "$step" = rollback ]; then rm -f "$SANDBOX/errors"; fi
"$(dirname "$0")/$step.sh"
if [ "$step" = deploy ] && [ -f BREAKS-PROD ]; then echo 50 > "$SANDBOX/errors"; fi
"#;

/// Puts `task` In Progress, pushes its branch to `repos` with `files`, moves it For Delivery.
fn ready(env: &Env, task: &str, repos: &[&str], files: &[(&str, &str)]) {
    env.set_status(&[(task, "In Progress")]);
    for repo in repos {
        let mut all = vec![(format!("{task}.txt"), format!("{task} in {repo}\n"))];
        if *repo == "api" {
            all.extend(files.iter().map(|(f, t)| (f.to_string(), t.to_string())));
        }
        let all: Vec<(&str, &str)> = all.iter().map(|(f, t)| (f.as_str(), t.as_str())).collect();
        env.task_branch_with(repo, &format!("feature/{task}-work"), &all, &[]);
    }
    env.set_status(&[(task, "For Delivery")]);
}

fn journal(env: &Env, id: i64) -> Vec<(String, String)> {
    env.show(id)["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["event"].as_str().unwrap().to_string(),
                j["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn tree(env: &Env, repo: &str) -> String {
    env.git_in(repo, &["rev-parse", "refs/heads/master^{tree}"])
        .trim()
        .to_string()
}

/// A healthy delivery passes its gate and lands; one whose deploy raises the error rate fails
/// its gate in verify, is rolled back and merges nothing; `policy check` runs the queries;
/// with Prometheus down, the gate fails closed.
#[test]
fn gates_hold_a_delivery_to_its_metrics_in_verify() {
    let Some((prometheus_bin, _)) = monitoring::binaries("gates_hold_a_delivery") else {
        return;
    };
    let env = Env::new(&["api", "web"]);
    let prod = env.sb.meta.join("steps").join("prod.sh");
    std::fs::write(&prod, PROD).unwrap();
    std::fs::set_permissions(&prod, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    env.set_steps(|s| format!("[{}, \"{s}\"]", toml_str(&prod)));
    let service = Service::start(&env.root().join("errors"));
    let mut prometheus =
        monitoring::prometheus(&prometheus_bin, env.dir.path(), &service.target, None, None);
    let gates = format!(
        "\n[prometheus]\nurl = \"{}\"\ntimeout = \"2s\"\n\n[[gate]]\nname = \"error-rate\"\n\
         query = '{ERROR_RATIO}'\nmax = 0.05\nfor = \"5s\"\nevery = \"1s\"\n",
        prometheus.url
    );
    env.edit_config(|t| format!("{t}{gates}"));
    monitoring::wait_for_data(&prometheus);

    // `policy check` runs every query once: a typo shows before a delivery needs the gate.
    let o = env.lockstep(&["policy", "check"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(&format!(
            "gate `error-rate`: Prometheus runs its query (1 series now)\nok: 1 gate(s) against `{}/api/v1/query`",
            prometheus.url
        )),
        "{}",
        stdout(&o)
    );
    let good = std::fs::read_to_string(env.config()).unwrap();
    env.edit_config(|t| {
        format!(
            "{t}\n[[gate]]\nname = \"typo\"\nquery = 'sum(rate(app_requests_total[1m]'\nmax = 1\n"
        )
    });
    let o = env.lockstep(&["policy", "check"]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "lockstep: gate `typo`: Prometheus at `{}/api/v1/query` refused the query (400 bad_data): ",
            prometheus.url
        )) && err.contains("parse error"),
        "{err}"
    );
    assert!(
        err.contains(
            "lockstep: 1 gate(s) cannot be checked; fix them before a delivery needs them"
        ),
        "{err}"
    );
    std::fs::write(env.config(), good).unwrap();

    // Healthy: every sample within the bound, the delivery lands.
    ready(&env, "TASK-1", &["api", "web"], &[]);
    let before = env.masters();
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("#1 TASK-1: gate     error-rate   passed ("),
        "{}",
        stdout(&o)
    );
    assert_ne!(env.masters(), before);
    let j = journal(&env, 1);
    assert!(
        j.iter().any(|(e, d)| e == "gate passed"
            && d.starts_with("gate `error-rate`: ")
            && d.contains(" sample(s) within `max = 0.05`; last 0")),
        "{j:?}"
    );

    // The deploy of TASK-3 makes half the requests fail: the gate stops the line in verify.
    ready(&env, "TASK-3", &["api", "web"], &[("BREAKS-PROD", "yes\n")]);
    let before = env.masters();
    let o = env.lockstep(&["deliver", "TASK-3"]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let failure = env.show(2)["delivery"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    let shape = regex::Regex::new(&format!(
        r"^delivery failed in verify: gate `error-rate`: `{}` was 0\.\d+, above `max = 0\.05`$",
        regex::escape(ERROR_RATIO)
    ))
    .unwrap();
    assert!(shape.is_match(&failure), "{failure}");
    assert_eq!(env.masters(), before, "a failed gate merged something");
    assert_eq!(env.rollbacks(), ["web 2", "api 2"]);
    assert!(
        !env.root().join("errors").exists(),
        "the rollback left the errors on"
    );
    let (status, notes) = env.task("TASK-3");
    assert_eq!(status, "In Progress");
    assert!(
        notes.last().unwrap().contains("above `max = 0.05`"),
        "{notes:?}"
    );
    assert!(
        journal(&env, 2).contains(&("rollback triggered".into(), "gate".into())),
        "{:?}",
        journal(&env, 2)
    );

    // Prometheus down: the gate fails closed and says where it looked.
    prometheus.kill();
    ready(&env, "TASK-2", &["api"], &[]);
    let o = env.lockstep(&["deliver", "TASK-2"]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let failure = env.show(3)["delivery"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        failure.starts_with(&format!(
            "delivery failed in verify: gate `error-rate`: cannot reach Prometheus at `{}/api/v1/query`: ",
            prometheus.url
        )) && failure.ends_with("; the gate fails closed"),
        "{failure}"
    );
}

/// End to end after a merge: the service's errors rise, the real Prometheus fires a real rule,
/// the real Alertmanager posts it to `lockstep serve`, and lockstep rolls the watched delivery
/// back and reverts it in every repository, then tells the pull request and the task.
#[test]
fn a_firing_alert_reverts_the_watched_delivery_everywhere() {
    let Some((prometheus_bin, alertmanager_bin)) = monitoring::binaries("a_firing_alert_reverts")
    else {
        return;
    };
    let env = Env::new(&["api", "web"]);
    let heads = push_task_branch(&env, "feature/TASK-1-login", &["api", "web"], &[]);
    env.set_status(&[("TASK-1", "For Delivery")]);
    let gh = FakeGitHub::start(TOKEN);
    env.set_delivery("watch", "\"15m\"");
    configure(
        &env,
        "0s",
        &format!(
            "[server]\npublic_url = \"http://lockstep.test/\"\n\n{}\n\
             [alertmanager]\ntoken_env = \"{ALERTMANAGER_VAR}\"\n",
            github_section(gh.url())
        ),
    );
    gh.add_pull("acme/api", 7, "alice", "feature/TASK-1-login", &heads[0]);
    gh.review("acme/api", 7, "bob", "APPROVED");
    gh.review("acme/api", 7, "carol", "APPROVED");
    gh.add_pull("acme/web", 3, "alice", "feature/TASK-1-login", &heads[1]);
    gh.review("acme/web", 3, "bob", "APPROVED");
    gh.review("acme/web", 3, "dave", "APPROVED");
    gh.permit("acme/api", "alice", "write");
    let trees: Vec<String> = ["api", "web"].iter().map(|r| tree(&env, r)).collect();
    let serve = ServeProc::start(&env);

    let service = Service::start(&env.root().join("errors"));
    let alertmanager = monitoring::alertmanager(
        &alertmanager_bin,
        env.dir.path(),
        &format!("{}/webhooks/alertmanager", serve.url),
        ALERTMANAGER_TOKEN,
    );
    let rules = format!(
        "groups:\n  - name: app\n    rules:\n      - alert: HighErrorRate\n        \
         expr: '{ERROR_RATIO} > 0.05'\n        for: 0s\n        \
         labels: {{lockstep_repo: api, severity: page}}\n        \
         annotations: {{summary: \"5xx above 5% on api\"}}\n"
    );
    let prometheus = monitoring::prometheus(
        &prometheus_bin,
        env.dir.path(),
        &service.target,
        Some(&rules),
        Some(&alertmanager.url),
    );

    let body = webhooks::comment("acme/api", 7, "alice", "/deliver");
    let r = webhooks::post(&serve.url, "issue_comment", "d-1", &body, Some(SECRET));
    assert_eq!(r.status, 200, "{}", r.body);
    let comments = || gh.comments("acme/api", 7);
    wait_until("the delivery", LONG, Some(&serve.log), || {
        comments().len() >= 2
    });
    assert!(
        comments()[1].contains("✅ delivered `TASK-1`"),
        "{}",
        comments()[1]
    );
    for (i, repo) in ["api", "web"].iter().enumerate() {
        assert_ne!(tree(&env, repo), trees[i], "{repo} did not land");
    }
    monitoring::wait_for_data(&prometheus);

    // Production goes bad after the merge.
    service.set_errors(50);
    wait_until("the rollback on the alert", LONG, Some(&serve.log), || {
        comments().len() >= 3
    });
    let comment = &comments()[2];
    assert!(
        comment.starts_with(
            "🚨 ``alert `HighErrorRate` {lockstep_repo=\"api\", severity=\"page\"}: \"5xx above 5% on api\"`` fired while `TASK-1` ([#1](http://lockstep.test/deliveries/1)) was watched after it landed."
        ),
        "{comment}\n{}",
        alertmanager.log_text()
    );
    assert!(comment.contains("lockstep rolled it back"), "{comment}");

    // Every upstream has its revert, and holds what it held before the delivery.
    for (i, repo) in ["api", "web"].iter().enumerate() {
        assert_eq!(tree(&env, repo), trees[i], "{repo} was not reverted");
        let msg = env.git_in(repo, &["log", "-1", "--format=%s", "refs/heads/master"]);
        assert_eq!(msg.trim(), "Revert the delivery of TASK-1 (lockstep #1)");
    }
    assert_eq!(env.rollbacks(), ["web 1", "api 1"]);
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    let note = notes.last().unwrap();
    let shape = regex::Regex::new(
        r#"^rolled back by lockstep \(#1\) on the alert `HighErrorRate` \{lockstep_repo="api", severity="page"\}: "5xx above 5% on api"; reverted: api [0-9a-f]{10}, web [0-9a-f]{10}; every upstream reverted [0-9.]+m?s after the alert fired$"#,
    )
    .unwrap();
    assert!(shape.is_match(note), "{note}");
    assert_eq!(
        gh.last_status(&heads[0]),
        ("failure".into(), "#1 rolled back on an alert".into())
    );
    let j = journal(&env, 1);
    assert!(
        j.contains(&("rollback triggered".into(), "alert".into())),
        "{j:?}"
    );
    let metrics = serve.get("/metrics").body;
    assert!(
        metrics.contains("lockstep_rollbacks_total{trigger=\"alert\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "lockstep_webhook_requests_total{source=\"alertmanager\",result=\"accepted\"} 1"
        ),
        "{metrics}"
    );
    drop(prometheus);
    drop(alertmanager);
    assert!(serve.stop(Duration::from_secs(10)).success());
}

/// A notification shaped like Alertmanager 0.25's, with one alert.
fn notification(status: &str, labels: &str, fingerprint: &str, starts_at: &str) -> String {
    format!(
        r#"{{"receiver":"lockstep","status":"{status}","alerts":[{{"status":"{status}","labels":{{"alertname":"HighErrorRate",{labels}}},"annotations":{{"summary":"5xx above 5%"}},"startsAt":"{starts_at}","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://127.0.0.1:9090/graph","fingerprint":"{fingerprint}"}}],"groupLabels":{{"alertname":"HighErrorRate"}},"commonLabels":{{"alertname":"HighErrorRate"}},"commonAnnotations":{{}},"externalURL":"http://127.0.0.1:9093","version":"4","groupKey":"{{}}:{{alertname=\"HighErrorRate\"}}","truncatedAlerts":0}}"#
    )
}

/// Now, moved by `secs`, as Alertmanager writes `startsAt`.
fn starts_at(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn post_alert(serve: &ServeProc, token: Option<&str>, body: &str) -> http::Resp {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    http::request(
        &serve.url,
        "POST",
        "/webhooks/alertmanager",
        &headers,
        body.as_bytes(),
    )
    .unwrap()
}

/// Forged, malformed, resolved, unknown, unwatched and repeated alerts roll nothing back; the
/// one firing alert about a watched delivery rolls it back once.
#[test]
fn alerts_roll_back_only_what_is_watched_and_only_once() {
    let env = Env::new(&["api", "web"]);
    env.set_delivery("watch", "\"3s\"");
    env.edit_config(|t| {
        format!(
            "{t}\n[alertmanager]\ntoken_env = \"{ALERTMANAGER_VAR}\"\nbody_limit = 4096\n\
             [[alertmanager.match]]\nrepo = \"web\"\nlabels = {{ job = \"frontend\" }}\n"
        )
    });
    ready(&env, "TASK-1", &["api"], &[]);
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let delivered = env.masters();
    let serve = ServeProc::start(&env);
    let api = r#""lockstep_repo":"api""#;
    let firing = notification("firing", api, "fp-api", &starts_at(0));

    // Forged or unauthenticated: 401, and nothing is read.
    for token in [None, Some("wrong"), Some("")] {
        let r = post_alert(&serve, token, &firing);
        assert_eq!(r.status, 401, "{token:?}: {}", r.body);
        assert_eq!(
            r.body,
            format!(
                "lockstep: missing or wrong `Authorization: Bearer` token; Alertmanager sends the one in `{ALERTMANAGER_VAR}` with `http_config.authorization`\n"
            )
        );
    }
    // Malformed: 400 with the reason.
    let ok = Some(ALERTMANAGER_TOKEN);
    let r = post_alert(&serve, ok, "{\"version\":");
    assert_eq!(r.status, 400);
    assert!(
        r.body
            .starts_with("lockstep: the body is not an Alertmanager notification: "),
        "{}",
        r.body
    );
    let r = post_alert(
        &serve,
        ok,
        &firing.replace(r#""version":"4""#, r#""version":"3""#),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        "lockstep: payload version `3` is not one lockstep reads; it reads version 4 (Alertmanager 0.x)\n"
    );
    let r = post_alert(&serve, ok, &format!("{firing:width$}", width = 5000));
    assert_eq!(r.status, 413, "{}", r.body);

    // Resolved, or naming no repository: nothing to do.
    let r = post_alert(
        &serve,
        ok,
        &notification("resolved", api, "fp-r", "2026-11-30T08:50:01Z"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        "lockstep: alert `HighErrorRate` {lockstep_repo=\"api\"}: \"5xx above 5%\" resolved; nothing to do\n"
    );
    let r = post_alert(
        &serve,
        ok,
        &notification(
            "firing",
            r#""job":"backend""#,
            "fp-x",
            "2026-11-30T08:50:01Z",
        ),
    );
    assert_eq!(r.status, 200);
    assert_answer_ends(
        &r.body,
        ": nothing rolled back: it names no repository of lockstep.toml (label `lockstep_repo`, or `[[alertmanager.match]]`)\n",
    );
    // web (named by a matcher) has no delivery in the watch.
    let r = post_alert(
        &serve,
        ok,
        &notification(
            "firing",
            r#""job":"frontend""#,
            "fp-web",
            "2026-11-30T08:50:01Z",
        ),
    );
    assert_answer_ends(
        &r.body,
        ": nothing rolled back: no delivery of `web` landed in the last 3s, the watch\n",
    );

    // The alert about api, within the watch: rolled back, once.
    let r = post_alert(&serve, ok, &firing);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_answer_ends(
        &r.body,
        ": rolling back #1 of `TASK-1`: its rollback steps, then a revert in every repository\n",
    );
    wait_until("the rollback", LONG, Some(&serve.log), || {
        env.rollbacks().len() == 1
    });
    wait_until("the revert", LONG, Some(&serve.log), || {
        env.task("TASK-1").0 == "In Progress"
    });
    assert_ne!(env.masters(), delivered);
    let r = post_alert(&serve, ok, &firing);
    assert_eq!(
        r.body,
        "lockstep: alert `HighErrorRate` {lockstep_repo=\"api\"}: \"5xx above 5%\" was already handled; nothing to do\n"
    );
    // The same alert firing anew finds the delivery rolled back already.
    let again = notification("firing", api, "fp-api", &starts_at(1));
    let r = post_alert(&serve, ok, &again);
    assert_answer_ends(
        &r.body,
        ": nothing rolled back: #1 of `TASK-1`, the latest watched delivery of `api`, was already rolled back\n",
    );
    assert_eq!(env.rollbacks(), ["api 1"]);

    // Past the watch, an alert rolls nothing back.
    ready(&env, "TASK-3", &["api"], &[]);
    let o = env.lockstep(&["deliver", "TASK-3", "--no-wait"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    wait_until("the second delivery", LONG, Some(&serve.log), || {
        env.show(2)["delivery"]["state"] == "delivered"
    });
    std::thread::sleep(Duration::from_millis(3200));
    let late = notification("firing", api, "fp-late", "2026-11-30T09:20:00Z");
    let r = post_alert(&serve, ok, &late);
    assert_answer_ends(
        &r.body,
        ": nothing rolled back: no delivery of `api` landed in the last 3s, the watch\n",
    );
    assert_eq!(env.rollbacks(), ["api 1"]);
    let metrics = serve.get("/metrics").body;
    for line in [
        "lockstep_rollbacks_total{trigger=\"alert\"} 1",
        "lockstep_webhook_requests_total{source=\"alertmanager\",result=\"unauthorized\"} 3",
        "lockstep_webhook_requests_total{source=\"alertmanager\",result=\"bad_request\"} 2",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    assert!(serve.stop(Duration::from_secs(10)).success());
}

/// Issue 22: an alert that started before the watched delivery landed (more than
/// `[alertmanager] slack` before) was not its doing: it is recorded with the reason and rolls
/// nothing back; one that started after it landed still does.
#[test]
fn issue22_an_alert_from_before_the_landing_rolls_nothing_back() {
    let env = Env::new(&["api"]);
    env.set_delivery("watch", "\"10m\"");
    env.edit_config(|t| {
        format!("{t}\n[alertmanager]\ntoken_env = \"{ALERTMANAGER_VAR}\"\nslack = \"30s\"\n")
    });
    ready(&env, "TASK-1", &["api"], &[]);
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let delivered = env.masters();
    let serve = ServeProc::start(&env);
    let api = r#""lockstep_repo":"api""#;
    let ok = Some(ALERTMANAGER_TOKEN);

    // Firing for an hour: long before the delivery landed.
    let old = notification("firing", api, "fp-old", &starts_at(-3600));
    let r = post_alert(&serve, ok, &old);
    assert_eq!(r.status, 200, "{}", r.body);
    let said = "nothing rolled back: #1 of `TASK-1`, the latest watched delivery of `api`, \
                landed at ";
    assert!(r.body.contains(said), "{}", r.body);
    assert_answer_ends(
        &r.body,
        "): more than `[alertmanager] slack` (30s), so it is not the delivery's doing\n",
    );
    // Recorded, as every outcome is: the next notification of it is not acted on again.
    let r = post_alert(&serve, ok, &old);
    assert_answer_ends(&r.body, " was already handled; nothing to do\n");
    assert!(serve.log_text().contains(said), "{}", serve.log_text());
    assert_eq!(env.rollbacks(), Vec::<String>::new());
    assert_eq!(env.masters(), delivered);

    // Within the slack (the clocks, the merge's last seconds): it counts.
    let r = post_alert(
        &serve,
        ok,
        &notification("firing", api, "fp-new", &starts_at(-5)),
    );
    assert_answer_ends(
        &r.body,
        ": rolling back #1 of `TASK-1`: its rollback steps, then a revert in every repository\n",
    );
    wait_until("the rollback", LONG, Some(&serve.log), || {
        env.rollbacks().len() == 1
    });
    assert!(serve.stop(Duration::from_secs(10)).success());
}

/// Under the pipeline (`window = 4`), an alert's revert runs as soon as nothing deploys: it
/// does not wait for the deliveries in the queue. The head, built on the upstream the revert
/// moved, is prepared again on the reverted upstream and lands on top of the revert.
#[test]
fn an_alert_reverts_at_once_while_the_pipeline_prepares() {
    let quick = Duration::ZERO;
    let env = crate::util::pipeline::sandbox(
        4,
        crate::util::pipeline::Durations {
            build: quick,
            test: quick,
            deploy: quick,
            verify: quick,
        },
    );
    env.set_delivery("watch", "\"10m\"");
    env.edit_config(|t| format!("{t}\n[alertmanager]\ntoken_env = \"{ALERTMANAGER_VAR}\"\n"));
    let before = tree(&env, "api");
    ready(&env, "TASK-1", &["api"], &[]);
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_ne!(tree(&env, "api"), before, "TASK-1 did not land");

    // TASK-2's preparation stops at web's test, which the test holds.
    env.hold("web", "test");
    ready(&env, "TASK-2", &["api", "web"], &[]);
    let serve = ServeProc::start(&env);
    let id = crate::util::pipeline::queue(&env, "TASK-2", 0);
    env.wait_at_gate("web", "test");

    let firing = notification(
        "firing",
        r#""lockstep_repo":"api""#,
        "fp-api",
        &starts_at(0),
    );
    let r = post_alert(&serve, Some(ALERTMANAGER_TOKEN), &firing);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_answer_ends(
        &r.body,
        ": rolling back #1 of `TASK-1`: its rollback steps, then a revert in every repository\n",
    );
    wait_until("the revert", LONG, Some(&serve.log), || {
        tree(&env, "api") == before
    });
    // Reverted while TASK-2 still waits at its held test: the revert did not wait for it.
    assert_eq!(env.state(id), "running");
    assert_eq!(env.rollbacks(), ["api 1"]);
    let revert = env.master("api");

    env.open_gate("web", "test");
    wait_until("TASK-2", LONG, Some(&serve.log), || {
        env.state(id) == "delivered"
    });
    let show = env.show(id);
    let discarded = crate::util::pipeline::discards(&env, id);
    assert!(
        discarded.first().is_some_and(
            |d| d.starts_with("upstream_moved: base changed (the upstream of `api` moved to ")
        ),
        "TASK-2 was not prepared again: {discarded:?}"
    );
    let api = show["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["repo"] == "api")
        .unwrap()
        .clone();
    assert_eq!(api["base_sha"], revert.as_str(), "{show}");
    assert!(serve.stop(Duration::from_secs(10)).success());
}

/// `[delivery] watch_gates`: the gates keep sampling after the delivery lands, and one that
/// fails during the watch rolls the delivery back and reverts it, as an alert would.
#[test]
fn a_gate_failing_during_the_watch_reverts_the_delivery() {
    let Some((prometheus_bin, _)) = monitoring::binaries("a_gate_failing_during_the_watch") else {
        return;
    };
    let env = Env::new(&["api"]);
    let service = Service::start(&env.root().join("errors"));
    let prometheus =
        monitoring::prometheus(&prometheus_bin, env.dir.path(), &service.target, None, None);
    env.set_delivery("watch", "\"60s\"");
    env.set_delivery("watch_gates", "true");
    env.edit_config(|t| {
        format!(
            "{t}\n[prometheus]\nurl = \"{}\"\n\n[[gate]]\nname = \"error-rate\"\n\
             query = '{ERROR_RATIO}'\nmax = 0.05\nevery = \"1s\"\n",
            prometheus.url
        )
    });
    ready(&env, "TASK-1", &["api"], &[]);
    let before = tree(&env, "api");
    monitoring::wait_for_data(&prometheus);
    let serve = ServeProc::start(&env);
    let o = env.lockstep(&["deliver", "TASK-1", "--no-wait"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    wait_until("the gates' watch", LONG, Some(&serve.log), || {
        journal(&env, 1).iter().any(|(e, _)| e == "gates watched")
    });
    assert_ne!(tree(&env, "api"), before, "TASK-1 did not land");

    service.set_errors(50);
    wait_until("the rollback", LONG, Some(&serve.log), || {
        env.task("TASK-1").0 == "In Progress"
    });
    assert_eq!(tree(&env, "api"), before, "api was not reverted");
    assert_eq!(env.rollbacks(), ["api 1"]);
    let note = env.task("TASK-1").1.last().unwrap().clone();
    assert!(
        note.starts_with(&format!(
            "rolled back by lockstep (#1) during the watch: gate `error-rate`: `{ERROR_RATIO}` was 0."
        )) && note.contains(", above `max = 0.05`; reverted: api "),
        "{note}"
    );
    assert!(
        journal(&env, 1).contains(&("rollback triggered".into(), "gate".into())),
        "{:?}",
        journal(&env, 1)
    );
    let error = env.show(1)["delivery"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        error, note,
        "`lockstep show` and the queue page tell the rollback"
    );
    let metrics = serve.get("/metrics").body;
    assert!(
        metrics.contains("lockstep_rollbacks_total{trigger=\"gate\"} 1"),
        "{metrics}"
    );
    assert!(serve.stop(Duration::from_secs(10)).success());
}

/// Asserts that lockstep's answer to Alertmanager ends with `tail` (it starts with the alert
/// quoted).
fn assert_answer_ends(body: &str, tail: &str) {
    assert!(body.ends_with(tail), "{body}");
}
