//! The queue page, read by a real headless browser.

use super::*;

/// Where Debian's chromium is, if installed.
fn chromium() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    })
}

/// Loads a page in headless chromium; `--dump-dom` gives the DOM after load.
fn browse(chromium: &std::path::Path, env: &Env, url: &str, extra: &[&str]) -> String {
    let profile = env.dir.path().join("chromium-profile");
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium failed: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn queue_page_shows_the_delivery_in_flight() {
    let env = Env::new(&["api", "web"]);
    // The test step of both repositories sleeps: the page is looked at meanwhile.
    push_task_branch(
        &env,
        "feature/TASK-1-<b>login</b>",
        &["api", "web"],
        &[("SLOW-TEST", "6\n")],
    );
    env.set_tasks(TASKS_READY);
    configure(&env, "0s", "[server]\nrefresh = \"2s\"\n");
    let serve = ServeProc::start(&env);
    // Queued from the command line: serve holds the queue and picks it up.
    let out = env.lockstep(&["deliver", "TASK-1", "--no-wait"]);
    assert!(out.status.success(), "{}", stderr(&out));

    wait_until("the test step running", LONG, Some(&serve.log), || {
        let q: serde_json::Value = serde_json::from_str(&serve.get("/api/queue").body).unwrap();
        q["running"][0]["current"]
            .as_array()
            .is_some_and(|c| c.iter().any(|s| s["step"] == "test"))
    });
    let html = serve.get("/").body;
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
    assert!(
        html.contains("feature/TASK-1-&lt;b&gt;login&lt;/b&gt;"),
        "{html}"
    );
    assert!(!html.contains("<b>login</b>"));

    match chromium() {
        Some(chromium) => {
            let dom = browse(&chromium, &env, &serve.url, &["--dump-dom"]);
            assert!(dom.contains("delivering TASK-1"), "{dom}");
            assert!(dom.contains("id=\"in-flight\""), "{dom}");
            for phase in ["rebase", "build"] {
                assert!(
                    dom.contains(&format!("data-phase=\"{phase}\" data-state=\"passed\"")),
                    "{phase}: {dom}"
                );
            }
            assert!(
                dom.contains("data-phase=\"test\" data-state=\"running\""),
                "{dom}"
            );
            assert!(dom.contains("data-phase=\"merge\" data-state=\"pending\""));
            assert!(dom.contains("now: <b>test</b>"), "{dom}");
            // The branch name is shown as text, not markup.
            assert!(
                dom.contains("feature/TASK-1-&lt;b&gt;login&lt;/b&gt;"),
                "{dom}"
            );
            let shot = env.dir.path().join("queue.png");
            browse(
                &chromium,
                &env,
                &serve.url,
                &[
                    &format!("--screenshot={}", shot.display()),
                    "--window-size=1280,900",
                ],
            );
            let png = std::fs::read(&shot).unwrap();
            assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
            if let Some(dir) = std::env::var_os("LOCKSTEP_SCREENSHOT_DIR") {
                std::fs::copy(&shot, std::path::Path::new(&dir).join("queue.png")).unwrap();
            }
        }
        None => skip(
            "the queue page test",
            "`chromium` on PATH for its browser part",
            "install it (`apt-get install -y chromium`), as .ci/run does",
        ),
    }

    wait_until("the delivery", LONG, Some(&serve.log), || {
        task_status(&env, "TASK-1") == "Closed"
    });
    let page = serve.get("/deliveries/1");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("testing api"), "{}", page.body);
    assert!(page.header("content-security-policy").is_some());
    let api: serde_json::Value =
        serde_json::from_str(&serve.get("/api/deliveries/1").body).unwrap();
    assert_eq!(api["delivery"]["state"], "delivered");
    assert_eq!(
        api["grid"][0]["cells"][2],
        serde_json::json!(["test", "passed"])
    );
    let home = serve.get("/").body;
    assert!(home.contains("Nothing is being delivered right now."));
    assert!(
        home.contains("<span class=\"pill delivered\">delivered</span>"),
        "{home}"
    );
    assert_eq!(serve.get("/deliveries/99").status, 404);
    assert_eq!(
        serve.get("/healthz").body,
        "ok\nrole: leader\nstore: sqlite\n"
    );
    assert_eq!(
        crate::util::http::request(&serve.url, "POST", "/webhooks/github", &[], b"{}")
            .unwrap()
            .status,
        404
    );
    assert!(serve.stop(Duration::from_secs(10)).success());
}
