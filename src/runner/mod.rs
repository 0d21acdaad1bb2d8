//! Runners: the CI services a step may run on instead of lockstep's own host
//! (`[runners.<name>]`).
//!
//! A runner is handed a [`Job`] (the candidate: repository, branch, sha, and who it is for),
//! starts it on the CI and follows it to an [`Outcome`]. Nothing of the job runs in
//! lockstep's process tree: the CI's workers fetch the candidate branch the bot pushed.
//!
//! - `buildbot`: a Buildbot master, through its REST API (`/api/v2`): a build forced through
//!   a ForceScheduler, its build request followed to its build, stopped when asked.
//! - `status`: the commit statuses any other CI posts to `lockstep serve`, and the judgement
//!   of a step that waits for some of them.

mod buildbot;
pub mod status;

use std::time::Duration;

pub use buildbot::Buildbot;

/// What a runner is asked to run: one step of one repository, for a delivery, an autotest or
/// a showroom.
#[derive(Debug, Clone)]
pub struct Job {
    /// The builder (Buildbot) that runs it.
    pub builder: String,
    /// Where the CI clones the repository from.
    pub repository: String,
    /// The candidate branch the bot pushed.
    pub branch: String,
    /// The candidate's sha: what is built is exactly this commit.
    pub revision: String,
    /// Why the build runs, for the CI's pages.
    pub reason: String,
    pub task: String,
    /// The delivery's id; empty for an autotest or a showroom.
    pub delivery: String,
    pub phase: String,
    pub repo: String,
    /// What the step runs for: `delivery`, `autotest` or `showroom`.
    pub purpose: String,
    /// The environment it runs in: the delivery's stage, or `showroom`.
    pub env: String,
    /// That environment's variables, as a JSON object of strings.
    pub vars: String,
}

/// A build the CI took: where a person reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRef {
    /// The CI's own id of the build.
    pub id: i64,
    /// Its page on the CI.
    pub url: String,
}

/// How a job ended on the CI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Success (or warnings) on the candidate's sha.
    Passed(BuildRef),
    /// The build failed: its result's name (`failure`, `exception`, `cancelled`, …), the step
    /// that failed and the end of that step's log.
    Failed {
        /// None when the request ended without a build (cancelled on the CI before a worker
        /// took it).
        build: Option<BuildRef>,
        result: String,
        step: Option<String>,
        log_tail: String,
    },
    /// No worker took the request within `start_within`; the request was cancelled.
    NeverStarted(Duration),
    /// The build outlived the wait and was stopped.
    TimedOut(Duration, Option<BuildRef>),
    /// Stopped on lockstep's side (a cancel, a discard, another step's failure); the build was
    /// stopped on the CI.
    Stopped(Option<BuildRef>),
    /// The CI could not be reached, or answered nonsense: the reason.
    Unreachable(String),
}
