//! Integration tests: the real `lockstep` executable against real git repositories.
//!
//! One binary (so the crate is linked once); each test works in its own temporary folder.

mod util;

mod bad_input;
mod container;
mod crash;
mod delivery;
mod demo;
mod deploy;
mod help;
mod hooks;
mod install;
mod policy_test;
mod replicas;
mod serve;
mod trackers;
