//! The decision log on disk: `decisions.jsonl` in the state folder, one JSON line per
//! decision, rotated to `decisions.jsonl.1` (newest) … `.N` once it would pass
//! `[audit] max_bytes`.
//!
//! Hooks of concurrent pushes append at once: each line is one `write` on a file opened for
//! appending, and the size check and rotation happen under a lock file, so lines neither
//! interleave nor get lost in a rotation. Logging never holds up or changes a decision: a
//! lock not had quickly means the line is appended without the rotation check.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::Entry;
use crate::config::{Audit, Config};

/// The log's file name in the state folder.
pub const FILE: &str = "decisions.jsonl";

/// How long a writer waits for the rotation lock before appending without it.
const LOCK_WAIT: Duration = Duration::from_millis(100);

fn rotated(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{FILE}.{n}"))
}

/// Appends one decision to the log in `state_dir` (created if missing), rotating first when
/// the line would take the log past `limits.max_bytes`.
pub fn append(state_dir: &Path, entry: &Entry, limits: &Audit) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(entry)?;
    line.push(b'\n');
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create `{}`", state_dir.display()))?;
    let path = state_dir.join(FILE);
    let lock = OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join(format!("{FILE}.lock")))?;
    let deadline = Instant::now() + LOCK_WAIT;
    let locked = loop {
        match lock.try_lock() {
            Ok(()) => break true,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => break false,
        }
    };
    if locked {
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        if size > 0 && size + line.len() as u64 > limits.max_bytes {
            rotate(state_dir, limits.keep)?;
        }
    }
    let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
    file.write_all(&line)?;
    Ok(())
}

/// `decisions.jsonl` becomes `.1`, `.1` becomes `.2`, …; the oldest beyond `keep` goes.
fn rotate(dir: &Path, keep: u32) -> anyhow::Result<()> {
    let current = dir.join(FILE);
    if keep == 0 {
        std::fs::remove_file(&current)?;
        return Ok(());
    }
    let _ = std::fs::remove_file(rotated(dir, keep));
    for n in (1..keep).rev() {
        let from = rotated(dir, n);
        if from.exists() {
            std::fs::rename(&from, rotated(dir, n + 1))?;
        }
    }
    std::fs::rename(&current, rotated(dir, 1))?;
    Ok(())
}

/// Appends a decision to the config's log; a failure is logged and forgotten, never passed on
/// to the decision.
pub fn record(config: &Config, entry: &Entry) {
    if let Err(e) = append(&config.state_dir(), entry, &config.audit) {
        tracing::warn!("decision not logged: {e:#}");
    }
}

/// Every logged decision, oldest first, and how many lines could not be read.
pub fn read(state_dir: &Path, keep: u32) -> anyhow::Result<(Vec<Entry>, usize)> {
    let mut entries = Vec::new();
    let mut unreadable = 0;
    let files = (1..=keep)
        .rev()
        .map(|n| rotated(state_dir, n))
        .chain([state_dir.join(FILE)]);
    for path in files {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
        };
        for line in BufReader::new(file).split(b'\n') {
            let line = line.with_context(|| format!("cannot read `{}`", path.display()))?;
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Entry>(&line) {
                Ok(e) => entries.push(e),
                Err(_) => unreadable += 1,
            }
        }
    }
    Ok((entries, unreadable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Decision, Stage};

    fn entry(task: &str) -> Entry {
        Entry::delivery(
            Stage::Deliver,
            &task.into(),
            "bob",
            None,
            &Decision::default(),
            "r1",
        )
    }

    #[test]
    fn rotation_keeps_the_newest_lines_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&entry("T-0")).unwrap().len() as u64 + 1;
        let limits = Audit {
            max_bytes: one * 2,
            keep: 2,
        };
        for i in 0..7 {
            append(dir.path(), &entry(&format!("T-{i}")), &limits).unwrap();
        }
        for f in [FILE.to_string(), format!("{FILE}.1"), format!("{FILE}.2")] {
            let len = std::fs::metadata(dir.path().join(&f)).unwrap().len();
            assert!(len <= limits.max_bytes, "{f}: {len}");
        }
        assert!(!dir.path().join(format!("{FILE}.3")).exists());
        let (read, bad) = read(dir.path(), 2).unwrap();
        assert_eq!(bad, 0);
        let tasks: Vec<&str> = read
            .iter()
            .filter_map(|e| e.task.as_ref().map(crate::domain::TaskKey::as_str))
            .collect();
        assert_eq!(tasks, ["T-2", "T-3", "T-4", "T-5", "T-6"]);
    }

    #[test]
    fn a_damaged_line_is_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), &entry("T-1"), &Audit::default()).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(b"{\"time\": \"not a\n").unwrap();
        append(dir.path(), &entry("T-2"), &Audit::default()).unwrap();
        let (read, bad) = read(dir.path(), 3).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(bad, 1);
    }
}
