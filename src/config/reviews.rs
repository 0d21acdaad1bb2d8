//! `[reviews]` (who may approve a task branch with a git ref), `[teams]` (named groups of
//! people, for rules that ask for a team's approval) and `[audit]` (the decision log).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Reviews {
    /// Whether someone who wrote a commit of a task branch may approve that branch with
    /// `refs/approvals/<TASK>/<name>`. Default false: authors do not approve their own work.
    #[serde(default)]
    pub authors_may_approve: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// The decision log (`decisions.jsonl` in the state folder) is rotated once it would grow
    /// past this many bytes. Default 10,000,000.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// How many rotated logs are kept (`decisions.jsonl.1` is the newest). Default 3.
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// What a hook does with a push whose decision cannot be written to the log (the state
    /// folder not writable by the hook's account, a full disk): `reject` it (the default), or
    /// let it through with a warning (`warn`).
    #[serde(default)]
    pub on_error: AuditOnError,
}

/// What a hook does when it cannot write a push's decision to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuditOnError {
    /// Reject the push, naming the folder and why (fail closed). The default.
    #[default]
    Reject,
    /// Accept it as decided, warning the pusher, logging an error, and noting the gap where
    /// `lockstep audit` finds it.
    Warn,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            max_bytes: default_max_bytes(),
            keep: default_keep(),
            on_error: AuditOnError::Reject,
        }
    }
}

fn default_max_bytes() -> u64 {
    10_000_000
}
fn default_keep() -> u32 {
    3
}
