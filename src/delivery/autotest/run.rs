//! One autotest: the branch's head cloned into a workspace of its own, rebased onto its
//! upstream as a delivery would rebase it (a conflict is a failure naming the files), then
//! the repository's `build` and `test` steps, each a real process under its supervisor, with
//! `LOCKSTEP_PURPOSE=autotest`, or a build on the step's runner (`lockstep_purpose =
//! autotest`, the candidate pushed as `<prefix>autotest-<id>` and deleted at the end).
//! Nothing is deployed or merged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use super::super::engine::Engine;
use super::super::rebase::{Rebased, conflicts, rebase_onto};
use super::super::remote::{Purpose, RemoteStep};
use super::super::steps::{self, StepOutcome, StepSpec};
use crate::config::Repo;
use crate::domain::{AutotestState, Phase};
use crate::runtime::blocking;
use crate::store::{AutotestEnd, AutotestRow};

/// At most this much of the steps' logs is kept in the store for an autotest.
const LOG_KEPT: usize = 64 * 1024;

/// How often a running autotest looks whether a newer push superseded it.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// The variable that marks an autotest's steps, so that a restart finds what a killed worker
/// left running and stops nothing else.
pub(super) const MARKER_VAR: &str = "LOCKSTEP_AUTOTEST";

/// How an autotest came out, before it is recorded.
struct Verdict {
    state: AutotestState,
    end: AutotestEnd,
}

impl Verdict {
    fn failed(step: &str, reason: String, log: String) -> Verdict {
        Verdict {
            state: AutotestState::Failed,
            end: AutotestEnd {
                step: step.into(),
                reason,
                log,
            },
        }
    }
}

/// Runs autotest `a` to its end and records it; a failure leaves a note on the task. Returns
/// the state recorded (`superseded` when a newer push replaced it meanwhile).
pub(super) async fn run(engine: &Engine, a: &AutotestRow) -> anyhow::Result<AutotestState> {
    let started = std::time::Instant::now();
    let work = work_dir(engine, a.id);
    super::status::report(engine, a, AutotestState::Running, "").await;
    let verdict = match test(engine, a, &work).await {
        Ok(v) => v,
        Err(e) => Verdict::failed("", format!("{e:#}"), String::new()),
    };
    let _ = std::fs::remove_dir_all(&work);
    let recorded = engine
        .store
        .finish_autotest(a.id, verdict.state, &verdict.end)
        .await?;
    let state = if recorded {
        verdict.state
    } else {
        engine
            .store
            .autotest_state(a.id)
            .await?
            .unwrap_or(AutotestState::Superseded)
    };
    engine.say(&format!(
        "autotest #{} {} {}: {state} ({:.1}s)",
        a.id,
        a.task,
        a.repo,
        started.elapsed().as_secs_f64()
    ));
    super::status::report(engine, a, state, &verdict.end.reason).await;
    if recorded && state == AutotestState::Failed {
        note_failure(engine, a, &verdict.end).await;
    }
    Ok(state)
}

/// The workspace of autotest `id`: its own, never a delivery's.
fn work_dir(engine: &Engine, id: i64) -> PathBuf {
    engine
        .config
        .state_dir()
        .join("autotests")
        .join(id.to_string())
}

/// What a killed worker left of autotest `a`: the build it may have forced on a runner
/// (stopped), the candidate branch it pushed for it (deleted, as its own end would have) and
/// its workspace (removed). Best effort.
pub(super) async fn clear_left(engine: &Engine, a: &AutotestRow) {
    // `<step> <runner> <build request> <sha>`: the build its last step on a runner forced.
    if let Some((_, build)) = a.runner_build.as_deref().and_then(|b| b.split_once(' ')) {
        engine
            .stop_recorded_build(build, "its autotest was interrupted")
            .await;
    }
    let work = work_dir(engine, a.id);
    let dir = work.join(a.repo.as_str());
    if engine
        .config
        .repo(a.repo.as_str())
        .is_some_and(|r| r.steps.on_runners())
    {
        let branch = engine.config.autotest_candidate(a.id);
        engine
            .delete_candidate(&dir, a.repo.as_str(), &branch)
            .await;
    }
    if let Err(e) = std::fs::remove_dir_all(&work)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove `{}`: {e}", work.display());
    }
}

/// Clones, rebases and runs the steps; an error is a failure of the autotest itself.
async fn test(engine: &Engine, a: &AutotestRow, work: &Path) -> anyhow::Result<Verdict> {
    let Some(repo) = engine.config.repo(a.repo.as_str()).cloned() else {
        return Ok(Verdict::failed(
            "",
            format!("repository `{}` is no longer in lockstep.toml", a.repo),
            String::new(),
        ));
    };
    if work.exists() {
        std::fs::remove_dir_all(work)
            .with_context(|| format!("cannot clear `{}`", work.display()))?;
    }
    std::fs::create_dir_all(work).with_context(|| format!("cannot create `{}`", work.display()))?;
    let dir = match engine.clone_into(work, &repo).await? {
        Ok(dir) => dir,
        Err(why) => return Ok(Verdict::failed("rebase", why, String::new())),
    };
    let git = engine.bot_git(&dir);
    let Some(base) = git.resolve(&format!("refs/remotes/origin/{}", repo.upstream))? else {
        let why = format!(
            "`{}` has no branch `{}` to rebase onto; fix `upstream` in lockstep.toml",
            repo.name, repo.upstream
        );
        return Ok(Verdict::failed("rebase", why, String::new()));
    };
    let (g, sha, b) = (git.clone(), a.sha.clone(), base.clone());
    let rebased = blocking(move || -> anyhow::Result<Option<Rebased>> {
        if !g.succeeds(&["cat-file", "-e", &format!("{sha}^{{commit}}")])? {
            return Ok(None);
        }
        rebase_onto(&g, &sha, &b).map(Some)
    })
    .await?;
    match rebased {
        None => {
            let why = format!("commit {} of `{}` is gone; push again", a.sha, a.branch);
            return Ok(Verdict::failed("rebase", why, String::new()));
        }
        Some(Rebased::Conflicts(files)) => {
            let why = conflicts(&a.branch, &repo.upstream, &files);
            return Ok(Verdict::failed("rebase", why, String::new()));
        }
        Some(Rebased::Clean) => {}
    }
    let tested = git
        .resolve("HEAD")?
        .context("the rebased checkout has no HEAD")?;
    engine.store.autotest_rebased(a.id, &base, &tested).await?;
    let (stop_tx, stop) = watch::channel(false);
    let _watch = Watch(tokio::spawn(watch_superseded(
        engine.clone(),
        a.id,
        stop_tx,
    )));
    let checkout = Tested {
        repo: &repo,
        dir: &dir,
        base: &base,
        sha: &tested,
    };
    let verdict = steps_of(engine, a, &checkout, stop).await;
    if repo.steps.on_runners() {
        let branch = engine.config.autotest_candidate(a.id);
        engine
            .delete_candidate(&dir, repo.name.as_str(), &branch)
            .await;
    }
    verdict
}

/// The checkout an autotest tests: its repository, folder, base and rebased commit.
struct Tested<'a> {
    repo: &'a Repo,
    dir: &'a Path,
    base: &'a str,
    sha: &'a str,
}

/// Runs the `build` and `test` steps of the rebased checkout, here or on their runner; the
/// first that does not pass ends the autotest.
async fn steps_of(
    engine: &Engine,
    a: &AutotestRow,
    c: &Tested<'_>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Verdict> {
    let mut log = String::new();
    for phase in [Phase::Build, Phase::Test] {
        let Some(command) = c.repo.step(phase) else {
            continue;
        };
        let path = super::step_log(&engine.config, a.id, &a.repo, phase);
        let (outcome, why) = match command.runner() {
            Some(on) => {
                let config = &engine.config;
                let step = RemoteStep {
                    purpose: Purpose::Autotest(a.id),
                    task: &a.task,
                    repo: c.repo,
                    dir: c.dir,
                    sha: c.sha,
                    phase,
                    env: &config.delivery.environment,
                    vars: config.environment_vars(),
                    branch: config.autotest_candidate(a.id),
                    log: path.clone(),
                    stop: Some(stop.clone()),
                };
                let ran = engine.run_remote(on, step).await?;
                (ran.outcome, format!("`{phase}` {}", ran.why))
            }
            None => {
                let spec = StepSpec {
                    argv: command.argv(),
                    cwd: c.dir.to_path_buf(),
                    env: step_env(engine, a, c, phase),
                    pass_env: engine.config.delivery.pass_env.clone(),
                    timeout: engine.config.delivery.step_timeout,
                    log: path.clone(),
                    supervisor: steps::this_executable(),
                };
                let outcome = match steps::start(&spec)? {
                    Ok(running) => {
                        engine.store.autotest_pid(a.id, running.pid()).await?;
                        let mut stop = stop.clone();
                        running.wait_or_stop(&mut stop).await?
                    }
                    Err(outcome) => outcome,
                };
                let mut why = format!("`{phase}` {}", outcome.describe());
                let tail = steps::tail(&path);
                if let Some(last) = tail.lines().rev().find(|l| !l.trim().is_empty()) {
                    why.push_str(&format!(": {}", crate::text::clip(last.trim(), 200)));
                }
                (outcome, why)
            }
        };
        let text = steps::last_of_log(&path).unwrap_or_default();
        log.push_str(&format!("== {phase} ({}) ==\n{text}\n", outcome.describe()));
        if outcome == StepOutcome::Passed {
            continue;
        }
        let log = keep_end(log);
        if outcome == StepOutcome::Stopped {
            return Ok(Verdict {
                state: AutotestState::Superseded,
                end: AutotestEnd {
                    step: phase.as_str().into(),
                    reason: "a newer push replaced it".into(),
                    log,
                },
            });
        }
        return Ok(Verdict::failed(phase.as_str(), why, log));
    }
    Ok(Verdict {
        state: AutotestState::Passed,
        end: AutotestEnd {
            log: keep_end(log),
            ..AutotestEnd::default()
        },
    })
}

/// The variables an autotest's step gets: the delivery's, but for a tested head and with
/// `LOCKSTEP_PURPOSE=autotest` (no `LOCKSTEP_DELIVERY`: there is none).
fn step_env(
    engine: &Engine,
    a: &AutotestRow,
    c: &Tested<'_>,
    phase: Phase,
) -> Vec<(String, String)> {
    let (repo, dir) = (c.repo, c.dir);
    let mut env: Vec<(String, String)> = engine.config.environment_vars().into_iter().collect();
    env.extend([
        ("LOCKSTEP_TASK".into(), a.task.to_string()),
        ("LOCKSTEP_REPO".into(), a.repo.to_string()),
        ("LOCKSTEP_BRANCH".into(), a.branch.clone()),
        ("LOCKSTEP_SHA".into(), c.sha.to_string()),
        ("LOCKSTEP_HEAD_SHA".into(), a.sha.clone()),
        ("LOCKSTEP_BASE_SHA".into(), c.base.to_string()),
        (
            "LOCKSTEP_ENV".into(),
            engine.config.delivery.environment.clone(),
        ),
        ("LOCKSTEP_STEP".into(), phase.as_str().into()),
        ("LOCKSTEP_PURPOSE".into(), "autotest".into()),
        (MARKER_VAR.into(), a.id.to_string()),
    ]);
    let work = dir.parent().unwrap_or(dir);
    let home = work.join("@home").join(repo.name.as_str());
    if let Err(e) = std::fs::create_dir_all(&home) {
        tracing::warn!("cannot create `{}`: {e}", home.display());
    }
    engine.confined_env(repo, &home, &mut env);
    env
}

/// Raises `stop` as soon as autotest `id` is no longer running (a newer push superseded it).
async fn watch_superseded(engine: Engine, id: i64, stop: watch::Sender<bool>) {
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        match engine.store.autotest_state(id).await {
            Ok(Some(AutotestState::Running)) => {}
            Ok(_) => {
                let _ = stop.send(true);
                return;
            }
            Err(e) => tracing::warn!("cannot read the state of autotest #{id}: {e:#}"),
        }
    }
}

/// A watch aborted when dropped.
struct Watch(tokio::task::JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The end of a log, at most [`LOG_KEPT`] bytes, cut at a character.
fn keep_end(log: String) -> String {
    if log.len() <= LOG_KEPT {
        return log;
    }
    let mut start = log.len() - LOG_KEPT;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    format!(
        "(… the first {start} bytes are left out)\n{}",
        &log[start..]
    )
}

/// Leaves a note on the task: which repository, which step, why, and the log's end. The task
/// stays where it is (the tracker's notes go with a status: its own); a task awaiting its
/// autotests gets it from the poller, which moves it back.
async fn note_failure(engine: &Engine, a: &AutotestRow, end: &AutotestEnd) {
    let text = failure_note(a, end);
    let tracker = &engine.tracker;
    let status = match tracker.task(&a.task).await {
        // The poller of `[autotest] statuses` sends such a task back with this very note.
        Ok(Some(t)) if engine.config.autotest.statuses.contains(&t.status) => return,
        Ok(Some(t)) => t.status,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("autotest #{}: cannot read task {}: {e}", a.id, a.task);
            return;
        }
    };
    if let Err(e) = tracker
        .move_to(&a.task, &status, &crate::text::note(&text))
        .await
    {
        tracing::warn!(
            "autotest #{}: cannot note the failure on {}: {e}",
            a.id,
            a.task
        );
    }
}

/// The note a failed autotest leaves on its task.
pub(super) fn failure_note(a: &AutotestRow, end: &AutotestEnd) -> String {
    let step = if end.step.is_empty() {
        "setup"
    } else {
        end.step.as_str()
    };
    let tail: Vec<&str> = end.log.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    let mut note = format!(
        "autotest #{} failed: `{}` of `{}` ({}) at `{step}`: {}",
        a.id,
        a.branch,
        a.repo,
        crate::git::short(&a.sha),
        end.reason
    );
    if !tail.is_empty() {
        note.push_str(&format!("\n\n{}", tail.join("\n")));
    }
    note
}
