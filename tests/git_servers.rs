//! lockstep's hooks behind real git servers, pushed to with the real `git` client over each
//! server's protocol: `git daemon` (no identity), smart HTTP through `git http-backend`
//! behind lighttpd with basic auth (`REMOTE_USER`), and gitolite over a local sshd
//! (`GL_USER`). The servers come from Debian's packages, installed by
//! `scripts/gitservers.sh start`; each test starts its own instance on a free 127.0.0.1 port,
//! serving its own sandbox. The HTTP and gitolite servers run as the script's account
//! (`GIT_SERVER_USER`), so the hooks run as a git server's account, as in production.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

const BRANCH: &str = "feature/TASK-1-login";
const PASSWORD: &str = "secret";

/// The binaries `scripts/gitservers.sh` found, from its env file's variables.
struct Tools {
    daemon: PathBuf,
    http_backend: PathBuf,
    lighttpd: PathBuf,
    lighttpd_modules: PathBuf,
    sshd: PathBuf,
    ssh_keygen: PathBuf,
    gitolite: PathBuf,
    account: String,
}

/// The tools, or `None` (the test is skipped) when the script has not run; with `CI` set, a
/// missing tool fails the test.
fn tools(test: &str) -> Option<Tools> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let all = (|| {
        Some(Tools {
            daemon: var("GIT_DAEMON_BIN")?,
            http_backend: var("GIT_HTTP_BACKEND_BIN")?,
            lighttpd: var("LIGHTTPD_BIN")?,
            lighttpd_modules: var("LIGHTTPD_MODULES")?,
            sshd: var("SSHD_BIN")?,
            ssh_keygen: var("SSH_KEYGEN_BIN")?,
            gitolite: var("GITOLITE_BIN")?,
            account: std::env::var("GIT_SERVER_USER").ok()?,
        })
    })();
    if all.is_none() {
        skip(
            test,
            "git daemon, lighttpd, sshd and gitolite3",
            "set -a; . \"$(scripts/gitservers.sh env)\"; set +a (after scripts/gitservers.sh start)",
        );
    }
    all
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command to its end and insists it succeeded.
fn must(mut cmd: Command, what: &str) -> String {
    let o = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(o.status.success(), "{what}: {}\n{}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// A command run as the git server's account.
fn as_account(tools: &Tools, program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={}", tools.account),
        &format!("--regid={}", tools.account),
        "--init-groups",
        "--",
    ])
    .arg(program);
    scrub(&mut cmd);
    cmd
}

/// Hands a folder (and all in it) to the git server's account.
fn give(tools: &Tools, dir: &Path) {
    let mut cmd = Command::new("chown");
    cmd.arg("-R")
        .arg(format!("{0}:{0}", tools.account))
        .arg(dir);
    must(cmd, "chown");
}

/// A running server; stopped (and reaped) when dropped.
struct Server {
    child: Child,
    /// The URL of the `api` repository, with `{user}` where a user's name goes.
    url: String,
    /// For ssh: the folder of the users' keys.
    keys: Option<(PathBuf, u16)>,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Waits until the server accepts connections on `port`.
    fn wait(mut self, port: u16) -> Server {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the server exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "the server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        self
    }

    /// `git` as `user` against this server: their name on commits, their key for ssh.
    fn git(&self, dir: &Path, user: &str) -> Command {
        let mut cmd = Command::new("git");
        scrub(&mut cmd);
        cmd.current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", user)
            .env("GIT_AUTHOR_EMAIL", format!("{user}@example.invalid"))
            .env("GIT_COMMITTER_NAME", user)
            .env("GIT_COMMITTER_EMAIL", format!("{user}@example.invalid"));
        if let Some((keys, port)) = &self.keys {
            cmd.env(
                "GIT_SSH_COMMAND",
                format!(
                    "ssh -p {port} -i {} -o IdentitiesOnly=yes -o BatchMode=yes \
                     -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
                    keys.join(user).display()
                ),
            );
        }
        cmd
    }

    /// `user`'s clone of `api` through the server, in `root/clone-<user>`, fetched up to date.
    fn clone(&self, root: &Path, user: &str) -> PathBuf {
        let dir = root.join(format!("clone-{user}"));
        if dir.exists() {
            let mut cmd = self.git(&dir, user);
            cmd.args(["fetch", "--quiet", "origin"]);
            must(cmd, &format!("{user} fetches api"));
            return dir;
        }
        let mut cmd = self.git(root, user);
        cmd.args(["clone", "--quiet", &self.url.replace("{user}", user)])
            .arg(&dir);
        must(cmd, &format!("{user} clones api"));
        dir
    }

    /// `git push origin ARGS` from `user`'s clone.
    fn push(&self, dir: &Path, user: &str, args: &[&str]) -> Pushed {
        let mut cmd = self.git(dir, user);
        cmd.args(["push", "origin"]).args(args);
        let out = run(cmd);
        Pushed {
            accepted: out.status.success(),
            stderr: stderr(&out),
        }
    }

    /// alice's TASK-1 branch, one commit, pushed through the server; returns her clone.
    fn task_branch(&self, root: &Path, options: &[&str]) -> (PathBuf, Pushed) {
        self.branch(root, BRANCH, "login.txt", options)
    }

    /// alice's `branch` from `origin/master`, one commit writing `file`, pushed through the
    /// server; returns her clone.
    fn branch(&self, root: &Path, branch: &str, file: &str, options: &[&str]) -> (PathBuf, Pushed) {
        let dir = self.clone(root, "alice");
        let mut cmd = self.git(&dir, "alice");
        cmd.args(["switch", "--quiet", "-c", branch, "origin/master"]);
        must(cmd, "switch");
        std::fs::write(dir.join(file), "log in\n").unwrap();
        let mut cmd = self.git(&dir, "alice");
        cmd.args(["add", file]);
        must(cmd, "add");
        let task = lockstep::Tasks::default()
            .task_of(branch)
            .unwrap_or_default()
            .to_string();
        let mut cmd = self.git(&dir, "alice");
        cmd.args(["commit", "--quiet", "-m", &format!("{task} {file}")]);
        must(cmd, "commit");
        let mut args = options.to_vec();
        args.push(branch);
        let p = self.push(&dir, "alice", &args);
        (dir, p)
    }

    /// `reviewer` approves the head of alice's TASK-1 branch through the server.
    fn approve(&self, root: &Path, reviewer: &str, options: &[&str]) -> Pushed {
        self.approve_branch(root, reviewer, BRANCH, options)
    }

    /// `reviewer` approves the head of alice's `branch` through the server.
    fn approve_branch(
        &self,
        root: &Path,
        reviewer: &str,
        branch: &str,
        options: &[&str],
    ) -> Pushed {
        let dir = self.clone(root, reviewer);
        let task = lockstep::Tasks::default()
            .task_of(branch)
            .unwrap_or_default()
            .to_string();
        let mut args = options.to_vec();
        let spec = format!("origin/{branch}:refs/approvals/{task}/{reviewer}");
        args.push(&spec);
        self.push(&dir, reviewer, &args)
    }
}

/// The sandbox's `api` under `git daemon --enable=receive-pack`, as root: anyone may push,
/// and nobody is named.
fn daemon(tools: &Tools, env: &Env) -> Server {
    let port = free_port();
    let log = env.dir.path().join("daemon.log");
    let child = Command::new(&tools.daemon)
        .args([
            "--reuseaddr",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            "--export-all",
            "--enable=receive-pack",
            "--informative-errors",
        ])
        .arg(format!("--base-path={}", env.sb.root.join("git").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Server {
        child,
        url: format!("git://127.0.0.1:{port}/api.git"),
        keys: None,
        log,
    }
    .wait(port)
}

/// The sandbox's `api` through `git http-backend` behind lighttpd, as the server's account:
/// `/git/` asks for a password (alice, bob, carol) and sets `REMOTE_USER`; `/anon/` lets
/// anyone push (`http.receivepack`), naming nobody.
fn http(tools: &Tools, env: &Env) -> Server {
    let port = free_port();
    let dir = env.dir.path().join("http");
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(
        dir.join("users"),
        ["alice", "bob", "carol"]
            .map(|u| format!("{u}:{PASSWORD}\n"))
            .concat(),
    )
    .unwrap();
    let root = env.sb.root.join("git");
    let backend = tools.http_backend.display();
    let conf = format!(
        r#"server.modules = ("mod_alias", "mod_setenv", "mod_auth", "mod_authn_file", "mod_cgi")
server.module-directory = "{modules}"
server.document-root = "{www}"
server.bind = "127.0.0.1"
server.port = {port}
server.username = "{account}"
server.groupname = "{account}"
server.errorlog = "{errlog}"
server.max-request-size = 0
alias.url = ("/git/" => "{backend}/", "/anon/" => "{backend}/")
cgi.assign = ("" => "")
setenv.add-environment = ("GIT_PROJECT_ROOT" => "{root}", "GIT_HTTP_EXPORT_ALL" => "1")
auth.backend = "plain"
auth.backend.plain.userfile = "{users}"
auth.require = ("/git/" => ("method" => "basic", "realm" => "git", "require" => "valid-user"))
"#,
        modules = tools.lighttpd_modules.display(),
        www = dir.join("www").display(),
        account = tools.account,
        errlog = dir.join("error.log").display(),
        root = root.display(),
        users = dir.join("users").display(),
    );
    std::fs::write(dir.join("lighttpd.conf"), conf).unwrap();
    // Anonymous pushes over `/anon/` reach receive-pack only with this.
    env.git_in("api", &["config", "http.receivepack", "true"]);
    give(tools, env.dir.path());
    let log = dir.join("lighttpd.log");
    let child = Command::new(&tools.lighttpd)
        .arg("-D")
        .arg("-f")
        .arg(dir.join("lighttpd.conf"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("lighttpd.err")).unwrap())
        .spawn()
        .unwrap();
    Server {
        child,
        url: format!("http://{{user}}:{PASSWORD}@127.0.0.1:{port}/git/api.git"),
        keys: None,
        log: dir.join("error.log"),
    }
    .wait(port)
}

/// gitolite over a local sshd, as the server's account: gitolite's home in the test's folder,
/// its repositories the sandbox's `git/` folder, lockstep's hooks installed the documented
/// way (`install-hooks --gitolite` into `$LOCAL_CODE/hooks/common`, then `gitolite setup`).
/// alice, bob and carol push with their own keys; gitolite names them in `GL_USER`.
fn gitolite(tools: &Tools, env: &Env) -> Server {
    let home = env.dir.path().join("gitolite");
    let keys = env.dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for user in ["admin", "alice", "bob", "carol"] {
        let mut cmd = Command::new(&tools.ssh_keygen);
        cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", user, "-f"])
            .arg(keys.join(user));
        must(cmd, "ssh-keygen");
    }
    // The hooks lockstep's sandbox installed go: gitolite puts its own in place.
    let bare = env.bare("api");
    for hook in ["pre-receive", "post-receive"] {
        std::fs::remove_file(bare.join("hooks").join(hook)).unwrap();
    }
    env.git_in("api", &["config", "--unset", "lockstep.config"]);
    // gitolite logs every command, `print-default-rc` included, there.
    std::fs::create_dir_all(home.join(".gitolite/logs")).unwrap();
    give(tools, env.dir.path());
    let gl = |args: &[&str]| {
        let mut cmd = as_account(tools, &tools.gitolite);
        cmd.args(args).env("HOME", &home).env("PATH", path_var());
        must(cmd, &format!("gitolite {}", args.join(" ")))
    };
    let rc = gl(&["print-default-rc"])
        .replacen(
            "# LOCAL_CODE                =>  \"$ENV{HOME}/local\",",
            "LOCAL_CODE                =>  \"$ENV{HOME}/local\",",
            1,
        )
        .replace(
            "%RC = (",
            &format!(
                "%RC = (\n    GL_REPO_BASE => '{}',",
                env.sb.root.join("git").display()
            ),
        );
    assert!(
        rc.contains("        LOCAL_CODE                =>  \"$ENV{HOME}/local\","),
        "gitolite's rc changed:\n{rc}"
    );
    std::fs::write(home.join(".gitolite.rc"), rc).unwrap();
    give(tools, &home);
    gl(&["setup", "-pk", &keys.join("admin.pub").to_string_lossy()]);
    // lockstep's hooks, the documented way.
    let mut cmd = as_account(tools, &bin());
    cmd.arg("--config")
        .arg(env.config())
        .args(["install-hooks", "--gitolite"])
        .arg(home.join("local/hooks/common"))
        .env("HOME", &home)
        .env("PATH", path_var());
    let said = must(cmd, "install-hooks --gitolite");
    assert!(
        said.contains("wrote pre-receive, wrote post-receive"),
        "{said}"
    );
    // The users and the repository, without the gitolite-admin round trip: gitolite's conf
    // and keydir edited in place, then `gitolite setup` compiles them and links the hooks.
    // The bot pushes its merges to the repository on the server's disk, through gitolite's
    // `update` hook, named by `GL_USER`: it needs write access like anyone who pushes.
    for user in ["alice", "bob", "carol"] {
        std::fs::copy(
            keys.join(format!("{user}.pub")),
            home.join(".gitolite/keydir").join(format!("{user}.pub")),
        )
        .unwrap();
    }
    std::fs::write(
        home.join(".gitolite/conf/gitolite.conf"),
        "repo gitolite-admin\n    RW+ = admin\n\n\
         repo api\n    RW+ = alice bob carol lockstep-bot\n",
    )
    .unwrap();
    give(tools, &home);
    gl(&["setup"]);
    for hook in ["pre-receive", "post-receive"] {
        let link = bare.join("hooks").join(hook);
        assert!(
            std::fs::read_link(&link).is_ok(),
            "gitolite did not link lockstep's {hook} into api.git"
        );
    }
    let port = free_port();
    let ssh = env.dir.path().join("ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let mut cmd = Command::new(&tools.ssh_keygen);
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(ssh.join("host"));
    must(cmd, "ssh-keygen (host)");
    std::fs::write(
        ssh.join("sshd_config"),
        format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {host}\nPidFile none\nUsePAM no\n\
             StrictModes no\nAuthorizedKeysFile {home}/.ssh/authorized_keys\n\
             AllowUsers {account}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             SetEnv HOME={home}\nLogLevel ERROR\n",
            host = ssh.join("host").display(),
            home = home.display(),
            account = tools.account,
        ),
    )
    .unwrap();
    let _ = std::fs::create_dir_all("/run/sshd");
    let log = ssh.join("sshd.log");
    let child = Command::new(&tools.sshd)
        .args(["-D", "-e", "-f"])
        .arg(ssh.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Server {
        child,
        url: format!("ssh://{}@127.0.0.1:{port}/api", tools.account),
        keys: Some((keys, port)),
        log,
    }
    .wait(port)
}

/// The PATH the servers' accounts get: the system's, without the test runner's own.
fn path_var() -> &'static str {
    "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
}

/// The sandbox, with the shipped policies whole (two-approvals included).
fn sandbox() -> Env {
    let env = Env::new(&["api"]);
    env.require_approvals();
    env
}

/// The decision log's lines, read with `lockstep audit --json`.
fn decisions(env: &Env) -> Vec<serde_json::Value> {
    let o = env.lockstep(&["audit", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The state of delivery `id`, waited for until it is done. Read as the server's account,
/// which owns the store: a read as root could leave files the worker cannot write.
fn delivered(env: &Env, tools: &Tools, id: i64) -> String {
    wait_for("the delivery to end", || {
        let mut cmd = as_account(tools, &bin());
        cmd.arg("--config")
            .arg(env.config())
            .args(["show", &id.to_string(), "--json"])
            .env("HOME", env.sb.root.join("meta"))
            .stdin(Stdio::null());
        let q = cmd.output().ok()?;
        let v: serde_json::Value = serde_json::from_slice(&q.stdout).ok()?;
        let state = v["delivery"]["state"].as_str()?.to_string();
        ["delivered", "failed", "rolled-back", "cancelled"]
            .contains(&state.as_str())
            .then_some(state)
    })
}

/// What every server with an identity must do: refuse a push to master with the rule's
/// reason as `remote:` lines; take alice's branch and two approvals, the second with
/// `-o deliver`, and deliver; log who pushed.
fn identity_server(tools: &Tools, env: &Env, server: &Server) {
    let root = env.dir.path();
    let (dir, p) = server.task_branch(root, &[]);
    assert!(p.accepted, "{}", p.stderr);
    // (a) A rejected push shows the rule's reason.
    let p = server.push(&dir, "alice", &[&format!("{BRANCH}:master")]);
    assert!(!p.accepted, "{}", p.stderr);
    assert_eq!(
        p.remote(),
        [
            "lockstep: push rejected",
            "  refs/heads/master: [protected-branch-writers] only `lockstep-bot` and the \
             maintainers may update `master`; push your work to a task branch and ask for a \
             delivery with `git push -o deliver`",
        ],
        "{}",
        p.stderr
    );
    // (b) The approval that completes `two-approvals`, pushed with `-o deliver`, delivers.
    let p = server.approve(root, "bob", &[]);
    assert!(p.accepted, "{}", p.stderr);
    let p = server.approve(root, "carol", &["-o", "deliver"]);
    assert!(p.accepted, "{}", p.stderr);
    assert!(
        p.remote_text()
            .contains("delivery #1 of `TASK-1` queued (position 1)"),
        "{}",
        p.stderr
    );
    assert_eq!(delivered(env, tools, 1), "delivered");
    let mut fetch = server.git(&dir, "alice");
    fetch.args(["fetch", "--quiet", "origin"]);
    must(fetch, "fetch");
    let mut show = server.git(&dir, "alice");
    show.args(["show", "origin/master:login.txt"]);
    assert_eq!(must(show, "master has alice's file"), "log in\n");
    // A branch pushed and approved is delivered by a push to `refs/deliver/<TASK>`, which
    // leaves no ref behind.
    let dark = "feature/TASK-3-dark";
    let (dir, p) = server.branch(root, dark, "dark.txt", &[]);
    assert!(p.accepted, "{}", p.stderr);
    for reviewer in ["bob", "carol"] {
        let p = server.approve_branch(root, reviewer, dark, &[]);
        assert!(p.accepted, "{}", p.stderr);
    }
    let p = server.push(&dir, "alice", &[&format!("{dark}:refs/deliver/TASK-3")]);
    assert!(p.accepted, "{}", p.stderr);
    assert!(
        p.remote_text()
            .contains("delivery #2 of `TASK-3` queued (position 1)"),
        "{}",
        p.stderr
    );
    assert_eq!(delivered(env, tools, 2), "delivered");
    let mut refs = server.git(&dir, "alice");
    refs.args(["ls-remote", "origin", "refs/deliver/*"]);
    assert_eq!(must(refs, "ls-remote"), "");
    // (d) Who pushed reaches the decision log.
    let pushers: Vec<String> = decisions(env)
        .iter()
        .filter(|d| d["stage"] == "push")
        .map(|d| d["pusher"].as_str().unwrap_or_default().to_string())
        .collect();
    for who in ["alice", "bob", "carol"] {
        assert!(pushers.iter().any(|p| p == who), "{who} not in {pushers:?}");
    }
}

#[test]
fn over_gitolite_rules_identity_and_delivery_by_push_hold() {
    let Some(tools) = tools("over_gitolite_rules_identity_and_delivery_by_push_hold") else {
        return;
    };
    let env = sandbox();
    let server = gitolite(&tools, &env);
    identity_server(&tools, &env, &server);
}

#[test]
fn over_smart_http_rules_identity_and_delivery_by_push_hold() {
    let Some(tools) = tools("over_smart_http_rules_identity_and_delivery_by_push_hold") else {
        return;
    };
    let env = sandbox();
    let server = http(&tools, &env);
    identity_server(&tools, &env, &server);
}

/// Anonymous pushes (no variable of `[identity] env` set): `-o deliver` and a delivery ref are
/// refused with "no pusher identity", and a push to master says the pusher is unknown.
fn anonymous_server(env: &Env, server: &Server) {
    let root = env.dir.path();
    let (dir, p) = server.task_branch(root, &["-o", "deliver"]);
    assert!(!p.accepted, "{}", p.stderr);
    let text = p.remote_text();
    assert!(
        text.contains(&format!(
            "  refs/heads/{BRANCH}: [pusher-identity] no pusher identity: none of `GL_USER`, \
             `GL_USERNAME`, `GITHUB_USER_LOGIN`, `GITEA_PUSHER_NAME`, `REMOTE_USER` is set, so \
             lockstep cannot tell who pushes and nobody can ask for a delivery (`-o deliver`) \
             with an anonymous push; have the git server authenticate pushers and set one of \
             them (see docs/install.md#who-is-pushing)"
        )),
        "{text}"
    );
    // Without the option the branch is taken (task branches are from anyone) ...
    let p = server.push(&dir, "alice", &[BRANCH]);
    assert!(p.accepted, "{}", p.stderr);
    // ... but a delivery ref is not.
    let p = server.push(&dir, "alice", &[&format!("{BRANCH}:refs/deliver/TASK-1")]);
    assert!(!p.accepted, "{}", p.stderr);
    assert!(
        p.remote_text()
            .contains("  refs/deliver/TASK-1: [deliver-ref] no pusher identity: none of `GL_USER`"),
        "{}",
        p.stderr
    );
    let p = server.push(&dir, "alice", &[&format!("{BRANCH}:master")]);
    assert!(!p.accepted, "{}", p.stderr);
    assert!(
        p.remote_text().contains(
            "  refs/heads/master: [protected-branch-writers] no pusher identity: lockstep \
             cannot tell who pushes, so nobody may update `master` with this push"
        ),
        "{}",
        p.stderr
    );
    // What the server's account made is read as the test's.
    let mut cmd = Command::new("chown");
    cmd.arg("-R").arg("root:root").arg(env.dir.path());
    must(cmd, "chown back");
    assert_eq!(env.task("TASK-1").0, "In Progress");
    assert_eq!(env.rev("api", "refs/deliver/TASK-1"), None);
    let q = env.lockstep(&["queue", "--json"]);
    assert!(!stdout(&q).contains("TASK-1"), "{}", stdout(&q));
}

#[test]
fn over_git_daemon_an_anonymous_push_cannot_deliver() {
    let Some(tools) = tools("over_git_daemon_an_anonymous_push_cannot_deliver") else {
        return;
    };
    let env = sandbox();
    let server = daemon(&tools, &env);
    anonymous_server(&env, &server);
}

#[test]
fn over_smart_http_without_auth_an_anonymous_push_cannot_deliver() {
    let Some(tools) = tools("over_smart_http_without_auth_an_anonymous_push_cannot_deliver") else {
        return;
    };
    let env = sandbox();
    let mut server = http(&tools, &env);
    server.url = server
        .url
        .replace("{user}:secret@", "")
        .replace("/git/", "/anon/");
    anonymous_server(&env, &server);
}
