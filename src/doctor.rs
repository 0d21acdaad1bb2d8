//! `lockstep doctor`: what a server admin checks before the first push, per repository — the
//! hooks lockstep needs, the config and its policies, who may write the state folder and the
//! tracker file, and where the pusher's identity comes from — each in words to act on.
//!
//! The running account is checked by trying (a file created and removed); the repository's
//! owner and the accounts of `--as` by mode bits and ownership ([`crate::accounts`]), which
//! access lists and read-only mounts can contradict.

use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::accounts::{self, Account};
use crate::config::{Config, TrackerKind};
use crate::exit::Exit;
use crate::git::Git;
use crate::policy::PolicySet;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Something to fix: pushes are refused, or a feature silently does nothing.
    Problem,
    /// Worth knowing, nothing to fix.
    Note,
}

/// One check of one repository.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub status: Status,
    pub message: String,
}

/// The checks of one repository.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub repo: String,
    pub checks: Vec<Check>,
}

/// `lockstep doctor`'s options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--config`: else the repository's own (as its hooks find it).
    pub config: Option<PathBuf>,
    /// `--as`: more accounts to check by mode bits (the git server's, the bot's).
    pub accounts: Vec<String>,
    pub json: bool,
}

/// Checks each repository, prints the reports, and exits 1 when something is wrong.
pub fn run(repos: &[PathBuf], opts: &Options) -> anyhow::Result<Exit> {
    let mut extra = Vec::new();
    for name in &opts.accounts {
        let account = accounts::by_name(name).ok_or_else(|| {
            anyhow::anyhow!(
                "`--as {name}`: no such account in /etc/passwd; give a user name or uid"
            )
        })?;
        extra.push(account);
    }
    let reports: Vec<Report> = repos
        .iter()
        .map(|r| check_repo(r, opts.config.as_deref(), &extra))
        .collect();
    let problems = reports
        .iter()
        .flat_map(|r| &r.checks)
        .filter(|c| c.status == Status::Problem)
        .count();
    if opts.json {
        let out = serde_json::json!({ "repos": reports, "problems": problems });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render(&reports, problems));
    }
    Ok(Exit::success_if(problems == 0))
}

/// The reports, for people.
pub fn render(reports: &[Report], problems: usize) -> String {
    let mut s = String::new();
    for r in reports {
        let _ = writeln!(s, "{}", crate::text::escape(&r.repo));
        for c in &r.checks {
            let label = match c.status {
                Status::Ok => "ok     ",
                Status::Problem => "PROBLEM",
                Status::Note => "note   ",
            };
            let _ = writeln!(
                s,
                "  {label} {}: {}",
                c.check,
                crate::text::escape(&c.message)
            );
        }
    }
    let _ = writeln!(
        s,
        "{} repositor{} checked: {}",
        reports.len(),
        if reports.len() == 1 { "y" } else { "ies" },
        match problems {
            0 => "nothing to fix".to_string(),
            1 => "1 problem".to_string(),
            n => format!("{n} problems"),
        }
    );
    s
}

fn check(check: &'static str, status: Status, message: impl Into<String>) -> Check {
    Check {
        check,
        status,
        message: message.into(),
    }
}

fn check_repo(repo: &Path, config: Option<&Path>, extra: &[Account]) -> Report {
    let shown = std::path::absolute(repo).unwrap_or_else(|_| repo.to_path_buf());
    let mut checks = Vec::new();
    let git = Git::new(repo);
    let is_repo =
        repo.is_dir() && matches!(git.try_run(&["rev-parse", "--git-dir"]), Ok((true, _, _)));
    if !is_repo {
        checks.push(check(
            "repository",
            Status::Problem,
            format!(
                "`{}` is not a git repository here; give the bare repository's folder",
                shown.display()
            ),
        ));
        return Report {
            repo: shown.display().to_string(),
            checks,
        };
    }
    checks.extend(check_hooks(repo, &git));
    // The accounts that must write what the hooks write: this one (tried), the repository's
    // owner (the git server's account, as a rule) and those of `--as`.
    let me = accounts::current();
    let mut by_bits: Vec<Account> = Vec::new();
    if let Ok(meta) = std::fs::metadata(repo)
        && me.as_ref().is_none_or(|m| m.uid != meta.uid())
        && let Some(owner) = accounts::by_name(&meta.uid().to_string())
    {
        by_bits.push(owner);
    }
    for a in extra {
        if !by_bits.iter().any(|b| b.uid == a.uid) && me.as_ref().is_none_or(|m| m.uid != a.uid) {
            by_bits.push(a.clone());
        }
    }
    match crate::hook::find_config(config, &git) {
        Err(e) => checks.push(check("config", Status::Problem, format!("{e:#}"))),
        Ok((path, source)) => match Config::load_from(&path, source) {
            Err(e) => checks.push(check(
                "config",
                Status::Problem,
                format!("`{}` does not load: {e:#}", path.display()),
            )),
            Ok(config) => {
                checks.push(check(
                    "config",
                    Status::Ok,
                    format!("`{}` loads", path.display()),
                ));
                checks.push(check_policies(&config));
                checks.extend(check_writes(&config, me.as_ref(), &by_bits));
                checks.push(check_identity(&config));
                checks.extend(check_gaps(&config, repo));
            }
        },
    }
    Report {
        repo: shown.display().to_string(),
        checks,
    }
}

/// What stands for one hook in a repository: its file, the files of its `<hook>.d` folder
/// (GitLab, Gitea), gitolite's `<hook>.hNN-name` links.
fn hook_files(hooks: &Path, kind: &str) -> Vec<PathBuf> {
    let mut files = vec![hooks.join(kind)];
    if let Ok(dir) = std::fs::read_dir(hooks.join(format!("{kind}.d"))) {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    if let Ok(dir) = std::fs::read_dir(hooks) {
        let prefix = format!("{kind}.h");
        files.extend(
            dir.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path()),
        );
    }
    files
}

/// Whether a hook file runs lockstep's hook `kind`.
fn is_lockstep(text: &str, kind: &str) -> bool {
    text.contains(crate::install::MARKER)
        || (text.contains("lockstep") && text.contains(&format!("hook {kind}")))
        || text
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("#!") && l.ends_with("lockstep hook"))
}

/// How one hook stands.
#[derive(Debug, PartialEq)]
enum Hook {
    Lockstep,
    NotExecutable(PathBuf),
    Other,
    Missing,
}

fn hook_state(hooks: &Path, kind: &str) -> Hook {
    let mut seen = false;
    for f in hook_files(hooks, kind) {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        seen = true;
        if is_lockstep(&text, kind) {
            let executable =
                std::fs::metadata(&f).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
            return if executable {
                Hook::Lockstep
            } else {
                Hook::NotExecutable(f)
            };
        }
    }
    if seen { Hook::Other } else { Hook::Missing }
}

fn check_hooks(repo: &Path, git: &Git) -> Vec<Check> {
    let hooks = match git.run(&["rev-parse", "--git-path", "hooks"]) {
        Ok(p) => {
            let p = PathBuf::from(p.trim());
            if p.is_absolute() { p } else { repo.join(p) }
        }
        Err(e) => return vec![check("hooks", Status::Problem, format!("{e:#}"))],
    };
    let install = format!(
        "run `lockstep install-hooks {}` (or see docs/install.md for your server)",
        crate::text::shell_word(&repo.to_string_lossy())
    );
    let [pre, update, post] =
        ["pre-receive", "update", "post-receive"].map(|k| hook_state(&hooks, k));
    let mut out = Vec::new();
    let say = |kind: &str, state: &Hook| match state {
        Hook::Lockstep => format!("{kind} is lockstep's"),
        Hook::NotExecutable(f) => format!(
            "{kind} is lockstep's but `{}` is not executable, so git skips it; `chmod +x` it",
            f.display()
        ),
        Hook::Other => format!("{kind} exists but does not run lockstep"),
        Hook::Missing => format!("{kind} is missing"),
    };
    if pre == Hook::Lockstep || update == Hook::Lockstep {
        let which = if pre == Hook::Lockstep {
            "pre-receive"
        } else {
            "update"
        };
        out.push(check(
            "hooks",
            Status::Ok,
            format!("{which} is lockstep's: pushes are decided"),
        ));
    } else {
        out.push(check(
            "hooks",
            Status::Problem,
            format!(
                "{}; no lockstep hook decides pushes, so every push is accepted unchecked; {install}",
                say("pre-receive", &pre)
            ),
        ));
    }
    if post == Hook::Lockstep {
        out.push(check(
            "hooks",
            Status::Ok,
            "post-receive is lockstep's: `git push -o deliver` queues deliveries",
        ));
    } else {
        out.push(check(
            "hooks",
            Status::Problem,
            format!(
                "{}; `git push -o deliver` is accepted and does nothing; {install}",
                say("post-receive", &post)
            ),
        ));
    }
    out
}

fn check_policies(config: &Config) -> Check {
    match PolicySet::for_config(config) {
        Err(e) => check(
            "policies",
            Status::Problem,
            format!("do not compile, so every push is rejected:\n{e}"),
        ),
        Ok(set) if !set.has_push_rules() && !config.policies.allow_empty => {
            check("policies", Status::Problem, crate::policy::NO_PUSH_RULE)
        }
        Ok(_) => check("policies", Status::Ok, "compile, with rules for pushes"),
    }
}

/// Whether this process can create a file in `dir`, by trying.
fn try_write_in(dir: &Path) -> Result<(), String> {
    tempfile::Builder::new()
        .prefix(".lockstep-doctor-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| format!("cannot create files in `{}`: {e}", dir.display()))
}

/// Why `account` could not write the files already in `dir` that the hooks write, by bits.
fn files_in_the_way(account: &Account, dir: &Path, only: Option<&[&str]>) -> Option<String> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut blocked: Vec<String> = entries
        .flatten()
        .filter(|e| only.is_none_or(|names| names.iter().any(|n| e.file_name() == *n)))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            (meta.is_file() && !accounts::may(account, &meta, 0o2)).then(|| {
                format!(
                    "`{}` ({})",
                    e.file_name().to_string_lossy(),
                    accounts::owned(&meta)
                )
            })
        })
        .collect();
    blocked.sort();
    (!blocked.is_empty()).then(|| format!("cannot write {}", blocked.join(", ")))
}

/// The folder a path's files are written in: itself if it exists, else the nearest existing
/// folder above it (which the hooks create it in).
fn existing_folder(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|a| a.is_dir())
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

fn check_writes(config: &Config, me: Option<&Account>, by_bits: &[Account]) -> Vec<Check> {
    let state = config.state_dir();
    let mut places: Vec<(&'static str, PathBuf, Option<Vec<String>>, String)> = vec![(
        "state_dir",
        state.clone(),
        None,
        "it holds the decision log, the verdict counts and the store: a hook that cannot write \
         it rejects every push (`[audit] on_error`)"
            .to_string(),
    )];
    if config.tracker.kind == TrackerKind::File {
        let path = config.resolve(&config.tracker.path);
        let folder = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        places.push((
            "tracker",
            folder,
            Some(vec![name.clone(), format!("{name}.lock")]),
            format!("`-o deliver` and deliveries move tasks in `{name}`, rewritten beside it"),
        ));
    }
    let mut out = Vec::new();
    for (what, dir, only, why) in places {
        let folder = existing_folder(&dir);
        let only: Option<Vec<&str>> = only
            .as_ref()
            .map(|v| v.iter().map(String::as_str).collect());
        let mut blocked = Vec::new();
        if let Some(me) = me {
            let tried = try_write_in(&folder)
                .err()
                .or_else(|| files_in_the_way(me, &folder, only.as_deref()));
            if let Some(why_not) = tried {
                blocked.push(format!("{me} (this account) {why_not}"));
            }
        }
        for a in by_bits {
            let why_not = accounts::may_write_in(a, &folder)
                .err()
                .or_else(|| files_in_the_way(a, &folder, only.as_deref()));
            if let Some(why_not) = why_not {
                blocked.push(format!("{a} {why_not}"));
            }
        }
        let mut who: Vec<String> = me.map(ToString::to_string).into_iter().collect();
        who.extend(by_bits.iter().map(ToString::to_string));
        if blocked.is_empty() {
            out.push(check(
                what,
                Status::Ok,
                format!("`{}` is writable by {}", folder.display(), who.join(", ")),
            ));
        } else {
            out.push(check(
                what,
                Status::Problem,
                format!(
                    "{}; {why}; give every account that runs the hooks or the bot write access \
                     (one owner, or a shared group with `chmod -R g+rwX` and `chmod g+s` on the \
                     folder); see docs/accounts.md",
                    blocked.join("; ")
                ),
            ));
        }
    }
    out
}

fn check_identity(config: &Config) -> Check {
    let vars = &config.identity.env;
    let set: Vec<&String> = vars
        .iter()
        .filter(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
        .collect();
    match set.first() {
        Some(v) => check(
            "identity",
            Status::Ok,
            format!("`{v}` is set here: a push run from this environment is made in its name"),
        ),
        None => check(
            "identity",
            Status::Note,
            format!(
                "none of {} is set here, as expected outside a push: the git server sets one per \
                 push (gitolite `GL_USER`, HTTP `REMOTE_USER` from its authentication, GitLab, \
                 Gitea and GitHub Enterprise their own); a server that sets none (git daemon, \
                 HTTP without authentication) makes every pusher unknown, and rules that name \
                 people refuse them",
                vars.iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}

fn check_gaps(config: &Config, repo: &Path) -> Option<Check> {
    let dir = repo.to_string_lossy();
    let noted = crate::audit::find_gaps(&config.state_dir(), &[dir.as_ref()]);
    let warnings = crate::audit::gap_warnings(&noted);
    (!warnings.is_empty()).then(|| check("audit", Status::Note, warnings.join("; ")))
}
