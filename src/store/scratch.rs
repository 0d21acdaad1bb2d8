//! Requests for the store's own tests (the stores themselves come from `testing`).

use super::NewDelivery;

/// A request to deliver `task` at `priority`, the rest as by default.
pub(super) fn request(task: &str, priority: i64) -> NewDelivery {
    NewDelivery {
        task: task.into(),
        priority,
        ..Default::default()
    }
}
