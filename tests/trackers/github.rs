//! GitHub Issues, against the fake of `util::fake_github` (octocrab, as in production, with
//! its base URL pointed at the fake).

use std::time::{Duration, Instant};

use lockstep::{Credential, Tracker, TrackerError, task_with_timeout};
use lockstep::{GitHubIssues, LABEL_PREFIX};

use super::{push_branch, said, sandbox_with};
use crate::util::fake_github::{FakeGitHub, Pull};

const TOKEN: &str = "ghp_fakeT0ken0000000000000000000000000";

const REPO: &str = "acme/shop";

fn fake() -> FakeGitHub {
    let fake = FakeGitHub::start(TOKEN);
    fake.add_labels(
        REPO,
        &[
            "bug",
            "status: To Do",
            "status: In Progress",
            "status: For Delivery",
        ],
    );
    fake
}

fn client_with(fake: &FakeGitHub, token: &str, timeout: Duration) -> GitHubIssues {
    GitHubIssues::new(
        fake.url(),
        REPO,
        Credential::new("GITHUB_TOKEN", token),
        LABEL_PREFIX,
        timeout,
    )
    .unwrap()
}

fn client(fake: &FakeGitHub) -> GitHubIssues {
    client_with(fake, TOKEN, Duration::from_secs(2))
}

#[tokio::test]
async fn reads_the_status_from_the_label_or_the_state() {
    let fake = fake();
    fake.add_issue(
        REPO,
        12,
        "Log in with SSO",
        true,
        &["bug", "status: In Progress"],
    );
    fake.add_issue(REPO, 13, "Search", true, &["bug"]);
    fake.add_issue(REPO, 14, "Old", false, &["status: In Progress"]);
    fake.add_issue(
        REPO,
        15,
        "Confused",
        true,
        &["status: To Do", "status: In Progress"],
    );
    fake.add_issue(REPO, 16, "A pull request", true, &["status: In Progress"]);
    fake.update(REPO, 16, |i| i.pull = Some(Pull::default()));
    let gh = client(&fake);

    let t = gh.task(&"12".into()).await.unwrap().unwrap();
    assert_eq!(t.key, "12");
    assert_eq!(t.status, "In Progress");
    assert_eq!(t.title, "Log in with SSO");
    assert_eq!(t.assignee, "alice");
    assert_eq!(t.url, "https://github.com/acme/shop/issues/12");
    assert_eq!(gh.task(&"13".into()).await.unwrap().unwrap().status, "Open");
    assert_eq!(
        gh.task(&"14".into()).await.unwrap().unwrap().status,
        "Closed"
    );
    let e = gh.task(&"15".into()).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "tracker `github`: issue #15 has several status labels (`status: To Do`, \
         `status: In Progress`); keep one"
    );
    assert_eq!(
        gh.task(&"16".into()).await.unwrap(),
        None,
        "pull requests are not tasks"
    );
    assert_eq!(gh.task(&"99".into()).await.unwrap(), None);
}

#[tokio::test]
async fn a_move_replaces_the_status_label_and_comments() {
    let fake = fake();
    fake.add_issue(REPO, 3, "Cart", true, &["bug", "status: In Progress"]);
    let gh = client(&fake);

    gh.move_to(&"3".into(), "For Delivery", "ready")
        .await
        .unwrap();
    let i = fake.issue(REPO, 3);
    assert_eq!(i.labels, ["bug", "status: For Delivery"]);
    assert!(i.open);

    let note = "delivered by lockstep: api 1a2b3c → master, web 4d5e6f → master";
    gh.move_to(&"3".into(), "Closed", note).await.unwrap();
    let i = fake.issue(REPO, 3);
    assert!(!i.open);
    assert_eq!(i.labels, ["bug"]);
    assert_eq!(
        gh.task(&"3".into()).await.unwrap().unwrap().status,
        "Closed"
    );

    let back = "delivery failed in test (web): 2 tests failed";
    gh.move_to(&"3".into(), "in progress", back).await.unwrap();
    let i = fake.issue(REPO, 3);
    assert!(i.open);
    assert_eq!(
        i.labels,
        ["bug", "status: In Progress"],
        "GitHub's spelling"
    );
    // GitHub reads a comment as Markdown: each note is one fenced block.
    let fenced = |t: &str| format!("```text\n{t}\n```");
    assert_eq!(i.comments, [fenced("ready"), fenced(note), fenced(back)]);
}

/// Issue 22: a note quoting step output leaves a comment where none of it is live Markdown.
#[tokio::test]
async fn issue22_a_note_is_never_live_markdown() {
    use crate::util::markdown::{PAYLOAD, assert_inert};
    let fake = fake();
    fake.add_issue(REPO, 3, "Cart", true, &["status: In Progress"]);
    let gh = client(&fake);
    let note = format!(
        "delivery failed in test (web): `test` exited with 1: {PAYLOAD}\n\n\
         last lines of the log:\n```\n# {PAYLOAD}\n````\n{PAYLOAD}"
    );
    gh.move_to(&"3".into(), "In Progress", &note).await.unwrap();
    let comment = fake.issue(REPO, 3).comments.pop().unwrap();
    assert!(comment.contains(PAYLOAD), "{comment}");
    assert_inert(&comment);
}

#[tokio::test]
async fn a_status_without_a_label_is_named_with_the_ones_there_are() {
    let fake = fake();
    fake.add_issue(REPO, 4, "Filters", true, &["status: In Progress"]);
    let gh = client(&fake);
    let e = gh.move_to(&"4".into(), "Shipped", "x").await.unwrap_err();
    assert!(matches!(e, TrackerError::NoSuchStatus { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "tracker `github` has no status `Shipped`; create the label `status: Shipped` or use \
         one of `status: To Do`, `status: In Progress`, `status: For Delivery`"
    );
    assert_eq!(fake.issue(REPO, 4).labels, ["status: In Progress"]);
    assert_eq!(fake.count("PATCH "), 0);

    let e = gh
        .move_to(&"404".into(), "For Delivery", "x")
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "task `404` does not exist in github");
}

#[tokio::test]
async fn lists_the_open_issues_with_the_label_page_by_page() {
    let fake = fake();
    fake.cap_pages(2);
    for n in 1..=5 {
        fake.add_issue(REPO, n, "ready", true, &["status: For Delivery"]);
    }
    fake.add_issue(REPO, 6, "closed one", false, &["status: For Delivery"]);
    fake.add_issue(REPO, 7, "a pull request", true, &["status: For Delivery"]);
    fake.update(REPO, 7, |i| i.pull = Some(Pull::default()));
    fake.add_issue(REPO, 8, "not yet", true, &["status: In Progress"]);
    let gh = client(&fake);

    let tasks = gh.in_statuses(&["For Delivery".into()]).await.unwrap();
    let keys: Vec<&str> = tasks.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(keys, ["1", "2", "3", "4", "5"]);
    assert!(tasks.iter().all(|t| t.status == "For Delivery"));
    assert_eq!(fake.count("GET /repos/acme/shop/issues?"), 3);
}

#[tokio::test]
async fn a_refused_token_names_its_variable_never_its_value() {
    let fake = fake();
    fake.add_issue(REPO, 1, "x", true, &["status: In Progress"]);
    let gh = client_with(&fake, "ghp_wr0ng", Duration::from_secs(2));
    for e in [
        gh.task(&"1".into()).await.unwrap_err(),
        gh.move_to(&"1".into(), "For Delivery", "x")
            .await
            .unwrap_err(),
        gh.in_statuses(&["For Delivery".into()]).await.unwrap_err(),
    ] {
        let text = format!("{e} {e:?}");
        assert_eq!(
            e.to_string(),
            "tracker `github` refused the credentials in `GITHUB_TOKEN`; check that variable"
        );
        assert!(!text.contains("ghp_wr0ng"), "{text}");
    }
}

#[tokio::test]
async fn a_slow_github_times_out() {
    let fake = fake();
    fake.add_issue(REPO, 7, "slow", true, &["status: In Progress"]);
    fake.answer_slowly(REPO, 7, Duration::from_secs(5));
    let gh = client_with(&fake, TOKEN, Duration::from_millis(300));
    let started = Instant::now();
    let e = task_with_timeout(&gh, &"7".into(), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "tracker `github` did not answer in 300ms");
    let e = gh.task(&"7".into()).await.unwrap_err();
    assert!(matches!(e, TrackerError::Timeout { .. }), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn pushes_follow_the_github_label() {
    let fake = fake();
    fake.add_issue(REPO, 12, "Log in", true, &["status: In Progress"]);
    let config = format!(
        "[tracker]\nkind = \"github\"\nrepo = \"acme/shop\"\napi_url = \"{}\"\n\n\
         [tasks]\npattern = 'gh-(?P<task>[0-9]+)'\n",
        fake.url()
    );
    let (env, clone) = sandbox_with(&config);
    let vars = [("GITHUB_TOKEN", TOKEN)];

    let p = push_branch(&clone, "gh-12", &vars);
    assert!(p.accepted, "{}", said(&p));

    fake.update(REPO, 12, |i| i.labels = vec!["status: For Delivery".into()]);
    crate::util::commit(&clone, "alice", "more.txt", "more\n", "gh-12: more").unwrap();
    let p = super::alice_push(&clone, &vars, &["gh-12"]);
    assert!(!p.accepted);
    assert!(
        said(&p).contains(
            "task `12` is For Delivery, not In Progress; move it to In Progress in github, \
             then push again"
        ),
        "{}",
        said(&p)
    );
    let first = env.rev("api", "refs/heads/gh-12").unwrap();
    assert_ne!(
        Some(first),
        crate::util::git(&clone, "alice").resolve("HEAD").unwrap()
    );
}
