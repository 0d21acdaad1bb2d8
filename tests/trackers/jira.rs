//! Jira, against the fake of `util::fake_jira`.

use std::time::{Duration, Instant};

use lockstep::Jira;
use lockstep::{Credential, Tracker, TrackerError, task_with_timeout};

use super::{push_branch, said, sandbox_with};
use crate::util::fake_jira::{FakeJira, Flavor, parse_jql};
use crate::util::*;

const USER: &str = "bot@acme.example";
const TOKEN: &str = "jira-t0ken-6f1d";

/// The `Basic` header the fake expects.
fn basic() -> String {
    use base64::Engine as _;
    let pair = format!("{USER}:{TOKEN}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn fake(flavor: Flavor) -> FakeJira {
    FakeJira::start(flavor, &basic())
}

fn client(fake: &FakeJira, token: &str) -> Jira {
    Jira::new(
        fake.url(),
        Some(USER.into()),
        Credential::new("JIRA_TOKEN", token),
        None,
        Duration::from_secs(2),
    )
    .unwrap()
}

#[tokio::test]
async fn reads_a_task() {
    let fake = fake(Flavor::Server);
    fake.add(
        "SHOP-12",
        "In Progress",
        "Log in with SSO",
        Some("Alice Example"),
    );
    fake.add("SHOP-13", "To Do", "Search", None);
    let jira = client(&fake, TOKEN);

    let t = jira.task(&"SHOP-12".into()).await.unwrap().unwrap();
    assert_eq!(t.key, "SHOP-12");
    assert_eq!(t.status, "In Progress");
    assert_eq!(t.title, "Log in with SSO");
    assert_eq!(t.assignee, "Alice Example");
    assert_eq!(t.url, format!("{}/browse/SHOP-12", fake.url()));
    assert_eq!(
        jira.task(&"SHOP-13".into())
            .await
            .unwrap()
            .unwrap()
            .assignee,
        ""
    );
    assert_eq!(jira.task(&"SHOP-99".into()).await.unwrap(), None);
    assert_eq!(
        fake.count("GET /rest/api/2/issue/SHOP-12?fields=status%2Csummary%2Cassignee"),
        1
    );
}

#[tokio::test]
async fn keys_that_are_not_jira_keys_never_reach_jira() {
    let fake = fake(Flavor::Server);
    let jira = client(&fake, TOKEN);
    for key in ["shop-1", "SHOP-1/../../admin", "SHOP-1?x=1"] {
        let e = jira.task(&key.into()).await.unwrap_err().to_string();
        assert!(e.contains("is not a Jira issue key like `PROJ-123`"), "{e}");
    }
    assert_eq!(fake.count(""), 0);
}

#[tokio::test]
async fn moves_with_a_note() {
    let fake = fake(Flavor::Server);
    fake.add("SHOP-1", "In Progress", "Log in", None);
    let jira = client(&fake, TOKEN);

    jira.move_to(
        &"SHOP-1".into(),
        "For Delivery",
        "ready: all repositories pushed",
    )
    .await
    .unwrap();
    let note = "delivered by lockstep: api 1a2b3c → master, web 4d5e6f → master";
    jira.move_to(&"SHOP-1".into(), "Done", note).await.unwrap();

    // Already there: nothing to transition, the note is still left.
    jira.move_to(&"SHOP-1".into(), "done", "delivered again")
        .await
        .unwrap();

    let issue = fake.issue("SHOP-1");
    assert_eq!(issue.status, "Done");
    assert_eq!(
        issue.comments,
        ["ready: all repositories pushed", note, "delivered again"]
    );
    assert_eq!(
        jira.task(&"SHOP-1".into()).await.unwrap().unwrap().status,
        "Done"
    );
    assert_eq!(fake.count("POST /rest/api/2/issue/SHOP-1/transitions"), 2);
}

#[tokio::test]
async fn a_move_the_workflow_does_not_offer_is_refused() {
    let fake = fake(Flavor::Server);
    fake.add("SHOP-2", "In Progress", "Search", None);
    let jira = client(&fake, TOKEN);

    let e = jira
        .move_to(&"SHOP-2".into(), "Done", "delivered by lockstep")
        .await
        .unwrap_err();
    assert!(matches!(e, TrackerError::Refused { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "tracker `jira` did not move task `SHOP-2` to `Done`: the workflow has no transition \
         from `In Progress` to it for this account; from `In Progress` it offers `To Do`, \
         `For Delivery`"
    );
    let issue = fake.issue("SHOP-2");
    assert_eq!(issue.status, "In Progress");
    assert!(issue.comments.is_empty(), "{:?}", issue.comments);
}

#[tokio::test]
async fn unknown_status_and_unknown_issue() {
    let fake = fake(Flavor::Server);
    fake.add("SHOP-3", "In Progress", "Cart", None);
    let jira = client(&fake, TOKEN);

    let e = jira
        .move_to(&"SHOP-3".into(), "Dnoe", "x")
        .await
        .unwrap_err();
    assert!(matches!(e, TrackerError::NoSuchStatus { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "tracker `jira` has no status `Dnoe`; its statuses are `Done`, `For Delivery`, \
         `In Progress`, `To Do`"
    );
    let e = jira
        .move_to(&"SHOP-404".into(), "Done", "x")
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "task `SHOP-404` does not exist in jira");
    assert_eq!(fake.issue("SHOP-3").status, "In Progress");
}

#[tokio::test]
async fn a_refused_token_names_its_variable_never_its_value() {
    let fake = fake(Flavor::Server);
    fake.add("SHOP-1", "In Progress", "Log in", None);
    let jira = client(&fake, "not-the-t0ken");
    for e in [
        jira.task(&"SHOP-1".into()).await.unwrap_err(),
        jira.move_to(&"SHOP-1".into(), "For Delivery", "x")
            .await
            .unwrap_err(),
        jira.in_statuses(&["For Delivery".into()])
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(e, TrackerError::Auth { .. }), "{e:?}");
        let text = format!("{e} {e:?}");
        assert!(
            text.contains("refused the credentials in `JIRA_TOKEN`"),
            "{text}"
        );
        assert!(!text.contains("not-the-t0ken"), "{text}");
    }
}

#[tokio::test]
async fn a_data_center_token_goes_as_a_bearer_token() {
    let fake = FakeJira::start(Flavor::Server, &format!("Bearer {TOKEN}"));
    fake.add("OPS-7", "In Progress", "Rotate keys", None);
    let jira = Jira::new(
        fake.url(),
        None,
        Credential::new("JIRA_TOKEN", TOKEN),
        None,
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(
        jira.task(&"OPS-7".into()).await.unwrap().unwrap().title,
        "Rotate keys"
    );
}

#[tokio::test]
async fn lists_the_tasks_for_delivery_page_by_page() {
    let fake = fake(Flavor::Server);
    fake.state.lock().unwrap().page_cap = 2;
    for n in 1..=5 {
        fake.add(&format!("SHOP-{n}"), "For Delivery", "ready", None);
    }
    fake.add("SHOP-6", "In Progress", "not yet", None);
    fake.add("OPS-1", "For Delivery", "other project", None);
    let jira = client(&fake, TOKEN);

    let tasks = jira.in_statuses(&["For Delivery".into()]).await.unwrap();
    let mut keys: Vec<&str> = tasks.iter().map(|t| t.key.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["OPS-1", "SHOP-1", "SHOP-2", "SHOP-3", "SHOP-4", "SHOP-5"]
    );
    assert!(tasks.iter().all(|t| t.status == "For Delivery"));
    assert_eq!(fake.count("GET /rest/api/2/search?"), 3);

    let in_project = Jira::new(
        fake.url(),
        Some(USER.into()),
        Credential::new("JIRA_TOKEN", TOKEN),
        Some("OPS".into()),
        Duration::from_secs(2),
    )
    .unwrap();
    let tasks = in_project
        .in_statuses(&["For Delivery".into()])
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].key, "OPS-1");
}

#[tokio::test]
async fn status_names_are_quoted_in_jql() {
    let fake = fake(Flavor::Server);
    let jira = client(&fake, TOKEN);
    let names = vec![
        "For Delivery".to_string(),
        r#"Ready" OR project = "SECRET"#.to_string(),
        r"back\slash".to_string(),
    ];
    assert!(jira.in_statuses(&names).await.unwrap().is_empty());
    let jql = fake.state.lock().unwrap().searches[0].clone();
    assert_eq!(parse_jql(&jql), (names, None), "{jql}");
}

#[tokio::test]
async fn jira_cloud_is_listed_through_search_jql() {
    let fake = fake(Flavor::Cloud);
    fake.state.lock().unwrap().page_cap = 2;
    for n in 1..=3 {
        fake.add(&format!("SHOP-{n}"), "For Delivery", "ready", None);
    }
    let jira = client(&fake, TOKEN);

    for _ in 0..2 {
        let tasks = jira.in_statuses(&["For Delivery".into()]).await.unwrap();
        let keys: Vec<&str> = tasks.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["SHOP-1", "SHOP-2", "SHOP-3"]);
    }
    // One 410 Gone is enough to remember that this Jira is Cloud.
    assert_eq!(fake.count("GET /rest/api/2/search?"), 1);
    assert_eq!(fake.count("GET /rest/api/2/search/jql?"), 4);
}

#[tokio::test]
async fn a_slow_jira_times_out() {
    let fake = fake(Flavor::Server);
    fake.add("SHOP-7", "In Progress", "Slow", None);
    fake.state.lock().unwrap().slow = Some(("SHOP-7".into(), Duration::from_secs(5)));
    let jira = Jira::new(
        fake.url(),
        Some(USER.into()),
        Credential::new("JIRA_TOKEN", TOKEN),
        None,
        Duration::from_millis(300),
    )
    .unwrap();
    let started = Instant::now();
    let e = task_with_timeout(&jira, &"SHOP-7".into(), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "tracker `jira` did not answer in 300ms");
    // The client's own bound, without the hooks' deadline around it.
    let e = jira.task(&"SHOP-7".into()).await.unwrap_err();
    assert!(matches!(e, TrackerError::Timeout { .. }), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

fn jira_config(url: &str, extra: &str) -> String {
    format!(
        "[tracker]\nkind = \"jira\"\nurl = \"{url}\"\nuser = \"{USER}\"\ntimeout = \"300ms\"\n{extra}"
    )
}

#[test]
fn pushes_follow_the_jira_status() {
    let fake = fake(Flavor::Server);
    fake.add("SHOP-1", "In Progress", "Log in", None);
    fake.add("SHOP-2", "To Do", "Search", None);
    let (env, clone) = sandbox_with(&jira_config(fake.url(), ""));
    let vars = [("JIRA_TOKEN", TOKEN)];

    let p = push_branch(&clone, "feature/SHOP-1-login", &vars);
    assert!(p.accepted, "{}", said(&p));
    assert!(env.rev("api", "refs/heads/feature/SHOP-1-login").is_some());

    let p = push_branch(&clone, "feature/SHOP-2-search", &vars);
    assert!(!p.accepted);
    assert!(
        said(&p).contains(
            "[task-in-progress] task `SHOP-2` is To Do, not In Progress; move it to In \
             Progress in jira, then push again"
        ),
        "{}",
        said(&p)
    );
    let p = push_branch(&clone, "feature/SHOP-9-ghost", &vars);
    assert!(
        said(&p).contains("task `SHOP-9` does not exist in jira; check the branch name"),
        "{}",
        said(&p)
    );
    assert_eq!(env.rev("api", "refs/heads/feature/SHOP-9-ghost"), None);
}

#[test]
fn a_slow_jira_rejects_the_push_or_lets_it_through_with_a_warning() {
    let fake = fake(Flavor::Server);
    fake.add("SHOP-3", "In Progress", "Cart", None);
    fake.state.lock().unwrap().slow = Some(("SHOP-3".into(), Duration::from_secs(5)));
    let (env, clone) = sandbox_with(&jira_config(fake.url(), ""));
    let vars = [("JIRA_TOKEN", TOKEN)];

    let p = push_branch(&clone, "feature/SHOP-3-cart", &vars);
    assert!(!p.accepted);
    assert!(
        said(&p).contains(
            "refs/heads/feature/SHOP-3-cart: [task-in-progress] tracker `jira` did not answer \
             in 300ms; push rejected (rule task-in-progress)"
        ),
        "{}",
        said(&p)
    );
    assert_eq!(env.rev("api", "refs/heads/feature/SHOP-3-cart"), None);

    env.use_tracker(&jira_config(fake.url(), "on_error = \"allow\"\n"));
    let p = super::alice_push(&clone, &vars, &["feature/SHOP-3-cart"]);
    assert!(p.accepted, "{}", said(&p));
    assert!(
        said(&p).contains(
            "lockstep: warning: refs/heads/feature/SHOP-3-cart: [task-in-progress] tracker \
             `jira` did not answer in 300ms; push accepted without this check (rule \
             task-in-progress)"
        ),
        "{}",
        said(&p)
    );
    assert!(env.rev("api", "refs/heads/feature/SHOP-3-cart").is_some());
}

#[test]
fn a_refused_token_rejects_the_push_naming_the_variable() {
    let fake = fake(Flavor::Server);
    fake.add("SHOP-1", "In Progress", "Log in", None);
    let (_env, clone) = sandbox_with(&jira_config(fake.url(), ""));
    let p = push_branch(
        &clone,
        "feature/SHOP-1-login",
        &[("JIRA_TOKEN", "wr0ng-t0ken")],
    );
    assert!(!p.accepted);
    let text = said(&p);
    assert!(
        text.contains(
            "tracker `jira` refused the credentials in `JIRA_TOKEN`; check that variable; push \
             rejected (rule task-in-progress)"
        ),
        "{text}"
    );
    assert!(!text.contains("wr0ng-t0ken"), "{text}");
}

#[test]
fn a_missing_token_variable_is_a_config_error_naming_it() {
    let fake = fake(Flavor::Server);
    let (_env, clone) = sandbox_with(&jira_config(
        fake.url(),
        "token_env = \"LOCKSTEP_TEST_NEVER_SET\"\n",
    ));
    let p = push_branch(&clone, "feature/SHOP-1-login", &[]);
    assert!(!p.accepted);
    assert!(
        said(&p).contains(
            "lockstep: push rejected: tracker `jira`: variable `LOCKSTEP_TEST_NEVER_SET` is \
             not set; export the API token in it where the hooks and the server run"
        ),
        "{}",
        said(&p)
    );
    assert_eq!(fake.count(""), 0);
}

#[test]
fn a_push_of_100_refs_naming_3_tasks_reads_each_task_once() {
    let fake = fake(Flavor::Server);
    for n in 1..=3 {
        fake.add(&format!("SHOP-{n}"), "In Progress", "work", None);
    }
    let (env, clone) = sandbox_with(&jira_config(fake.url(), ""));
    commit(
        &clone,
        "alice",
        "wide.txt",
        "wide\n",
        "SHOP-1 SHOP-2 SHOP-3 wide change",
    )
    .unwrap();
    let refspecs: Vec<String> = (0..100)
        .map(|i| format!("HEAD:refs/heads/feature/SHOP-{}-part{i}", i % 3 + 1))
        .collect();
    let args: Vec<&str> = refspecs.iter().map(String::as_str).collect();
    let p = super::alice_push(&clone, &[("JIRA_TOKEN", TOKEN)], &args);
    assert!(p.accepted, "{}", said(&p));
    assert!(env.rev("api", "refs/heads/feature/SHOP-2-part97").is_some());
    assert_eq!(fake.count("GET /rest/api/2/issue/"), 3);
    for n in 1..=3 {
        assert_eq!(fake.count(&format!("GET /rest/api/2/issue/SHOP-{n}?")), 1);
    }
}

#[tokio::test]
async fn credentials_that_may_only_read_are_told_apart_from_bad_ones() {
    let fake = fake(Flavor::Cloud);
    fake.add("SHOP-1", "In Progress", "Log in", None);
    fake.state.lock().unwrap().read_only = true;
    let jira = client(&fake, TOKEN);
    assert_eq!(
        jira.task(&"SHOP-1".into()).await.unwrap().unwrap().status,
        "In Progress"
    );
    let e = jira
        .move_to(&"SHOP-1".into(), "For Delivery", "x")
        .await
        .unwrap_err();
    assert!(matches!(e, TrackerError::Forbidden { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with("tracker `jira` took the credentials in `JIRA_TOKEN` but does not allow them POST /rest/api/2/issue/SHOP-1/"),
        "{text}"
    );
    assert!(text.ends_with("give that account the permission"), "{text}");
    assert!(!format!("{e:?}").contains(TOKEN), "{e:?}");
    assert_eq!(fake.issue("SHOP-1").status, "In Progress");
}
