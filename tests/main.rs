//! Integration tests: the real `lockstep` executable against real git repositories.
//!
//! One binary (so the crate is linked once); each test works in its own temporary folder.

mod util;

mod crash;
mod delivery;
mod hooks;
