//! `lockstep demo`: a narrated tour on a sandbox with no external service.
//!
//! Two bare repositories guarded by the real hooks, the file tracker, the shipped policies,
//! and a series of real `git push`es whose outcomes are checked as they are told: the demo
//! exits 1 if anything behaves otherwise than narrated, so it doubles as a smoke test.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use std::sync::Arc;

use crate::config::Config;
use crate::delivery::{self, Request, Requested, worker};
use crate::domain::{Source, State};
use crate::git::Git;
use crate::tracker::file::FileTracker;

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
    ("35-tags.toml", include_str!("../policies/35-tags.toml")),
    (
        "40-commit-messages.toml",
        include_str!("../policies/40-commit-messages.toml"),
    ),
    (
        "50-delivery.toml",
        include_str!("../policies/50-delivery.toml"),
    ),
];

/// The demo's delivery steps: real processes that build, test and deploy by writing files
/// under `$SANDBOX`. A file named `FAIL-TEST`, `FAIL-DEPLOY` or `FAIL-VERIFY` in a repository
/// makes that step fail; `SLOW-TEST` holds seconds for the test to sleep.
const STEPS: &[(&str, &str)] = &[
    (
        "build.sh",
        concat!(
            "#!/bin/sh\n",
            "set -e\n",
            "mkdir -p \"$SANDBOX/out\"\n",
            "echo \"building $LOCKSTEP_REPO at $LOCKSTEP_SHA\"\n",
            "echo \"$LOCKSTEP_SHA\" > \"$SANDBOX/out/$LOCKSTEP_REPO.build\"\n",
        ),
    ),
    (
        "test.sh",
        concat!(
            "#!/bin/sh\n",
            "echo \"testing $LOCKSTEP_REPO\"\n",
            "if [ -f SLOW-TEST ]; then sleep \"$(cat SLOW-TEST)\"; fi\n",
            "if [ -f FAIL-TEST ]; then echo \"assertion failed: $(cat FAIL-TEST)\"; exit 1; fi\n",
            "echo ok\n",
        ),
    ),
    (
        "deploy.sh",
        concat!(
            "#!/bin/sh\n",
            "set -e\n",
            "mkdir -p \"$SANDBOX/deployed\"\n",
            "d=\"$SANDBOX/deployed/$LOCKSTEP_REPO\"\n",
            "if [ -f \"$d\" ]; then cp \"$d\" \"$d.prev\"; else : > \"$d.prev\"; fi\n",
            "if [ -f FAIL-DEPLOY ]; then echo \"deploy failed\"; exit 1; fi\n",
            "echo \"$LOCKSTEP_SHA\" > \"$d\"\n",
            "echo \"deployed $LOCKSTEP_REPO $LOCKSTEP_SHA to $LOCKSTEP_ENV\"\n",
        ),
    ),
    (
        "verify.sh",
        concat!(
            "#!/bin/sh\n",
            "echo \"smoke-testing $LOCKSTEP_REPO\"\n",
            "if [ -f FAIL-VERIFY ]; then ",
            "echo \"smoke test failed: $(cat FAIL-VERIFY)\"; exit 1; fi\n",
            "echo ok\n",
        ),
    ),
    (
        "rollback.sh",
        concat!(
            "#!/bin/sh\n",
            "set -e\n",
            "d=\"$SANDBOX/deployed/$LOCKSTEP_REPO\"\n",
            "if [ -s \"$d.prev\" ]; then cp \"$d.prev\" \"$d\"; else rm -f \"$d\"; fi\n",
            "echo \"$LOCKSTEP_REPO $LOCKSTEP_DELIVERY\" >> \"$SANDBOX/rollbacks.log\"\n",
            "echo \"rolled back $LOCKSTEP_REPO\"\n",
        ),
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

[TASK-3]
status = "In Progress"
title = "Dark mode"
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
/// not depend on (or touch) the machine's git setup. Nor on the caller's `LOCKSTEP_CONFIG`:
/// the sandbox's hooks find the sandbox's config in their repositories' git config, and the
/// variable would win over it.
pub fn sandbox_git(dir: &Path, user: &str) -> Git {
    let email = format!("{user}@example.invalid");
    Git::new(dir)
        .without_env("LOCKSTEP_CONFIG")
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
        std::fs::create_dir_all(meta.join("steps"))?;
        for (name, text) in STEPS {
            let path = meta.join("steps").join(name);
            std::fs::write(&path, text)?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        }
        let root_abs = std::path::absolute(root)?;
        let mut config = format!(
            "[bot]\nuser = \"lockstep-bot\"\nmaintainers = [\"release-lead\"]\n\n\
             [delivery]\nstep_timeout = \"60s\"\n\n\
             [environments.production]\nvars = {{ SANDBOX = {} }}\n\n\
             [tracker]\nkind = \"file\"\npath = \"tasks.toml\"\n",
            toml_str(&root_abs.to_string_lossy())
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
                "\n[[repo]]\nname = \"{name}\"\nurl = \"../git/{name}.git\"\n\
                 upstream = \"master\"\n[repo.steps]\n"
            ));
            for step in ["build", "test", "deploy", "verify", "rollback"] {
                let script = root_abs
                    .join("meta")
                    .join("steps")
                    .join(format!("{step}.sh"));
                config.push_str(&format!(
                    "{step} = [{}]\n",
                    toml_str(&script.to_string_lossy())
                ));
            }
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
        let dir = self.root.join("clones").join(user).join(repo);
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

/// `reviewer` approves the head of `branch` in `repo` as they fetched it, by pushing it to
/// `refs/approvals/<task>/<reviewer>` (their clone is made or brought up to date first).
pub fn approve(
    sb: &Sandbox,
    repo: &str,
    reviewer: &str,
    task: &str,
    branch: &str,
) -> anyhow::Result<Pushed> {
    let dir = sb.root.join("clones").join(reviewer).join(repo);
    if dir.exists() {
        sandbox_git(&dir, reviewer).run(&["fetch", "--quiet", "origin"])?;
    } else {
        sb.clone_for(repo, reviewer)?;
    }
    push(
        &dir,
        reviewer,
        &[&format!("origin/{branch}:refs/approvals/{task}/{reviewer}")],
    )
}

/// bob and carol approve the task's branch in every repository; Err says whose was refused.
fn approve_everywhere(sb: &Sandbox, task: &str, branch: &str) -> anyhow::Result<()> {
    for (repo, _) in &sb.repos {
        for reviewer in ["bob", "carol"] {
            let p = approve(sb, repo, reviewer, task, branch)?;
            if !p.accepted {
                anyhow::bail!(
                    "{reviewer}'s approval of {task} in {repo} was refused: {}",
                    p.remote.join(" / ")
                );
            }
        }
    }
    Ok(())
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
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

/// One act of the tour: what it shows, and the command it runs.
pub struct Act {
    pub title: &'static str,
    pub command: &'static str,
}

/// The tour's acts, in the order they run. The narrator numbers them as they run, and the
/// tour does not go as told unless every one of them ran.
pub const ACTS: &[Act] = &[
    Act {
        title: "alice pushes a branch that names no task",
        command: "git push origin fix-login",
    },
    Act {
        title: "alice pushes TASK-2's branch, but TASK-2 is still To Do",
        command: "git push origin feature/TASK-2-search",
    },
    Act {
        title: "alice pushes TASK-1's branch to api; TASK-1 is In Progress",
        command: "git push origin feature/TASK-1-login",
    },
    Act {
        title: "alice pushes TASK-1's branch to web (a commit that forgets the task: a warning)",
        command: "git push origin feature/TASK-1-login",
    },
    Act {
        title: "alice pushes straight to master",
        command: "git push origin master",
    },
    Act {
        title: "lockstep-bot pushes master",
        command: "git push origin master",
    },
    Act {
        title: "even the bot cannot force-push master",
        command: "git push --force origin master",
    },
    Act {
        title: "alice approves her own TASK-1 branch: authors do not review their own work",
        command: "git push origin origin/feature/TASK-1-login:refs/approvals/TASK-1/alice",
    },
    Act {
        title: "bob and carol review TASK-1 and approve its head in api and web",
        command: "git push origin origin/feature/TASK-1-login:refs/approvals/TASK-1/bob",
    },
    Act {
        title: "TASK-1 is moved to For Delivery; the bot delivers it across api and web",
        command: "lockstep deliver TASK-1",
    },
    Act {
        title: "TASK-3 changes api and web; web's smoke test fails once deployed",
        command: "lockstep deliver TASK-3",
    },
];

struct Narrator {
    acts: &'static [Act],
    /// How many acts have begun.
    ran: usize,
    failures: Vec<String>,
}

impl Narrator {
    fn new(acts: &'static [Act]) -> Narrator {
        Narrator {
            acts,
            ran: 0,
            failures: Vec::new(),
        }
    }

    /// Announces the next act.
    fn begin(&mut self) {
        self.ran += 1;
        match self.acts.get(self.ran - 1) {
            Some(act) => {
                println!("\n{}. {}", self.ran, act.title);
                println!("   $ {}", act.command);
            }
            None => {
                println!("\n{}. (an act missing from the list of acts)", self.ran);
                self.failures
                    .push(format!("act {} is missing from the list of acts", self.ran));
            }
        }
    }

    /// Tells how the act under way ended.
    fn check(&mut self, ok: bool, good: &str, bad: &str) {
        if ok {
            println!("   → {good}");
        } else {
            println!("   → NOT as told: {bad}");
            self.failures.push(format!("act {}: {bad}", self.ran));
        }
    }

    /// An act that is one push: begins it and tells whether the push went as the policies say.
    fn push_act(&mut self, pushed: &Pushed, expect_accept: bool) {
        self.begin();
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
            let title = self.acts.get(self.ran - 1).map_or("", |a| a.title);
            self.failures.push(format!("act {}: {title}", self.ran));
        }
    }

    /// The tour's last line and its exit code: how many acts ran, or what went otherwise
    /// than told, an act of the list that never began included.
    fn closing(&self) -> (String, i32) {
        let mut failures = self.failures.clone();
        for (i, act) in self.acts.iter().enumerate().skip(self.ran) {
            failures.push(format!("act {} did not run: {}", i + 1, act.title));
        }
        if failures.is_empty() {
            (format!("all {} acts went as told", self.ran), 0)
        } else {
            (
                format!(
                    "{} act(s) did not go as told: {}",
                    failures.len(),
                    failures.join("; ")
                ),
                1,
            )
        }
    }
}

/// Moves a task in the sandbox's file tracker.
fn set_status(sb: &Sandbox, key: &str, status: &str) -> anyhow::Result<()> {
    let tracker = FileTracker::new(sb.meta.join("tasks.toml"));
    tracker.update(|tasks| {
        if let Some(t) = tasks.get_mut(key) {
            t.status = status.to_string();
        }
        Ok(())
    })?;
    Ok(())
}

/// Delivers a task in this process, narrating each step; returns how it ended and why.
fn deliver(sb: &Sandbox, task: &str) -> anyhow::Result<(State, String)> {
    let config = Config::load(&sb.meta.join("lockstep.toml"))?;
    let rt = crate::runtime::multi_thread(Some(2))?;
    rt.block_on(async {
        let engine = worker::engine(config, Arc::new(|line: &str| println!("   {line}"))).await?;
        let req = Request {
            task: task.into(),
            source: Source::Cli,
            requester: "alice".into(),
            ..Default::default()
        };
        let id = match engine.request(&req).await? {
            Requested::Queued { id, .. } | Requested::AlreadyQueued { id } => id,
            Requested::Refused(d) => anyhow::bail!(
                "the demo's delivery was refused: {}",
                delivery::refusal_lines(&d).join("; ")
            ),
        };
        let lease = worker::try_lead(&engine)
            .await?
            .context("the demo's queue is busy")?;
        worker::work(&engine, &lease, |done, _| done == id).await?;
        let d = engine
            .store
            .delivery(id)
            .await?
            .context("the delivery vanished")?;
        Ok((d.state, d.error))
    })
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
    println!(
        "  pushing as    alice (a developer); bob and carol (reviewers); lockstep-bot (the bot)"
    );

    let mut n = Narrator::new(ACTS);
    let api = sb.clone_for("api", "alice")?;
    let web = sb.clone_for("web", "alice")?;

    let git = sandbox_git(&api, "alice");
    git.run(&["switch", "--quiet", "-c", "fix-login"])?;
    commit(&api, "alice", "login.txt", "sso\n", "fix login")?;
    let p = push(&api, "alice", &["fix-login"])?;
    n.push_act(&p, false);

    git.run(&["switch", "--quiet", "-c", "feature/TASK-2-search", "master"])?;
    commit(
        &api,
        "alice",
        "search.txt",
        "search\n",
        "TASK-2 search endpoint",
    )?;
    let p = push(&api, "alice", &["feature/TASK-2-search"])?;
    n.push_act(&p, false);

    git.run(&["switch", "--quiet", "-c", "feature/TASK-1-login", "master"])?;
    commit(
        &api,
        "alice",
        "login.txt",
        "sso\n",
        "TASK-1 log in with SSO",
    )?;
    let p = push(&api, "alice", &["feature/TASK-1-login"])?;
    n.push_act(&p, true);
    let wgit = sandbox_git(&web, "alice");
    wgit.run(&["switch", "--quiet", "-c", "feature/TASK-1-login"])?;
    commit(&web, "alice", "login.html", "<form>\n", "login form")?;
    let p = push(&web, "alice", &["feature/TASK-1-login"])?;
    n.push_act(&p, true);

    git.run(&["switch", "--quiet", "master"])?;
    commit(&api, "alice", "hotfix.txt", "quick\n", "quick fix")?;
    let p = push(&api, "alice", &["master"])?;
    n.push_act(&p, false);

    let bot = sb.clone_for("api", "lockstep-bot")?;
    commit(
        &bot,
        "lockstep-bot",
        "CHANGELOG",
        "TASK-1\n",
        "TASK-1 changelog",
    )?;
    let p = push(&bot, "lockstep-bot", &["master"])?;
    n.push_act(&p, true);

    let bgit = sandbox_git(&bot, "lockstep-bot");
    bgit.run(&["reset", "--quiet", "--hard", "HEAD~1"])?;
    let p = push(&bot, "lockstep-bot", &["--force", "master"])?;
    n.push_act(&p, false);

    let p = approve(&sb, "api", "alice", "TASK-1", "feature/TASK-1-login")?;
    n.push_act(&p, false);

    n.begin();
    let approved = approve_everywhere(&sb, "TASK-1", "feature/TASK-1-login");
    n.check(
        approved.is_ok(),
        "approved: two reviews of each branch's head, as `two-approvals` asks",
        &format!("{approved:?}"),
    );

    println!("\n— second act: delivery, all or nothing —");
    set_status(&sb, "TASK-1", "For Delivery")?;
    n.begin();
    let (state, _) = deliver(&sb, "TASK-1")?;
    let api_master = sandbox_git(&sb.repos[0].1, "admin")
        .resolve("refs/heads/master")?
        .unwrap_or_default();
    let api_has =
        sandbox_git(&sb.repos[0].1, "admin").run(&["log", "--format=%s", "-1", &api_master])?;
    n.check(
        state == State::Delivered,
        "delivered: both masters advanced, TASK-1 is Closed",
        "TASK-1 was not delivered",
    );
    println!("   api master is now: {}", api_has.trim());

    for (dir, file) in [(&api, "theme.txt"), (&web, "theme.css")] {
        let g = sandbox_git(dir, "alice");
        g.run(&["fetch", "--quiet", "origin"])?;
        g.run(&[
            "switch",
            "--quiet",
            "-c",
            "feature/TASK-3-dark-mode",
            "origin/master",
        ])?;
        commit(dir, "alice", file, "dark\n", "TASK-3 dark mode")?;
    }
    // web's change breaks its smoke test once deployed.
    commit(
        &web,
        "alice",
        "FAIL-VERIFY",
        "the login page renders blank\n",
        "TASK-3 new layout",
    )?;
    for dir in [&api, &web] {
        let p = push(dir, "alice", &["feature/TASK-3-dark-mode"])?;
        if !p.accepted {
            anyhow::bail!(
                "the demo could not push TASK-3's branch: {}",
                p.remote.join(" / ")
            );
        }
    }
    approve_everywhere(&sb, "TASK-3", "feature/TASK-3-dark-mode")?;
    set_status(&sb, "TASK-3", "For Delivery")?;
    let before: Vec<Option<String>> = sb
        .repos
        .iter()
        .map(|(_, bare)| sandbox_git(bare, "admin").resolve("refs/heads/master"))
        .collect::<anyhow::Result<_>>()?;
    n.begin();
    let (state, error) = deliver(&sb, "TASK-3")?;
    let after: Vec<Option<String>> = sb
        .repos
        .iter()
        .map(|(_, bare)| sandbox_git(bare, "admin").resolve("refs/heads/master"))
        .collect::<anyhow::Result<_>>()?;
    let rollbacks = std::fs::read_to_string(root.join("rollbacks.log")).unwrap_or_default();
    let task3 = FileTracker::new(sb.meta.join("tasks.toml"))
        .read_all()?
        .get("TASK-3")
        .map(|t| t.status.clone());
    n.check(
        state == State::Failed
            && before == after
            && rollbacks.lines().count() == 2
            && task3.as_deref() == Some("In Progress"),
        "failed: nothing merged anywhere, both deploys rolled back, TASK-3 back In Progress",
        "the failed delivery did not leave everything as it was",
    );
    println!("   why: {error}");

    println!();
    if keep.is_some() {
        println!("the sandbox stays in {}", root.display());
        let config = sb.meta.join("lockstep.toml");
        println!("try: lockstep --config {} queue", config.display());
        println!("     lockstep --config {} show 2", config.display());
    }
    let (closing, code) = n.closing();
    println!("{closing}");
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &[Act] = &[
        Act {
            title: "the first act",
            command: "true",
        },
        Act {
            title: "the second act",
            command: "true",
        },
    ];

    fn play(n: &mut Narrator) {
        n.begin();
        n.check(true, "as told", "not as told");
    }

    #[test]
    fn issue_9_the_closing_line_counts_the_acts_that_ran() {
        let mut n = Narrator::new(TWO);
        play(&mut n);
        play(&mut n);
        assert_eq!(n.closing(), ("all 2 acts went as told".to_string(), 0));
    }

    #[test]
    fn issue_9_an_act_that_did_not_run_fails_the_tour() {
        let mut n = Narrator::new(TWO);
        play(&mut n);
        assert_eq!(
            n.closing(),
            (
                "1 act(s) did not go as told: act 2 did not run: the second act".to_string(),
                1
            )
        );
    }

    #[test]
    fn an_act_missing_from_the_list_fails_the_tour() {
        let mut n = Narrator::new(&TWO[..1]);
        play(&mut n);
        play(&mut n);
        assert_eq!(
            n.closing(),
            (
                "1 act(s) did not go as told: act 2 is missing from the list of acts".to_string(),
                1
            )
        );
    }

    #[test]
    fn a_failed_check_names_the_act_under_way() {
        let mut n = Narrator::new(TWO);
        play(&mut n);
        n.begin();
        n.check(false, "as told", "TASK-1 was not delivered");
        assert_eq!(
            n.closing(),
            (
                "1 act(s) did not go as told: act 2: TASK-1 was not delivered".to_string(),
                1
            )
        );
    }
}
