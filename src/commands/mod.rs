//! The commands a person runs, one file per family: `deliver`, `work` (and `recover`),
//! `autotest` (and `autotests`), `queue`, `show` (a delivery; `task`: all of a task), `logs`
//! (a delivery's, an autotest's, a showroom's), `cancel` (and `rollback`), `showroom` (and
//! `showrooms`), `store`, `install` (the hooks), `policy` (`check`, `test`, `replay`) and
//! `audit`. `cli` parses; these do.
//!
//! What they print quotes task keys, errors and step output: every line goes through
//! [`crate::text::escape`] (the `say!` macro). A reader gone away (`lockstep logs 1 | head`) makes the
//! next write fail with a broken pipe, which ends the command quietly (see `main`).

use std::sync::Arc;

use crate::config::{Config, Located};
use crate::delivery::Progress;
use crate::store::Store;
use crate::text::escape;

/// Prints a line on standard output, its control characters escaped; a write that fails (a
/// closed pipe) returns the error from the enclosing function.
macro_rules! say {
    ($($arg:tt)*) => {
        say_line(&format!($($arg)*))?
    };
}

mod audit;
mod autotest;
mod cancel;
mod deliver;
mod install;
mod logs;
pub mod policy;
mod queue;
mod show;
mod showroom;
mod store;
mod task;
mod work;

pub use audit::{AuditArgs, audit};
pub use autotest::{autotest, autotests};
pub use cancel::{cancel, rollback};
pub use deliver::deliver;
pub use install::{InstallArgs, install_hooks};
pub use logs::{LogFilter, LogsOf, logs};
pub use queue::queue;
pub use show::show;
pub use showroom::{ShowroomArgs, showroom, showrooms};
pub use store::store_copy;
pub use work::{recover, work};

/// Writes one line on standard output with its control characters escaped.
pub fn say_line(line: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    writeln!(std::io::stdout().lock(), "{}", escape(line))
}

/// The commands' runtime: two threads are plenty for one delivery at a time.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    crate::runtime::multi_thread(Some(2))
}

fn printer() -> Progress {
    Arc::new(crate::board::print_line)
}

fn load(at: &Located) -> anyhow::Result<Config> {
    at.load()
}

/// The person asking, for the journal.
fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default()
}

async fn store_of(at: &Located) -> anyhow::Result<(Config, Store)> {
    let config = load(at)?;
    let store = Store::for_config(&config).await?;
    Ok((config, store))
}

fn ago(ms: Option<i64>) -> String {
    ms.map(|t| {
        chrono::DateTime::from_timestamp_millis(t)
            .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default()
    })
    .unwrap_or_else(|| "-".into())
}

/// The time `age` (`7d`, `12h`) before now.
fn since(age: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let d = crate::config::parse_duration(age).map_err(|e| anyhow::anyhow!("`--since`: {e}"))?;
    let d = chrono::Duration::from_std(d)
        .map_err(|_| anyhow::anyhow!("`--since {age}` is too long ago; give a shorter age"))?;
    Ok(chrono::Utc::now() - d)
}
