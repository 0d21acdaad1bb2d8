//! The real trackers: Redmine against a real Redmine (`scripts/redmine.sh`), Jira and GitHub
//! Issues against stateful fakes on 127.0.0.1 (`util::fake_jira`, `util::fake_github`).
//! Each tracker is tested through its client, then end to end through the hooks.

mod cache;
mod github;
mod jira;
mod redmine;

use crate::util::*;

/// A sandbox with one repository, `api`, whose hooks ask the tracker `tracker_toml` (a
/// `[tracker]` section, optionally with `[tasks]`).
fn sandbox_with(tracker_toml: &str) -> (Env, std::path::PathBuf) {
    let env = Env::new(&["api"]);
    env.use_tracker(tracker_toml);
    let clone = env.sb.clone_for("api", "alice").unwrap();
    (env, clone)
}

/// Commits on a new branch of `clone` and pushes it as alice, with `vars` in the hooks'
/// environment.
fn push_branch(clone: &std::path::Path, branch: &str, vars: &[(&str, &str)]) -> Pushed {
    let git = git(clone, "alice");
    git.run(&["switch", "-q", "-c", branch, "master"]).unwrap();
    let file = format!("{}.txt", branch.replace('/', "_"));
    commit(clone, "alice", &file, "work\n", &format!("{branch}: work")).unwrap();
    alice_push(clone, vars, &[branch])
}

/// The server's rejection lines, for messages in assertions.
fn said(p: &Pushed) -> String {
    p.remote_text()
}

/// Pushes as alice with `vars` added to the hooks' environment.
fn alice_push(clone: &std::path::Path, vars: &[(&str, &str)], args: &[&str]) -> Pushed {
    let mut all = vec![("GL_USER", "alice")];
    all.extend_from_slice(vars);
    push_env(clone, &all, args)
}

/// Every TOML example of `docs/trackers.md` is a valid config.
#[test]
fn the_documented_configs_parse() {
    let doc = include_str!("../docs/trackers.md");
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 4, "one shared block and one per tracker");
    for block in blocks {
        if let Err(e) = lockstep::Config::parse_str(block) {
            panic!("{e:#}\nin:\n{block}");
        }
    }
}
