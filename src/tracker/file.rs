//! The embedded tracker: a TOML file of tasks, for teams without a tracker and for the demo.
//!
//! ```toml
//! [TASK-1]
//! status = "In Progress"
//! title = "Log in with SSO"
//! assignee = "alice"
//! ```
//!
//! Writes take an exclusive lock on a side file and replace the tasks file atomically, so a
//! hook reading it never sees half a file and two writers never lose each other's change.
//! The new file keeps the old one's mode, owner and group (as far as the writer may set them),
//! and a lock file another account created is locked read-only, so the git server's account
//! and the bot's can both write it (docs/accounts.md).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Task, Tracker, TrackerError};
use crate::domain::TaskKey;

const NAME: &str = "file";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTask {
    pub status: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub assignee: String,
    /// Notes left by lockstep when it moves the task, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

pub struct FileTracker {
    path: PathBuf,
}

fn err(message: String) -> TrackerError {
    TrackerError::Other {
        tracker: NAME,
        message,
    }
}

impl FileTracker {
    pub fn new(path: PathBuf) -> FileTracker {
        FileTracker { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every task of the file.
    pub fn read_all(&self) -> Result<BTreeMap<String, FileTask>, TrackerError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| {
            err(format!(
                "cannot read tasks file `{}`: {e}; create it or set `tracker.path`",
                self.path.display()
            ))
        })?;
        toml::from_str(&text).map_err(|e| {
            err(format!(
                "bad tasks file `{}`: {}",
                self.path.display(),
                e.to_string().trim_end()
            ))
        })
    }

    fn to_task(&self, key: &str, t: &FileTask) -> Task {
        Task {
            key: key.to_string(),
            status: t.status.clone(),
            title: t.title.clone(),
            assignee: t.assignee.clone(),
            url: format!("file://{}#{key}", self.path.display()),
        }
    }

    /// Applies `change` to the tasks under an exclusive lock and writes them back atomically.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, FileTask>) -> Result<T, TrackerError>,
    ) -> Result<T, TrackerError> {
        let lock_path = self.path.with_extension("toml.lock");
        // A lock file another account created may be read-only here: a lock needs no more.
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .or_else(|e| File::open(&lock_path).map_err(|_| e))
            .map_err(|e| err(format!("cannot open lock `{}`: {e}", lock_path.display())))?;
        lock.lock()
            .map_err(|e| err(format!("cannot lock `{}`: {e}", lock_path.display())))?;
        let mut tasks = self.read_all()?;
        let result = change(&mut tasks)?;
        let text = toml::to_string(&tasks).map_err(|e| err(format!("cannot write tasks: {e}")))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| err(format!("cannot write in `{}`: {e}", dir.display())))?;
        tmp.write_all(text.as_bytes())
            .and_then(|_| keep_access(&self.path, tmp.as_file()))
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| err(format!("cannot write tasks: {e}")))?;
        tmp.persist(&self.path)
            .map_err(|e| err(format!("cannot replace `{}`: {e}", self.path.display())))?;
        drop::<File>(lock);
        Ok(result)
    }
}

/// Gives the new tasks file the mode, owner and group of the one it replaces, so that the
/// accounts that could write it before (the git server's, the bot's) still can. The owner is
/// kept only by root; the group when the writer belongs to it; the mode always.
fn keep_access(old: &Path, new: &File) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::metadata(old) else {
        return Ok(());
    };
    if std::os::unix::fs::fchown(new, Some(meta.uid()), Some(meta.gid())).is_err() {
        let _ = std::os::unix::fs::fchown(new, None, Some(meta.gid()));
    }
    new.set_permissions(meta.permissions())
}

#[async_trait]
impl Tracker for FileTracker {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn task(&self, key: &TaskKey) -> Result<Option<Task>, TrackerError> {
        let key = key.as_str();
        Ok(self.read_all()?.get(key).map(|t| self.to_task(key, t)))
    }

    async fn move_to(&self, key: &TaskKey, status: &str, note: &str) -> Result<(), TrackerError> {
        let key = key.as_str();
        self.update(|tasks| {
            let task = tasks.get_mut(key).ok_or_else(|| TrackerError::NotFound {
                tracker: NAME,
                key: key.to_string(),
            })?;
            task.status = status.to_string();
            if !note.is_empty() {
                task.notes.push(note.to_string());
            }
            Ok(())
        })
    }

    async fn in_statuses(&self, statuses: &[String]) -> Result<Vec<Task>, TrackerError> {
        Ok(self
            .read_all()?
            .iter()
            .filter(|(_, t)| statuses.contains(&t.status))
            .map(|(k, t)| self.to_task(k, t))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_move_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.toml");
        std::fs::write(
            &path,
            "[TASK-1]\nstatus = \"In Progress\"\ntitle = \"t\"\n\n[34]\nstatus = \"New\"\n",
        )
        .unwrap();
        let t = FileTracker::new(path.clone());
        assert_eq!(
            t.task(&"TASK-1".into()).await.unwrap().unwrap().status,
            "In Progress"
        );
        assert_eq!(t.task(&"34".into()).await.unwrap().unwrap().status, "New");
        assert!(t.task(&"TASK-9".into()).await.unwrap().is_none());
        t.move_to(&"TASK-1".into(), "For Delivery", "ready")
            .await
            .unwrap();
        let ready = t.in_statuses(&["For Delivery".into()]).await.unwrap();
        assert_eq!(ready.len(), 1);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("notes = [\"ready\"]")
        );
        assert!(matches!(
            t.move_to(&"NOPE-1".into(), "x", "").await,
            Err(TrackerError::NotFound { .. })
        ));
    }

    /// A status move keeps the file's mode, and its owner and group as far as the writer may
    /// (all of them as root, as the tests run): another account that could write it still can.
    #[tokio::test]
    async fn a_move_keeps_the_files_mode_owner_and_group() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.toml");
        std::fs::write(&path, "[TASK-1]\nstatus = \"In Progress\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        // Another owner and group, when the tests may give them (as root).
        let other = if me == 0 { 65534 } else { me };
        let _ = std::os::unix::fs::chown(&path, Some(other), Some(other));
        let before = std::fs::metadata(&path).unwrap();
        let t = FileTracker::new(path.clone());
        t.move_to(&"TASK-1".into(), "For Delivery", "ready")
            .await
            .unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_ne!(
            after.ino(),
            before.ino(),
            "the file is replaced, not edited"
        );
        assert_eq!(after.mode() & 0o7777, 0o664);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    }

    #[tokio::test]
    async fn missing_and_bad_files_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let t = FileTracker::new(dir.path().join("tasks.toml"));
        let e = t.task(&"X-1".into()).await.unwrap_err().to_string();
        assert!(
            e.contains("cannot read tasks file") && e.contains("tracker.path"),
            "{e}"
        );
        std::fs::write(dir.path().join("tasks.toml"), "[X-1]\nstatuz = 1\n").unwrap();
        let e = t.task(&"X-1".into()).await.unwrap_err().to_string();
        assert!(e.contains("unknown field `statuz`"), "{e}");
    }
}
