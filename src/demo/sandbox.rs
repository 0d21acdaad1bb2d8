//! The demo's sandbox: a meta-project with the shipped policies, the file tracker and
//! steps that write what they did; bare repositories guarded by the real hooks; and the git
//! helpers (a pinned identity, a push that reports what the hooks said) that the tour, the
//! integration tests and the benches share.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::git::Git;

/// The shipped policies, embedded so that the demo runs from an installed binary.
pub const POLICIES: &[(&str, &str)] = &[
    (
        "10-branch-names.toml",
        include_str!("../../policies/10-branch-names.toml"),
    ),
    (
        "20-task-status.toml",
        include_str!("../../policies/20-task-status.toml"),
    ),
    (
        "30-protected.toml",
        include_str!("../../policies/30-protected.toml"),
    ),
    ("35-tags.toml", include_str!("../../policies/35-tags.toml")),
    (
        "40-commit-messages.toml",
        include_str!("../../policies/40-commit-messages.toml"),
    ),
    (
        "50-delivery.toml",
        include_str!("../../policies/50-delivery.toml"),
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
            // The demo's steps write what they did under the sandbox (`out/`, `deployed/`, …),
            // beside its git server: a real project declares only its steps' own outputs.
            config.push_str(&format!(
                "\n[[repo]]\nname = \"{name}\"\nurl = \"../git/{name}.git\"\n\
                 upstream = \"master\"\nwritable = [{}]\n[repo.steps]\n",
                toml_str(&root_abs.to_string_lossy())
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
pub(super) fn approve_everywhere(sb: &Sandbox, task: &str, branch: &str) -> anyhow::Result<()> {
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
