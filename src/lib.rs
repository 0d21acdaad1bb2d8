//! lockstep: a git-native merge bot and policy engine.
//!
//! Installed as server-side hooks, lockstep accepts or rejects every `git push` by policies
//! written in TOML and CEL. As a bot, it delivers a task across every repository of an
//! ecosystem in lockstep — rebase, build, test, deploy, verify, merge — all or nothing.
//!
//! The crate is layered: a core that decides (policy, push, delivery, store, over the domain
//! and the config), adapters that talk to the world (git, GitHub, trackers), and edges a person
//! or a git server calls (hooks, server, command line, demo). The core never imports an edge.
//! `docs/architecture.md` draws the layers and the tree of `src/`, and says where new work
//! lands.
//!
//! # Layout
//! - `cli`: the command line and its help.
//! - `exit`: the exit codes, one enum every command returns.
//! - `commands`: the delivery commands (`deliver`, `queue`, `show`, `logs`, …).
//! - `board`: the repository × phase board `deliver` draws on a terminal.
//! - `config`: `lockstep.toml`, the meta-project's config.
//! - `domain`: the domain's vocabulary, value types every layer names (`GitHubRepo`).
//! - `text`: untrusted text made fit to show: control characters escaped, logs cut short.
//! - `policy`: policy files, CEL compilation and evaluation, decisions.
//! - `accounts`: the system's accounts, for messages about who may write what.
//! - `audit`: the decision log, `lockstep audit`'s reading of it, and policy replay.
//! - `push`: ref updates, the pusher, and the facts rules read about a push.
//! - `hook`: the `pre-receive`, `update` and `post-receive` entry points.
//! - `install`: `install-hooks`, the shims of `hooks/`.
//! - `doctor`: `lockstep doctor`, a server's setup checked per repository.
//! - `git`: the one place that runs `git`.
//! - `tls`: the one TLS crypto provider (rustls on ring).
//! - `tracker`: task trackers (file, Redmine, Jira, GitHub Issues).
//! - `runner`: the CI services steps may run on (Buildbot).
//! - `monitor`: Prometheus gates and Alertmanager alerts, the triggers of rollbacks.
//! - `delivery`: the delivery line, its steps, and the worker that runs the queue.
//! - `store`: the durable queue and journal (SQLite, or PostgreSQL shared by replicas).
//! - `verdict_counts`: the hooks' verdict counts, for the metrics.
//! - `server`: `lockstep serve`, the bot in person: webhooks, the queue page, metrics.
//! - `github`: the GitHub API client and GitHub's rules (signatures, approvals).
//! - `demo`: the narrated sandbox of `lockstep demo`.

mod accounts;
mod audit;
mod board;
mod cli;
mod commands;
mod config;
mod delivery;
mod demo;
mod doctor;
mod domain;
mod exit;
mod git;
mod github;
mod hook;
mod install;
mod monitor;
mod policy;
mod push;
mod runner;
mod runtime;
mod server;
mod store;
mod text;
mod timings;
mod tls;
mod tracker;
mod verdict_counts;

// What the executable, the integration tests and the benches use. Everything else stays
// inside the crate.
pub use cli::{Cli, init_tracing, run};
pub use config::{Config, Tasks, parse_duration};
pub use delivery::contain::{CONTAIN_ARG, supervise as supervise_step};
pub use exit::{Exit, is_broken_pipe};
pub use git::Git;
pub use github::sign;
pub use store::Store;
pub use text::markdown::live_text as markdown_live_text;
pub use timings::{
    PREFIX as TIMINGS_PREFIX, VAR as TIMINGS_VAR, begin as begin_timings, mark as mark_timing,
    report as report_timings,
};
pub use tls::install as install_tls;
pub use tracker::file::FileTracker;
pub use tracker::github::{GitHubIssues, LABEL_PREFIX};
pub use tracker::jira::Jira;
pub use tracker::redmine::Redmine;
pub use tracker::{Credential, Tracker, TrackerError, task_with_timeout};

/// The sandbox `lockstep demo` builds and tours, reused by the integration tests and the
/// benches to set up real repositories with real hooks.
pub mod sandbox {
    pub use crate::demo::{ACTS, Pushed, Sandbox, commit, push, sandbox_git};
}
