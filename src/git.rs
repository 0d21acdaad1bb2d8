//! The one place that runs `git`.
//!
//! Every command gets a clean environment: variables that steer git (`GIT_DIR`,
//! `GIT_INDEX_FILE`, …) are removed so that a hook's environment cannot leak into the bot's
//! own operations, except for the quarantine variables a hook must keep to see the objects
//! being pushed ([`Git::for_hook`]). Arguments are always passed as argv, never through a
//! shell, and refs taken from a push are separated from options by `--end-of-options` where
//! git accepts it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, bail};

/// Variables a hook inherits from `git receive-pack` that must reach the git commands it
/// runs, so that they see the quarantined objects of the push.
const HOOK_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
];

/// A handle on one repository (bare or not).
#[derive(Debug, Clone)]
pub struct Git {
    dir: PathBuf,
    keep_env: Vec<(String, OsString)>,
    extra_env: Vec<(String, String)>,
    /// Variables of lockstep's own environment its commands must not see.
    removed_env: Vec<String>,
}

/// A short id for messages: the first ten hex digits.
pub fn short(oid: &str) -> &str {
    &oid[..oid.len().min(10)]
}

/// Whether an object id is git's all-zero id (a created or deleted ref).
pub fn is_zero(oid: &str) -> bool {
    !oid.is_empty() && oid.bytes().all(|b| b == b'0')
}

/// Whether a string looks like a full object id (SHA-1 or SHA-256, lowercase hex).
pub fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64)
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Git {
    /// Runs git in `dir` with nothing inherited that steers git.
    pub fn new(dir: impl Into<PathBuf>) -> Git {
        Git {
            dir: dir.into(),
            keep_env: Vec::new(),
            extra_env: Vec::new(),
            removed_env: Vec::new(),
        }
    }

    /// Runs git in the repository a hook was started in, keeping the quarantine variables.
    pub fn for_hook() -> anyhow::Result<Git> {
        let dir = std::env::current_dir().context("cannot read the hook's working folder")?;
        let keep_env = HOOK_ENV
            .iter()
            .filter_map(|k| std::env::var_os(k).map(|v| (k.to_string(), v)))
            .collect();
        Ok(Git {
            dir,
            keep_env,
            extra_env: Vec::new(),
            removed_env: Vec::new(),
        })
    }

    /// Adds a variable to every command (e.g. the bot's author identity).
    pub fn with_env(mut self, key: &str, value: &str) -> Git {
        self.extra_env.push((key.to_string(), value.to_string()));
        self
    }

    /// Hides a variable of lockstep's environment from every command (and the hooks they
    /// run), e.g. a `LOCKSTEP_CONFIG` that names another config than the sandbox's.
    pub fn without_env(mut self, key: &str) -> Git {
        self.removed_env.push(key.to_string());
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.current_dir(&self.dir).args(args).stdin(Stdio::null());
        for (k, _) in std::env::vars_os() {
            if let Some(k) = k.to_str()
                && k.starts_with("GIT_")
                && k != "GIT_EXEC_PATH"
            {
                cmd.env_remove(k);
            }
        }
        for k in &self.removed_env {
            cmd.env_remove(k);
        }
        for (k, v) in &self.keep_env {
            cmd.env(k, v);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        // Never wait for a password prompt: the bot has no terminal.
        cmd.env("GIT_TERMINAL_PROMPT", "0");
        cmd
    }

    fn output(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command(args)
            .output()
            .with_context(|| format!("cannot run `git {}`; is git installed?", args.join(" ")))
    }

    /// Runs git and returns its stdout; a non-zero exit is an error carrying stderr.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "`git {}` failed in `{}`: {}",
                args.join(" "),
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).context("git printed something that is not UTF-8")
    }

    /// Runs git and reports only whether it exited 0.
    pub fn succeeds(&self, args: &[&str]) -> anyhow::Result<bool> {
        Ok(self.output(args)?.status.success())
    }

    /// Runs git and returns its exit status and both outputs, whatever the status.
    pub fn try_run(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let out = self.output(args)?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// `git config --get KEY`, or None when unset.
    pub fn config_get(&self, key: &str) -> anyhow::Result<Option<String>> {
        let (ok, out, _) = self.try_run(&["config", "--get", key])?;
        Ok(ok.then(|| out.trim_end().to_string()))
    }

    /// `git config --get KEY` without starting git when the repository's own config file
    /// answers for sure (a hook's hot path: every push pays for each process started). git
    /// reads that file last, so a value there wins over the user's and the system's; anything
    /// the simple reading cannot be sure of (includes, quoting, escapes, a key only set
    /// elsewhere) is asked of git.
    pub fn config_get_local_first(&self, key: &str) -> anyhow::Result<Option<String>> {
        let git_dir = self
            .keep_env
            .iter()
            .find(|(k, _)| k == "GIT_DIR")
            .map(|(_, v)| self.dir.join(v));
        if let Some(dir) = git_dir
            && let Ok(text) = std::fs::read_to_string(dir.join("config"))
            && let Some(value) = plain_config_value(&text, key)
        {
            return Ok(Some(value));
        }
        self.config_get(key)
    }

    /// Whether `ancestor` is reachable from `descendant`.
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> anyhow::Result<bool> {
        let out = self.output(&["merge-base", "--is-ancestor", ancestor, descendant])?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => bail!(
                "cannot tell whether {ancestor} precedes {descendant}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }

    /// The commits reachable from `new` and from none of `hide` (revisions or `--all`-style
    /// options), newest first, read in one pass of `git rev-list --header`.
    ///
    /// The records are parsed as git writes them: on a push of many commits, walking them
    /// and parsing them take about as long, and so run side by side.
    pub fn commits(&self, new: &str, hide: &[&str]) -> anyhow::Result<Vec<CommitInfo>> {
        self.start_commits(new, hide)?.wait()
    }

    /// Starts listing the commits of [`Git::commits`] and reads them on a thread of their own,
    /// so that the caller can do other work meanwhile; `PendingCommits::wait` gives them.
    pub fn start_commits(&self, new: &str, hide: &[&str]) -> anyhow::Result<PendingCommits> {
        let child = self.rev_list(new, hide)?;
        let new = new.to_string();
        Ok(PendingCommits(std::thread::spawn(move || {
            read_commits(child, &new)
        })))
    }

    /// `git rev-list --header NEW --not HIDE...`, started.
    fn rev_list(&self, new: &str, hide: &[&str]) -> anyhow::Result<Reaped> {
        if !is_oid(new) {
            bail!("`{new}` is not an object id");
        }
        let mut args = vec!["rev-list", "--header", new, "--not"];
        args.extend_from_slice(hide);
        Ok(Reaped(
            self.command(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("cannot run `git rev-list`; is git installed?")?,
        ))
    }

    /// [`Git::start_commits`] with git itself started on the reading thread too: the caller
    /// goes on at once, not after the kernel has started git (which a hook's first
    /// milliseconds would otherwise wait for). Not starting git is an error of the listing.
    pub fn start_commits_in_background(
        &self,
        new: &str,
        hide: &[&str],
    ) -> anyhow::Result<PendingCommits> {
        if !is_oid(new) {
            bail!("`{new}` is not an object id");
        }
        let git = self.clone();
        let new = new.to_string();
        let hide: Vec<String> = hide.iter().map(|h| h.to_string()).collect();
        Ok(PendingCommits(std::thread::spawn(move || {
            let hide: Vec<&str> = hide.iter().map(String::as_str).collect();
            read_commits(git.rev_list(&new, &hide)?, &new)
        })))
    }

    /// The refs under `prefix` (e.g. `refs/heads/`) and the objects they point to, in one
    /// `git for-each-ref`.
    pub fn refs(&self, prefix: &str) -> anyhow::Result<Vec<(String, String)>> {
        let out = self.run(&[
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            "--end-of-options",
            prefix,
        ])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(oid, name)| (name.to_string(), oid.to_string()))
            .collect())
    }

    /// Which of these objects the repository has, asked of one `git cat-file --batch-check`.
    pub fn existing(&self, oids: &[&str]) -> anyhow::Result<std::collections::HashSet<String>> {
        use std::io::Write as _;
        let mut child = Reaped(
            self.command(&["cat-file", "--batch-check=%(objectname)"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("cannot run `git cat-file`; is git installed?")?,
        );
        let mut input = String::with_capacity(oids.len() * 41);
        for oid in oids.iter().filter(|o| is_oid(o)) {
            input.push_str(oid);
            input.push('\n');
        }
        let mut stdin = child
            .0
            .stdin
            .take()
            .context("no stdin for `git cat-file`")?;
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let mut out = String::new();
        if let Some(mut stdout) = child.0.stdout.take() {
            std::io::Read::read_to_string(&mut stdout, &mut out)?;
        }
        let _ = writer.join();
        let mut errors = String::new();
        if let Some(mut stderr) = child.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut errors);
        }
        let status = child.0.wait()?;
        if !status.success() {
            bail!("{}", self.refusal(&errors));
        }
        // Missing objects come back as `<oid> missing`, found ones as the bare id.
        Ok(out
            .lines()
            .filter(|l| is_oid(l))
            .map(String::from)
            .collect())
    }

    /// Why git would not read this repository, from its stderr: its ownership check named,
    /// with the fix, or git's own words.
    pub fn refusal(&self, stderr: &str) -> String {
        let dir = std::path::absolute(&self.dir).unwrap_or_else(|_| self.dir.clone());
        if stderr.contains("dubious ownership") {
            return format!(
                "git refuses to read `{0}`: it is owned by another account than the one \
                 running lockstep (git's \"dubious ownership\" check, safe.directory); run as \
                 the repository's owner, or trust it with `git config --global --add \
                 safe.directory {0}`",
                dir.display()
            );
        }
        let said = stderr.trim();
        if said.is_empty() {
            format!("git cannot read `{}`", dir.display())
        } else {
            format!("git cannot read `{}`: {said}", dir.display())
        }
    }

    /// The object id a ref points to, or None if it does not exist.
    pub fn resolve(&self, rev: &str) -> anyhow::Result<Option<String>> {
        let spec = format!("{rev}^{{commit}}");
        let (ok, out, _) = self.try_run(&[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ])?;
        Ok(ok.then(|| out.trim().to_string()))
    }
}

/// The value of `section.name` in the text of a git config file, when it is set there in the
/// plain form `git config` writes (`[section]` then `name = value`, the value free of quotes,
/// escapes, comments and blanks). None when it is not set there, or when the file has
/// anything that could change the answer: an include, a continued line, a quoted or escaped
/// value.
pub fn plain_config_value(text: &str, key: &str) -> Option<String> {
    let (section, name) = key.split_once('.')?;
    if name.contains('.') {
        return None;
    }
    let mut in_section = false;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.ends_with('\\') {
            return None;
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let (header, after) = rest.split_once(']')?;
            if !after.trim().is_empty() {
                return None;
            }
            let header = header.trim().to_ascii_lowercase();
            if header.starts_with("include") {
                return None;
            }
            in_section = header == section.to_ascii_lowercase();
            continue;
        }
        let (k, v) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line, ""),
        };
        if k.eq_ignore_ascii_case("worktreeConfig") {
            return None;
        }
        if !in_section || !k.eq_ignore_ascii_case(name) {
            continue;
        }
        if v.is_empty()
            || v.chars()
                .any(|c| c.is_whitespace() || matches!(c, '"' | '\\' | '#' | ';'))
        {
            return None;
        }
        found = Some(v.to_string());
    }
    found
}

/// A `git rev-list` under way (see [`Git::start_commits`]). Dropping it without waiting
/// leaves the reading thread to finish on its own.
#[derive(Debug)]
pub struct PendingCommits(std::thread::JoinHandle<anyhow::Result<Vec<CommitInfo>>>);

impl PendingCommits {
    /// The commits, once git has listed them all.
    pub fn wait(self) -> anyhow::Result<Vec<CommitInfo>> {
        self.0
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("reading `git rev-list` failed")))
    }
}

/// Reads the records of `git rev-list --header` as git writes them, then its exit.
fn read_commits(mut child: Reaped, new: &str) -> anyhow::Result<Vec<CommitInfo>> {
    use std::io::{BufRead as _, Read as _};
    let stdout = child
        .0
        .stdout
        .take()
        .context("no output from `git rev-list`")?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, stdout);
    let mut commits = Vec::new();
    let mut record = Vec::new();
    loop {
        record.clear();
        let n = reader
            .read_until(0, &mut record)
            .context("cannot read the output of `git rev-list`")?;
        if n == 0 {
            break;
        }
        if record.last() == Some(&0) {
            record.pop();
        }
        if !record.iter().all(u8::is_ascii_whitespace) {
            commits.push(parse_record(&String::from_utf8_lossy(&record)));
        }
    }
    // git writes little on stderr, and only as it fails: reading it after stdout is over
    // cannot leave both sides waiting on a full pipe.
    let mut stderr = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.0.wait().context("cannot wait for `git rev-list`")?;
    if !status.success() {
        bail!("cannot list the commits of {new}: {}", stderr.trim());
    }
    Ok(commits)
}

/// A running git that is killed and reaped if it is dropped before it ends (on an error
/// half-way through its output).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A commit as policies see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitInfo {
    pub id: String,
    pub parents: Vec<String>,
    pub author_name: String,
    pub author_email: String,
    pub committer_email: String,
    pub message: String,
    /// Whether the commit carries a signature (not whether it verifies).
    pub signed: bool,
}

impl CommitInfo {
    /// The first line of the message.
    pub fn summary(&self) -> &str {
        self.message.lines().next().unwrap_or("")
    }
}

/// Parses the NUL-separated records of `git rev-list --header`: the id, the raw headers,
/// a blank line, and the message indented by four spaces. Bytes that are not UTF-8 are
/// replaced, never trusted.
#[cfg(test)]
fn parse_rev_list_header(bytes: &[u8]) -> Vec<CommitInfo> {
    bytes
        .split(|b| *b == 0)
        .filter(|r| !r.iter().all(u8::is_ascii_whitespace))
        .map(|record| parse_record(&String::from_utf8_lossy(record)))
        .collect()
}

fn parse_record(text: &str) -> CommitInfo {
    let text = text.trim_start_matches('\n');
    let mut c = CommitInfo::default();
    let mut lines = text.split('\n');
    c.id = lines.next().unwrap_or_default().trim().to_string();
    let mut message = Vec::new();
    let mut in_message = false;
    for line in lines {
        if in_message {
            message.push(line.strip_prefix("    ").unwrap_or(line));
            continue;
        }
        if line.is_empty() {
            in_message = true;
            continue;
        }
        if let Some(p) = line.strip_prefix("parent ") {
            c.parents.push(p.to_string());
        } else if let Some(a) = line.strip_prefix("author ") {
            let (name, email) = split_ident(a);
            c.author_name = name;
            c.author_email = email;
        } else if let Some(a) = line.strip_prefix("committer ") {
            c.committer_email = split_ident(a).1;
        } else if line.starts_with("gpgsig ") || line.starts_with("gpgsig-sha256 ") {
            c.signed = true;
        }
    }
    while message.last().is_some_and(|l| l.is_empty()) {
        message.pop();
    }
    c.message = message.join("\n");
    c
}

/// `Name <email> 1700000000 +0000` → (`Name`, `email`).
fn split_ident(s: &str) -> (String, String) {
    match (s.find('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => (s[..a].trim().to_string(), s[a + 1..b].to_string()),
        _ => (s.trim().to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rev_list_header() {
        let raw = b"739d79046b22d9c9218776cab6d5a72bc584bb35\ntree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nparent aaaa\nauthor A B <a@x> 1795753389 +0000\ncommitter C <c@x> 1795753389 +0000\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n xyz\n -----END PGP SIGNATURE-----\n\n    TASK-1 first line\n    \n    body here\n\0";
        let c = &parse_rev_list_header(raw)[0];
        assert_eq!(c.id, "739d79046b22d9c9218776cab6d5a72bc584bb35");
        assert_eq!(c.parents, ["aaaa"]);
        assert_eq!(
            (c.author_name.as_str(), c.author_email.as_str()),
            ("A B", "a@x")
        );
        assert_eq!(c.committer_email, "c@x");
        assert!(c.signed);
        assert_eq!(c.message, "TASK-1 first line\n\nbody here");
        assert_eq!(c.summary(), "TASK-1 first line");
    }

    #[test]
    fn odd_records_do_not_panic() {
        for raw in [
            &b""[..],
            b"\0\0",
            b"abc",
            b"abc\nauthor \n\n",
            b"\xff\xfe\0x\nauthor >< 1\n",
        ] {
            let _ = parse_rev_list_header(raw);
        }
    }

    #[test]
    fn plain_config_values_are_read_and_doubtful_ones_left_to_git() {
        let written = "[core]\n\trepositoryformatversion = 0\n\tbare = true\n[lockstep]\n\tconfig = /srv/meta/lockstep.toml\n[receive]\n\tadvertisePushOptions = true\n";
        assert_eq!(
            plain_config_value(written, "lockstep.config").as_deref(),
            Some("/srv/meta/lockstep.toml")
        );
        assert_eq!(
            plain_config_value(written, "receive.advertisepushoptions").as_deref(),
            Some("true")
        );
        // Sections and names are case-insensitive; the last value wins, as with `--get`.
        assert_eq!(
            plain_config_value(
                "[LockStep]\nCONFIG=/a\n# c\n[lockstep]\n  config = /b\r\n",
                "lockstep.config"
            )
            .as_deref(),
            Some("/b")
        );
        for doubtful in [
            "[lockstep]\n\tconfig = \"/with space/lockstep.toml\"\n",
            "[lockstep]\n\tconfig = /a # comment\n",
            "[lockstep]\n\tconfig = /a\\\n/b\n",
            "[lockstep]\n\tconfig\n",
            "[lockstep] config = /a\n",
            "[include]\n\tpath = other\n[lockstep]\n\tconfig = /a\n",
            "[includeIf \"gitdir:/x/\"]\n\tpath = other\n[lockstep]\n\tconfig = /a\n",
            "[extensions]\n\tworktreeConfig = true\n[lockstep]\n\tconfig = /a\n",
            "[lockstep \"sub\"]\n\tconfig = /a\n",
            "[core]\n\tbare = true\n",
            "[lockstep\n",
        ] {
            assert_eq!(
                plain_config_value(doubtful, "lockstep.config"),
                None,
                "{doubtful:?}"
            );
        }
        assert_eq!(plain_config_value(written, "lockstep.config.x"), None);
        assert_eq!(plain_config_value(written, "lockstep"), None);
    }

    #[test]
    fn oids() {
        assert!(is_zero("0000000000000000000000000000000000000000"));
        assert!(!is_zero(""));
        assert!(is_oid("739d79046b22d9c9218776cab6d5a72bc584bb35"));
        assert!(!is_oid("739d79046b22d9c9218776cab6d5a72bc584bb3"));
        assert!(!is_oid("--all"));
    }
}
