//! Shared test fixtures: isolated git, sandboxes of bare repositories with lockstep's hooks.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use lockstep::demo::{Sandbox, commit, push, sandbox_git};

/// The lockstep executable under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lockstep"))
}

/// A temporary folder with a sandbox of the given repositories, hooks installed.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub sb: Sandbox,
}

impl Env {
    pub fn new(repos: &[&str]) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("lockstep-test-")
            .tempdir()
            .unwrap();
        let sb = Sandbox::create(&dir.path().join("sb"), &bin(), repos).unwrap();
        Env { dir, sb }
    }

    pub fn config(&self) -> PathBuf {
        self.sb.meta.join("lockstep.toml")
    }

    pub fn bare(&self, repo: &str) -> PathBuf {
        self.sb
            .repos
            .iter()
            .find(|(n, _)| n == repo)
            .unwrap()
            .1
            .clone()
    }

    /// Overwrites the file tracker's tasks.
    pub fn set_tasks(&self, toml: &str) {
        std::fs::write(self.sb.meta.join("tasks.toml"), toml).unwrap();
    }

    /// Runs `lockstep` with the sandbox's config.
    pub fn lockstep(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--config")
            .arg(self.config())
            .args(args)
            .output()
            .unwrap()
    }

    /// The commit a ref of a bare repository points to, if any.
    pub fn rev(&self, repo: &str, rev: &str) -> Option<String> {
        lockstep::git::Git::new(self.bare(repo))
            .resolve(rev)
            .unwrap()
    }
}

/// A clone's git, as `user`.
pub fn git(dir: &Path, user: &str) -> lockstep::git::Git {
    sandbox_git(dir, user)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub mod fake_github;
pub mod http;
pub mod serve;
pub mod webhooks;
