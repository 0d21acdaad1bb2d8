//! A showroom per task: where it is (its URL and the commit deployed in each repository), who
//! asked, and where it stands. Showrooms run beside the delivery line and take no lease: their
//! writes are not fenced.

use serde::Serialize;

use super::{Store, now_ms};

/// Where a showroom stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShowroomState {
    /// Its branches are being rebased and its deploy steps run.
    Deploying,
    Up,
    /// Its deploy failed (and its teardown ran), or a worker died while it deployed.
    Failed,
    TearingDown,
    Down,
}

impl ShowroomState {
    pub fn as_str(self) -> &'static str {
        match self {
            ShowroomState::Deploying => "deploying",
            ShowroomState::Up => "up",
            ShowroomState::Failed => "failed",
            ShowroomState::TearingDown => "tearing-down",
            ShowroomState::Down => "down",
        }
    }

    pub fn parse(s: &str) -> Option<ShowroomState> {
        Some(match s {
            "deploying" => ShowroomState::Deploying,
            "up" => ShowroomState::Up,
            "failed" => ShowroomState::Failed,
            "tearing-down" => ShowroomState::TearingDown,
            "down" => ShowroomState::Down,
            _ => return None,
        })
    }

    /// Whether it holds one of the `max` places: something of it may be running.
    pub fn occupies(self) -> bool {
        matches!(
            self,
            ShowroomState::Deploying | ShowroomState::Up | ShowroomState::TearingDown
        )
    }
}

impl std::fmt::Display for ShowroomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One showroom as the store keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct ShowroomRow {
    pub task: String,
    /// The task key made a safe DNS label: what its URL and its steps' variables carry.
    pub label: String,
    pub url: String,
    /// The commit deployed in each repository, by repository name.
    pub shas: std::collections::BTreeMap<String, String>,
    pub requester: String,
    pub state: ShowroomState,
    /// Why it failed or was torn down.
    pub reason: String,
    /// When it was first asked for (milliseconds since the epoch): its age.
    pub created_at: i64,
    pub updated_at: i64,
    /// When its last deploy passed.
    pub deployed_at: Option<i64>,
    /// Its task's status in the tracker when it was last deployed, or when the poller last
    /// saw the task move; `None` when the tracker did not say.
    pub task_status: Option<String>,
}

type Raw = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
);

/// The columns of [`Raw`], in order.
macro_rules! columns {
    () => {
        "task, label, url, shas, requester, state, reason, created_at, updated_at, deployed_at, \
         task_status"
    };
}

fn row(r: Raw) -> anyhow::Result<ShowroomRow> {
    let state = ShowroomState::parse(&r.5)
        .ok_or_else(|| anyhow::anyhow!("unknown showroom state `{}` in the store", r.5))?;
    Ok(ShowroomRow {
        task: r.0,
        label: r.1,
        url: r.2,
        shas: serde_json::from_str(&r.3).unwrap_or_default(),
        requester: r.4,
        state,
        reason: r.6,
        created_at: r.7,
        updated_at: r.8,
        deployed_at: r.9,
        task_status: r.10,
    })
}

impl Store {
    /// The showroom of a task, whatever its state.
    pub async fn showroom(&self, task: &str) -> anyhow::Result<Option<ShowroomRow>> {
        let raw: Option<Raw> = on_pool!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM showrooms WHERE task = $1"
        ))
        .bind(task)
        .fetch_optional(pool)
        .await?);
        raw.map(row).transpose()
    }

    /// Every showroom not down, the oldest first.
    pub async fn showrooms(&self) -> anyhow::Result<Vec<ShowroomRow>> {
        let raw: Vec<Raw> = on_pool!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM showrooms WHERE state <> 'down' ORDER BY created_at, task"
        ))
        .fetch_all(pool)
        .await?);
        raw.into_iter().map(row).collect()
    }

    /// Records a showroom about to deploy (a new one, or one deployed again): `deploying`, with
    /// its task's status now (`None`: not known). A showroom that was down starts its age
    /// again.
    pub async fn showroom_deploying(
        &self,
        task: &str,
        label: &str,
        url: &str,
        requester: &str,
        task_status: Option<&str>,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO showrooms \
             (task, label, url, requester, state, created_at, updated_at, task_status) \
             VALUES ($1, $2, $3, $4, 'deploying', $5, $5, $6) \
             ON CONFLICT (task) DO UPDATE SET label = $2, url = $3, requester = $4, \
             state = 'deploying', reason = '', updated_at = $5, task_status = $6, \
             created_at = CASE \
             WHEN showrooms.state IN ('down', 'failed') THEN $5 ELSE showrooms.created_at END",
        )
        .bind(task)
        .bind(label)
        .bind(url)
        .bind(requester)
        .bind(now)
        .bind(task_status)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Records the commit deployed in each repository (before their steps run, so that a
    /// teardown after a crash knows what it removes).
    pub async fn set_showroom_shas(
        &self,
        task: &str,
        shas: &std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let text = serde_json::to_string(shas)?;
        on_pool!(self, |pool| sqlx::query(
            "UPDATE showrooms SET shas = $1, updated_at = $2 WHERE task = $3"
        )
        .bind(&text)
        .bind(now_ms())
        .bind(task)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Records the status its task was seen in (the poller saw it move).
    pub async fn set_showroom_task_status(&self, task: &str, status: &str) -> anyhow::Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE showrooms SET task_status = $1, updated_at = $2 WHERE task = $3"
        )
        .bind(status)
        .bind(now_ms())
        .bind(task)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Moves a showroom to `state`, with why (empty when there is nothing to say).
    pub async fn set_showroom_state(
        &self,
        task: &str,
        state: ShowroomState,
        reason: &str,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let deployed = (state == ShowroomState::Up).then_some(now);
        on_pool!(self, |pool| sqlx::query(
            "UPDATE showrooms SET state = $1, reason = $2, updated_at = $3, \
             deployed_at = COALESCE($4, deployed_at) WHERE task = $5"
        )
        .bind(state.as_str())
        .bind(reason)
        .bind(now)
        .bind(deployed)
        .bind(task)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }
}

impl Store {
    /// Copies every showroom of this store into a PostgreSQL transaction (`lockstep store
    /// copy`); returns how many.
    pub(super) async fn copy_showrooms(
        &self,
        tx: &mut sqlx::PgConnection,
    ) -> anyhow::Result<usize> {
        let rows: Vec<Raw> = on_pool!(self, |pool| sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM showrooms ORDER BY task"
        ))
        .fetch_all(pool)
        .await?);
        for r in &rows {
            sqlx::query(concat!(
                "INSERT INTO showrooms (",
                columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ))
            .bind(&r.0)
            .bind(&r.1)
            .bind(&r.2)
            .bind(&r.3)
            .bind(&r.4)
            .bind(&r.5)
            .bind(&r.6)
            .bind(r.7)
            .bind(r.8)
            .bind(r.9)
            .bind(&r.10)
            .execute(&mut *tx)
            .await?;
        }
        Ok(rows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::ShowroomState;
    use crate::store::testing::both_backends;

    both_backends! {
    async fn a_showroom_is_recorded_moved_and_listed(t) {
        let s = &t.store;
        s.showroom_deploying("T-1", "t-1", "https://t-1.show", "ann", Some("In Progress"))
            .await
            .unwrap();
        let shas = [("api".to_string(), "abc".to_string())].into();
        s.set_showroom_shas("T-1", &shas).await.unwrap();
        s.set_showroom_state("T-1", ShowroomState::Up, "").await.unwrap();
        let r = s.showroom("T-1").await.unwrap().unwrap();
        assert_eq!(r.state, ShowroomState::Up);
        assert_eq!(r.shas, shas);
        assert!(r.deployed_at.is_some());
        assert_eq!(r.task_status.as_deref(), Some("In Progress"));
        assert_eq!(s.showrooms().await.unwrap().len(), 1);
        s.set_showroom_task_status("T-1", "In QA").await.unwrap();
        let r = s.showroom("T-1").await.unwrap().unwrap();
        assert_eq!(r.task_status.as_deref(), Some("In QA"));
        // Deployed again, it takes its task's status then; not known is `None`.
        s.showroom_deploying("T-1", "t-1", "https://t-1.show", "ann", None).await.unwrap();
        assert_eq!(s.showroom("T-1").await.unwrap().unwrap().task_status, None);
        s.set_showroom_state("T-1", ShowroomState::Up, "").await.unwrap();
        s.set_showroom_state("T-1", ShowroomState::Down, "delivered").await.unwrap();
        assert!(s.showrooms().await.unwrap().is_empty());
        assert_eq!(s.showroom("T-1").await.unwrap().unwrap().reason, "delivered");
    }
    }
}
