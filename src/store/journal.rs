//! The journal: what happened to each delivery, in order. Every transition writes its entry
//! in the same transaction (`transitions`); the line adds what it does in between.

use serde::Serialize;

use super::Store;
use crate::domain::{DeliveryId, Event, Stage};

/// One entry of a delivery's journal. The stage is stored (and serialized) as `phase`, its
/// name before the queue, the watch and the reports had entries of their own.
#[derive(Debug, Clone, Serialize)]
pub struct JournalRow {
    pub at: i64,
    #[serde(rename = "phase")]
    pub stage: Stage,
    pub repo: String,
    pub event: Event,
    pub detail: String,
}

impl Store {
    /// Appends to a delivery's journal (fenced: see `lease`).
    pub async fn journal(
        &self,
        id: DeliveryId,
        stage: impl Into<Stage>,
        repo: &str,
        event: Event,
        detail: &str,
    ) -> anyhow::Result<()> {
        let stage = stage.into();
        write_tx!(self, fenced, |tx| {
            append!(&mut *tx, id, stage, repo, event, detail);
        });
        Ok(())
    }

    pub async fn journal_of(&self, id: DeliveryId) -> anyhow::Result<Vec<JournalRow>> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT at, phase, repo, event, detail FROM journal WHERE delivery_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }
}

/// Appends one entry to a delivery's journal in `$tx`, the transaction of the transition the
/// entry records: `$stage` a [`Stage`] (or what converts into one, a `Phase`), `$event` an
/// [`Event`].
macro_rules! append {
    ($tx:expr, $id:expr, $stage:expr, $repo:expr, $event:expr, $detail:expr) => {{
        let stage: $crate::domain::Stage = ($stage).into();
        let event: $crate::domain::Event = $event;
        sqlx::query(
            "INSERT INTO journal (delivery_id, at, phase, repo, event, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($id)
        .bind($crate::store::now_ms())
        .bind(stage)
        .bind($repo)
        .bind(event)
        .bind($detail)
        .execute($tx)
        .await?
    }};
}
pub(super) use append;
