//! `lockstep install-hooks`: puts lockstep in front of bare repositories.
//!
//! Writes the shims of the project's `hooks/` folder (embedded in the binary) with the path of
//! this executable, records the config in the repository's git config, and turns on push
//! options. Idempotent; a hook lockstep did not write is never overwritten without `--force`.
//!
//! A hook is `hooks/direct` when the executable's path can stand on a `#!` line: the kernel
//! then starts lockstep itself, half a millisecond sooner than through `sh`, on every push.
//! Otherwise (a path with spaces, or too long for every kernel) it is the `sh` shim of its name.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::git::Git;

/// Marks a hook as written by lockstep (and so safe to rewrite).
pub const MARKER: &str = "lockstep-managed hook";

/// The shims, as shipped in `hooks/`.
pub const SHIMS: &[(&str, &str)] = &[
    ("pre-receive", include_str!("../hooks/pre-receive")),
    ("update", include_str!("../hooks/update")),
    ("post-receive", include_str!("../hooks/post-receive")),
];

/// The hook that names lockstep on its `#!` line, for every hook.
pub const DIRECT: &str = include_str!("../hooks/direct");

/// The longest `#!` line every kernel reads whole: Linux before 5.1 kept 127 bytes of it.
const SHEBANG_MAX: usize = 127;

/// Options of one installation.
#[derive(Debug, Clone)]
pub struct Install {
    /// The config the hooks will read (made absolute).
    pub config: PathBuf,
    /// The `lockstep` executable the shims run.
    pub binary: PathBuf,
    /// Overwrite hooks lockstep did not write.
    pub force: bool,
    /// Decide ref by ref in `update` instead of the whole push in `pre-receive`.
    pub per_ref: bool,
}

/// Quotes a path for `sh` (single quotes; an embedded `'` becomes `'\''`).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The text of a shim for this binary.
pub fn shim_text(template: &str, binary: &Path) -> String {
    let quoted = sh_quote(&binary.to_string_lossy());
    template.replace("'@LOCKSTEP_BIN@'", &quoted)
}

/// The text of a hook for this binary: [`DIRECT`] when the binary can be named on a `#!`
/// line (an absolute UTF-8 path with no blanks or control characters, short enough), else
/// the `sh` shim.
pub fn hook_text(template: &str, binary: &Path) -> String {
    match binary.to_str() {
        Some(path)
            if binary.is_absolute()
                && !path.chars().any(|c| c.is_whitespace() || c.is_control())
                && DIRECT.lines().next().map_or(0, str::len) - "@LOCKSTEP_BIN@".len()
                    + path.len()
                    <= SHEBANG_MAX =>
        {
            DIRECT.replace("@LOCKSTEP_BIN@", path)
        }
        _ => shim_text(template, binary),
    }
}

/// Installs the hooks in one repository; returns what it did, for the user.
pub fn install(repo: &Path, opts: &Install) -> anyhow::Result<String> {
    let git = Git::new(repo);
    let (ok, _, err) = git.try_run(&["rev-parse", "--git-dir"])?;
    if !ok {
        bail!(
            "`{}` is not a git repository: {}",
            repo.display(),
            err.trim()
        );
    }
    let hooks_dir = PathBuf::from(git.run(&["rev-parse", "--git-path", "hooks"])?.trim());
    let hooks_dir = if hooks_dir.is_absolute() {
        hooks_dir
    } else {
        repo.join(hooks_dir)
    };
    let wanted: &[&str] = if opts.per_ref {
        &["update", "post-receive"]
    } else {
        &["pre-receive", "post-receive"]
    };
    let mut done = write_hooks(&hooks_dir, wanted, opts.force, |template| {
        hook_text(template, &opts.binary)
    })?;
    let config = opts.config.to_string_lossy();
    if git.config_get("lockstep.config")?.as_deref() != Some(&config) {
        git.run(&["config", "lockstep.config", &config])?;
        done.push("recorded lockstep.config".into());
    }
    if git.config_get("receive.advertisePushOptions")?.as_deref() != Some("true") {
        git.run(&["config", "receive.advertisePushOptions", "true"])?;
        done.push("enabled push options".into());
    }
    Ok(if done.is_empty() {
        format!("{}: up to date", repo.display())
    } else {
        format!("{}: {}", repo.display(), done.join(", "))
    })
}

/// Writes the hooks `wanted` into `hooks_dir` (each hook's text from its shipped template),
/// and removes lockstep's other hooks there. Checks every hook first, so that a refusal
/// leaves the folder untouched. Returns what it did.
fn write_hooks(
    hooks_dir: &Path,
    wanted: &[&str],
    force: bool,
    text_of: impl Fn(&str) -> String,
) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(hooks_dir)
        .with_context(|| format!("cannot create `{}`", hooks_dir.display()))?;
    for (name, _) in SHIMS {
        let path = hooks_dir.join(name);
        if let Ok(existing) = std::fs::read_to_string(&path) {
            if !existing.contains(MARKER) && !force && wanted.contains(name) {
                bail!(
                    "`{}` exists and was not written by lockstep; move it aside, or pass --force \
                     to replace it",
                    path.display()
                );
            }
        } else if path.exists() && !force && wanted.contains(name) {
            bail!(
                "`{}` exists and cannot be read; move it aside, or pass --force",
                path.display()
            );
        }
    }
    let mut done = Vec::new();
    for (name, template) in SHIMS {
        let path = hooks_dir.join(name);
        if wanted.contains(name) {
            let text = text_of(template);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                let tmp = hooks_dir.join(format!(".{name}.lockstep-tmp"));
                std::fs::write(&tmp, &text)
                    .with_context(|| format!("cannot write `{}`", tmp.display()))?;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
                std::fs::rename(&tmp, &path)
                    .with_context(|| format!("cannot write `{}`", path.display()))?;
                done.push(format!("wrote {name}"));
            }
        } else if std::fs::read_to_string(&path).is_ok_and(|t| t.contains(MARKER)) {
            // Switching between whole-push and per-ref: remove our other shim.
            std::fs::remove_file(&path)?;
            done.push(format!("removed {name}"));
        }
    }
    Ok(done)
}

/// The text of a hook that names its config, for hooks shared by many repositories (whose
/// own git config lockstep does not write): always the `sh` shim, with `--config`.
pub fn shim_with_config(template: &str, binary: &Path, config: &Path) -> String {
    let quoted = format!(
        "{} --config {}",
        sh_quote(&binary.to_string_lossy()),
        sh_quote(&config.to_string_lossy())
    );
    template.replace("'@LOCKSTEP_BIN@'", &quoted)
}

/// Installs the hooks in gitolite's folder of hooks common to every repository
/// (`$LOCAL_CODE/hooks/common`, or `~/.gitolite/hooks/common`): `pre-receive` and
/// `post-receive`, next to gitolite's own `update`, which is left alone. `gitolite setup
/// --hooks-only` then links them into every repository, and gitolite into each new one.
/// Push options are turned on for the account that runs it (`git config --global`), which
/// must be gitolite's. Returns what it did and what is left to do.
pub fn install_gitolite(hooks_dir: &Path, opts: &Install) -> anyhow::Result<String> {
    if opts.per_ref {
        bail!(
            "gitolite keeps the `update` hook for its own access rules; install lockstep's \
             `pre-receive` there (leave out --per-ref)"
        );
    }
    let mut done = write_hooks(
        hooks_dir,
        &["pre-receive", "post-receive"],
        opts.force,
        |template| shim_with_config(template, &opts.binary, &opts.config),
    )?;
    let git = Git::new(hooks_dir);
    let (_, current, _) = git.try_run(&[
        "config",
        "--global",
        "--get",
        "receive.advertisePushOptions",
    ])?;
    if current.trim() != "true" {
        git.run(&["config", "--global", "receive.advertisePushOptions", "true"])?;
        done.push("enabled push options for this account (git config --global)".into());
    }
    let did = if done.is_empty() {
        "up to date".to_string()
    } else {
        done.join(", ")
    };
    Ok(format!(
        "{}: {did}; now run `gitolite setup --hooks-only` as this account to link them into \
         every repository",
        hooks_dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_name_lockstep_on_their_first_line_when_they_can() {
        let direct = hook_text(SHIMS[0].1, Path::new("/usr/local/bin/lockstep"));
        assert!(
            direct.starts_with("#!/usr/local/bin/lockstep hook\n"),
            "{direct}"
        );
        assert!(direct.contains(MARKER), "{direct}");
        assert!(!direct.contains("@LOCKSTEP_BIN@"), "{direct}");
        let long = format!("/{}/lockstep", "d".repeat(120));
        for odd in ["/opt/my tools/lockstep", "relative/lockstep", &long] {
            let text = hook_text(SHIMS[0].1, Path::new(odd));
            assert!(text.starts_with("#!/bin/sh\n"), "{odd}: {text}");
            assert!(text.contains("hook pre-receive"), "{odd}: {text}");
        }
        let fits = format!("/{}/lockstep", "d".repeat(100));
        assert!(hook_text(SHIMS[0].1, Path::new(&fits)).starts_with("#!/d"));
    }

    #[test]
    fn shims_are_marked_and_quote_the_binary() {
        for (name, t) in SHIMS {
            assert!(t.contains(MARKER), "{name}");
            let s = shim_text(t, Path::new("/opt/it's here/lockstep"));
            assert!(s.contains(r"exec '/opt/it'\''s here/lockstep' hook"), "{s}");
            assert!(s.ends_with(&format!("hook {name} \"$@\"\n")), "{s}");
        }
    }
}
