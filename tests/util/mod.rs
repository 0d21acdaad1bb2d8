//! Shared test fixtures: isolated git, sandboxes of bare repositories with lockstep's hooks.

#![allow(dead_code)]

pub mod fake_github;
pub mod fake_github_pulls;
pub mod fake_jira;
pub mod http;
pub mod serve;
pub mod webhooks;

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use lockstep::demo::{Sandbox, commit, sandbox_git};

/// The all-zero object id: a created ref's old id, a deleted ref's new id.
pub const ZERO: &str = "0000000000000000000000000000000000000000";

/// Variables that name the pusher or the repository, or steer lockstep: a test sets the ones
/// it means and never inherits the others from the machine running it.
pub const IDENTITY_VARS: &[&str] = &[
    "GL_USER",
    "GL_USERNAME",
    "GL_ID",
    "GL_REPO",
    "GL_PROJECT_PATH",
    "GITHUB_USER_LOGIN",
    "GITHUB_REPO_NAME",
    "GITEA_PUSHER_NAME",
    "GITEA_REPO_NAME",
    "REMOTE_USER",
    "LOCKSTEP_CONFIG",
    "LOCKSTEP_LOG",
];

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

    /// Writes (or replaces) a policy file in the sandbox's policy folder.
    pub fn add_policy(&self, name: &str, toml: &str) {
        std::fs::write(self.sb.meta.join("policies").join(name), toml).unwrap();
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

    /// Overwrites the sandbox's `lockstep.toml`.
    pub fn set_config(&self, toml: &str) {
        std::fs::write(self.config(), toml).unwrap();
    }

    /// Runs `lockstep` with the sandbox's config.
    pub fn lockstep(&self, args: &[&str]) -> Output {
        let mut cmd = lockstep_cmd();
        cmd.arg("--config").arg(self.config()).args(args);
        run(cmd)
    }

    /// Clones a repository for a user and puts them on a new branch with one commit.
    pub fn clone_on_branch(&self, repo: &str, user: &str, branch: &str, message: &str) -> PathBuf {
        let dir = self.sb.clone_for(repo, user).unwrap();
        git(&dir, user)
            .run(&["switch", "-q", "-c", branch])
            .unwrap();
        commit(&dir, user, "change.txt", message, message).unwrap();
        dir
    }

    /// The commit a ref of a bare repository points to, if any.
    pub fn rev(&self, repo: &str, rev: &str) -> Option<String> {
        lockstep::git::Git::new(self.bare(repo))
            .resolve(rev)
            .unwrap()
    }

    /// Replaces the sandbox's paths in a text by stable placeholders (for snapshots).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for dir in [
            self.dir.path().to_path_buf(),
            std::fs::canonicalize(self.dir.path()).unwrap(),
        ] {
            out = out.replace(&dir.display().to_string(), "[tmp]");
        }
        redact_ids(&out)
    }
}

/// Replaces object ids (full and the 10-digit short form lockstep prints) by `[sha]`.
pub fn redact_ids(text: &str) -> String {
    let ids = regex::Regex::new(r"\b[0-9a-f]{40}\b|\b[0-9a-f]{10}\b").unwrap();
    ids.replace_all(text, |c: &regex::Captures| {
        if c[0].bytes().all(|b| b == b'0') {
            c[0].to_string()
        } else {
            "[sha]".to_string()
        }
    })
    .into_owned()
}

/// A clone's git, as `user`.
pub fn git(dir: &Path, user: &str) -> lockstep::git::Git {
    sandbox_git(dir, user)
}

/// The commit a revision names in a clone.
pub fn head(dir: &Path, rev: &str) -> String {
    git(dir, "admin").resolve(rev).unwrap().unwrap()
}

/// `lockstep` with no identity, config or server variable inherited from the test runner.
pub fn lockstep_cmd() -> Command {
    let mut cmd = Command::new(bin());
    scrub(&mut cmd);
    cmd
}

/// Removes from a command's environment whatever could steer git or name a pusher.
fn scrub(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str()
            && k.starts_with("GIT_")
            && k != "GIT_EXEC_PATH"
        {
            cmd.env_remove(k);
        }
    }
    for k in IDENTITY_VARS {
        cmd.env_remove(k);
    }
}

/// Runs a command to the end (stdin closed) and checks it did not panic.
pub fn run(mut cmd: Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert_no_panic(&out);
    out
}

/// Runs a command with bytes on stdin and checks it did not panic.
pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The child may exit before reading everything; a broken pipe is its answer, not ours.
    let _ = stdin.write_all(input);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_no_panic(&out);
    out
}

/// No output of lockstep, or of git relaying a hook, ever shows a Rust panic.
pub fn assert_no_panic(out: &Output) {
    for text in [stdout(out), stderr(out)] {
        assert!(
            !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
            "a panic reached the user:\n{text}"
        );
    }
}

/// What a push did, as its user sees it.
#[derive(Debug)]
pub struct Pushed {
    /// Whether `git push` exited 0.
    pub accepted: bool,
    /// Everything `git push` printed on stderr (the hooks' output comes as `remote: `).
    pub stderr: String,
}

impl Pushed {
    /// The lines the server's hooks printed, without `remote: ` and git's padding.
    pub fn remote(&self) -> Vec<String> {
        self.stderr
            .lines()
            .filter_map(|l| l.strip_prefix("remote: "))
            .map(|l| l.trim_end().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// The hooks' output as one text, for `contains` checks and snapshots.
    pub fn remote_text(&self) -> String {
        self.remote().join("\n")
    }
}

/// `git push origin ARGS` from a clone with exactly these identity variables set (none
/// inherited), through the real hooks.
pub fn push_env(dir: &Path, vars: &[(&str, &str)], args: &[impl AsRef<OsStr>]) -> Pushed {
    let mut cmd = Command::new("git");
    scrub(&mut cmd);
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "tester")
        .env("GIT_AUTHOR_EMAIL", "tester@example.invalid")
        .env("GIT_COMMITTER_NAME", "tester")
        .env("GIT_COMMITTER_EMAIL", "tester@example.invalid")
        .envs(vars.iter().copied())
        .args(["push", "origin"])
        .args(args);
    let out = run(cmd);
    Pushed {
        accepted: out.status.success(),
        stderr: stderr(&out),
    }
}

/// `git push origin ARGS` as a user named by `GL_USER` (gitolite's variable).
pub fn push_as(dir: &Path, user: &str, args: &[&str]) -> Pushed {
    push_env(dir, &[("GL_USER", user)], args)
}

/// Runs the hook entry point directly, as git would: in the bare repository, with `GIT_DIR`,
/// the update lines on stdin and the given variables.
pub fn run_hook(
    bare: &Path,
    config: Option<&Path>,
    hook: &[&str],
    vars: &[(&str, &str)],
    input: &[u8],
) -> Output {
    let mut cmd = lockstep_cmd();
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("hook")
        .args(hook)
        .current_dir(bare)
        .env("GIT_DIR", ".")
        .envs(vars.iter().copied());
    run_with_stdin(cmd, input)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit code, or -1 when killed by a signal.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
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
