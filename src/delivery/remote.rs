//! Steps that run on a `[runners.*]` CI instead of this host: the candidate pushed as its
//! branch for the CI to fetch, the build forced and followed, its result made the step's,
//! and the candidate branches deleted when the delivery lands, fails or is discarded.

use std::time::Duration;

use tokio::sync::watch;

use super::engine::{Checkout, Engine, repo_url};
use super::steps::StepOutcome;
use super::stop::{Failure, Stop};
use crate::config::{Runner, RunnerKind, RunnerStep};
use crate::domain::{DeliveryId, Event, Phase, StepState};
use crate::runner::status::{self, Verdict};
use crate::runner::{Buildbot, Job, Outcome};
use crate::runtime::blocking;
use crate::store::DeliveryRow;

/// At most this much of a failing build's last line goes into the one-line reason.
const WHY_BYTES: usize = 200;

/// How often a step on a runner looks for a cancel of its delivery.
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// How often a step on a status runner reads the statuses of its sha.
const STATUS_POLL: Duration = Duration::from_millis(300);

/// How often it reads GitHub's statuses and check runs of the sha (two requests a time,
/// well within GitHub's hourly limit for a window of steps).
const GITHUB_POLL: Duration = Duration::from_secs(3);

impl Engine {
    /// Runs a step of `phase` for a checkout on its runner, journaled like a local step, with
    /// a local log that says where it ran; `stop` stops the build on the CI.
    pub(super) async fn exec_on_runner(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        step: &RunnerStep,
        c: &Checkout,
        stop: Option<watch::Receiver<bool>>,
    ) -> Result<(), Stop> {
        let repo = &c.row.repo;
        let log = self.log_path(d.id, repo, phase);
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(anyhow::Error::from)?;
        }
        // A step a killed worker left waiting for a build of this very candidate follows
        // that build: the CI builds each candidate once.
        let resumed = match self.store.last_runner_build(d.id, repo, phase).await? {
            Some((StepState::Interrupted, build)) => parse_build(&build)
                .filter(|(runner, _, sha)| *runner == step.runner && *sha == c.row.rebased_sha)
                .map(|(_, request, _)| request),
            _ => None,
        };
        self.store
            .journal(d.id, phase, repo.as_str(), Event::StepStarted, "")
            .await?;
        self.progress.step(d.id, repo, phase, StepState::Running);
        let step_id = self
            .store
            .step_started(d.id, repo, phase, &log.to_string_lossy())
            .await?;
        let started = std::time::Instant::now();
        let mut lines = StepLog {
            path: log.clone(),
            lines: Vec::new(),
        };
        let (outcome, why, tail) = self
            .on_runner(d, phase, step, c, stop, (step_id, resumed), &mut lines)
            .await?;
        if self.store.backend() == crate::store::Backend::Postgres {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            self.store.set_step_log(step_id, &text).await?;
        }
        self.store
            .step_finished(step_id, outcome.exit_code(), outcome.state())
            .await?;
        self.store
            .journal(
                d.id,
                phase,
                repo.as_str(),
                Event::StepFinished,
                outcome.state().as_str(),
            )
            .await?;
        self.progress.step(d.id, repo, phase, outcome.state());
        self.say(&format!(
            "#{} {}: {phase:<8} {:<12} {} on {} ({:.1}s)",
            d.id,
            d.task,
            repo,
            outcome.state(),
            step.runner,
            started.elapsed().as_secs_f64()
        ));
        if outcome == StepOutcome::Passed {
            return Ok(());
        }
        let mut failure = Failure::new(phase, Some(repo), format!("`{phase}` {why}"));
        failure.log_tail = tail;
        Err(failure.into())
    }

    /// Pushes the candidate, forces the build and follows it (or follows the build request
    /// `resumed`, forced before a restart): the step's outcome, the reason it did not pass,
    /// and the end of the failing step's log. `lines` gets the local log.
    #[allow(clippy::too_many_arguments)]
    async fn on_runner(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        step: &RunnerStep,
        c: &Checkout,
        stop: Option<watch::Receiver<bool>>,
        (step_id, resumed): (i64, Option<i64>),
        lines: &mut StepLog,
    ) -> Result<(StepOutcome, String, String), Stop> {
        let Some(config) = self.config.runners.get(&step.runner) else {
            let why = format!("runs on `{}`, which is not declared", step.runner);
            return Ok((StepOutcome::NotStarted(why.clone()), why, String::new()));
        };
        if config.kind == RunnerKind::Status {
            return self
                .on_status_runner(d, phase, step, config, c, stop, lines)
                .await;
        }
        let bb = match Buildbot::new(&step.runner, config) {
            Ok(bb) => bb,
            Err(e) => {
                let why = format!("could not start: {e:#}");
                lines.push(format!("lockstep: {why}"));
                return Ok((StepOutcome::NotStarted(why.clone()), why, String::new()));
            }
        };
        let branch = self.config.candidate_branch(d.id);
        let job = Job {
            builder: step.builder.clone().unwrap_or_default(),
            repository: c
                .repo
                .ci_url
                .clone()
                .unwrap_or_else(|| repo_url(&self.config, &c.repo)),
            branch: branch.clone(),
            revision: c.row.rebased_sha.clone(),
            reason: format!("lockstep #{} {}: {phase} of {}", d.id, d.task, c.row.repo),
            task: d.task.to_string(),
            delivery: d.id.to_string(),
            phase: phase.as_str().into(),
            repo: c.row.repo.to_string(),
        };
        lines.push(format!(
            "lockstep: {phase} runs on {}, builder `{}`, of {} at {}",
            bb.describe(),
            job.builder,
            branch,
            job.revision
        ));
        let request = match resumed {
            Some(request) => {
                lines.push(format!(
                    "lockstep: follows build request {request}, forced before a restart"
                ));
                request
            }
            None => {
                if let Err(why) = self.push_candidate(c, &branch).await? {
                    let why = format!(
                        "could not start: the candidate branch `{branch}` was not pushed: {why}"
                    );
                    lines.push(format!("lockstep: {why}"));
                    return Ok((StepOutcome::NotStarted(why.clone()), why, String::new()));
                }
                match bb.force(&job).await {
                    Ok(r) => r,
                    Err(e) => {
                        let why = format!("could not start on {}: {e}", bb.describe());
                        lines.push(format!("lockstep: {why}"));
                        return Ok((StepOutcome::NotStarted(why.clone()), why, String::new()));
                    }
                }
            }
        };
        self.store
            .step_runner_build(
                step_id,
                &format!("{} {request} {}", step.runner, job.revision),
            )
            .await?;
        let request_url = bb.request_url(request);
        lines.push(format!("lockstep: build request {request}: {request_url}"));
        self.store
            .journal(
                d.id,
                phase,
                c.row.repo.as_str(),
                Event::OnRunner,
                &format!(
                    "{}: build request {request_url}{}",
                    step.runner,
                    if resumed.is_some() {
                        " (followed again after a restart)"
                    } else {
                        ""
                    }
                ),
            )
            .await?;
        let wait = bb.wait.min(self.config.delivery.step_timeout);
        // Each build the request gets is journaled as soon as the master names it.
        let (built_tx, mut built_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let journal = {
            let (store, id, repo, runner) = (
                self.store.clone(),
                d.id,
                c.row.repo.to_string(),
                step.runner.clone(),
            );
            tokio::spawn(async move {
                let mut urls = Vec::new();
                while let Some(url) = built_rx.recv().await {
                    let detail = format!("{runner}: build {url}");
                    if let Err(e) = store
                        .journal(id, phase, &repo, Event::OnRunner, &detail)
                        .await
                    {
                        tracing::warn!("cannot journal the build {url}: {e:#}");
                    }
                    urls.push(url);
                }
                urls
            })
        };
        let outcome = bb
            .follow(
                request,
                &job.revision,
                wait,
                self.stopped(d.id, stop),
                |b| {
                    let _ = built_tx.send(b.url.clone());
                },
            )
            .await;
        drop(built_tx);
        for url in journal.await.unwrap_or_default() {
            lines.push(format!("lockstep: build {url}"));
        }
        let on = format!("on runner `{}`", step.runner);
        Ok(judge(outcome, &on, &request_url, lines))
    }

    /// Pushes the candidate (which triggers the CI) and waits until every context the step
    /// lists is `success` on its sha, one is `failure` or `error`, no status at all arrived
    /// within `start_within`, or `wait` passed.
    #[allow(clippy::too_many_arguments)]
    async fn on_status_runner(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        step: &RunnerStep,
        runner: &Runner,
        c: &Checkout,
        stop: Option<watch::Receiver<bool>>,
        lines: &mut StepLog,
    ) -> Result<(StepOutcome, String, String), Stop> {
        let contexts = step.contexts.clone().unwrap_or_default();
        let branch = self.config.candidate_branch(d.id);
        let sha = c.row.rebased_sha.clone();
        let on = format!("on runner `{}`", step.runner);
        let listed = contexts
            .iter()
            .map(|c| format!("`{}`", crate::text::escape(c)))
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(format!(
            "lockstep: {phase} waits {on} for the statuses {listed} of {sha} (pushed as {branch})"
        ));
        if let Err(why) = self.push_candidate(c, &branch).await? {
            let why =
                format!("could not start: the candidate branch `{branch}` was not pushed: {why}");
            lines.push(format!("lockstep: {why}"));
            return Ok((StepOutcome::NotStarted(why.clone()), why, String::new()));
        }
        self.store
            .journal(
                d.id,
                phase,
                c.row.repo.as_str(),
                Event::OnRunner,
                &format!("{}: waits for {listed} on {sha}", step.runner),
            )
            .await?;
        // A repository on GitHub also has GitHub's statuses and check runs of the sha read.
        let github = match (&self.config.github, c.repo.github.as_deref()) {
            (Some(gh), Some(name)) => match (
                crate::github::GitHub::api_only(&self.config, gh),
                crate::github::GitHubRepo::parse(name),
            ) {
                (Ok(client), Some(name)) => {
                    lines.push(format!(
                        "lockstep: reads the statuses and check runs of {name}@{sha} on GitHub too"
                    ));
                    Some((client, name))
                }
                (Err(e), _) => {
                    let why = format!("could not start: cannot read GitHub's checks: {e:#}");
                    lines.push(format!("lockstep: {why}"));
                    return Ok((StepOutcome::NotStarted(why.clone()), why, String::new()));
                }
                (_, None) => None,
            },
            _ => None,
        };
        let mut on_github = Vec::new();
        let mut github_read: Option<std::time::Instant> = None;
        let mut github_error = String::new();
        let wait = runner.wait.min(self.config.delivery.step_timeout);
        let started = std::time::Instant::now();
        let stopped = self.stopped(d.id, stop);
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => {
                    let why = format!("was stopped {on}");
                    lines.push(format!("lockstep: {why}"));
                    return Ok((StepOutcome::Stopped, why, String::new()));
                }
                () = tokio::time::sleep(STATUS_POLL) => {}
            }
            if let Some((gh, name)) = &github
                && github_read.is_none_or(|t| t.elapsed() >= GITHUB_POLL)
            {
                github_read = Some(std::time::Instant::now());
                match gh.checks(name, &sha).await {
                    Ok(checks) => {
                        on_github = status::from_github(checks);
                        github_error.clear();
                    }
                    // Said once in the log; the statuses posted to lockstep still count.
                    Err(e) => {
                        let e = crate::text::escape(&format!("{e:#}")).to_string();
                        if e != github_error {
                            lines.push(format!("lockstep: {e}"));
                            github_error = e;
                        }
                    }
                }
            }
            let statuses = status::merge(self.store.commit_statuses(&sha).await?, &on_github);
            match status::judge(&contexts, &statuses) {
                Verdict::Passed => {
                    lines.push(format!("lockstep: every status is `success` on {sha}"));
                    return Ok((StepOutcome::Passed, String::new(), String::new()));
                }
                Verdict::Failed(s) => {
                    let mut why = format!(
                        "failed {on}: status `{}` is `{}`",
                        crate::text::escape(&s.context),
                        s.state.as_str()
                    );
                    if let Some(text) = &s.description {
                        why.push_str(&format!(
                            ": {}",
                            crate::text::clip(&crate::text::escape(text), WHY_BYTES)
                        ));
                    }
                    if let Some(url) = &s.target_url {
                        why.push_str(&format!(
                            " ({})",
                            crate::text::clip(&crate::text::escape(url), WHY_BYTES)
                        ));
                    }
                    lines.push(format!("lockstep: {why}"));
                    return Ok((StepOutcome::Failed(None), why, String::new()));
                }
                Verdict::Waiting { seen } => {
                    let elapsed = started.elapsed();
                    if !seen && elapsed >= runner.start_within {
                        let why = format!(
                            "was never started {on}: no status arrived for {sha} within {}",
                            crate::config::humanize(runner.start_within)
                        );
                        lines.push(format!("lockstep: {why}"));
                        return Ok((StepOutcome::NotStarted(why.clone()), why, String::new()));
                    }
                    if elapsed >= wait {
                        let why = format!(
                            "waited {} {on} for {listed} and gave up",
                            crate::config::humanize(wait)
                        );
                        lines.push(format!("lockstep: {why}"));
                        return Ok((StepOutcome::TimedOut(wait), why, String::new()));
                    }
                }
            }
        }
    }

    /// Resolves when the step is to stop: `stop` turned true (another step failed, the
    /// preparation was discarded) or a cancel of the delivery was asked for.
    fn stopped(
        &self,
        id: DeliveryId,
        stop: Option<watch::Receiver<bool>>,
    ) -> impl std::future::Future<Output = ()> + use<> {
        let store = self.store.clone();
        async move {
            let cancel = async {
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

    /// Pushes the checkout's rebased commit to its repository as the candidate branch (the
    /// bot's push, through the server's hooks); `Err` with the server's reason when refused.
    async fn push_candidate(
        &self,
        c: &Checkout,
        branch: &str,
    ) -> anyhow::Result<Result<(), String>> {
        let git = self.bot_git(&c.dir);
        let spec = format!("{}:refs/heads/{branch}", c.row.rebased_sha);
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

    /// Pushes the candidate branch before a command step (`[delivery] push_candidates`), for
    /// a step that hands the candidate to a CI of its own; a refused push fails the step.
    pub(super) async fn push_candidate_for(
        &self,
        d: &DeliveryRow,
        phase: Phase,
        c: &Checkout,
    ) -> Result<(), Stop> {
        let branch = self.config.candidate_branch(d.id);
        match self.push_candidate(c, &branch).await? {
            Ok(()) => Ok(()),
            Err(why) => Err(Failure::new(
                phase,
                Some(&c.row.repo),
                format!("`{phase}` could not start: the candidate branch `{branch}` was not pushed: {why}"),
            )
            .into()),
        }
    }

    /// Deletes the delivery's candidate branch from every repository it may have been pushed
    /// to (best effort: a branch never pushed is no error).
    pub(super) async fn delete_candidates(&self, id: DeliveryId) {
        let branch = self.config.candidate_branch(id);
        let every = self.config.delivery.push_candidates;
        for repo in self
            .config
            .repos
            .iter()
            .filter(|r| every || r.steps.on_runners())
        {
            let dir = self.work_dir(id).join(repo.name.as_str());
            if !dir.join(".git").exists() {
                continue;
            }
            let git = self.bot_git(&dir);
            let target = format!(":refs/heads/{branch}");
            let check = format!("refs/heads/{branch}");
            let pushed = blocking({
                let git = git.clone();
                move || git.try_run(&["ls-remote", "--exit-code", "origin", &check])
            })
            .await;
            if !matches!(pushed, Ok((true, _, _))) {
                continue;
            }
            match blocking(move || git.try_run(&["push", "--quiet", "origin", &target])).await {
                Ok((true, _, _)) => {}
                Ok((false, out, err)) => tracing::warn!(
                    "cannot delete the candidate branch `{branch}` of {}: {}",
                    repo.name,
                    super::merge::push_error(&out, &err)
                ),
                Err(e) => tracing::warn!(
                    "cannot delete the candidate branch `{branch}` of {}: {e:#}",
                    repo.name
                ),
            }
        }
    }
}

/// A recorded `<runner> <build request> <sha>`.
fn parse_build(text: &str) -> Option<(&str, i64, &str)> {
    let mut parts = text.split(' ');
    let runner = parts.next()?;
    let request = parts.next()?.parse().ok()?;
    let sha = parts.next()?;
    parts.next().is_none().then_some((runner, request, sha))
}

/// The local log of a step on a runner: where it ran and how it ended, written as it goes,
/// so that `lockstep logs` shows the build's page while the build runs.
struct StepLog {
    path: std::path::PathBuf,
    lines: Vec<String>,
}

impl StepLog {
    fn push(&mut self, line: String) {
        self.lines.push(line);
        let _ = std::fs::write(&self.path, self.lines.join("\n") + "\n");
    }
}

/// What a followed build comes to: the step's outcome, the reason it did not pass and the end
/// of the failing step's log; each said in the local log too.
fn judge(
    outcome: Outcome,
    on: &str,
    request_url: &str,
    lines: &mut StepLog,
) -> (StepOutcome, String, String) {
    match outcome {
        Outcome::Passed(b) => {
            lines.push(format!("lockstep: build {} passed", b.url));
            (StepOutcome::Passed, String::new(), String::new())
        }
        Outcome::Failed {
            build,
            result,
            step: failed,
            log_tail,
        } => {
            let mut why = match &build {
                Some(b) => format!("failed {on}: build {} ended in {result}", b.url),
                None => format!("failed {on}: build request {request_url} ended in {result}"),
            };
            if let Some(s) = &failed {
                why.push_str(&format!(", step `{}` failed", crate::text::escape(s)));
            }
            if let Some(last) = log_tail.lines().rev().find(|l| !l.trim().is_empty()) {
                why.push_str(&format!(": {}", crate::text::clip(last.trim(), WHY_BYTES)));
            }
            lines.push(format!("lockstep: {why}"));
            if !log_tail.is_empty() {
                lines.push(log_tail.clone());
            }
            (StepOutcome::Failed(None), why, log_tail)
        }
        Outcome::NeverStarted(within) => {
            let why = format!(
                "was never started {on}: no worker took build request {request_url} within \
                 {}; it was cancelled",
                crate::config::humanize(within)
            );
            lines.push(format!("lockstep: {why}"));
            (StepOutcome::NotStarted(why.clone()), why, String::new())
        }
        Outcome::TimedOut(after, build) => {
            let why = format!(
                "ran past {} {on} and was stopped{}",
                crate::config::humanize(after),
                build
                    .map(|b| format!(" (build {})", b.url))
                    .unwrap_or_default()
            );
            lines.push(format!("lockstep: {why}"));
            (StepOutcome::TimedOut(after), why, String::new())
        }
        Outcome::Stopped(build) => {
            let why = format!(
                "was stopped {on}{}",
                build
                    .map(|b| format!(": build {} stopped", b.url))
                    .unwrap_or_default()
            );
            lines.push(format!("lockstep: {why}"));
            (StepOutcome::Stopped, why, String::new())
        }
        Outcome::Unreachable(e) => {
            let why = format!("failed {on}: {e}");
            lines.push(format!("lockstep: {why}"));
            (StepOutcome::Failed(None), why, String::new())
        }
    }
}
