//! Decisions that could not be written to the log: what a hook says about one, and the note it
//! leaves so that `lockstep audit` can tell the log has a gap.
//!
//! A hook that cannot append a push's decision rejects the push (`[audit] on_error =
//! "reject"`, the default), or, with `on_error = "warn"`, lets it through and notes the gap:
//! one JSON line in `decisions.unlogged` in the state folder, or, when the state folder cannot
//! be written either, in `lockstep-unlogged` in the repository's own folder (which the account
//! that receives a push can write). `lockstep audit` reads the first and the second of every
//! repository its log names. What no note can record (neither place writable, a repository
//! the log never named) is said only to the pusher and in the hook's error log.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Entry;
use super::log::FILE;
use crate::accounts;

/// The note of unlogged decisions in the state folder.
pub const IN_STATE: &str = "decisions.unlogged";
/// The note of unlogged decisions in a repository's folder, when the state folder is not
/// writable.
pub const IN_REPO: &str = "lockstep-unlogged";

/// One decision that could not be logged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gap {
    pub time: DateTime<Utc>,
    #[serde(default)]
    pub repo: String,
    #[serde(default)]
    pub pusher: String,
    pub accepted: bool,
    /// Why the log could not be written.
    pub reason: String,
}

/// A push's decision the log refused, and why.
#[derive(Debug)]
pub struct Unlogged<'a> {
    pub state_dir: &'a Path,
    pub entry: &'a Entry,
    pub reason: String,
}

impl<'a> Unlogged<'a> {
    pub fn new(state_dir: &'a Path, entry: &'a Entry, error: &anyhow::Error) -> Unlogged<'a> {
        Unlogged {
            state_dir,
            entry,
            reason: format!("{error:#}"),
        }
    }

    /// What the account running the hook must be granted.
    fn grant(&self) -> String {
        let who = accounts::current().map_or_else(
            || "the account that runs the hooks".to_string(),
            |a| format!("the account that runs this hook, {a},"),
        );
        format!(
            "{who} must be able to create and write files in `{}` (it holds `{FILE}` and the \
             verdict counts); see docs/accounts.md",
            self.state_dir.display()
        )
    }

    /// The pusher's lines when the push is rejected for it (`on_error = "reject"`).
    /// `accepted`: whether the policies accepted the push.
    pub fn refusal(&self, accepted: bool) -> String {
        let head = if accepted {
            "lockstep: push rejected: its decision could not be written to the decision log"
        } else {
            "lockstep: and its decision could not be written to the decision log"
        };
        format!(
            "{head} in `{}`: {}\nlockstep: {}; or set `[audit] on_error = \"warn\"` to accept \
             pushes whose decision cannot be logged\n",
            self.state_dir.display(),
            self.reason,
            self.grant()
        )
    }

    /// The pusher's lines when the push goes through all the same (`on_error = "warn"`);
    /// `noted`: where the gap was noted, if anywhere.
    pub fn warning(&self, noted: Option<&Path>) -> String {
        let noted = match noted {
            Some(p) => format!("the gap is noted in `{}`", p.display()),
            None => "the gap could not be noted anywhere `lockstep audit` reads".to_string(),
        };
        format!(
            "lockstep: warning: this push's decision was not written to the decision log in \
             `{}`: {}\nlockstep: it goes through as decided because `[audit] on_error = \
             \"warn\"`; {noted}; {}\n",
            self.state_dir.display(),
            self.reason,
            self.grant()
        )
    }

    /// Notes the gap in the state folder, else in the repository's folder; where it went.
    pub fn note(&self) -> Option<PathBuf> {
        let gap = Gap {
            time: self.entry.time,
            repo: self.entry.repo.clone(),
            pusher: self.entry.pusher.clone(),
            accepted: self.entry.accepted,
            reason: self.reason.clone(),
        };
        let mut line = serde_json::to_vec(&gap).ok()?;
        line.push(b'\n');
        let places = [
            Some(self.state_dir.join(IN_STATE)),
            (!self.entry.git_dir.is_empty()).then(|| Path::new(&self.entry.git_dir).join(IN_REPO)),
        ];
        places.into_iter().flatten().find(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .and_then(|mut f| f.write_all(&line))
                .is_ok()
        })
    }
}

/// The gaps noted in one place.
#[derive(Debug, Clone, PartialEq)]
pub struct Noted {
    pub file: PathBuf,
    pub gaps: Vec<Gap>,
    /// Lines that could not be read (still a gap each).
    pub unreadable: usize,
}

/// The notes of gaps in the state folder and in each of `git_dirs`.
pub fn find(state_dir: &Path, git_dirs: &[&str]) -> Vec<Noted> {
    let places = std::iter::once(state_dir.join(IN_STATE)).chain(
        git_dirs
            .iter()
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(IN_REPO)),
    );
    let mut seen = std::collections::HashSet::new();
    places
        // One repository named twice (by the log and by the config, spelt apart) is read once.
        .filter(|file| seen.insert(std::fs::canonicalize(file).unwrap_or_else(|_| file.clone())))
        .filter_map(|file| {
            let text = std::fs::read_to_string(&file).ok()?;
            let mut gaps = Vec::new();
            let mut unreadable = 0;
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                match serde_json::from_str::<Gap>(l) {
                    Ok(g) => gaps.push(g),
                    Err(_) => unreadable += 1,
                }
            }
            (gaps.len() + unreadable > 0).then_some(Noted {
                file,
                gaps,
                unreadable,
            })
        })
        .collect()
}

/// What `lockstep audit` says of the gaps noted: one line per place.
pub fn warnings(noted: &[Noted]) -> Vec<String> {
    noted
        .iter()
        .map(|n| {
            let count = n.gaps.len() + n.unreadable;
            let span = match (n.gaps.first(), n.gaps.last()) {
                (Some(a), Some(b)) => format!(
                    " between {} and {}",
                    a.time.format("%Y-%m-%d %H:%M:%S"),
                    b.time.format("%Y-%m-%d %H:%M:%S")
                ),
                _ => String::new(),
            };
            let reason = n
                .gaps
                .last()
                .map(|g| format!(" (last: {})", crate::text::escape(&g.reason)))
                .unwrap_or_default();
            format!(
                "{count} push decision(s){span} were accepted or rejected but not logged, as \
                 noted in `{}`{reason}; the log has a gap there",
                n.file.display()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Decision, Stage};

    #[test]
    fn a_gap_is_noted_in_the_state_folder_else_the_repository_and_found() {
        let state = tempfile::tempdir().unwrap();
        let repo = tempfile::tempdir().unwrap();
        let mut entry = Entry::delivery(
            Stage::Push,
            &"T-1".into(),
            "ann",
            None,
            &Decision::default(),
            "r1",
        );
        entry.git_dir = repo.path().to_string_lossy().into_owned();
        let err = anyhow::anyhow!("Permission denied (os error 13)");
        let u = Unlogged::new(state.path(), &entry, &err);
        assert_eq!(u.note(), Some(state.path().join(IN_STATE)));
        // A state "folder" that is a file: the repository takes the note.
        let file = state.path().join("not-a-folder");
        std::fs::write(&file, "").unwrap();
        let u = Unlogged::new(&file, &entry, &err);
        assert_eq!(u.note(), Some(repo.path().join(IN_REPO)));
        let dirs = [entry.git_dir.as_str()];
        let found = find(state.path(), &dirs);
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|n| n.gaps.len() == 1));
        let w = warnings(&found);
        assert!(w[0].contains("1 push decision(s) between"), "{w:?}");
        assert!(w[0].contains("Permission denied"), "{w:?}");
        assert!(u.refusal(true).contains("push rejected"));
        assert!(u.warning(None).contains("could not be noted"));
    }
}
