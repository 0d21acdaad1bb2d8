//! A store in a temporary folder, for the store's own tests.

use super::{NewDelivery, Store};

/// A fresh store; it lives as long as the returned folder.
pub(super) async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    (dir, store)
}

/// A request to deliver `task` at `priority`, the rest as by default.
pub(super) fn request(task: &str, priority: i64) -> NewDelivery {
    NewDelivery {
        task: task.into(),
        priority,
        ..Default::default()
    }
}
