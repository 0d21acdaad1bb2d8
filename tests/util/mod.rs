//! Shared test fixtures: isolated git, sandboxes of bare repositories with lockstep's hooks.

#![allow(dead_code)]

pub mod fake_github;
pub mod fake_jira;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use lockstep::demo::{Pushed, Sandbox, commit, push, sandbox_git};

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

    /// Replaces the config's `[tracker]` section (and whatever follows it up to the first
    /// `[[repo]]`) with `tracker`, a TOML text such as `"[tracker]\nkind = \"jira\"\n…"`,
    /// optionally followed by a `[tasks]` section.
    pub fn use_tracker(&self, tracker: &str) {
        let path = self.config();
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text
            .find("[tracker]\n")
            .expect("the sandbox config has a tracker");
        let end = text.find("\n[[repo]]").unwrap_or(text.len());
        let text = format!("{}{}\n{}", &text[..start], tracker.trim(), &text[end..]);
        std::fs::write(&path, text).unwrap();
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

/// Pushes as `user` through the real hooks, with extra variables in the environment of
/// `git push` (and so of the hooks it runs).
pub fn push_env(dir: &Path, user: &str, env: &[(&str, &str)], args: &[&str]) -> Pushed {
    let mut git = sandbox_git(dir, user);
    for (k, v) in env {
        git = git.with_env(k, v);
    }
    let mut argv = vec!["push", "--porcelain", "origin"];
    argv.extend_from_slice(args);
    let (accepted, _, stderr) = git.try_run(&argv).unwrap();
    let remote = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("remote: "))
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    Pushed { accepted, remote }
}

/// An HTTP server on 127.0.0.1 (a random port) running `router` on its own thread and
/// runtime, so that sync tests and the `lockstep` processes they start can reach it.
/// Dropping it stops the server, abandoning requests in flight (a deliberately slow answer).
pub struct Served {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn serve(router: axum::Router) -> Served {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tokio::select! {
                r = axum::serve(listener, router) => r.unwrap(),
                _ = stopped => {}
            }
        });
        rt.shutdown_background();
    });
    Served {
        url,
        stop: Some(stop),
        thread: Some(thread),
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
