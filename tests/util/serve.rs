//! `lockstep serve` as a separate process against a sandbox, and what tests need around it.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::http::{self, Resp};
use super::{Env, bin, commit, git};
use lockstep::sandbox::push;

/// The variables the tests' configs name for secrets.
pub const SECRET_VAR: &str = "LOCKSTEP_TEST_WEBHOOK_SECRET";
pub const TOKEN_VAR: &str = "LOCKSTEP_TEST_GITHUB_TOKEN";
pub const TOKEN: &str = "test-github-token";
pub const TRACKER_VAR: &str = "LOCKSTEP_TEST_TRACKER_SECRET";
pub const TRACKER_SECRET: &str = "test-tracker-secret";
pub const ALERTMANAGER_VAR: &str = "LOCKSTEP_TEST_ALERTMANAGER_TOKEN";
pub const ALERTMANAGER_TOKEN: &str = "test-alertmanager-token";
pub const READ_TOKEN_VAR: &str = "LOCKSTEP_TEST_READ_TOKEN";
pub const READ_TOKEN: &str = "test-read-token-5e1f";

/// Ties each repository to `acme/<name>` on GitHub, sets the tracker's poll interval and
/// appends `extra` (e.g. `[server]` and `[github]` sections). With a `[github]` section, the
/// shipped `two-approvals` rule is put back in force, reading GitHub's reviews.
pub fn configure(env: &Env, poll: &str, extra: &str) {
    if extra.contains("[github]") {
        env.require_approvals();
    }
    env.edit_config(|text| {
        let mut text = text.to_string();
        for (name, _) in &env.sb.repos {
            text = text.replace(
                &format!("name = \"{name}\"\n"),
                &format!("name = \"{name}\"\ngithub = \"acme/{name}\"\n"),
            );
        }
        text = text.replace(
            "path = \"tasks.toml\"\n",
            &format!("path = \"tasks.toml\"\npoll = \"{poll}\"\n"),
        );
        text.push('\n');
        text.push_str(extra);
        text
    });
}

/// The `[github]` section pointing at a fake.
pub fn github_section(api_url: &str) -> String {
    format!(
        "[github]\napi_url = \"{api_url}\"\nwebhook_secret_env = \"{SECRET_VAR}\"\ntoken_env = \"{TOKEN_VAR}\"\n"
    )
}

/// Pushes a task branch with one commit to each repository, as alice; returns the heads.
pub fn push_task_branch(
    env: &Env,
    branch: &str,
    repos: &[&str],
    extra_files: &[(&str, &str)],
) -> Vec<String> {
    let mut heads = Vec::new();
    for repo in repos {
        // The first branch clones; the next ones start from upstream in the same clone.
        let dir = env.sb.root.join("clones").join("alice").join(repo);
        let start = if dir.exists() {
            git(&dir, "alice").run(&["fetch", "-q", "origin"]).unwrap();
            "origin/master"
        } else {
            env.sb.clone_for(repo, "alice").unwrap();
            "HEAD"
        };
        git(&dir, "alice")
            .run(&["switch", "-q", "-c", branch, start])
            .unwrap();
        for (file, text) in extra_files {
            std::fs::write(dir.join(file), text).unwrap();
            git(&dir, "alice").run(&["add", file]).unwrap();
        }
        let task = branch.split('/').nth(1).unwrap_or(branch);
        let key: String = task.split('-').take(2).collect::<Vec<_>>().join("-");
        commit(
            &dir,
            "alice",
            &format!("{repo}.txt"),
            "work\n",
            &format!("{key} work in {repo}"),
        )
        .unwrap();
        let p = push(&dir, "alice", &[branch]).unwrap();
        assert!(
            p.accepted,
            "push of {branch} to {repo} refused: {:?}",
            p.remote
        );
        heads.push(git(&dir, "alice").resolve("HEAD").unwrap().unwrap());
    }
    heads
}

/// Polls `f` until it holds, or panics after `timeout` with `what` and the server's log.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    log: Option<&PathBuf>,
    mut f: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = log
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .unwrap_or_default();
    panic!("timed out after {timeout:?} waiting for {what}\n--- serve log ---\n{log}");
}

/// A running `lockstep serve`.
pub struct ServeProc {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    pub url: String,
    pub log: PathBuf,
}

impl ServeProc {
    /// Starts `lockstep -v serve --listen 127.0.0.1:0` with the test secrets in its
    /// environment; its log goes to a file in the sandbox.
    pub fn start(env: &Env) -> ServeProc {
        ServeProc::spawn(env, &["-v"], &[])
    }

    /// Like `start`, with `vars` in its environment too.
    pub fn start_with(env: &Env, vars: &[(&str, &str)]) -> ServeProc {
        ServeProc::spawn(env, &["-v"], vars)
    }

    /// Like `start`, logging warnings only: what a load test measures is not the log.
    pub fn start_quiet(env: &Env) -> ServeProc {
        ServeProc::spawn(env, &[], &[("LOCKSTEP_LOG", "warn")])
    }

    /// Starts one replica of several sharing the sandbox's store: its config is the
    /// sandbox's with a state folder of its own (`.lockstep-<name>`), as on a machine of its
    /// own; its log is `serve-<name>.log`.
    pub fn replica(env: &Env, name: &str) -> ServeProc {
        let config = env.sb.meta.join(format!("lockstep-{name}.toml"));
        let text = std::fs::read_to_string(env.config()).unwrap();
        let text = text.replacen(
            "[bot]\n",
            &format!("[bot]\nstate_dir = \".lockstep-{name}\"\n"),
            1,
        );
        std::fs::write(&config, text).unwrap();
        let log = env.dir.path().join(format!("serve-{name}.log"));
        ServeProc::spawn_at(&config, &log, &["-v"], &[], env.store_env())
    }

    /// The replica's process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// `/healthz`'s role line: `leader` or `standby`.
    pub fn role(&self) -> String {
        http::request(&self.url, "GET", "/healthz", &[], b"")
            .ok()
            .and_then(|r| {
                r.body
                    .lines()
                    .find_map(|l| l.strip_prefix("role: ").map(str::to_string))
            })
            .unwrap_or_default()
    }

    /// Like `start`, under a file limit of `files` (`ulimit -n`), as a service manager sets one.
    pub fn start_with_file_limit(env: &Env, files: u32) -> ServeProc {
        let log = env
            .dir
            .path()
            .join(format!("serve-{}.log", std::process::id()));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("ulimit -n {files} && exec \"$0\" \"$@\"")])
            .arg(bin());
        ServeProc::spawn_cmd(cmd, &env.config(), &log, &["-v"], &[], env.store_env())
    }

    fn spawn(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> ServeProc {
        let log = env
            .dir
            .path()
            .join(format!("serve-{}.log", std::process::id()));
        ServeProc::spawn_at(&env.config(), &log, args, vars, env.store_env())
    }

    fn spawn_at(
        config: &std::path::Path,
        log: &std::path::Path,
        args: &[&str],
        vars: &[(&str, &str)],
        store: Vec<(String, String)>,
    ) -> ServeProc {
        ServeProc::spawn_cmd(Command::new(bin()), config, log, args, vars, store)
    }

    fn spawn_cmd(
        mut cmd: Command,
        config: &std::path::Path,
        log: &std::path::Path,
        args: &[&str],
        vars: &[(&str, &str)],
        store: Vec<(String, String)>,
    ) -> ServeProc {
        let log = log.to_path_buf();
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = cmd
            .arg("--config")
            .arg(config)
            .args(args)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env(SECRET_VAR, super::webhooks::SECRET)
            .env(TOKEN_VAR, TOKEN)
            .env(TRACKER_VAR, TRACKER_SECRET)
            .env(ALERTMANAGER_VAR, ALERTMANAGER_TOKEN)
            .env(READ_TOKEN_VAR, READ_TOKEN)
            .envs(vars.iter().copied())
            .envs(store)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let Some(url) = line.trim().strip_prefix("lockstep: serving on ") else {
            let _ = child.wait();
            panic!(
                "serve did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let url = url.to_string();
        ServeProc {
            child,
            _stdout: out,
            url,
            log,
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        http::get(&self.url, path)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit (at most `timeout`).
    pub fn stop(mut self, timeout: Duration) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "serve did not stop within {timeout:?} of SIGTERM\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
