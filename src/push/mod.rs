//! What a push is: the ref updates, who pushes, and the facts policies read about each ref.
//!
//! Parsing is pure ([`parse_updates`]); gathering facts touches git and the tracker only
//! for what the loaded rules actually read, and asks the tracker once per task however many
//! refs name it.
//!
//! By concern:
//! - `update`: the ref updates git hands a hook, parsed;
//! - [`approval`]: approvals as refs (`refs/approvals/<TASK>/<name>`), judged by the hook;
//! - [`deliver_ref`]: delivery asked for by a push (`refs/deliver/<TASK>`, `-o deliver`),
//!   and refused to an anonymous pusher;
//! - `context`: who pushes, to which repository, with which push options;
//! - `decide`: the facts of each ref gathered, and the push rules evaluated on them;
//! - `report`: the verdicts as the pusher reads them, and as `lockstep policy test` explains
//!   them.

pub mod approval;
mod context;
mod decide;
pub mod deliver_ref;
mod report;
mod update;

pub use context::{PushContext, push_options_from_env, pusher_from_env, repo_name};
pub use decide::{
    Early, NewCommits, Pushed, RefDecision, TaskAnswers, decide, fetch_tasks, task_keys,
};
pub use report::{Report, explain, gitlab_lines};
pub use update::{ParseError, RefUpdate, parse_updates, update_from_parts};
