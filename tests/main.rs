//! Integration tests: the real `lockstep` executable against real git repositories.
//!
//! One binary (so the crate is linked once); each test works in its own temporary folder.

mod util;

mod accounts;
mod architecture;
mod audit;
mod autotests;
mod bad_input;
mod container;
mod crash;
mod delivery;
mod demo;
mod dependencies;
mod deploy;
mod git_servers;
mod hardening;
mod help;
mod hooks;
mod install;
mod limits;
mod monitoring;
mod pipeline;
mod policy_test;
mod postgres_sandboxes;
mod replicas;
mod reviews;
mod runner_purposes;
mod runners;
mod serve;
mod showrooms;
mod stages;
mod status_runner;
mod trackers;
mod views;
