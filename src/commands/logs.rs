//! `lockstep logs`: the output of a delivery's steps, of an autotest's or of a showroom's,
//! escaped for a terminal unless `--raw` (or standard output is a file).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{ago, runtime, say_line, store_of};
use crate::config::{Config, Located, RunnerKind};
use crate::delivery::autotest;
use crate::delivery::showroom::Label;
use crate::domain::{AutotestState, DeliveryId, TaskKey};
use crate::exit::Exit;
use crate::runner::Buildbot;
use crate::store::{AutotestRow, Store};

/// Whose steps' logs `lockstep logs` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogsOf {
    /// `lockstep logs ID`.
    Delivery(DeliveryId),
    /// `lockstep logs --autotest ID`.
    Autotest(i64),
    /// `lockstep logs --showroom TASK`.
    Showroom(TaskKey),
}

/// Which steps to print: `--repo`, `--step`, `--raw`.
#[derive(Debug, Clone, Copy)]
pub struct LogFilter<'a> {
    pub repo: Option<&'a str>,
    pub step: Option<&'a str>,
    pub raw: bool,
}

impl LogFilter<'_> {
    fn keeps(&self, repo: &str, step: &str) -> bool {
        self.repo.is_none_or(|r| r == repo) && self.step.is_none_or(|s| s == step)
    }
}

/// `lockstep logs ID | --autotest ID | --showroom TASK`.
pub fn logs(at: &Located, of: &LogsOf, filter: LogFilter<'_>) -> anyhow::Result<Exit> {
    let filter = LogFilter {
        raw: filter.raw || stdout_is_a_file(),
        ..filter
    };
    runtime()?.block_on(async move {
        let (config, store) = store_of(at).await?;
        match of {
            LogsOf::Delivery(id) => delivery(&config, &store, *id, filter).await,
            LogsOf::Autotest(id) => autotest(&config, &store, *id, filter).await,
            LogsOf::Showroom(task) => showroom(&config, &store, task, filter).await,
        }
    })
}

/// Each step's local log of delivery `id`, then, for a step on a Buildbot runner, the end of
/// its build's logs fetched from the master.
async fn delivery(
    config: &Config,
    store: &Store,
    id: DeliveryId,
    filter: LogFilter<'_>,
) -> anyhow::Result<Exit> {
    store
        .delivery(id)
        .await?
        .with_context(|| format!("no delivery #{id}; see `lockstep queue`"))?;
    let steps: Vec<_> = store
        .steps(id)
        .await?
        .into_iter()
        .filter(|s| filter.keeps(s.repo.as_str(), s.step.as_str()))
        .collect();
    if steps.is_empty() {
        say!("no step logs for #{id} with that filter");
    }
    for s in steps {
        say!(
            "==> {} {}{} ({}, exit {}) <==",
            s.repo,
            s.step,
            stage_of_log(&s.log_path, s.repo.as_str(), s.step.as_str())
                .map_or(String::new(), |stage| format!(" {stage}")),
            s.outcome,
            s.exit_code.map_or("-".into(), |c| c.to_string())
        );
        // The file when the step ran on this host, else the copy another replica kept in the
        // store.
        if let Err(e) = copy_file(Path::new(&s.log_path), filter.raw)? {
            match store.step_log(s.id).await? {
                Some(text) => copy_text(&text, filter.raw)?,
                None => say!("(log unreadable: {e})"),
            }
        }
        if let Some(build) = &s.runner_build {
            external_tail(config, build, filter.raw).await?;
        }
    }
    Ok(Exit::Success)
}

/// One step of an autotest whose log there is to print.
struct AutotestStep {
    step: &'static str,
    path: PathBuf,
    /// The build of a CI runner the step ran as (`<runner> <build request> <sha>`), whose
    /// end is fetched after the local log.
    runner_build: Option<String>,
}

/// Each step's log of autotest `id`: the files on the host that ran it, else the end of
/// them the store keeps.
async fn autotest(
    config: &Config,
    store: &Store,
    id: i64,
    filter: LogFilter<'_>,
) -> anyhow::Result<Exit> {
    let Some(a) = store.autotest(id).await? else {
        anyhow::bail!("there is no autotest #{id}; `lockstep autotests` lists them");
    };
    say!("{}", autotest_heading(&a));
    if filter.repo.is_some_and(|r| a.repo != r) {
        say!(
            "autotest #{id} is of {}: no step log of that repository",
            a.repo
        );
        return Ok(Exit::Success);
    }
    let steps: Vec<AutotestStep> = autotest::STEPS
        .into_iter()
        .map(|phase| AutotestStep {
            step: phase.as_str(),
            path: autotest::step_log(config, a.id, &a.repo, phase),
            runner_build: runner_build_of(&a, phase.as_str()),
        })
        .filter(|s| s.path.exists())
        .collect();
    if steps.is_empty() {
        return autotest_kept(&a, filter);
    }
    let last = steps.len() - 1;
    let mut shown = 0;
    for (i, s) in steps.iter().enumerate() {
        // The steps run one after the other and stop at the first that does not pass: each
        // but the last passed, and the last is where the autotest stands.
        let state = if i < last { "passed" } else { a.state.as_str() };
        if !filter.keeps(a.repo.as_str(), s.step) {
            continue;
        }
        shown += 1;
        say!("==> {} {} (autotest #{id}, {state}) <==", a.repo, s.step);
        if let Err(e) = copy_file(&s.path, filter.raw)? {
            say!("(log unreadable: {e})");
        }
        if let Some(build) = &s.runner_build {
            external_tail(config, build, filter.raw).await?;
        }
    }
    if shown == 0 {
        say!("no step logs for autotest #{id} with that filter");
    }
    Ok(Exit::Success)
}

/// The build of a runner that step `step` of autotest `a` ran as, when it is the one the
/// autotest recorded (its last step on a runner): `<runner> <build request> <sha>`.
fn runner_build_of(a: &AutotestRow, step: &str) -> Option<String> {
    let (of, build) = a.runner_build.as_deref()?.split_once(' ')?;
    (of == step).then(|| build.to_string())
}

/// An autotest in one line: what was tested and where it stands.
fn autotest_heading(a: &AutotestRow) -> String {
    let mut line = format!(
        "autotest #{} of `{}` in {} ({}): {}",
        a.id,
        a.branch,
        a.repo,
        crate::git::short(&a.sha),
        a.state
    );
    if !a.step.is_empty() {
        line.push_str(&format!(" at `{}`", a.step));
    }
    if !a.reason.is_empty() {
        line.push_str(&format!(": {}", a.reason));
    }
    line
}

/// An autotest whose step logs are not on this host (another replica ran it, or the state
/// folder was cleared): the end of them the store keeps, when its steps ran.
fn autotest_kept(a: &AutotestRow, filter: LogFilter<'_>) -> anyhow::Result<Exit> {
    if a.log.is_empty() {
        let ran = autotest::STEPS.iter().any(|p| a.step == p.as_str());
        match a.state {
            AutotestState::Queued => say!("no step has run yet: it waits for a slot"),
            AutotestState::Running => say!("no step has written a log yet"),
            _ if !ran => say!("no step ran"),
            _ => say!("no step log on this host, and none kept in the store"),
        }
        return Ok(Exit::Success);
    }
    say!("(its step logs are not on this host: the end of them, as the store keeps it)");
    copy_text(&a.log, filter.raw)?;
    Ok(Exit::Success)
}

/// The steps a showroom writes logs of, in the order they run.
const SHOWROOM_STEPS: [&str; 3] = ["build", "deploy", "teardown"];

/// The logs of the showroom of `task`'s last deploy (build and deploy), and of the teardown
/// that ran since, if any: the files written since it was last brought up, in the order
/// they were.
async fn showroom(
    config: &Config,
    store: &Store,
    task: &TaskKey,
    filter: LogFilter<'_>,
) -> anyhow::Result<Exit> {
    let Some(row) = store.showroom(task.as_str()).await? else {
        anyhow::bail!(
            "`{}` has no showroom; `lockstep showrooms` lists them, `lockstep showroom {}` \
             brings one up",
            crate::text::escape(task.as_str()),
            crate::text::shell_word(task.as_str())
        );
    };
    let mut heading = format!("showroom of {}: {} at {}", row.task, row.state, row.url);
    if !row.reason.is_empty() {
        heading.push_str(&format!(" ({})", row.reason));
    }
    say!("{heading}");
    let dir = crate::delivery::showroom::logs_dir(config, &Label::of(task)?);
    let since = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(row.created_at).unwrap_or(0));
    let mut logs = showroom_logs(&dir, since);
    logs.retain(|l| filter.keeps(&l.repo, &l.step));
    if logs.is_empty() {
        say!(
            "no step log of this showroom on this host{}",
            if filter.repo.is_some() || filter.step.is_some() {
                " with that filter"
            } else {
                " (its steps ran elsewhere, or none ran yet)"
            }
        );
    }
    for l in logs {
        let at = chrono::DateTime::<chrono::Utc>::from(l.written).timestamp_millis();
        say!(
            "==> {} {} (showroom {}, written {}) <==",
            l.repo,
            l.step,
            row.task,
            ago(Some(at))
        );
        if let Err(e) = copy_file(&l.path, filter.raw)? {
            say!("(log unreadable: {e})");
        }
    }
    Ok(Exit::Success)
}

/// One log file of a showroom.
#[derive(Debug)]
struct ShowroomLog {
    repo: String,
    step: String,
    path: PathBuf,
    written: std::time::SystemTime,
}

/// How much earlier than the clock a file's modification time may read: the kernel stamps
/// files with a coarse clock, a tick behind the one `now` reads.
const MTIME_SLACK: std::time::Duration = std::time::Duration::from_millis(50);

/// The logs `<repo>.<step>.log` in `dir` written at or after `since`, oldest first.
fn showroom_logs(dir: &Path, since: std::time::SystemTime) -> Vec<ShowroomLog> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let since = since.checked_sub(MTIME_SLACK).unwrap_or(since);
    let mut logs: Vec<ShowroomLog> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let (repo, step) = name.strip_suffix(".log")?.rsplit_once('.')?;
            if !SHOWROOM_STEPS.contains(&step) {
                return None;
            }
            let written = e.metadata().ok()?.modified().ok()?;
            (written >= since).then(|| ShowroomLog {
                repo: repo.to_string(),
                step: step.to_string(),
                path: e.path(),
                written,
            })
        })
        .collect();
    logs.sort_by(|a, b| a.written.cmp(&b.written).then(a.path.cmp(&b.path)));
    logs
}

/// Copies the log at `path` to standard output, escaped unless `raw`; `Err` inside when it
/// cannot be opened (a write that fails is the outer error).
fn copy_file(path: &Path, raw: bool) -> std::io::Result<Result<(), std::io::Error>> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => return Ok(Err(e)),
    };
    let mut out = std::io::stdout().lock();
    if raw {
        std::io::copy(&mut std::io::BufReader::new(file), &mut out)?;
    } else {
        crate::text::copy_escaped(file, &mut out)?;
    }
    Ok(Ok(()))
}

/// Writes a log kept as text to standard output, escaped unless `raw`.
fn copy_text(text: &str, raw: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if raw {
        std::io::Write::write_all(&mut out, text.as_bytes())
    } else {
        crate::text::copy_escaped(text.as_bytes(), &mut out)
    }
}

/// The longest `lockstep logs` waits for a CI's log tail of one step.
const EXTERNAL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// After the local log of a step that ran on a Buildbot runner (`build` is its recorded
/// `<runner> <build request> <sha>`): the end of each step's log of its build, fetched from
/// the master, saying where it came from. A master out of reach is said, not an error.
async fn external_tail(config: &Config, build: &str, raw: bool) -> anyhow::Result<()> {
    let mut parts = build.split(' ');
    let (Some(name), Some(Ok(request))) = (parts.next(), parts.next().map(str::parse::<i64>))
    else {
        return Ok(());
    };
    let Some(runner) = config
        .runners
        .get(name)
        .filter(|r| r.kind == RunnerKind::Buildbot)
    else {
        return Ok(());
    };
    let bb = match Buildbot::new(name, runner) {
        Ok(bb) => bb,
        Err(e) => {
            say!("--- the build's log on {name} cannot be read: {e:#} ---");
            return Ok(());
        }
    };
    let fetched = tokio::time::timeout(EXTERNAL_WAIT, bb.log_tails(request)).await;
    let put = |text: &str| copy_text(text, raw);
    match fetched {
        Ok(Ok(Some((b, steps)))) => {
            put(&format!(
                "--- from {}: build {}, the end of its steps' logs ---\n",
                bb.describe(),
                b.url
            ))?;
            for step in steps {
                put(&format!(
                    "--- step `{}` ({}) ---\n",
                    step.name,
                    step.result.as_deref().unwrap_or("running")
                ))?;
                put(&step.tail)?;
                if !step.tail.is_empty() && !step.tail.ends_with('\n') {
                    put("\n")?;
                }
            }
        }
        Ok(Ok(None)) => put(&format!(
            "--- from {}: no worker took build request {request} yet ---\n",
            bb.describe()
        ))?,
        Ok(Err(e)) => put(&format!(
            "--- the build's log on {} is out of reach: {e} ---\n",
            bb.describe()
        ))?,
        Err(_) => put(&format!(
            "--- the build's log on {} is out of reach: no answer within {} ---\n",
            bb.describe(),
            crate::config::humanize(EXTERNAL_WAIT)
        ))?,
    }
    Ok(())
}

/// The stage a staged delivery's step ran for, as its log's name says it
/// (`api.deploy.staging.log`); `None` for a step of one stage (`api.deploy.log`).
fn stage_of_log<'a>(path: &'a str, repo: &str, step: &str) -> Option<&'a str> {
    let name = Path::new(path).file_name()?.to_str()?;
    let stage = name
        .strip_prefix(repo)?
        .strip_prefix('.')?
        .strip_prefix(step)?
        .strip_prefix('.')?
        .strip_suffix(".log")?;
    (!stage.is_empty()).then_some(stage)
}

/// Whether standard output is a regular file (`lockstep logs 1 > build.log`): the log is
/// copied as it is, not escaped for a terminal.
fn stdout_is_a_file() -> bool {
    std::fs::metadata("/proc/self/fd/1").is_ok_and(|m| m.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_logs_name_says_its_stage() {
        assert_eq!(
            stage_of_log("/x/api.deploy.staging.log", "api", "deploy"),
            Some("staging")
        );
        assert_eq!(stage_of_log("/x/api.deploy.log", "api", "deploy"), None);
    }

    #[test]
    fn a_showrooms_logs_are_those_of_its_last_life_in_the_order_written() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str| {
            std::fs::write(dir.path().join(name), name).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        write("web.teardown.log");
        std::thread::sleep(std::time::Duration::from_millis(200));
        let since = std::time::SystemTime::now();
        write("api.build.log");
        write("api.deploy.log");
        write("my.repo.teardown.log");
        write("notes.txt");
        write("api.other.log");
        let logs: Vec<(String, String)> = showroom_logs(dir.path(), since)
            .into_iter()
            .map(|l| (l.repo, l.step))
            .collect();
        let want = [("api", "build"), ("api", "deploy"), ("my.repo", "teardown")];
        assert_eq!(
            logs,
            want.map(|(r, s)| (r.to_string(), s.to_string())).to_vec()
        );
        assert!(showroom_logs(&dir.path().join("gone"), since).is_empty());
    }
}
