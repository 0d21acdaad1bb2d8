//! Steps that run on a `[runners.*]` CI instead of this host, for a delivery, an autotest or
//! a showroom: the commit pushed as a candidate branch for the CI to fetch, the build forced
//! and followed (or the commit statuses waited for), its result made the step's, and the
//! candidate branches deleted when what pushed them ends.
//!
//! - `mod.rs`: a [`RemoteStep`] (who it runs for, where, at which commit) and the one way
//!   to run it, [`Engine::run_remote`].
//! - `buildbot.rs`: a build forced on a Buildbot master and followed to its end.
//! - `status.rs`: the commit statuses of a status runner waited for.
//! - `delivery.rs`: a delivery's step on a runner: journaled, in the steps table, followed
//!   again after a restart; its candidate branches deleted.

mod buildbot;
mod delivery;
mod status;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use super::engine::Engine;
use super::steps::StepOutcome;
use crate::config::{Repo, RunnerKind, RunnerStep};
use crate::domain::{DeliveryId, Event, Phase, TaskKey};
use crate::runtime::blocking;

/// At most this much of a failing build's last line goes into the one-line reason.
const WHY_BYTES: usize = 200;

/// How often a delivery's step on a runner looks for a cancel of its delivery.
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// Who a step on a runner runs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A step of delivery `id`: its row `step` of the steps table gets the build, a cancel of
    /// the delivery stops it, and `resumed` is the build request a killed worker left (the
    /// CI builds each candidate once).
    Delivery {
        id: DeliveryId,
        step: i64,
        resumed: Option<i64>,
    },
    /// A step of autotest `id`.
    Autotest(i64),
    /// A step of the showroom with this label.
    Showroom(String),
}

impl Purpose {
    /// What the CI is told (`lockstep_purpose`, `LOCKSTEP_PURPOSE`).
    pub(super) fn as_str(&self) -> &'static str {
        match self {
            Purpose::Delivery { .. } => "delivery",
            Purpose::Autotest(_) => "autotest",
            Purpose::Showroom(_) => "showroom",
        }
    }

    /// `#3`, `autotest #5`, `showroom task-1`: for the CI's reason and the log.
    fn describe(&self) -> String {
        match self {
            Purpose::Delivery { id, .. } => format!("#{id}"),
            Purpose::Autotest(id) => format!("autotest #{id}"),
            Purpose::Showroom(label) => format!("showroom {label}"),
        }
    }
}

/// One step to run on its runner: who it is for, which repository's checkout at which
/// commit, in which environment, and where its local log goes.
pub(super) struct RemoteStep<'a> {
    pub(super) purpose: Purpose,
    pub(super) task: &'a TaskKey,
    pub(super) repo: &'a Repo,
    /// The checkout the candidate is pushed from.
    pub(super) dir: &'a Path,
    /// The commit the CI builds: exactly what lockstep would land or show.
    pub(super) sha: &'a str,
    pub(super) phase: Phase,
    /// The delivery's stage, or `showroom` (`lockstep_env`).
    pub(super) env: &'a str,
    /// That environment's variables (`lockstep_vars`).
    pub(super) vars: BTreeMap<String, String>,
    /// The branch the candidate is pushed to (under `[delivery] candidate_branch`'s prefix).
    pub(super) branch: String,
    /// The local log: where it ran and how it ended.
    pub(super) log: PathBuf,
    /// Turns true when the step is to stop (another step failed, a newer push superseded
    /// it); a delivery's step also stops on a cancel of its delivery.
    pub(super) stop: Option<watch::Receiver<bool>>,
}

/// How a step on a runner ended: its outcome, the reason it did not pass (`failed on
/// runner `bb`: build … ended in failure, …`) and the end of the failing step's log.
pub(super) struct Ran {
    pub(super) outcome: StepOutcome,
    pub(super) why: String,
    pub(super) tail: String,
}

impl Ran {
    fn not_started(why: String) -> Ran {
        Ran {
            outcome: StepOutcome::NotStarted(why.clone()),
            why,
            tail: String::new(),
        }
    }
}

impl Engine {
    /// Runs `r` on the runner `on` names and follows it to its end; the local log says where
    /// it ran. An error is lockstep's own (the store, the disk), not the step's.
    pub(super) async fn run_remote(
        &self,
        on: &RunnerStep,
        r: RemoteStep<'_>,
    ) -> anyhow::Result<Ran> {
        if let Some(dir) = r.log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut lines = StepLog {
            path: r.log.clone(),
            lines: Vec::new(),
        };
        let Some(config) = self.config.runners.get(&on.runner) else {
            let why = format!("runs on `{}`, which is not declared", on.runner);
            lines.push(format!("lockstep: {why}"));
            return Ok(Ran::not_started(why));
        };
        match config.kind {
            RunnerKind::Buildbot => self.on_buildbot(on, config, r, &mut lines).await,
            RunnerKind::Status => self.on_status(on, config, r, &mut lines).await,
        }
    }

    /// Pushes the candidate as its branch; `Ok(Err(ran))` when the server refused it.
    async fn push_remote(
        &self,
        r: &RemoteStep<'_>,
        lines: &mut StepLog,
    ) -> anyhow::Result<Result<(), Ran>> {
        if let Err(why) = self.push_candidate(r.dir, r.sha, &r.branch).await? {
            let why = format!(
                "could not start: the candidate branch `{}` was not pushed: {why}",
                r.branch
            );
            lines.push(format!("lockstep: {why}"));
            return Ok(Err(Ran::not_started(why)));
        }
        Ok(Ok(()))
    }

    /// Journals what happened on the runner, for a delivery's step (the others have no
    /// journal: their local log says it).
    async fn note(&self, r: &RemoteStep<'_>, detail: &str) -> anyhow::Result<()> {
        if let Purpose::Delivery { id, .. } = r.purpose {
            self.store
                .journal(id, r.phase, r.repo.name.as_str(), Event::OnRunner, detail)
                .await?;
        }
        Ok(())
    }

    /// Resolves when the step is to stop: its `stop` turned true or, for a delivery's step,
    /// a cancel of the delivery was asked for. Never, for a step that has neither.
    fn stopped(&self, r: &RemoteStep<'_>) -> impl std::future::Future<Output = ()> + use<> {
        let store = self.store.clone();
        let delivery = match r.purpose {
            Purpose::Delivery { id, .. } => Some(id),
            _ => None,
        };
        let stop = r.stop.clone();
        async move {
            let cancel = async {
                let Some(id) = delivery else {
                    return std::future::pending().await;
                };
                loop {
                    tokio::time::sleep(CANCEL_POLL).await;
                    if store.cancel_requested(id).await.unwrap_or(false) {
                        return;
                    }
                }
            };
            match stop {
                Some(mut stop) => tokio::select! {
                    Ok(_) = stop.wait_for(|s| *s) => {}
                    () = cancel => {}
                },
                None => cancel.await,
            }
        }
    }

    /// Pushes commit `sha` of the checkout in `dir` to its repository as `branch` (the bot's
    /// push, through the server's hooks); `Err` with the server's reason when refused.
    async fn push_candidate(
        &self,
        dir: &Path,
        sha: &str,
        branch: &str,
    ) -> anyhow::Result<Result<(), String>> {
        let git = self.bot_git(dir);
        let spec = format!("{sha}:refs/heads/{branch}");
        let (ok, out, err) = blocking(move || {
            git.try_run(&["push", "--porcelain", "--quiet", "--force", "origin", &spec])
        })
        .await?;
        Ok(if ok {
            Ok(())
        } else {
            Err(super::merge::push_error(&out, &err))
        })
    }

    /// Deletes `branch` from the repository the checkout in `dir` was cloned from, when it is
    /// there (best effort: a branch never pushed is no error, a refusal is logged).
    pub(super) async fn delete_candidate(&self, dir: &Path, repo: &str, branch: &str) {
        if !dir.join(".git").exists() {
            return;
        }
        let git = self.bot_git(dir);
        let target = format!(":refs/heads/{branch}");
        let check = format!("refs/heads/{branch}");
        let pushed = blocking({
            let git = git.clone();
            move || git.try_run(&["ls-remote", "--exit-code", "origin", &check])
        })
        .await;
        if !matches!(pushed, Ok((true, _, _))) {
            return;
        }
        match blocking(move || git.try_run(&["push", "--quiet", "origin", &target])).await {
            Ok((true, _, _)) => {}
            Ok((false, out, err)) => tracing::warn!(
                "cannot delete the candidate branch `{branch}` of {repo}: {}",
                super::merge::push_error(&out, &err)
            ),
            Err(e) => {
                tracing::warn!("cannot delete the candidate branch `{branch}` of {repo}: {e:#}")
            }
        }
    }
}

impl Engine {
    /// Stops on its CI the build a killed worker left running, recorded as `<runner> <build
    /// request> <sha>` (best effort: a runner no longer declared, or one that is not
    /// Buildbot, is left alone; what goes wrong is logged).
    pub(super) async fn stop_recorded_build(&self, recorded: &str, reason: &str) {
        let Some((name, request, _)) = delivery::parse_build(recorded) else {
            return;
        };
        let Some(runner) = self
            .config
            .runners
            .get(name)
            .filter(|r| r.kind == RunnerKind::Buildbot)
        else {
            return;
        };
        match crate::runner::Buildbot::new(name, runner) {
            Ok(bb) => bb.stop_request(request, reason).await,
            Err(e) => tracing::warn!("cannot stop build request {request} on `{name}`: {e:#}"),
        }
    }
}

/// The variables of an environment as the CI gets them: one JSON object of strings.
fn vars_json(vars: &BTreeMap<String, String>) -> String {
    serde_json::to_string(vars).unwrap_or_else(|_| "{}".into())
}

/// The local log of a step on a runner: where it ran and how it ended, written as it goes,
/// so that `lockstep logs` shows the build's page while the build runs.
struct StepLog {
    path: PathBuf,
    lines: Vec<String>,
}

impl StepLog {
    fn push(&mut self, line: String) {
        self.lines.push(line);
        let _ = std::fs::write(&self.path, self.lines.join("\n") + "\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ci_is_told_the_purpose_and_the_vars_as_json() {
        assert_eq!(Purpose::Autotest(5).as_str(), "autotest");
        assert_eq!(Purpose::Showroom("task-1".into()).as_str(), "showroom");
        let delivery = Purpose::Delivery {
            id: DeliveryId(3),
            step: 1,
            resumed: None,
        };
        assert_eq!(delivery.as_str(), "delivery");
        assert_eq!(delivery.describe(), "#3");
        let vars = BTreeMap::from([
            ("DB".to_string(), "db-\"staging\"".to_string()),
            (
                "LOCKSTEP_URL".to_string(),
                "https://task-1.show".to_string(),
            ),
        ]);
        assert_eq!(
            vars_json(&vars),
            r#"{"DB":"db-\"staging\"","LOCKSTEP_URL":"https://task-1.show"}"#
        );
        assert_eq!(vars_json(&BTreeMap::new()), "{}");
    }
}
