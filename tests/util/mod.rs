//! Shared test fixtures: isolated git, sandboxes of bare repositories with lockstep's hooks.

#![allow(dead_code)]

pub mod container;
pub mod fake_github;
pub mod fake_jira;
pub mod http;
pub mod markdown;
pub mod monitoring;
pub mod pipeline;
pub mod postgres;
pub mod serve;
pub mod webhooks;

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use lockstep::sandbox::{Sandbox, commit, push, sandbox_git};

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

/// Wraps a step so that a test can make it fail (`$SANDBOX/gates/<repo>.<step>.fail`) or hold
/// it: when `$SANDBOX/gates/<repo>.<step>.hold` exists,
/// the step announces itself in `<repo>.<step>.waiting` (its pid) and waits for
/// `<repo>.<step>.open` before running the real step. It gives up when the sandbox is gone, so
/// a step orphaned by a killed worker cannot outlive its test.
const GATE: &str = r#"#!/bin/sh
g="$SANDBOX/gates/$LOCKSTEP_REPO.$1"
shift
if [ -e "$g.fail" ]; then echo "failing on purpose"; exit 1; fi
if [ -e "$g.hold" ]; then
  echo $$ > "$g.waiting.tmp" && mv "$g.waiting.tmp" "$g.waiting"
  while [ ! -e "$g.open" ]; do
    [ -d "$SANDBOX/gates" ] || exit 99
    sleep 0.05
  done
fi
exec "$@"
"#;

/// A temporary folder with a sandbox of the given repositories, hooks installed.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub sb: Sandbox,
    /// The PostgreSQL database of the store, when it is not SQLite in `state_dir`.
    pub database: Option<postgres::Database>,
}

impl Env {
    pub fn new(repos: &[&str]) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("lockstep-test-")
            .tempdir()
            .unwrap();
        let sb = Sandbox::create(&dir.path().join("sb"), &bin(), repos).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::create_dir_all(sb.root.join("gates")).unwrap();
        let mut env = Env {
            dir,
            sb,
            database: None,
        };
        env.without_approvals();
        // Every step goes through the gate wrapper (a no-op unless a test holds the step).
        let gate = env.sb.meta.join("steps").join("gate.sh");
        std::fs::write(&gate, GATE).unwrap();
        std::fs::set_permissions(&gate, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let steps = env.sb.meta.join("steps");
        env.set_steps(|s| {
            format!(
                "[{}, \"{s}\", {}]",
                toml_str(&gate),
                toml_str(&steps.join(format!("{s}.sh")))
            )
        });
        // The serial line, one delivery at a time: what these tests are about. The
        // pipeline's own tests widen the window.
        env.set_delivery("window", "1");
        if postgres::suite_on_postgres()
            && let Some(admin) = postgres::admin_url("the suite on PostgreSQL")
        {
            env.use_postgres(&admin);
        }
        env
    }

    /// A sandbox whose store is a PostgreSQL database of its own (`lease` as given); `None`
    /// (the test is skipped) when there is no PostgreSQL to test with, unless `CI` is set.
    pub fn on_postgres(test: &str, repos: &[&str], lease: &str) -> Option<Env> {
        let admin = postgres::admin_url(test)?;
        let mut env = Env::new(repos);
        if env.database.is_none() {
            env.use_postgres(&admin);
        }
        let lease = format!("lease = \"{lease}\"\n");
        env.edit_config(|text| text.replace("[store]\n", &format!("[store]\n{lease}")));
        Some(env)
    }

    /// Moves the sandbox's store to a new PostgreSQL database.
    fn use_postgres(&mut self, admin: &str) {
        let db = postgres::Database::create(admin);
        let var = db.var.clone();
        self.edit_config(|text| format!("{text}\n[store]\nurl_env = \"{var}\"\n"));
        // The git server gives its hooks the variable, as docs/serve.md says: here each
        // repository's hooks are shell shims that export it before they run lockstep.
        for (_, bare) in &self.sb.repos {
            for hook in ["pre-receive", "update", "post-receive"] {
                let path = bare.join("hooks").join(hook);
                if !path.exists() {
                    continue;
                }
                let shim = format!(
                    "#!/bin/sh\n{var}='{}'; export {var}\nexec '{}' hook {hook} \"$@\"\n",
                    db.url,
                    bin().display()
                );
                std::fs::write(&path, shim).unwrap();
            }
        }
        self.database = Some(db);
    }

    /// The variable naming the store's PostgreSQL URL, for the processes a test starts.
    pub fn store_env(&self) -> Vec<(String, String)> {
        self.database
            .iter()
            .map(|db| (db.var.clone(), db.url.clone()))
            .collect()
    }

    /// The PostgreSQL database of a sandbox made by [`Env::on_postgres`].
    pub fn db(&self) -> &postgres::Database {
        self.database.as_ref().expect("a sandbox on PostgreSQL")
    }

    /// The sandbox's root: `$SANDBOX` of the steps.
    pub fn root(&self) -> PathBuf {
        std::path::absolute(&self.sb.root).unwrap()
    }

    pub fn config(&self) -> PathBuf {
        self.sb.meta.join("lockstep.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.sb.meta.join(".lockstep")
    }

    /// The isolated `HOME` of the commands a test runs.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Rewrites `lockstep.toml`: `edit` gets its text and returns the new one. The one way
    /// tests and benches change the sandbox's config (the helpers below use it).
    pub fn edit_config(&self, edit: impl FnOnce(&str) -> String) {
        let text = std::fs::read_to_string(self.config()).unwrap();
        std::fs::write(self.config(), edit(&text)).unwrap();
    }

    /// Sets the command of every delivery step (`build`, `test`, `deploy`, `verify`,
    /// `rollback`): `command(step)` gives its TOML array.
    pub fn set_steps(&self, command: impl Fn(&str) -> String) {
        self.edit_config(|text| {
            let mut out = String::new();
            for line in text.lines() {
                let step = ["build", "test", "deploy", "verify", "rollback"]
                    .into_iter()
                    .find(|s| line.starts_with(&format!("{s} = [")));
                match step {
                    Some(s) => out.push_str(&format!("{s} = {}\n", command(s))),
                    None => {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
            }
            out
        });
    }

    /// Sets a key of the `[delivery]` table, e.g. `("merge", "\"merge-commit\"")`.
    pub fn set_delivery(&self, key: &str, value: &str) {
        self.edit_config(|t| {
            let kept: Vec<&str> = t
                .lines()
                .filter(|l| !l.starts_with(&format!("{key} =")))
                .collect();
            kept.join("\n")
                .replacen("[delivery]\n", &format!("[delivery]\n{key} = {value}\n"), 1)
                + "\n"
        });
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

    /// Takes the shipped `two-approvals` rule out of the sandbox's policies: most tests are
    /// about what happens to a delivery, not about its reviews, and would otherwise have to
    /// approve every branch they push. [`Env::require_approvals`] puts it back.
    pub fn without_approvals(&self) {
        let path = self.sb.meta.join("policies").join("50-delivery.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text
            .find("[[rule]]\nname = \"two-approvals\"")
            .expect("the shipped two-approvals rule");
        std::fs::write(&path, &text[..start]).unwrap();
    }

    /// Puts the shipped `50-delivery.toml` back whole, `two-approvals` included.
    pub fn require_approvals(&self) {
        std::fs::write(
            self.sb.meta.join("policies").join("50-delivery.toml"),
            include_str!("../../policies/50-delivery.toml"),
        )
        .unwrap();
    }

    /// `reviewer` approves the head of `branch` of `repo` as they fetched it, the way the
    /// README's `git approve` alias does: `git push origin origin/<branch>:refs/approvals/…`.
    pub fn approve(&self, repo: &str, reviewer: &str, branch: &str) -> Pushed {
        let dir = self.clone_of(repo, reviewer);
        let task = lockstep::Tasks::default()
            .task_of(branch)
            .unwrap_or_default()
            .to_string();
        push_as(
            &dir,
            reviewer,
            &[&format!("origin/{branch}:refs/approvals/{task}/{reviewer}")],
        )
    }

    /// Adds a policy file next to the shipped ones.
    pub fn add_policy(&self, name: &str, text: &str) {
        std::fs::write(self.sb.meta.join("policies").join(name), text).unwrap();
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
        self.edit_config(|text| {
            let start = text
                .find("[tracker]\n")
                .expect("the sandbox config has a tracker");
            let end = text.find("\n[[repo]]").unwrap_or(text.len());
            format!("{}{}\n{}", &text[..start], tracker.trim(), &text[end..])
        });
    }

    /// Overwrites the sandbox's `lockstep.toml`.
    pub fn set_config(&self, toml: &str) {
        std::fs::write(self.config(), toml).unwrap();
    }

    /// Sets the status of tasks (creating them), keeping their notes.
    pub fn set_status(&self, tasks: &[(&str, &str)]) {
        let tracker = self.tracker();
        tracker
            .update(|all| {
                for (key, status) in tasks {
                    all.entry(key.to_string()).or_default().status = status.to_string();
                }
                Ok(())
            })
            .unwrap();
    }

    fn tracker(&self) -> lockstep::FileTracker {
        lockstep::FileTracker::new(self.sb.meta.join("tasks.toml"))
    }

    /// A task's status and notes, as the tracker holds them.
    pub fn task(&self, key: &str) -> (String, Vec<String>) {
        let t = self.tracker().read_all().unwrap().remove(key).unwrap();
        (t.status, t.notes)
    }

    /// A `lockstep` command with the sandbox's config and an isolated home.
    pub fn command(&self, args: &[&str]) -> Command {
        let home = self.home();
        let mut cmd = lockstep_cmd();
        cmd.arg("--config")
            .arg(self.config())
            .args(args)
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", &home)
            .env("USER", "release-lead")
            .env_remove("LOCKSTEP_CONFIG")
            .envs(self.store_env())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `lockstep` with the sandbox's config.
    pub fn lockstep(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Starts `lockstep` in the background; its output goes to `<name>.out` / `<name>.err`.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Child {
        let out = std::fs::File::create(self.dir.path().join(format!("{name}.out"))).unwrap();
        let err = std::fs::File::create(self.dir.path().join(format!("{name}.err"))).unwrap();
        self.command(args)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap()
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

    /// What a spawned command printed: (stdout, stderr).
    pub fn spawned_output(&self, name: &str) -> (String, String) {
        let read = |ext: &str| {
            std::fs::read_to_string(self.dir.path().join(format!("{name}.{ext}")))
                .unwrap_or_default()
        };
        (read("out"), read("err"))
    }

    /// `lockstep show ID --json`.
    pub fn show(&self, id: i64) -> serde_json::Value {
        let o = self.lockstep(&["show", &id.to_string(), "--json"]);
        assert!(o.status.success(), "show {id}: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// `lockstep autotests TASK --json`: the task's autotests, newest first.
    pub fn autotests(&self, task: &str) -> Vec<serde_json::Value> {
        let o = self.lockstep(&["autotests", task, "--json"]);
        assert!(o.status.success(), "autotests: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// `lockstep queue --json`.
    pub fn queue(&self) -> serde_json::Value {
        let o = self.lockstep(&["queue", "--json"]);
        assert!(o.status.success(), "queue: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// The state of a delivery (`queued`, `running`, `delivered`, …).
    pub fn state(&self, id: i64) -> String {
        self.show(id)["delivery"]["state"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The commit a ref of a bare repository points to, if any.
    pub fn rev(&self, repo: &str, rev: &str) -> Option<String> {
        lockstep::Git::new(self.bare(repo)).resolve(rev).unwrap()
    }

    /// Where `master` of a bare repository is.
    pub fn master(&self, repo: &str) -> String {
        self.rev(repo, "refs/heads/master").unwrap()
    }

    /// Every repository's `master`, in order.
    pub fn masters(&self) -> Vec<String> {
        self.sb.repos.iter().map(|(n, _)| self.master(n)).collect()
    }

    /// Runs git in a bare repository.
    pub fn git_in(&self, repo: &str, args: &[&str]) -> String {
        git(&self.bare(repo), "admin").run(args).unwrap()
    }

    /// A user's clone of a repository, fetched up to date.
    pub fn clone_of(&self, repo: &str, user: &str) -> PathBuf {
        let dir = self.sb.root.join("clones").join(user).join(repo);
        if dir.exists() {
            git(&dir, user)
                .run(&["fetch", "--quiet", "origin"])
                .unwrap();
        } else {
            self.sb.clone_for(repo, user).unwrap();
        }
        dir
    }

    /// alice pushes a task branch (the task must be In Progress) with one commit writing
    /// `file`; returns the branch's head.
    pub fn task_branch(&self, repo: &str, branch: &str, file: &str, text: &str) -> String {
        self.task_branch_with(repo, branch, &[(file, text)], &[])
    }

    /// Like `task_branch`, with several files and extra `git push` arguments (`-o deliver`).
    pub fn task_branch_with(
        &self,
        repo: &str,
        branch: &str,
        files: &[(&str, &str)],
        push_args: &[&str],
    ) -> String {
        let dir = self.clone_of(repo, "alice");
        let g = git(&dir, "alice");
        g.run(&["switch", "--quiet", "-C", branch, "origin/master"])
            .unwrap();
        let task = lockstep::Tasks::default()
            .task_of(branch)
            .unwrap_or_default()
            .to_string();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
            g.run(&["add", file]).unwrap();
        }
        g.run(&[
            "commit",
            "--quiet",
            "-m",
            &format!("{task} {branch} in {repo}"),
        ])
        .unwrap();
        let mut args: Vec<&str> = push_args.to_vec();
        args.extend(["--set-upstream", branch]);
        let p = push(&dir, "alice", &args).unwrap();
        assert!(
            p.accepted,
            "alice's push of {branch} to {repo}: {:?}",
            p.remote
        );
        g.resolve("HEAD").unwrap().unwrap()
    }

    /// A maintainer (`release-lead`) moves `master` forward by a commit writing `file`.
    pub fn advance_master(&self, repo: &str, file: &str, text: &str) -> String {
        let dir = self.clone_of(repo, "release-lead");
        let g = git(&dir, "release-lead");
        g.run(&["switch", "--quiet", "-C", "master", "origin/master"])
            .unwrap();
        commit(&dir, "release-lead", file, text, &format!("{repo}: {file}")).unwrap();
        let p = push(&dir, "release-lead", &["master"]).unwrap();
        assert!(p.accepted, "release-lead's push to {repo}: {:?}", p.remote);
        g.resolve("HEAD").unwrap().unwrap()
    }

    /// What the deploy step wrote for a repository, if anything.
    pub fn deployed(&self, repo: &str) -> Option<String> {
        std::fs::read_to_string(self.sb.root.join("deployed").join(repo))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// The lines of `rollbacks.log` (`<repo> <delivery>` per rollback run).
    pub fn rollbacks(&self) -> Vec<String> {
        std::fs::read_to_string(self.sb.root.join("rollbacks.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn gate(&self, repo: &str, step: &str, what: &str) -> PathBuf {
        self.sb
            .root
            .join("gates")
            .join(format!("{repo}.{step}.{what}"))
    }

    /// Makes `step` of `repo` fail, or succeed again.
    pub fn fail_step(&self, repo: &str, step: &str, fail: bool) {
        let path = self.gate(repo, step, "fail");
        if fail {
            std::fs::write(path, "").unwrap();
        } else {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Makes `step` of `repo` wait until `open_gate`.
    pub fn hold(&self, repo: &str, step: &str) {
        std::fs::write(self.gate(repo, step, "hold"), "").unwrap();
    }

    /// Stops holding `step` of `repo` for the runs to come.
    pub fn unhold(&self, repo: &str, step: &str) {
        let _ = std::fs::remove_file(self.gate(repo, step, "hold"));
    }

    /// Lets a held step run.
    pub fn open_gate(&self, repo: &str, step: &str) {
        std::fs::write(self.gate(repo, step, "open"), "").unwrap();
    }

    /// Waits until a held step is waiting at its gate; returns the step's pid.
    pub fn wait_at_gate(&self, repo: &str, step: &str) -> i32 {
        let path = self.gate(repo, step, "waiting");
        wait_for(&format!("{repo} {step} at its gate"), || {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
    }

    /// Step processes of this sandbox still alive (found by their `SANDBOX` variable).
    pub fn step_processes(&self) -> Vec<i32> {
        let needle = format!("SANDBOX={}", self.root().display());
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if environ.split(|b| *b == 0).any(|v| v == needle.as_bytes()) && !is_zombie(pid) {
                pids.push(pid);
            }
        }
        pids
    }

    /// The pid of the worker holding the queue, as recorded in its lock file.
    pub fn worker_lock(&self) -> PathBuf {
        self.state_dir().join("worker.lock")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Let any step still held go (and end), whatever the test did.
        let gates = self.sb.root.join("gates");
        if let Ok(entries) = std::fs::read_dir(&gates) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(base) = name.strip_suffix(".hold") {
                    let _ = std::fs::write(gates.join(format!("{base}.open")), "");
                }
            }
        }
    }
}

/// The parent of a live process: for a step's command, the supervisor lockstep started it
/// under (whose pid the store records).
pub fn parent_of(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()?
        .rsplit_once(") ")?
        .1
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
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

/// Says that a test does not run for want of `needs`, and `how` to get it; fails the test
/// instead when `CI` is set (`.ci/run` sets it and starts every service: a service missing
/// there is a broken CI, not a skip).
pub fn skip(test: &str, needs: &str, how: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test} needs {needs} but CI is set: {how} (as .ci/run does)");
    }
    say_skipped(test, needs, how);
}

/// Writes `SKIPPED: <test> needs <what>; <how>` on the test run's standard error, where a
/// plain `cargo test` shows it. libtest captures `eprintln!` and shows it only for a test that
/// fails, so a skip said that way passed unseen; a write to `std::io::stderr()` itself is not
/// captured. The test is named as libtest names its thread, the name `cargo test` takes.
pub fn say_skipped(test: &str, needs: &str, how: &str) {
    let thread = std::thread::current();
    let test = thread.name().filter(|n| *n != "main").unwrap_or(test);
    let line = format!("SKIPPED: {test} needs {needs}; {how}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Polls `f` until it gives a value, for at most 60 seconds (a loaded CI machine is slow).
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A merge-stage rule that refuses every merge, as a release freeze would.
pub const MERGE_FREEZE: &str = r#"
[[rule]]
name = "release-freeze"
on = ["merge"]
require = 'false'
message = "merges are frozen until the release is out"
"#;

/// Whether `cargo bench` was given a filter that is not this bench's `name` (then it skips).
pub fn bench_filtered_out(name: &str) -> bool {
    // `cargo bench` passes `--bench`; any other word that is not an option is a filter.
    std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .any(|a| !a.starts_with('-') && !name.contains(a.as_str()))
}

/// How many times `repo`'s `step` ran for delivery `id`.
pub fn runs_of_step(env: &Env, id: i64, repo: &str, step: &str) -> usize {
    env.show(id)["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["repo"] == repo && s["step"] == step)
        .count()
}

/// A bench's `--name N` argument, or `default`.
pub fn bench_arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A TOML basic string.
pub fn toml_str(p: &Path) -> String {
    toml::Value::String(p.to_string_lossy().into_owned()).to_string()
}

/// A clone's git, as `user`.
pub fn git(dir: &Path, user: &str) -> lockstep::Git {
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
pub fn scrub(cmd: &mut Command) {
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
/// runtime (two workers, so that a slow answer holds up no other), so that sync tests, the
/// `lockstep` processes they start and the benches' load can reach it.
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
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
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

/// Gives `cmd` the environment changes of `like` (what it sets and what it removes), for a
/// test that runs the same command through another program or binary.
pub fn copy_env(like: &Command, cmd: &mut Command) {
    for (k, v) in like.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
}
