//! lockstep: a git-native merge bot and policy engine.
//!
//! Installed as server-side hooks, lockstep accepts or rejects every `git push` by policies
//! written in TOML and CEL. As a bot, it delivers a task across every repository of an
//! ecosystem in lockstep — rebase, build, test, deploy, verify, merge — all or nothing.
//!
//! # Layout
//! - [`cli`]: the command line, its exit codes and its help.
//! - [`commands`]: the delivery commands (`deliver`, `queue`, `show`, `logs`, …).
//! - [`board`]: the repository × phase board `deliver` draws on a terminal.
//! - [`config`]: `lockstep.toml`, the meta-project's config.
//! - [`domain`]: the domain's vocabulary, value types every layer names (`RepoName`).
//! - [`policy`]: policy files, CEL compilation and evaluation, decisions.
//! - [`push`]: ref updates, the pusher, and the facts rules read about a push.
//! - [`hook`]: the `pre-receive`, `update` and `post-receive` entry points.
//! - [`install`]: `install-hooks`, the shims of `hooks/`.
//! - [`git`]: the one place that runs `git`.
//! - [`tracker`]: task trackers (file, Redmine, Jira, GitHub Issues).
//! - [`delivery`]: the delivery line, its steps, and the worker that runs the queue.
//! - [`store`]: the durable queue and journal (SQLite, or PostgreSQL shared by replicas).
//! - [`verdict_counts`]: the hooks' verdict counts, for the metrics.
//! - [`server`]: `lockstep serve`, the bot in person: webhooks, the queue page, metrics.
//! - [`github`]: the GitHub API client and GitHub's rules (signatures, approvals).
//! - [`demo`]: the narrated sandbox of `lockstep demo`.

pub mod board;
pub mod cli;
pub mod commands;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod domain;
pub mod git;
pub mod github;
pub mod hook;
pub mod install;
pub mod policy;
pub mod push;
pub mod server;
pub mod store;
pub mod tracker;
pub mod verdict_counts;
