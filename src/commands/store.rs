//! `lockstep store copy`: the store moved to another backend.

use super::{runtime, say_line, store_of};
use crate::config::Located;
use crate::exit::Exit;
use crate::store::Store;

/// `lockstep store copy --to-env VAR`.
pub fn store_copy(at: &Located, var: &str) -> anyhow::Result<Exit> {
    runtime()?.block_on(async move {
        let (_, source) = store_of(at).await?;
        let target = Store::open_postgres_env(var).await?;
        let c = source.copy_to(&target).await?;
        say!(
            "copied {} deliveries ({} repositories, {} journal entries, {} steps), {} webhook ids, \
             {} webhook events, {} tracker statuses, {} alerts, {} showrooms and {} autotests \
             into the store in `{var}`",
            c.deliveries,
            c.repos,
            c.journal,
            c.steps,
            c.webhooks,
            c.events,
            c.tracker_seen,
            c.alerts,
            c.showrooms,
            c.autotests
        );
        say!("next: set `[store] url_env = \"{var}\"` in lockstep.toml");
        Ok(Exit::Success)
    })
}
