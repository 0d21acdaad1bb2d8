//! The decision log on disk: `decisions.jsonl` in the state folder, one JSON line per
//! decision, rotated to `decisions.jsonl.1` (newest) … `.N` once it would pass
//! `[audit] max_bytes`. Each line carries the hash of the line before it (see `chain`).
//!
//! Hooks of concurrent pushes append at once: each line is one `write` on a file opened for
//! appending, and reading the last line's hash, the size check, the rotation and the write
//! happen under a lock file, so lines neither interleave, nor get lost in a rotation, nor
//! chain to the same line. An append reads only the log's tail. Logging never changes a
//! decision: a lock not had within [`LOCK_WAIT`] means the line is appended without it (and
//! without the rotation check), chained to the last line seen; were another writer appending
//! at that very moment, the two would chain to the same line and `--verify` would say so.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::Entry;
use super::chain::{self, Chain, GENESIS, Link, Place};
use crate::config::{Audit, Config};

/// The log's file name in the state folder.
pub const FILE: &str = "decisions.jsonl";

/// How long a writer waits for the lock before appending without it: far beyond the time an
/// append holds it (a tail read and a write).
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// How much of the log's end an append reads first, looking for the last line.
const TAIL_CHUNK: u64 = 4096;

fn rotated(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{FILE}.{n}"))
}

/// Appends one decision to the log in `state_dir` (created if missing), chained to the last
/// line, rotating first when the line would take the log past `limits.max_bytes`.
pub fn append(state_dir: &Path, entry: &Entry, limits: &Audit) -> anyhow::Result<()> {
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
    // The line chains to the current file's last line, or, in a file not begun yet, to the
    // last line of the newest rotated one.
    let (last, unended) = match last_line(&path)? {
        Some((line, ended)) => (Some(line), !ended),
        None => (
            last_line(&rotated(state_dir, 1))?.map(|(line, _)| line),
            false,
        ),
    };
    let prev = last.map_or_else(|| GENESIS.to_string(), |l| chain::hex(&chain::hash(&l)));
    let mut line = serialized(entry, prev)?;
    let mut gap = unended;
    if locked {
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        if size > 0 && size + line.len() as u64 > limits.max_bytes {
            rotate(state_dir, limits.keep)?;
            gap = false;
            if limits.keep == 0 {
                // Nothing before it is kept: the chain begins again.
                line = serialized(entry, GENESIS.to_string())?;
            }
        }
    }
    if gap {
        // A last line cut short (a crash mid-write) stays a line of its own.
        line.insert(0, b'\n');
    }
    let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
    file.write_all(&line)?;
    crate::timings::mark("decision-log");
    Ok(())
}

/// The line for `entry`, with its link, and its newline.
fn serialized(entry: &Entry, prev: String) -> anyhow::Result<Vec<u8>> {
    let mut linked = entry.clone();
    linked.prev = Some(prev);
    let mut line = serde_json::to_vec(&linked)?;
    line.push(b'\n');
    Ok(line)
}

/// The last non-empty line of a file (without its newline) and whether a newline ends it;
/// `None` when the file is missing or holds no line. Reads the file from its end, in chunks
/// doubling in size, until the line's start.
fn last_line(path: &Path) -> anyhow::Result<Option<(Vec<u8>, bool)>> {
    let cannot = || format!("cannot read `{}`", path.display());
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(cannot),
    };
    let len = file.metadata().with_context(cannot)?.len();
    let mut start = len;
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk_size = TAIL_CHUNK;
    while start > 0 {
        let step = chunk_size.min(start);
        start -= step;
        chunk_size = chunk_size.saturating_mul(2);
        let mut chunk = vec![0; usize::try_from(step)?];
        file.seek(SeekFrom::Start(start)).with_context(cannot)?;
        file.read_exact(&mut chunk).with_context(cannot)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        let Some(end) = tail.iter().rposition(|&b| b != b'\n') else {
            continue;
        };
        let ended = end + 1 < tail.len();
        if let Some(nl) = tail[..end].iter().rposition(|&b| b == b'\n') {
            return Ok(Some((tail[nl + 1..=end].to_vec(), ended)));
        }
        if start == 0 {
            return Ok(Some((tail[..=end].to_vec(), ended)));
        }
    }
    Ok(None)
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

/// Every non-empty line of the log, oldest first, with its place.
fn lines(state_dir: &Path, keep: u32, mut each: impl FnMut(Place, Vec<u8>)) -> anyhow::Result<()> {
    let files = (1..=keep)
        .rev()
        .map(|n| (format!("{FILE}.{n}"), rotated(state_dir, n)))
        .chain([(FILE.to_string(), state_dir.join(FILE))]);
    for (name, path) in files {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
        };
        for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
            let line = line.with_context(|| format!("cannot read `{}`", path.display()))?;
            if !line.is_empty() {
                let place = Place {
                    file: name.clone(),
                    line: i + 1,
                };
                each(place, line);
            }
        }
    }
    Ok(())
}

/// Every logged decision, oldest first, and how many lines could not be read.
pub fn read(state_dir: &Path, keep: u32) -> anyhow::Result<(Vec<Entry>, usize)> {
    let mut entries = Vec::new();
    let mut unreadable = 0;
    lines(state_dir, keep, |_, line| {
        match serde_json::from_slice::<Entry>(&line) {
            Ok(e) => entries.push(e),
            Err(_) => unreadable += 1,
        }
    })?;
    Ok((entries, unreadable))
}

/// The log, read and its chain checked.
#[derive(Debug)]
pub struct Log {
    /// Every logged decision, oldest first, with whether the chain vouches for its line.
    pub entries: Vec<(Entry, bool)>,
    /// How many lines could not be read.
    pub unreadable: usize,
    pub chain: Chain,
}

/// Reads the log and checks its chain.
pub fn load(state_dir: &Path, keep: u32) -> anyhow::Result<Log> {
    let mut entries = Vec::new();
    let mut links = Vec::new();
    lines(state_dir, keep, |place, line| {
        let hash = chain::hash(&line);
        let link = match serde_json::from_slice::<Entry>(&line) {
            Ok(e) => {
                let link = e.prev.clone().map_or(Link::Legacy, Link::Prev);
                entries.push((e, links.len()));
                link
            }
            Err(_) => Link::Unreadable,
        };
        links.push(chain::Line { place, hash, link });
    })?;
    let rotated_start = links.first().is_some_and(|l| l.place.file != FILE);
    let (chain, vouched) = chain::check(&links, rotated_start);
    let unreadable = links.len() - entries.len();
    Ok(Log {
        entries: entries
            .into_iter()
            .map(|(e, i)| (e, vouched.get(i).copied().unwrap_or(false)))
            .collect(),
        unreadable,
        chain,
    })
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
        let one = serialized(&entry("T-0"), GENESIS.into()).unwrap().len() as u64;
        let limits = Audit {
            max_bytes: one * 2,
            keep: 2,
            ..Audit::default()
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
        // The files kept read as one chain, its start rotated away.
        let log = load(dir.path(), 2).unwrap();
        assert_eq!(log.chain.broken, None);
        assert!(log.chain.rotated_away);
        assert_eq!(log.chain.verified, 5);
        // With nothing kept, the chain begins again.
        let limits = Audit { keep: 0, ..limits };
        for i in 7..10 {
            append(dir.path(), &entry(&format!("T-{i}")), &limits).unwrap();
        }
        let log = load(dir.path(), 0).unwrap();
        assert_eq!((log.chain.broken, log.chain.verified), (None, 2));
        assert!(!log.chain.rotated_away);
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
        // The chain names it.
        let log = load(dir.path(), 3).unwrap();
        assert_eq!(
            log.chain.broken.unwrap().to_string(),
            "`decisions.jsonl` line 2 is not a decision: it was edited or damaged"
        );
        assert_eq!(log.unreadable, 1);
    }

    fn intact(dir: &Path, want: usize) -> Log {
        let log = load(dir, 3).unwrap();
        assert_eq!(log.chain.broken, None);
        assert_eq!(log.chain.verified, want);
        assert!(log.entries.iter().all(|(_, verified)| *verified));
        log
    }

    #[test]
    fn each_line_chains_to_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            append(dir.path(), &entry(&format!("T-{i}")), &Audit::default()).unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let prev = |l: &str| serde_json::from_str::<Entry>(l).unwrap().prev.unwrap();
        assert_eq!(prev(lines[0]), GENESIS);
        assert_eq!(
            prev(lines[1]),
            chain::hex(&chain::hash(lines[0].as_bytes()))
        );
        assert_eq!(
            prev(lines[2]),
            chain::hex(&chain::hash(lines[1].as_bytes()))
        );
        let log = intact(dir.path(), 3);
        assert_eq!(
            log.chain.head.unwrap(),
            chain::hex(&chain::hash(lines[2].as_bytes()))
        );
    }

    #[test]
    fn concurrent_appends_all_land_in_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for i in 0..50 {
                let dir = dir.path();
                s.spawn(move || {
                    append(dir, &entry(&format!("T-{i}")), &Audit::default()).unwrap();
                });
            }
        });
        intact(dir.path(), 50);
    }

    #[test]
    fn a_legacy_prefix_is_left_unverified_and_the_chain_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = Vec::new();
        for i in 0..2 {
            old.extend(serde_json::to_vec(&entry(&format!("OLD-{i}"))).unwrap());
            old.push(b'\n');
        }
        std::fs::write(dir.path().join(FILE), old).unwrap();
        append(dir.path(), &entry("T-1"), &Audit::default()).unwrap();
        append(dir.path(), &entry("T-2"), &Audit::default()).unwrap();
        let log = load(dir.path(), 3).unwrap();
        assert_eq!(log.chain.broken, None);
        assert_eq!((log.chain.legacy, log.chain.verified), (2, 2));
        let verified: Vec<bool> = log.entries.iter().map(|(_, v)| *v).collect();
        assert_eq!(verified, [false, false, true, true]);
    }

    #[test]
    fn a_line_longer_than_a_tail_chunk_or_cut_short_is_chained_to() {
        let dir = tempfile::tempdir().unwrap();
        let long = Entry::delivery(
            Stage::Deliver,
            &"T-1".into(),
            &"x".repeat(3 * TAIL_CHUNK as usize),
            None,
            &Decision::default(),
            "r1",
        );
        append(dir.path(), &long, &Audit::default()).unwrap();
        append(dir.path(), &entry("T-2"), &Audit::default()).unwrap();
        intact(dir.path(), 2);
        // A line cut short by a crash: the next line starts a line of its own after it.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(b"{\"time\": \"cut").unwrap();
        append(dir.path(), &entry("T-3"), &Audit::default()).unwrap();
        let (read, bad) = read(dir.path(), 3).unwrap();
        assert_eq!((read.len(), bad), (3, 1));
        let broken = load(dir.path(), 3).unwrap().chain.broken.unwrap();
        assert_eq!(broken.at.line, 3);
    }

    /// The cost of an append, chain included: `cargo test --lib a_thousand_appends --
    /// --nocapture` prints it.
    #[test]
    fn a_thousand_appends_stay_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let e = entry("T-1");
        let start = Instant::now();
        for _ in 0..1000 {
            append(dir.path(), &e, &Audit::default()).unwrap();
        }
        eprintln!("1000 appends: {:?}", start.elapsed());
        intact(dir.path(), 1000);
    }
}
