//! How often each rule of the hooks passed, was skipped, denied, warned or failed: the counts
//! behind `lockstep_hook_decisions_total` in `lockstep serve`'s `/metrics`.
//!
//! Hooks are short processes on the path of every push, so counting must cost next to
//! nothing: no database connection, no threads, no fsync. The counts are one small JSON file
//! in the state folder, `hook-decisions.json` (`{"rule": {"outcome": n}}`, so its size is
//! bounded by rules × outcomes). A hook adds to it under an exclusive lock on
//! `hook-decisions.lock` and replaces it whole (a temporary file, then a rename), so a reader
//! never sees half a file and needs no lock. Losing counts to a crash between the two is
//! acceptable for metrics; a push never waits more than a few milliseconds for the lock.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

/// The counts, in the state folder.
pub const FILE: &str = "hook-decisions.json";
const LOCK: &str = "hook-decisions.lock";
const TEMPORARY: &str = "hook-decisions.json.new";

/// rule → outcome → count.
type Counts = BTreeMap<String, BTreeMap<String, u64>>;

/// Adds one to the count of every `(rule, outcome)`, waiting at most `wait` for the lock.
pub fn add(state_dir: &Path, verdicts: &[(String, String)], wait: Duration) -> io::Result<()> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state_dir.join(LOCK))?;
    lock_within(&lock, wait)?;
    let mut counts = match fs::read_to_string(state_dir.join(FILE)) {
        // A file someone broke by hand starts the counts over; Prometheus reads that as a
        // counter reset.
        Ok(text) => serde_json::from_str::<Counts>(&text).unwrap_or_default(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Counts::new(),
        Err(e) => return Err(e),
    };
    for (rule, outcome) in verdicts {
        *counts
            .entry(rule.clone())
            .or_default()
            .entry(outcome.clone())
            .or_default() += 1;
    }
    let text = serde_json::to_vec(&counts).map_err(io::Error::other)?;
    let temporary = state_dir.join(TEMPORARY);
    File::create(&temporary)?.write_all(&text)?;
    fs::rename(&temporary, state_dir.join(FILE))
    // The lock is released when `lock` is closed.
}

fn lock_within(file: &File, wait: Duration) -> io::Result<()> {
    let until = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the counts stayed locked for {wait:?}"),
                ));
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Reads the counts as `(rule, outcome, count)`, sorted; none when no hook has counted yet.
pub fn read(state_dir: &Path) -> io::Result<Vec<(String, String, u64)>> {
    let text = match fs::read_to_string(state_dir.join(FILE)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let counts: Counts = serde_json::from_str(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("`{}` is not valid: {e}", state_dir.join(FILE).display()),
        )
    })?;
    Ok(counts
        .into_iter()
        .flat_map(|(rule, outcomes)| {
            outcomes
                .into_iter()
                .map(move |(outcome, n)| (rule.clone(), outcome, n))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(rule: &str, outcome: &str) -> (String, String) {
        (rule.to_string(), outcome.to_string())
    }

    #[test]
    fn counts_add_up_across_pushes() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), vec![]);
        let wait = Duration::from_millis(100);
        add(dir.path(), &[pair("b", "pass"), pair("a", "deny")], wait).unwrap();
        add(dir.path(), &[pair("b", "pass"), pair("b", "skip")], wait).unwrap();
        assert_eq!(
            read(dir.path()).unwrap(),
            vec![
                ("a".into(), "deny".into(), 1),
                ("b".into(), "pass".into(), 2),
                ("b".into(), "skip".into(), 1),
            ]
        );
    }

    #[test]
    fn concurrent_hooks_lose_no_count() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..25 {
                        add(dir.path(), &[pair("r", "pass")], Duration::from_secs(10)).unwrap();
                    }
                });
            }
        });
        assert_eq!(
            read(dir.path()).unwrap(),
            vec![("r".into(), "pass".into(), 200)]
        );
    }

    #[test]
    fn a_held_lock_times_out_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let held = File::create(dir.path().join(LOCK)).unwrap();
        held.lock().unwrap();
        let err = add(dir.path(), &[pair("r", "pass")], Duration::from_millis(20)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(read(dir.path()).unwrap(), vec![]);
    }

    #[test]
    fn a_broken_file_is_an_error_to_read_and_starts_over_when_added_to() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), "{not json").unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("hook-decisions.json"), "{err}");
        add(dir.path(), &[pair("r", "warn")], Duration::from_millis(100)).unwrap();
        assert_eq!(
            read(dir.path()).unwrap(),
            vec![("r".into(), "warn".into(), 1)]
        );
    }
}
