//! Stages (`[delivery] stages = ["staging", "production"]`): the real `lockstep deliver` with
//! real step processes that record, in `$SANDBOX/stages.log`, each deploy, verify and rollback
//! with the `LOCKSTEP_ENV` and the environment's variable they ran with.

use crate::util::pipeline::{hold_worker_lock, queue, work};
use crate::util::*;

const REPOS: [&str; 2] = ["api", "web"];

/// The deploy, verify and rollback step: one line `<step> <repo> <LOCKSTEP_ENV> <TARGET>` in
/// `stages.log` (and `#<delivery> <step> <repo> <LOCKSTEP_ENV>` in `by-delivery.log`); it fails when `$SANDBOX/fail-<step>-<env>-<repo>` exists, and waits while
/// `$SANDBOX/hold-<step>-<env>-<repo>` does (saying so in `…waiting`). Build and test pass.
const STEP: &str = r##"#!/bin/sh
step="$1"
case "$step" in build|test) echo "$step ok"; exit 0 ;; esac
mark="$step-$LOCKSTEP_ENV-$LOCKSTEP_REPO"
if [ -e "$SANDBOX/hold-$mark" ]; then
  echo $$ > "$SANDBOX/hold-$mark.waiting"
  while [ -e "$SANDBOX/hold-$mark" ]; do
    [ -d "$SANDBOX/gates" ] || exit 99
    sleep 0.05
  done
fi
echo "$step $LOCKSTEP_REPO $LOCKSTEP_ENV $TARGET" >> "$SANDBOX/stages.log"
echo "#$LOCKSTEP_DELIVERY $step $LOCKSTEP_REPO $LOCKSTEP_ENV" >> "$SANDBOX/by-delivery.log"
if [ -e "$SANDBOX/fail-$mark" ]; then echo "$step failed in $LOCKSTEP_ENV"; exit 1; fi
echo "$step $LOCKSTEP_REPO to $LOCKSTEP_ENV"
"##;

/// A sandbox of api and web whose deliveries go through staging, then production.
fn staged_env() -> Env {
    let env = Env::new(&REPOS);
    let step = env.sb.meta.join("steps").join("stage.sh");
    std::fs::write(&step, STEP).unwrap();
    std::fs::set_permissions(&step, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    env.set_steps(|s| format!("[{}, \"{s}\"]", toml_str(&step)));
    let sandbox = toml_str(&std::fs::canonicalize(&env.sb.root).unwrap());
    env.edit_config(|t| {
        let mut out = String::new();
        for line in t.lines() {
            if line.starts_with("vars = { SANDBOX") {
                out.push_str(&format!(
                    "vars = {{ SANDBOX = {sandbox}, TARGET = \"prod-cluster\" }}\n\n\
                     [environments.staging]\n\
                     vars = {{ SANDBOX = {sandbox}, TARGET = \"staging-cluster\" }}\n"
                ));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    });
    env.set_delivery("stages", r#"["staging", "production"]"#);
    env
}

fn ready(env: &Env, task: &str) {
    env.set_status(&[(task, "In Progress")]);
    for repo in REPOS {
        env.task_branch(
            repo,
            &format!("feature/{task}-work"),
            &format!("{task}.txt"),
            &format!("{task} in {repo}\n"),
        );
    }
    env.set_status(&[(task, "For Delivery")]);
}

fn log(env: &Env) -> Vec<String> {
    std::fs::read_to_string(env.sb.root.join("stages.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn fail(env: &Env, step: &str, stage: &str, repo: &str) {
    std::fs::write(env.sb.root.join(format!("fail-{step}-{stage}-{repo}")), "").unwrap();
}

#[test]
fn a_two_stage_delivery_deploys_staging_then_production_in_order() {
    let env = staged_env();
    ready(&env, "TASK-1");
    let before = env.masters();
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        log(&env),
        [
            "deploy api staging staging-cluster",
            "deploy web staging staging-cluster",
            "verify api staging staging-cluster",
            "verify web staging staging-cluster",
            "deploy api production prod-cluster",
            "deploy web production prod-cluster",
            "verify api production prod-cluster",
            "verify web production prod-cluster",
        ]
    );
    assert_ne!(env.masters(), before, "delivered");
    let said = stdout(&o);
    assert!(
        said.contains("#1 TASK-1: stage    staging (1 of 2)"),
        "{said}"
    );
    assert!(
        said.contains("#1 TASK-1: stage    production (2 of 2)"),
        "{said}"
    );

    // `lockstep show` and its JSON say the stages.
    let o = env.lockstep(&["show", "1"]);
    assert!(
        stdout(&o).contains("  stages: staging passed, production passed"),
        "{}",
        stdout(&o)
    );
    let shown = env.show(1);
    assert_eq!(
        shown["stages"],
        serde_json::json!([
            {"stage": "staging", "state": "passed"},
            {"stage": "production", "state": "passed"},
        ])
    );
    // Each stage's steps keep a log of their own.
    let logs: Vec<String> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["repo"] == "api" && s["step"] == "deploy")
        .map(|s| {
            let path = s["log_path"].as_str().unwrap();
            std::fs::read_to_string(path).unwrap()
        })
        .collect();
    assert_eq!(
        logs,
        ["deploy api to staging\n", "deploy api to production\n"]
    );
    let o = env.lockstep(&["logs", "1", "--repo", "api", "--step", "deploy"]);
    assert_eq!(
        stdout(&o),
        "==> api deploy staging (passed, exit 0) <==\ndeploy api to staging\n\
         ==> api deploy production (passed, exit 0) <==\ndeploy api to production\n"
    );
}

#[test]
fn a_staging_verify_failure_never_touches_production() {
    let env = staged_env();
    ready(&env, "TASK-1");
    let before = env.masters();
    fail(&env, "verify", "staging", "web");
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_ne!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        log(&env),
        [
            "deploy api staging staging-cluster",
            "deploy web staging staging-cluster",
            "verify api staging staging-cluster",
            "verify web staging staging-cluster",
            "rollback web staging staging-cluster",
            "rollback api staging staging-cluster",
        ]
    );
    assert_eq!(env.masters(), before, "nothing merged");
    assert_eq!(env.state(1), "failed");
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    assert!(notes.last().unwrap().contains("nothing was merged"));
    let o = env.lockstep(&["show", "1"]);
    assert!(
        stdout(&o).contains("  stages: staging rolled back\n"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_production_failure_rolls_back_production_then_staging() {
    let env = staged_env();
    ready(&env, "TASK-1");
    let before = env.masters();
    fail(&env, "deploy", "production", "web");
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_ne!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        log(&env),
        [
            "deploy api staging staging-cluster",
            "deploy web staging staging-cluster",
            "verify api staging staging-cluster",
            "verify web staging staging-cluster",
            "deploy api production prod-cluster",
            "deploy web production prod-cluster",
            // web's production deploy failed half-way: it is undone too, latest first.
            "rollback web production prod-cluster",
            "rollback api production prod-cluster",
            "rollback web staging staging-cluster",
            "rollback api staging staging-cluster",
        ]
    );
    assert_eq!(env.masters(), before, "nothing merged");
    assert_eq!(env.state(1), "failed");
    let shown = env.show(1);
    for r in shown["repos"].as_array().unwrap() {
        assert_eq!(r["rolled_back"], true, "{r}");
        assert_eq!(r["merged"], false, "{r}");
    }
    let o = env.lockstep(&["show", "1"]);
    assert!(
        stdout(&o).contains("  stages: staging rolled back, production rolled back"),
        "{}",
        stdout(&o)
    );
    // Asked again, nothing runs twice.
    let o = env.lockstep(&["rollback", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("already rolled back"), "{}", stdout(&o));
    assert_eq!(log(&env).len(), 10);
}

#[test]
fn a_delivered_staged_delivery_rolls_back_every_stage_on_request() {
    let env = staged_env();
    ready(&env, "TASK-1");
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let o = env.lockstep(&["rollback", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        log(&env)[8..],
        [
            "rollback web production prod-cluster",
            "rollback api production prod-cluster",
            "rollback web staging staging-cluster",
            "rollback api staging staging-cluster",
        ]
    );
}

#[test]
fn a_stage_without_its_environment_is_a_config_error() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1");
    env.set_delivery("stages", r#"["staging", "production"]"#);
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains(
            "`delivery.stages` names `staging`, which has no environment: add \
             `[environments.staging]`"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_worker_killed_in_the_production_deploy_is_rolled_back_from_both_stages() {
    let env = staged_env();
    ready(&env, "TASK-1");
    let before = env.masters();
    let hold = env.sb.root.join("hold-deploy-production-web");
    std::fs::write(&hold, "").unwrap();
    let mut worker = env.spawn("worker", &["deliver", "TASK-1"]);
    let pid: i32 = wait_for("web's production deploy to wait", || {
        std::fs::read_to_string(env.sb.root.join("hold-deploy-production-web.waiting"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    // The worker records a step's pid (its supervisor's) just after starting it; killed
    // before that, it would leave a step recovery cannot find.
    let pid = parent_of(pid).expect("the held deploy is alive");
    wait_for(
        "web's production deploy to be recorded with its pid",
        || {
            env.show(1)["steps"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["repo"] == "web" && s["step"] == "deploy" && s["pid"] == pid)
                .then_some(())
        },
    );
    worker.kill().unwrap();
    worker.wait().unwrap();
    // The held deploy outlives the worker, still waiting: recovery stops it.
    let o = env.lockstep(&["recover"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(
            "#1 TASK-1: delivery failed in deploy: the worker stopped during deploy to \
             production; what was deployed is rolled back"
        ),
        "{}",
        stdout(&o)
    );
    wait_for("the killed worker's steps to be stopped", || {
        env.step_processes().is_empty().then_some(())
    });
    // The interrupted deploy never wrote its line (it was stopped waiting); it is rolled back
    // all the same, then api's production, then staging.
    assert_eq!(
        log(&env),
        [
            "deploy api staging staging-cluster",
            "deploy web staging staging-cluster",
            "verify api staging staging-cluster",
            "verify web staging staging-cluster",
            "deploy api production prod-cluster",
            "rollback web production prod-cluster",
            "rollback api production prod-cluster",
            "rollback web staging staging-cluster",
            "rollback api staging staging-cluster",
        ]
    );
    assert_eq!(env.masters(), before, "nothing merged");
    assert_eq!(env.state(1), "failed");
    let o = env.lockstep(&["show", "1"]);
    assert!(
        stdout(&o).contains("  stages: staging rolled back, production rolled back"),
        "{}",
        stdout(&o)
    );
    std::fs::remove_file(&hold).unwrap();
}

#[test]
fn in_the_pipeline_the_head_goes_through_every_stage_before_the_next_deploys() {
    let env = staged_env();
    env.set_delivery("window", "3");
    ready(&env, "TASK-1");
    ready(&env, "TASK-3");
    let lock = hold_worker_lock(&env);
    let ids = [queue(&env, "TASK-1", 0), queue(&env, "TASK-3", 0)];
    drop(lock);
    work(&env);
    assert_eq!(ids, [1, 2]);
    assert_eq!(env.state(1), "delivered");
    assert_eq!(env.state(2), "delivered");
    let by_delivery: Vec<String> = std::fs::read_to_string(env.sb.root.join("by-delivery.log"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let stages = |id: i64| -> Vec<String> {
        ["staging", "production"]
            .iter()
            .flat_map(|stage| {
                ["deploy", "verify"]
                    .into_iter()
                    .flat_map(move |step| REPOS.map(|repo| format!("#{id} {step} {repo} {stage}")))
            })
            .collect()
    };
    assert_eq!(by_delivery, [stages(1), stages(2)].concat());
}
