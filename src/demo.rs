//! `lockstep demo`: a narrated tour on a sandbox with no external service.
//!
//! Two bare repositories guarded by the real hooks, the file tracker, the shipped policies,
//! and a series of real `git push`es whose outcomes are checked as they are told: the demo
//! exits 1 if anything behaves otherwise than narrated, so it doubles as a smoke test.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::git::Git;

/// The shipped policies, embedded so that the demo runs from an installed binary.
pub const POLICIES: &[(&str, &str)] = &[
    (
        "10-branch-names.toml",
        include_str!("../policies/10-branch-names.toml"),
    ),
    (
        "20-task-status.toml",
        include_str!("../policies/20-task-status.toml"),
    ),
    (
        "30-protected.toml",
        include_str!("../policies/30-protected.toml"),
    ),
    (
        "40-commit-messages.toml",
        include_str!("../policies/40-commit-messages.toml"),
    ),
    (
        "50-delivery.toml",
        include_str!("../policies/50-delivery.toml"),
    ),
];

const TASKS: &str = r#"[TASK-1]
status = "In Progress"
title = "Log in with single sign-on"
assignee = "alice"

[TASK-2]
status = "To Do"
title = "Search the catalogue"
assignee = "alice"
"#;

/// The sandbox: a meta-project, bare repositories with hooks, and alice's clones.
pub struct Sandbox {
    pub root: PathBuf,
    pub meta: PathBuf,
    pub repos: Vec<(String, PathBuf)>,
    pub binary: PathBuf,
}

/// A git handle with a pinned identity and no user or system config, so the sandbox does
/// not depend on (or touch) the machine's git setup.
pub fn sandbox_git(dir: &Path, user: &str) -> Git {
    let email = format!("{user}@example.invalid");
    Git::new(dir)
        .with_env("GIT_CONFIG_NOSYSTEM", "1")
        .with_env("GIT_CONFIG_GLOBAL", "/dev/null")
        .with_env("GIT_AUTHOR_NAME", user)
        .with_env("GIT_AUTHOR_EMAIL", &email)
        .with_env("GIT_COMMITTER_NAME", user)
        .with_env("GIT_COMMITTER_EMAIL", &email)
        .with_env("GL_USER", user)
}

impl Sandbox {
    /// Builds the sandbox in `root` (which must be empty or missing).
    pub fn create(root: &Path, binary: &Path, repo_names: &[&str]) -> anyhow::Result<Sandbox> {
        let meta = root.join("meta");
        std::fs::create_dir_all(meta.join("policies"))
            .with_context(|| format!("cannot create the sandbox in `{}`", root.display()))?;
        for (name, text) in POLICIES {
            std::fs::write(meta.join("policies").join(name), text)?;
        }
        std::fs::write(meta.join("tasks.toml"), TASKS)?;
        let mut config = String::from(
            "[bot]\nuser = \"lockstep-bot\"\nmaintainers = [\"release-lead\"]\n\n[tracker]\nkind = \"file\"\npath = \"tasks.toml\"\n",
        );
        let mut repos = Vec::new();
        for name in repo_names {
            let bare = root.join("git").join(format!("{name}.git"));
            std::fs::create_dir_all(&bare)?;
            sandbox_git(&bare, "admin").run(&[
                "init",
                "--quiet",
                "--bare",
                "--initial-branch=master",
            ])?;
            config.push_str(&format!(
                "\n[[repo]]\nname = \"{name}\"\nurl = \"../git/{name}.git\"\nupstream = \"master\"\n"
            ));
            repos.push((name.to_string(), bare));
        }
        std::fs::write(meta.join("lockstep.toml"), &config)?;
        let sandbox = Sandbox {
            root: root.to_path_buf(),
            meta,
            repos,
            binary: binary.to_path_buf(),
        };
        for (name, bare) in &sandbox.repos {
            // Seed master before the hooks are in place, as an existing project would be.
            let seed = root.join("seed").join(name);
            let git = sandbox_git(&seed, "admin");
            std::fs::create_dir_all(&seed)?;
            git.run(&["init", "--quiet", "--initial-branch=master"])?;
            std::fs::write(seed.join("README"), format!("{name}\n"))?;
            git.run(&["add", "README"])?;
            git.run(&["commit", "--quiet", "-m", &format!("{name}: first commit")])?;
            git.run(&["push", "--quiet", &bare.to_string_lossy(), "master"])?;
            crate::install::install(
                bare,
                &crate::install::Install {
                    config: sandbox.meta.join("lockstep.toml"),
                    binary: binary.to_path_buf(),
                    force: false,
                    per_ref: false,
                },
            )?;
        }
        if !sandbox.repos.is_empty() {
            std::fs::remove_dir_all(root.join("seed"))?;
        }
        Ok(sandbox)
    }

    /// Clones a repository for a user.
    pub fn clone_for(&self, repo: &str, user: &str) -> anyhow::Result<PathBuf> {
        let (_, bare) = self
            .repos
            .iter()
            .find(|(n, _)| n == repo)
            .context("no such demo repo")?;
        let dir = self.root.join("work").join(user).join(repo);
        std::fs::create_dir_all(dir.parent().unwrap_or(&self.root))?;
        sandbox_git(&self.root, user).run(&[
            "clone",
            "--quiet",
            &bare.to_string_lossy(),
            &dir.to_string_lossy(),
        ])?;
        Ok(dir)
    }
}

/// Commits a file in a clone.
pub fn commit(dir: &Path, user: &str, file: &str, text: &str, message: &str) -> anyhow::Result<()> {
    let git = sandbox_git(dir, user);
    std::fs::write(dir.join(file), text)?;
    git.run(&["add", file])?;
    git.run(&["commit", "--quiet", "-m", message])?;
    Ok(())
}

/// A push and what the server said.
pub struct Pushed {
    pub accepted: bool,
    pub remote: Vec<String>,
}

/// Pushes as `user`, through the real hooks.
pub fn push(dir: &Path, user: &str, args: &[&str]) -> anyhow::Result<Pushed> {
    let mut argv = vec!["push", "--porcelain", "origin"];
    argv.extend_from_slice(args);
    let (ok, _, stderr) = sandbox_git(dir, user).try_run(&argv)?;
    let remote = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("remote: "))
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    Ok(Pushed {
        accepted: ok,
        remote,
    })
}

struct Narrator {
    failures: Vec<String>,
}

impl Narrator {
    fn act(&mut self, n: usize, title: &str, command: &str, pushed: &Pushed, expect_accept: bool) {
        println!("\n{n}. {title}");
        println!("   $ {command}");
        for line in &pushed.remote {
            println!("   remote: {line}");
        }
        let verdict = if pushed.accepted {
            "accepted"
        } else {
            "rejected"
        };
        if pushed.accepted == expect_accept {
            println!("   → {verdict}, as it should be");
        } else {
            println!("   → {verdict}: NOT what the policies say should happen");
            self.failures.push(format!("act {n}: {title}"));
        }
    }
}

/// Runs the tour; returns the exit code (0 when every act went as told).
pub fn run(keep: Option<&Path>) -> anyhow::Result<i32> {
    let binary = std::env::current_exe().context("cannot find the lockstep executable")?;
    let temp;
    let root = match keep {
        Some(dir) => {
            if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
                anyhow::bail!(
                    "`{}` is not empty; name a new folder for `--keep`",
                    dir.display()
                );
            }
            std::fs::create_dir_all(dir)?;
            std::path::absolute(dir)?
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("lockstep-demo-")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let sb = Sandbox::create(&root, &binary, &["api", "web"])?;
    println!("lockstep demo: two services, one task tracker, policies in force on every push");
    println!("  repositories  api.git, web.git (hooks installed by `lockstep install-hooks`)");
    println!("  tracker       tasks.toml: TASK-1 In Progress, TASK-2 To Do");
    println!(
        "  policies      {}",
        POLICIES
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  pushing as    alice (a developer); lockstep-bot (the bot account)");

    let mut n = Narrator {
        failures: Vec::new(),
    };
    let api = sb.clone_for("api", "alice")?;
    let web = sb.clone_for("web", "alice")?;

    let git = sandbox_git(&api, "alice");
    git.run(&["switch", "--quiet", "-c", "fix-login"])?;
    commit(&api, "alice", "login.txt", "sso\n", "fix login")?;
    let p = push(&api, "alice", &["fix-login"])?;
    n.act(
        1,
        "alice pushes a branch that names no task",
        "git push origin fix-login",
        &p,
        false,
    );

    git.run(&["switch", "--quiet", "-c", "feature/TASK-2-search", "master"])?;
    commit(
        &api,
        "alice",
        "search.txt",
        "search\n",
        "TASK-2 search endpoint",
    )?;
    let p = push(&api, "alice", &["feature/TASK-2-search"])?;
    n.act(
        2,
        "alice pushes TASK-2's branch, but TASK-2 is still To Do",
        "git push origin feature/TASK-2-search",
        &p,
        false,
    );

    git.run(&["switch", "--quiet", "-c", "feature/TASK-1-login", "master"])?;
    commit(
        &api,
        "alice",
        "login.txt",
        "sso\n",
        "TASK-1 log in with SSO",
    )?;
    let p = push(&api, "alice", &["feature/TASK-1-login"])?;
    n.act(
        3,
        "alice pushes TASK-1's branch to api; TASK-1 is In Progress",
        "git push origin feature/TASK-1-login",
        &p,
        true,
    );
    let wgit = sandbox_git(&web, "alice");
    wgit.run(&["switch", "--quiet", "-c", "feature/TASK-1-login"])?;
    commit(&web, "alice", "login.html", "<form>\n", "login form")?;
    let p = push(&web, "alice", &["feature/TASK-1-login"])?;
    n.act(
        4,
        "alice pushes TASK-1's branch to web (a commit that forgets the task: a warning)",
        "git push origin feature/TASK-1-login",
        &p,
        true,
    );

    git.run(&["switch", "--quiet", "master"])?;
    commit(&api, "alice", "hotfix.txt", "quick\n", "quick fix")?;
    let p = push(&api, "alice", &["master"])?;
    n.act(
        5,
        "alice pushes straight to master",
        "git push origin master",
        &p,
        false,
    );

    let bot = sb.clone_for("api", "lockstep-bot")?;
    commit(
        &bot,
        "lockstep-bot",
        "CHANGELOG",
        "TASK-1\n",
        "TASK-1 changelog",
    )?;
    let p = push(&bot, "lockstep-bot", &["master"])?;
    n.act(
        6,
        "lockstep-bot pushes master",
        "git push origin master",
        &p,
        true,
    );

    let bgit = sandbox_git(&bot, "lockstep-bot");
    bgit.run(&["reset", "--quiet", "--hard", "HEAD~1"])?;
    let p = push(&bot, "lockstep-bot", &["--force", "master"])?;
    n.act(
        7,
        "even the bot cannot force-push master",
        "git push --force origin master",
        &p,
        false,
    );

    println!();
    if keep.is_some() {
        println!("the sandbox stays in {}", root.display());
        println!(
            "try: lockstep --config {} policy check",
            sb.meta.join("lockstep.toml").display()
        );
    }
    if n.failures.is_empty() {
        println!("all {} acts went as the policies say", 7);
        Ok(0)
    } else {
        println!(
            "{} act(s) did not go as told: {}",
            n.failures.len(),
            n.failures.join("; ")
        );
        Ok(1)
    }
}
