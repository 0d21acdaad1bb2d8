//! How often each rule of the hooks passed, was skipped, denied, warned or failed: the counts
//! behind `lockstep_hook_decisions_total` in `lockstep serve`'s `/metrics`.
//!
//! Hooks are short processes on the path of every push, so counting must cost next to
//! nothing: no database connection, no threads, no fsync. The counts are one small JSON file
//! in the state folder, `hook-decisions.json` (`{"rule": {"outcome": n}}`, so its size is
//! bounded by rules × outcomes), read and rewritten in place under an exclusive lock on the
//! file itself; readers take a shared one. In place, not through a temporary file and a
//! rename: on ext4, replacing a file by rename (or rewriting it from zero length) starts a
//! flush of its data, which cost a push half a millisecond. A crash in the middle of a rewrite
//! can leave the file unreadable: the next hook starts the counts over (Prometheus reads that
//! as a counter reset), a price metrics can pay. A push never waits more than a few
//! milliseconds for the lock.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

/// The counts, in the state folder.
pub const FILE: &str = "hook-decisions.json";

/// rule → outcome → count.
type Counts = BTreeMap<String, BTreeMap<String, u64>>;

/// Adds one to the count of every `(rule, outcome)`, waiting at most `wait` for the lock.
pub fn add(state_dir: &Path, verdicts: &[(String, String)], wait: Duration) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(state_dir.join(FILE))?;
    lock_within(&file, wait, Lock::Exclusive)?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    // An empty or broken file (a crash mid-write, an edit by hand) starts the counts over.
    let mut counts = serde_json::from_str::<Counts>(&text).unwrap_or_default();
    for (rule, outcome) in verdicts {
        *counts
            .entry(rule.clone())
            .or_default()
            .entry(outcome.clone())
            .or_default() += 1;
    }
    let new = serde_json::to_vec(&counts).map_err(io::Error::other)?;
    file.rewind()?;
    file.write_all(&new)?;
    // Counts only grow, so the file rarely shrinks; never cut it to zero (see above).
    if (new.len() as u64) < text.len() as u64 {
        file.set_len(new.len() as u64)?;
    }
    crate::timings::mark("verdict-counts");
    Ok(())
    // The lock is released when `file` is closed.
}

#[derive(Clone, Copy)]
enum Lock {
    Shared,
    Exclusive,
}

fn lock_within(file: &File, wait: Duration, how: Lock) -> io::Result<()> {
    let until = Instant::now() + wait;
    loop {
        let tried = match how {
            Lock::Shared => file.try_lock_shared(),
            Lock::Exclusive => file.try_lock(),
        };
        match tried {
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
    let path = state_dir.join(FILE);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    lock_within(&file, Duration::from_secs(1), Lock::Shared)?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let counts: Counts = serde_json::from_str(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("`{}` is not valid: {e}", path.display()),
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
        std::fs::write(dir.path().join(FILE), "{}").unwrap();
        let held = File::open(dir.path().join(FILE)).unwrap();
        held.lock().unwrap();
        let err = add(dir.path(), &[pair("r", "pass")], Duration::from_millis(20)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(held);
        assert_eq!(read(dir.path()).unwrap(), vec![]);
    }

    #[test]
    fn a_reader_never_sees_half_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let many: Vec<(String, String)> = (0..50)
            .map(|i| pair(&format!("rule-{i}"), "pass"))
            .collect();
        add(dir.path(), &many, Duration::from_secs(1)).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..50 {
                    add(dir.path(), &many, Duration::from_secs(10)).unwrap();
                }
            });
            for _ in 0..200 {
                let counts = read(dir.path()).unwrap();
                assert_eq!(counts.len(), 50);
            }
        });
    }

    #[test]
    fn a_broken_file_is_an_error_to_read_and_starts_over_when_added_to() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "{not json at all, and long").unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("hook-decisions.json"), "{err}");
        add(dir.path(), &[pair("r", "warn")], Duration::from_millis(100)).unwrap();
        assert_eq!(
            read(dir.path()).unwrap(),
            vec![("r".into(), "warn".into(), 1)]
        );
    }
}
