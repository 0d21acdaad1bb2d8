//! Steps on a `kind = "status"` runner, with `lockstep serve`: a CI stand-in (this test)
//! sees the candidate branch the bot pushed to the real repository and posts commit statuses
//! for its sha to `POST /api/statuses/<sha>`, as Jenkins, GitLab CI or GitHub Actions would;
//! for repositories on GitHub (a fake on 127.0.0.1), the check runs and commit statuses
//! GitHub has for the sha count as well.

use std::time::{Duration, Instant};

use crate::util::fake_github::{CheckRun, FakeGitHub};
use crate::util::serve::{self, ServeProc, wait_until};
use crate::util::*;

const REPOS: [&str; 2] = ["api", "web"];
const TOKEN_VAR: &str = "LOCKSTEP_TEST_STATUS_TOKEN";
const TOKEN: &str = "test-status-token-9c2";

/// A sandbox whose test steps wait for `ci/test` on the status runner `ci` (`runner` added to
/// its table), with `lockstep serve` running its queue.
fn sandbox(runner: &str) -> (Env, ServeProc) {
    sandbox_with(runner, None)
}

/// The sandbox, its repositories `acme/<name>` on the fake GitHub `gh` when given.
fn sandbox_with(runner: &str, gh: Option<&FakeGitHub>) -> (Env, ServeProc) {
    let env = Env::new(&REPOS);
    let gate = env.sb.meta.join("steps").join("gate.sh");
    let steps = env.sb.meta.join("steps");
    env.set_steps(|s| match s {
        "test" => "{ runner = \"ci\", contexts = [\"ci/test\"] }".into(),
        _ => format!(
            "[{}, \"{s}\", {}]",
            toml_str(&gate),
            toml_str(&steps.join(format!("{s}.sh")))
        ),
    });
    env.edit_config(|t| {
        format!("{t}\n[runners.ci]\nkind = \"status\"\ntoken_env = \"{TOKEN_VAR}\"\n{runner}\n")
    });
    if let Some(gh) = gh {
        env.edit_config(|t| {
            let mut t = t.to_string();
            for repo in REPOS {
                t = t.replace(
                    &format!("name = \"{repo}\"\n"),
                    &format!("name = \"{repo}\"\ngithub = \"acme/{repo}\"\n"),
                );
            }
            format!("{t}\n{}", serve::github_section(gh.url()))
        });
    }
    env.set_status(&[("TASK-1", "In Progress")]);
    for repo in REPOS {
        env.task_branch(repo, "feature/TASK-1-work", "TASK-1.txt", "TASK-1\n");
    }
    env.set_status(&[("TASK-1", "For Delivery")]);
    let serve = ServeProc::start_with(&env, &[(TOKEN_VAR, TOKEN)]);
    (env, serve)
}

fn post_status(serve: &ServeProc, token: Option<&str>, sha: &str, body: &str) -> http::Resp {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    http::request(
        &serve.url,
        "POST",
        &format!("/api/statuses/{sha}"),
        &headers,
        body.as_bytes(),
    )
    .unwrap()
}

/// Waits for the candidate branch of delivery 1 in each repository; their shas.
fn candidates(env: &Env, serve: &ServeProc) -> Vec<String> {
    let mut shas = Vec::new();
    for repo in REPOS {
        let mut sha = None;
        wait_until(
            &format!("the candidate branch of {repo}"),
            Duration::from_secs(60),
            Some(&serve.log),
            || {
                sha = env.rev(repo, "refs/heads/lockstep/1");
                sha.is_some()
            },
        );
        shas.push(sha.unwrap());
    }
    shas
}

/// Waits for delivery 1 to end; its state.
fn ended(env: &Env, serve: &ServeProc) -> String {
    let mut state = String::new();
    wait_until(
        "the delivery to end",
        Duration::from_secs(60),
        Some(&serve.log),
        || {
            state = env.state(1);
            state != "queued" && state != "running"
        },
    );
    state
}

#[test]
fn statuses_posted_by_the_ci_land_the_delivery_and_a_status_without_the_token_counts_for_nothing() {
    let (env, serve) = sandbox("");
    let o = env.lockstep(&["deliver", "TASK-1", "--no-wait"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shas = candidates(&env, &serve);

    // A failure without the token, or with a wrong one, is refused and counts for nothing.
    let failure = r#"{"state": "failure", "context": "ci/test"}"#;
    for token in [None, Some("wrong"), Some("")] {
        let r = post_status(&serve, token, &shas[0], failure);
        assert_eq!(r.status, 401, "{token:?}: {}", r.body);
        assert_eq!(
            r.body,
            format!(
                "lockstep: missing or wrong `Authorization: Bearer` token; the CI sends the one \
                 in `{TOKEN_VAR}`\n"
            )
        );
    }
    let r = post_status(&serve, Some(TOKEN), "not-a-sha", failure);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post_status(&serve, Some(TOKEN), &shas[0], "{\"state\": \"fine\"}");
    assert_eq!(r.status, 400, "{}", r.body);
    // A success for another sha counts for nothing either.
    let other = "f".repeat(40);
    let success =
        r#"{"state": "success", "context": "ci/test", "target_url": "https://ci.example.com/7"}"#;
    assert_eq!(
        post_status(&serve, Some(TOKEN), &other, success).status,
        201
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(env.state(1), "running");

    for sha in &shas {
        let pending = r#"{"state": "pending", "context": "ci/test"}"#;
        let r = post_status(&serve, Some(TOKEN), sha, pending);
        assert_eq!(r.status, 201, "{}", r.body);
        let r = post_status(&serve, Some(TOKEN), sha, success);
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(
            r.body,
            format!("lockstep: `ci/test` of {sha} is `success`\n")
        );
    }
    assert_eq!(ended(&env, &serve), "delivered");
    for (i, repo) in REPOS.iter().enumerate() {
        assert_eq!(
            env.master(repo),
            shas[i],
            "{repo} landed what the CI passed"
        );
        assert_eq!(env.rev(repo, "refs/heads/lockstep/1"), None, "{repo}");
    }
}

#[test]
fn a_failure_status_fails_the_delivery_naming_the_context_and_its_url() {
    let (env, serve) = sandbox("");
    let before = env.masters();
    let o = env.lockstep(&["deliver", "TASK-1", "--no-wait"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shas = candidates(&env, &serve);
    let failure = r#"{"state": "failure", "context": "ci/test", "target_url": "https://ci.example.com/job/api/42", "description": "2 tests failed"}"#;
    let r = post_status(&serve, Some(TOKEN), &shas[0], failure);
    assert_eq!(r.status, 201, "{}", r.body);

    assert_eq!(ended(&env, &serve), "failed");
    assert_eq!(env.masters(), before);
    let show = stdout(&env.lockstep(&["show", "1"]));
    assert!(
        show.contains(
            "delivery failed in test (api): `test` failed on runner `ci`: status `ci/test` is \
             `failure`: 2 tests failed (https://ci.example.com/job/api/42)"
        ),
        "{show}"
    );
    for repo in REPOS {
        assert_eq!(env.rev(repo, "refs/heads/lockstep/1"), None, "{repo}");
    }
}

#[test]
fn a_status_that_never_comes_fails_the_step_at_wait() {
    let (env, serve) = sandbox("wait = \"3s\"\n");
    let o = env.lockstep(&["deliver", "TASK-1", "--no-wait"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shas = candidates(&env, &serve);
    // Pending keeps it waiting, up to `wait`.
    let started = Instant::now();
    for sha in &shas {
        let pending = r#"{"state": "pending", "context": "ci/test"}"#;
        assert_eq!(post_status(&serve, Some(TOKEN), sha, pending).status, 201);
    }
    assert_eq!(ended(&env, &serve), "failed");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let show = stdout(&env.lockstep(&["show", "1"]));
    assert!(
        show.contains("`test` waited 3s on runner `ci` for `ci/test` and gave up"),
        "{show}"
    );
}

/// `lockstep deliver TASK-1 --no-wait` with the GitHub token at hand.
fn deliver_on_github(env: &Env) {
    let o = env
        .command(&["deliver", "TASK-1", "--no-wait"])
        .env(serve::TOKEN_VAR, serve::TOKEN)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

fn check_run(repo: &str, sha: &str, status: &str, conclusion: Option<&str>) -> CheckRun {
    CheckRun {
        repo: format!("acme/{repo}"),
        head_sha: sha.into(),
        name: "ci/test".into(),
        status: status.into(),
        conclusion: conclusion.map(str::to_string),
        details_url: format!("https://ci.example.com/{repo}/{sha}"),
    }
}

#[test]
fn check_runs_and_statuses_on_github_land_the_delivery_and_another_shas_count_for_nothing() {
    let gh = FakeGitHub::start(serve::TOKEN);
    let (env, serve) = sandbox_with("", Some(&gh));
    deliver_on_github(&env);
    let shas = candidates(&env, &serve);

    // A success of another commit, and a run still in progress on the candidate, count for
    // nothing: the delivery keeps waiting past a few reads of GitHub.
    let other = "e".repeat(40);
    for repo in REPOS {
        gh.check_run(check_run(repo, &other, "completed", Some("success")));
    }
    gh.check_run(check_run("api", &shas[0], "in_progress", None));
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(env.state(1), "running", "{}", serve.log_text());
    let reads = |repo: &str, sha: &str, what: &str| {
        gh.count(&format!("GET /repos/acme/{repo}/commits/{sha}/{what}"))
    };
    assert!(reads("api", &shas[0], "check-runs") >= 2);
    assert!(reads("api", &shas[0], "status") >= 2);
    assert_eq!(reads("api", &other, "check-runs"), 0);

    // api passes by its check run, web by a commit status set on GitHub (not posted to
    // lockstep).
    gh.check_run(check_run("api", &shas[0], "completed", Some("success")));
    let r = http::request(
        gh.url(),
        "POST",
        &format!("/repos/acme/web/statuses/{}", shas[1]),
        &[
            ("authorization", &format!("Bearer {}", serve::TOKEN)),
            ("content-type", "application/json"),
        ],
        br#"{"state": "success", "context": "ci/test", "target_url": "https://ci.example.com/web/1"}"#,
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(ended(&env, &serve), "delivered");
    for (i, repo) in REPOS.iter().enumerate() {
        assert_eq!(
            env.master(repo),
            shas[i],
            "{repo} landed what GitHub passed"
        );
        assert_eq!(env.rev(repo, "refs/heads/lockstep/1"), None, "{repo}");
    }
}

#[test]
fn a_failed_check_run_on_github_fails_the_delivery_naming_the_check_and_its_url() {
    let gh = FakeGitHub::start(serve::TOKEN);
    let (env, serve) = sandbox_with("", Some(&gh));
    let before = env.masters();
    deliver_on_github(&env);
    let shas = candidates(&env, &serve);
    gh.check_run(check_run("web", &shas[1], "completed", Some("success")));
    gh.check_run(check_run("api", &shas[0], "completed", Some("timed_out")));

    assert_eq!(ended(&env, &serve), "failed");
    assert_eq!(env.masters(), before);
    let show = stdout(&env.lockstep(&["show", "1"]));
    assert!(
        show.contains(
            "delivery failed in test (api): `test` failed on runner `ci`: status `ci/test` is \
             `failure`: ci/test timed_out (https://github.com/acme/api/runs/4001)"
        ),
        "{show}"
    );
    let logs = stdout(&env.lockstep(&["logs", "1", "--repo", "api", "--step", "test"]));
    assert!(
        logs.contains(&format!(
            "lockstep: reads the statuses and check runs of acme/api@{} on GitHub too",
            shas[0]
        )),
        "{logs}"
    );
}
