//! The autotests of task branches' heads: requested (by a push, a command, a comment, the
//! tracker), claimed by the worker, and judged. A newer request for the same branch
//! supersedes the older ones still waiting or running; the worker running one sees it and
//! stops its steps.

use serde::Serialize;

use super::{Store, now_ms};
use crate::domain::{AutotestState, RepoName, Source, TaskKey};

/// One autotest, as the store keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct AutotestRow {
    pub id: i64,
    pub task: TaskKey,
    pub repo: RepoName,
    pub branch: String,
    /// The branch's head that was pushed, the commit tested once rebased.
    pub sha: String,
    pub source: Source,
    pub requester: String,
    pub state: AutotestState,
    /// The upstream commit the head was rebased onto.
    pub rebased_on: String,
    /// The rebased commit the steps ran on.
    pub tested_sha: String,
    /// The step (or `rebase`) that failed.
    pub step: String,
    /// Why it failed, in one line.
    pub reason: String,
    /// The end of its steps' logs.
    #[serde(skip)]
    pub log: String,
    #[serde(skip)]
    pub pid: Option<i64>,
    pub requested_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The build of a runner its step last ran as: `<step> <runner> <build request> <sha>`.
    #[serde(skip)]
    pub runner_build: Option<String>,
}

/// An autotest to request.
#[derive(Debug, Clone)]
pub struct NewAutotest {
    pub task: TaskKey,
    pub repo: RepoName,
    pub branch: String,
    pub sha: String,
    pub source: Source,
    pub requester: String,
}

/// How an autotest ended, for [`Store::finish_autotest`].
#[derive(Debug, Clone, Default)]
pub struct AutotestEnd {
    pub step: String,
    pub reason: String,
    pub log: String,
}

const COLUMNS: &str = "id, task, repo, branch, sha, source, requester, state, rebased_on, \
                       tested_sha, step, reason, log, pid, requested_at, started_at, finished_at, \
                       runner_build";

impl Store {
    /// Requests an autotest of a branch's head; returns its id and whether it is new (the
    /// same head already waiting or running is not asked twice). Older requests for the same
    /// branch still waiting or running are superseded.
    pub async fn request_autotest(&self, a: &NewAutotest) -> anyhow::Result<(i64, bool)> {
        let (id, new) = write_tx!(self, |tx| {
            let same: Option<(i64,)> = sqlx::query_as(
                "SELECT id FROM autotests WHERE repo = $1 AND branch = $2 AND sha = $3 \
                 AND state IN ($4, $5) ORDER BY id DESC LIMIT 1",
            )
            .bind(&a.repo)
            .bind(&a.branch)
            .bind(&a.sha)
            .bind(AutotestState::Queued)
            .bind(AutotestState::Running)
            .fetch_optional(&mut *tx)
            .await?;
            match same {
                Some((id,)) => (id, false),
                None => {
                    sqlx::query(
                        "UPDATE autotests SET state = $1, finished_at = $2 \
                         WHERE repo = $3 AND branch = $4 AND state IN ($5, $6)",
                    )
                    .bind(AutotestState::Superseded)
                    .bind(now_ms())
                    .bind(&a.repo)
                    .bind(&a.branch)
                    .bind(AutotestState::Queued)
                    .bind(AutotestState::Running)
                    .execute(&mut *tx)
                    .await?;
                    let (id,): (i64,) = sqlx::query_as(
                        "INSERT INTO autotests (task, repo, branch, sha, source, requester, \
                         state, requested_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                         RETURNING id",
                    )
                    .bind(&a.task)
                    .bind(&a.repo)
                    .bind(&a.branch)
                    .bind(&a.sha)
                    .bind(a.source)
                    .bind(&a.requester)
                    .bind(AutotestState::Queued)
                    .bind(now_ms())
                    .fetch_one(&mut *tx)
                    .await?;
                    (id, true)
                }
            }
        });
        Ok((id, new))
    }

    /// Claims the oldest autotest waiting: it is `running` from now on.
    pub async fn claim_autotest(&self) -> anyhow::Result<Option<AutotestRow>> {
        let sql = format!(
            "UPDATE autotests SET state = $1, started_at = $2 WHERE id = \
             (SELECT id FROM autotests WHERE state = $3 ORDER BY id LIMIT 1) AND state = $3 \
             RETURNING {COLUMNS}"
        );
        let row = on_pool!(self, |pool| sqlx::query_as(sqlx::AssertSqlSafe(
            sql.as_str()
        ))
        .bind(AutotestState::Running)
        .bind(now_ms())
        .bind(AutotestState::Queued)
        .fetch_optional(pool)
        .await?);
        Ok(row)
    }

    /// One autotest.
    pub async fn autotest(&self, id: i64) -> anyhow::Result<Option<AutotestRow>> {
        let sql = format!("SELECT {COLUMNS} FROM autotests WHERE id = $1");
        let row = on_pool!(self, |pool| sqlx::query_as(sqlx::AssertSqlSafe(
            sql.as_str()
        ))
        .bind(id)
        .fetch_optional(pool)
        .await?);
        Ok(row)
    }

    /// The state of an autotest (`None` when there is no such autotest).
    pub async fn autotest_state(&self, id: i64) -> anyhow::Result<Option<AutotestState>> {
        let row: Option<(AutotestState,)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT state FROM autotests WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(pool)
        .await?);
        Ok(row.map(|(s,)| s))
    }

    /// The autotests of a task (of every task with `None`), newest first.
    pub async fn autotests(
        &self,
        task: Option<&TaskKey>,
        limit: i64,
    ) -> anyhow::Result<Vec<AutotestRow>> {
        let filter = if task.is_some() {
            "WHERE task = $2"
        } else {
            ""
        };
        let sql = format!("SELECT {COLUMNS} FROM autotests {filter} ORDER BY id DESC LIMIT $1");
        let rows = on_pool!(self, |pool| {
            let q = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(limit);
            let q = match task {
                Some(t) => q.bind(t),
                None => q,
            };
            q.fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// The newest autotest of each branch of a task (of each repository and branch), the
    /// newest first: where each of its branches stands, however many runs came before.
    pub async fn latest_autotests_of(&self, task: &TaskKey) -> anyhow::Result<Vec<AutotestRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM autotests WHERE id IN (SELECT MAX(id) FROM autotests \
             WHERE task = $1 GROUP BY repo, branch) ORDER BY id DESC"
        );
        let rows = on_pool!(self, |pool| sqlx::query_as(sqlx::AssertSqlSafe(
            sql.as_str()
        ))
        .bind(task)
        .fetch_all(pool)
        .await?);
        Ok(rows)
    }

    /// The autotests in a state (oldest first).
    pub async fn autotests_in(&self, state: AutotestState) -> anyhow::Result<Vec<AutotestRow>> {
        let sql = format!("SELECT {COLUMNS} FROM autotests WHERE state = $1 ORDER BY id");
        let rows = on_pool!(self, |pool| sqlx::query_as(sqlx::AssertSqlSafe(
            sql.as_str()
        ))
        .bind(state)
        .fetch_all(pool)
        .await?);
        Ok(rows)
    }

    /// Records what a running autotest was rebased onto, and the commit its steps run on.
    pub async fn autotest_rebased(
        &self,
        id: i64,
        rebased_on: &str,
        tested_sha: &str,
    ) -> anyhow::Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE autotests SET rebased_on = $1, tested_sha = $2 WHERE id = $3"
        )
        .bind(rebased_on)
        .bind(tested_sha)
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Records the supervisor of the step an autotest runs now (`None` between steps).
    pub async fn autotest_pid(&self, id: i64, pid: Option<i32>) -> anyhow::Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE autotests SET pid = $1 WHERE id = $2"
        )
        .bind(pid.map(i64::from))
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Records the build of a runner that a step of autotest `id` runs as (`<step> <runner>
    /// <build request> <sha>`).
    pub async fn autotest_runner_build(&self, id: i64, build: &str) -> anyhow::Result<()> {
        on_pool!(self, |pool| sqlx::query(
            "UPDATE autotests SET runner_build = $1 WHERE id = $2"
        )
        .bind(build)
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Ends a running autotest; false when it was no longer running (superseded meanwhile),
    /// and then nothing changes but its log.
    pub async fn finish_autotest(
        &self,
        id: i64,
        state: AutotestState,
        end: &AutotestEnd,
    ) -> anyhow::Result<bool> {
        let done = on_pool!(self, |pool| {
            let done = sqlx::query(
                "UPDATE autotests SET state = $1, step = $2, reason = $3, log = $4, \
                 finished_at = $5, pid = NULL WHERE id = $6 AND state = $7",
            )
            .bind(state)
            .bind(&end.step)
            .bind(&end.reason)
            .bind(&end.log)
            .bind(now_ms())
            .bind(id)
            .bind(AutotestState::Running)
            .execute(pool)
            .await?
            .rows_affected();
            if done == 0 {
                sqlx::query("UPDATE autotests SET log = $1, pid = NULL WHERE id = $2")
                    .bind(&end.log)
                    .bind(id)
                    .execute(pool)
                    .await?;
            }
            done
        });
        Ok(done == 1)
    }
}

impl Store {
    /// Copies every autotest into `tx` on a PostgreSQL store (`lockstep store copy`), ids
    /// kept; returns how many.
    pub(super) async fn copy_autotests(
        &self,
        tx: &mut sqlx::PgConnection,
    ) -> anyhow::Result<usize> {
        let rows = self.autotests(None, i64::MAX).await?;
        for r in rows.iter().rev() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO autotests ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                 $10, $11, $12, $13, $14, $15, $16, $17, $18)"
            )))
            .bind(r.id)
            .bind(&r.task)
            .bind(&r.repo)
            .bind(&r.branch)
            .bind(&r.sha)
            .bind(r.source)
            .bind(&r.requester)
            .bind(r.state)
            .bind(&r.rebased_on)
            .bind(&r.tested_sha)
            .bind(&r.step)
            .bind(&r.reason)
            .bind(&r.log)
            .bind(r.pid)
            .bind(r.requested_at)
            .bind(r.started_at)
            .bind(r.finished_at)
            .bind(&r.runner_build)
            .execute(&mut *tx)
            .await?;
        }
        Ok(rows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::both_backends;

    fn new(sha: &str) -> NewAutotest {
        NewAutotest {
            task: TaskKey::new("PROJ-1"),
            repo: RepoName::new("api"),
            branch: "feature/PROJ-1".into(),
            sha: sha.into(),
            source: Source::Push,
            requester: "alice".into(),
        }
    }

    both_backends! {
    async fn a_newer_head_supersedes_the_older_autotest(t) {
        let s = &t.store;
        let (first, fresh) = s.request_autotest(&new("a1")).await.unwrap();
        assert!(fresh);
        assert_eq!(s.request_autotest(&new("a1")).await.unwrap(), (first, false));
        let claimed = s.claim_autotest().await.unwrap().unwrap();
        assert_eq!((claimed.id, claimed.state), (first, AutotestState::Running));
        assert!(s.claim_autotest().await.unwrap().is_none());
        let (second, _) = s.request_autotest(&new("b2")).await.unwrap();
        assert_eq!(
            s.autotest_state(first).await.unwrap(),
            Some(AutotestState::Superseded)
        );
        // The worker's late verdict does not overwrite it.
        let end = AutotestEnd { log: "stopped".into(), ..AutotestEnd::default() };
        assert!(!s.finish_autotest(first, AutotestState::Passed, &end).await.unwrap());
        assert_eq!(s.claim_autotest().await.unwrap().unwrap().id, second);
        s.autotest_rebased(second, "base", "tested").await.unwrap();
        assert!(s.finish_autotest(second, AutotestState::Passed, &end).await.unwrap());
        let all = s.autotests(Some(&TaskKey::new("PROJ-1")), 10).await.unwrap();
        let states: Vec<_> = all.iter().map(|a| a.state).collect();
        assert_eq!(states, [AutotestState::Passed, AutotestState::Superseded]);
        assert_eq!(all[0].rebased_on, "base");
        assert!(s.autotests(Some(&TaskKey::new("PROJ-2")), 10).await.unwrap().is_empty());
        assert_eq!(s.autotests(None, 10).await.unwrap().len(), 2);
        let web = NewAutotest { repo: RepoName::new("web"), ..new("c3") };
        let (third, _) = s.request_autotest(&web).await.unwrap();
        let latest = s.latest_autotests_of(&TaskKey::new("PROJ-1")).await.unwrap();
        let ids: Vec<i64> = latest.iter().map(|a| a.id).collect();
        assert_eq!(ids, [third, second]);
        assert!(s.latest_autotests_of(&TaskKey::new("PROJ-2")).await.unwrap().is_empty());
    }
    }
}
