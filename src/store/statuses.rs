//! The commit statuses CIs post (`POST /api/statuses/<sha>`): the latest state of each
//! context of a sha, read by the steps that wait for them.

use super::{Store, now_ms};
use crate::runner::status::{CommitState, CommitStatus};

impl Store {
    /// Records a status of `sha`, replacing the one of the same context.
    pub async fn set_commit_status(&self, sha: &str, s: &CommitStatus) -> anyhow::Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO commit_statuses (sha, context, state, target_url, description, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (sha, context) DO UPDATE SET state = excluded.state, \
             target_url = excluded.target_url, description = excluded.description, \
             updated_at = excluded.updated_at",
        )
        .bind(sha)
        .bind(&s.context)
        .bind(s.state.as_str())
        .bind(s.target_url.as_deref().unwrap_or_default())
        .bind(s.description.as_deref().unwrap_or_default())
        .bind(now_ms())
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    /// The latest status of each context of `sha`.
    pub async fn commit_statuses(&self, sha: &str) -> anyhow::Result<Vec<CommitStatus>> {
        let rows: Vec<(String, String, String, String)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT context, state, target_url, description FROM commit_statuses \
             WHERE sha = $1 ORDER BY context",
        )
        .bind(sha)
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .filter_map(|(context, state, target_url, description)| {
                Some(CommitStatus {
                    state: CommitState::parse(&state)?,
                    context,
                    target_url: Some(target_url).filter(|u| !u.is_empty()),
                    description: Some(description).filter(|d| !d.is_empty()),
                })
            })
            .collect())
    }
}
