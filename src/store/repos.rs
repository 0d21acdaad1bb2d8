//! A delivery's repositories: the branch found in each, the shas it was rebased from and to,
//! and how far each got (deployed, merged, rolled back).

use serde::Serialize;

use super::Store;
use crate::domain::{DeliveryId, RepoName};

/// One repository of a delivery.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepoRow {
    pub repo: RepoName,
    pub position: i64,
    pub branch: String,
    pub branch_sha: String,
    pub base_sha: String,
    pub rebased_sha: String,
    pub deployed: bool,
    pub merged: bool,
    pub rolled_back: bool,
}

impl RepoRow {
    /// What became of the repository's branch, for people: `deployed, merged, rolled back`.
    pub fn flags(&self) -> String {
        let mut flags = Vec::new();
        if self.deployed {
            flags.push("deployed");
        }
        if self.merged {
            flags.push("merged");
        }
        if self.rolled_back {
            flags.push("rolled back");
        }
        flags.join(", ")
    }
}

/// A flag of a delivery's repository, set as the delivery gets there.
#[derive(Debug, Clone, Copy)]
pub enum RepoFlag {
    Deployed,
    Merged,
    RolledBack,
}

impl Store {
    /// Replaces the repositories of a delivery (the rebase phase finds them).
    pub async fn set_repos(&self, id: DeliveryId, repos: &[RepoRow]) -> anyhow::Result<()> {
        write_tx!(self, fenced, |tx| {
            sqlx::query("DELETE FROM delivery_repos WHERE delivery_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            for r in repos {
                sqlx::query(
                    "INSERT INTO delivery_repos (delivery_id, position, repo, branch, branch_sha, base_sha, rebased_sha) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(id)
                .bind(r.position)
                .bind(&r.repo)
                .bind(&r.branch)
                .bind(&r.branch_sha)
                .bind(&r.base_sha)
                .bind(&r.rebased_sha)
                .execute(&mut *tx)
                .await?;
            }
        });
        Ok(())
    }

    pub async fn repos(&self, id: DeliveryId) -> anyhow::Result<Vec<RepoRow>> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT repo, position, branch, branch_sha, base_sha, rebased_sha, deployed, merged, rolled_back \
             FROM delivery_repos WHERE delivery_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(pool)
        .await?
        });
        Ok(rows)
    }

    /// Sets one flag (`deployed`, `merged`, `rolled_back`) of a delivery's repository.
    pub async fn set_repo_flag(
        &self,
        id: DeliveryId,
        repo: &RepoName,
        flag: RepoFlag,
        value: bool,
    ) -> anyhow::Result<()> {
        let sql = match flag {
            RepoFlag::Deployed => {
                "UPDATE delivery_repos SET deployed = $3 WHERE delivery_id = $1 AND repo = $2"
            }
            RepoFlag::Merged => {
                "UPDATE delivery_repos SET merged = $3 WHERE delivery_id = $1 AND repo = $2"
            }
            RepoFlag::RolledBack => {
                "UPDATE delivery_repos SET rolled_back = $3 WHERE delivery_id = $1 AND repo = $2"
            }
        };
        write_tx!(self, fenced, |tx| {
            sqlx::query(sql)
                .bind(id)
                .bind(repo)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }
}
