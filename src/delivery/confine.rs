//! What a step may write: its checkout, its own `HOME` (a folder of the delivery's work
//! folder), the temporary folder, `/dev`, and the paths its repository declares
//! (`[[repo]] writable`). Everything else, the bot's own home (its SSH key), its state folder
//! (the store, the decision log, the logs) and the bare repositories, it may read but not
//! write.
//!
//! The limit is Landlock's, applied best-effort (`landlock` crate) in the step's own process
//! just before it becomes the step's program ([`super::contain`]): it binds the step and
//! whatever it starts, never lockstep. Only writes are handled, so reading stays as the
//! bot's account allows. Where the kernel has no Landlock (older than 5.13, or turned off),
//! steps run unconfined: the worker says so once, when it starts its first step.
//!
//! Landlock sets `no_new_privs` on the step: a setuid program (`sudo`) cannot raise a step's
//! privileges.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

use landlock::{
    ABI, AccessFs, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError,
    RulesetStatus, path_beneath_rules,
};

/// The variable that hands a step's supervisor the paths the step may write besides its
/// checkout, the temporary folder and `/dev`, separated by `:` as in `PATH`. Steps see it too.
pub const WRITABLE_VAR: &str = "LOCKSTEP_WRITABLE";

/// The variable that tells a step's supervisor not to limit what the step writes, when it is
/// `off` (`[delivery] confine_steps = false`); set for every step, after its `vars`.
pub const CONFINE_VAR: &str = "LOCKSTEP_CONFINE";

/// The newest Landlock ABI lockstep asks for; an older kernel enforces what it knows.
const WANTED: ABI = ABI::V5;

/// The paths a step may write: `extra` ([`WRITABLE_VAR`]), its working folder, the temporary
/// folder and `/dev` (`/dev/null`, a terminal, `/dev/shm`).
pub fn writable(extra: Option<OsString>) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = extra
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    paths.extend(std::env::current_dir().ok());
    paths.push(std::env::temp_dir());
    paths.push(PathBuf::from("/dev"));
    paths.retain(|p| p.is_absolute());
    paths
}

/// Limits the calling thread (and what it `exec`s and starts) to writing `paths`; paths that
/// do not exist are left out. Says whether the kernel enforces it.
pub fn confine(paths: &[PathBuf]) -> Result<RestrictionStatus, RulesetError> {
    Ruleset::default()
        .handle_access(AccessFs::from_write(WANTED))?
        .create()?
        .add_rules(path_beneath_rules(paths, AccessFs::from_write(WANTED)))?
        .restrict_self()
}

/// Whether this kernel enforces Landlock, found once per process by confining a thread made
/// for it (Landlock binds only the thread that asks, and this one ends at once). When it
/// does not, a warning says so, once.
pub fn enforced() -> bool {
    static ENFORCED: OnceLock<bool> = OnceLock::new();
    *ENFORCED.get_or_init(|| {
        let probe = std::thread::spawn(|| confine(&[]));
        let why = match probe.join() {
            Ok(Ok(status)) if status.ruleset != RulesetStatus::NotEnforced => return true,
            Ok(Ok(status)) => format!("{:?}", status.landlock),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the probe failed".to_string(),
        };
        tracing::warn!(
            "steps run unconfined: this kernel does not enforce Landlock ({why}), so a step may \
             write wherever the bot's account may (its home, the state folder, the bare \
             repositories); run lockstep on Linux 5.13 or later with Landlock enabled \
             (`lsm=landlock,…`)"
        );
        false
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_step_may_write_what_it_declares_its_folder_the_temporary_folder_and_dev() {
        let paths = writable(Some("/srv/cache:/var/lib/x:relative".into()));
        assert_eq!(paths[0], Path::new("/srv/cache"));
        assert_eq!(paths[1], Path::new("/var/lib/x"));
        assert!(paths.contains(&std::env::current_dir().unwrap()));
        assert!(paths.contains(&std::env::temp_dir()));
        assert!(paths.contains(&PathBuf::from("/dev")));
        assert!(!paths.iter().any(|p| p.ends_with("relative")));
    }

    /// A confined thread writes where it may and nowhere else, where the kernel enforces
    /// Landlock; where it does not, the probe says so (and warns, once).
    #[test]
    fn issue22_a_confined_thread_writes_only_where_it_may() {
        let allowed = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let (a, o) = (allowed.path().to_path_buf(), other.path().to_path_buf());
        let (status, inside, outside) = std::thread::spawn(move || {
            let status = confine(std::slice::from_ref(&a)).unwrap();
            let inside = std::fs::write(a.join("ok"), "ok");
            let outside = std::fs::write(o.join("no"), "no");
            (status, inside, outside)
        })
        .join()
        .unwrap();
        if status.ruleset == RulesetStatus::NotEnforced {
            assert!(!enforced());
            eprintln!("Landlock is not enforced here: only the probe was checked");
            return;
        }
        assert!(enforced());
        assert!(inside.is_ok(), "{inside:?}");
        let e = outside.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
        assert!(!other.path().join("no").exists());
        // The rest of the process is not confined.
        std::fs::write(other.path().join("free"), "free").unwrap();
    }
}
