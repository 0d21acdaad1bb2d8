//! A Buildbot master through its REST API (`<web root>api/v2`).
//!
//! - force: JSON-RPC `force` on `forceschedulers/<scheduler>` with the builder's name, the
//!   candidate (`repository`, `branch`, `revision`), `reason` and the `lockstep_*`
//!   properties; Buildbot answers `[buildsetid, {builderid: buildrequestid}]`.
//! - follow: `buildrequests/<id>` (claimed, complete, results) and its `builds`, until the
//!   request is complete; then the build's `got_revision`, and for a failure its steps, the
//!   first that failed and the end of its `stdio` log (`logs/<id>/contents`).
//! - log tails: each step of a request's latest build and the end of its log, for
//!   `lockstep logs`.
//! - halt: `stop` on the build, or `cancel` on a request no worker took yet.
//!
//! Buildbot's result codes: 0 success, 1 warnings, 2 failure, 3 skipped, 4 exception,
//! 5 retry (the request is built again), 6 cancelled. Success and warnings pass.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BuildRef, Job, Outcome};
use crate::config::Runner;

/// Every request to the master: connecting and answering.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a build request is looked at.
const POLL: Duration = Duration::from_millis(500);
/// How long the master may stay unreachable while a build is followed.
const LOST_AFTER: Duration = Duration::from_secs(30);
/// How many lines of a failed step's log are read for its tail.
const TAIL_LINES: i64 = 60;

/// A Buildbot master, as one `[runners.<name>]` names it.
pub struct Buildbot {
    name: String,
    base: String,
    scheduler: String,
    client: reqwest::Client,
    /// The user and password to log in with, when the runner has them.
    login: Option<(String, String)>,
    /// The session cookie of that login.
    cookie: tokio::sync::Mutex<Option<String>>,
    pub start_within: Duration,
    pub wait: Duration,
}

/// What a build request looks like now.
struct Request {
    claimed: bool,
    complete: bool,
    results: Option<i64>,
    /// Its latest build: id, number, builder.
    build: Option<(i64, i64, i64)>,
}

/// One step of a build as `lockstep logs` shows it: its name, its result once it ended, and
/// the end of its log.
#[derive(Debug, Clone)]
pub struct StepTail {
    pub name: String,
    pub result: Option<String>,
    pub tail: String,
}

/// Buildbot's name of a result code.
pub fn result_name(code: i64) -> &'static str {
    match code {
        0 => "success",
        1 => "warnings",
        2 => "failure",
        3 => "skipped",
        4 => "exception",
        5 => "retry",
        6 => "cancelled",
        _ => "an unknown result",
    }
}

/// Whether a result lets the step pass: success and warnings.
pub fn passes(code: i64) -> bool {
    matches!(code, 0 | 1)
}

impl Buildbot {
    pub fn new(name: &str, runner: &Runner) -> anyhow::Result<Buildbot> {
        let login = match (&runner.user, &runner.password_env) {
            (Some(user), Some(var)) => {
                let password = std::env::var(var).map_err(|_| {
                    anyhow::anyhow!(
                        "runner `{name}`: `password_env = \"{var}\"` names a variable that is \
                         not set; set it in lockstep's environment"
                    )
                })?;
                Some((user.clone(), password))
            }
            _ => None,
        };
        Ok(Buildbot {
            name: name.to_string(),
            base: runner.base_url(),
            scheduler: runner.scheduler.clone(),
            client: crate::tls::http_client(REQUEST_TIMEOUT).build()?,
            login,
            cookie: tokio::sync::Mutex::new(None),
            start_within: runner.start_within,
            wait: runner.wait,
        })
    }

    /// `runner `bb` (http://…/)`, for messages.
    pub fn describe(&self) -> String {
        format!("runner `{}` ({})", self.name, self.base)
    }

    /// The page of a build request, before a worker took it.
    pub fn request_url(&self, request: i64) -> String {
        format!("{}#/buildrequests/{request}", self.base)
    }

    fn build_ref(&self, id: i64, number: i64, builder: i64) -> BuildRef {
        BuildRef {
            id,
            url: format!("{}#/builders/{builder}/builds/{number}", self.base),
        }
    }

    /// Forces a build of the job; the build request's id.
    pub async fn force(&self, job: &Job) -> Result<i64, String> {
        let params = json!({
            "builderNames": [job.builder],
            "reason": job.reason,
            "repository": job.repository,
            "branch": job.branch,
            "revision": job.revision,
            "lockstep_task": job.task,
            "lockstep_delivery": job.delivery,
            "lockstep_phase": job.phase,
            "lockstep_repo": job.repo,
            "lockstep_purpose": job.purpose,
            "lockstep_env": job.env,
            "lockstep_vars": job.vars,
        });
        let path = format!("forceschedulers/{}", self.scheduler);
        let result = self.control(&path, "force", params).await?;
        // [buildsetid, {"<builderid>": buildrequestid}]
        result
            .get(1)
            .and_then(Value::as_object)
            .and_then(|m| m.values().next())
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                format!("the master's answer to `force` names no build request: {result}")
            })
    }

    /// Follows a build request until it is complete, `wait` passes or `stop` resolves (the
    /// build is then stopped on the master). `on_build` hears of each build the request gets.
    pub async fn follow(
        &self,
        request: i64,
        revision: &str,
        wait: Duration,
        stop: impl Future<Output = ()>,
        mut on_build: impl FnMut(&BuildRef),
    ) -> Outcome {
        let started = Instant::now();
        let mut last_answer = Instant::now();
        let mut build: Option<(i64, BuildRef)> = None;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => {
                    // A build a worker started since the last look is named, and stopped as
                    // the build it is.
                    if build.is_none()
                        && let Ok(Request { build: Some((id, number, builder)), .. }) =
                            self.request(request).await
                    {
                        let b = self.build_ref(id, number, builder);
                        on_build(&b);
                        build = Some((id, b));
                    }
                    self.halt(request, build.as_ref().map(|b| b.0), "stopped by lockstep").await;
                    return Outcome::Stopped(build.map(|b| b.1));
                }
                () = tokio::time::sleep(POLL) => {}
            }
            if started.elapsed() >= wait {
                self.halt(
                    request,
                    build.as_ref().map(|b| b.0),
                    "ran past lockstep's wait",
                )
                .await;
                return Outcome::TimedOut(wait, build.map(|b| b.1));
            }
            let now = match self.request(request).await {
                Ok(r) => r,
                Err(e) => {
                    if last_answer.elapsed() >= LOST_AFTER.min(wait) {
                        return Outcome::Unreachable(format!(
                            "lost {} while following build request {request}: {e}",
                            self.describe()
                        ));
                    }
                    continue;
                }
            };
            last_answer = Instant::now();
            if let Some((id, number, builder)) = now.build
                && build.as_ref().is_none_or(|b| b.0 != id)
            {
                let b = self.build_ref(id, number, builder);
                on_build(&b);
                build = Some((id, b));
            }
            if now.complete {
                let code = now.results.unwrap_or(-1);
                return self.ended(code, build.map(|b| b.1), revision).await;
            }
            if !now.claimed && build.is_none() && started.elapsed() >= self.start_within {
                self.halt(request, None, "no worker took it").await;
                return Outcome::NeverStarted(self.start_within);
            }
        }
    }

    /// The outcome of a complete request.
    async fn ended(&self, code: i64, build: Option<BuildRef>, revision: &str) -> Outcome {
        let Some(b) = build else {
            return Outcome::Failed {
                build: None,
                result: result_name(code).into(),
                step: None,
                log_tail: String::new(),
            };
        };
        if passes(code) {
            // A build of another commit counts for nothing.
            return match self.got_revision(b.id).await {
                Ok(Some(got)) if got != revision => Outcome::Failed {
                    build: Some(b),
                    result: format!("a build of {got}, not of the candidate {revision}"),
                    step: None,
                    log_tail: String::new(),
                },
                _ => Outcome::Passed(b),
            };
        }
        let (step, log_tail) = self.failed_step(b.id).await.unwrap_or_default();
        Outcome::Failed {
            build: Some(b),
            result: result_name(code).into(),
            step,
            log_tail,
        }
    }

    /// The request's state and its latest build.
    async fn request(&self, request: i64) -> Result<Request, String> {
        let r = self.get(&format!("buildrequests/{request}")).await?;
        let r = first(&r, "buildrequests")
            .ok_or_else(|| format!("the master has no build request {request}"))?;
        let builds = self.get(&format!("buildrequests/{request}/builds")).await?;
        let build = builds
            .get("builds")
            .and_then(Value::as_array)
            .and_then(|bs| {
                bs.iter()
                    .filter_map(|b| {
                        Some((
                            b.get("buildid")?.as_i64()?,
                            b.get("number")?.as_i64()?,
                            b.get("builderid")?.as_i64()?,
                        ))
                    })
                    .max_by_key(|b| b.0)
            });
        Ok(Request {
            claimed: r.get("claimed").and_then(Value::as_bool).unwrap_or(false),
            complete: r.get("complete").and_then(Value::as_bool).unwrap_or(false),
            results: r.get("results").and_then(Value::as_i64),
            build,
        })
    }

    /// The revision the build checked out, when its source step said.
    async fn got_revision(&self, build: i64) -> Result<Option<String>, String> {
        let b = self
            .get(&format!("builds/{build}?property=got_revision"))
            .await?;
        Ok(first(&b, "builds")
            .and_then(|b| b.pointer("/properties/got_revision/0"))
            .and_then(Value::as_str)
            .map(str::to_string))
    }

    /// The first step of a build that did not pass, and the end of its log.
    async fn failed_step(&self, build: i64) -> Result<(Option<String>, String), String> {
        let steps = self.get(&format!("builds/{build}/steps")).await?;
        let Some(step) = steps.get("steps").and_then(Value::as_array).and_then(|s| {
            s.iter().find(|s| {
                s.get("results")
                    .and_then(Value::as_i64)
                    .is_some_and(|r| !passes(r) && r != 3)
            })
        }) else {
            return Ok((None, String::new()));
        };
        let name = step.get("name").and_then(Value::as_str).map(str::to_string);
        let Some(id) = step.get("stepid").and_then(Value::as_i64) else {
            return Ok((name, String::new()));
        };
        Ok((name, self.step_tail(id).await?))
    }

    /// The end of a step's `stdio` log (else its first log), its output lines only.
    async fn step_tail(&self, step: i64) -> Result<String, String> {
        let logs = self.get(&format!("steps/{step}/logs")).await?;
        let logs = logs.get("logs").and_then(Value::as_array);
        let log = logs.and_then(|ls| {
            ls.iter()
                .find(|l| l.get("slug").and_then(Value::as_str) == Some("stdio"))
                .or_else(|| ls.first())
        });
        let Some((logid, lines)) = log.and_then(|l| {
            Some((
                l.get("logid")?.as_i64()?,
                l.get("num_lines").and_then(Value::as_i64).unwrap_or(0),
            ))
        }) else {
            return Ok(String::new());
        };
        let offset = (lines - TAIL_LINES).max(0);
        let chunks = self
            .get(&format!("logs/{logid}/contents?offset={offset}"))
            .await?;
        let mut tail = crate::text::Tail::default();
        for chunk in chunks
            .get("logchunks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let content = chunk.get("content").and_then(Value::as_str).unwrap_or("");
            tail.push(output_lines(content).as_bytes());
        }
        Ok(tail.finish())
    }

    /// The latest build of a build request and the end of each of its steps' logs, as far
    /// as they ran (`lockstep logs`); `None` while no worker took the request.
    pub async fn log_tails(
        &self,
        request: i64,
    ) -> Result<Option<(BuildRef, Vec<StepTail>)>, String> {
        let Some((id, number, builder)) = self.request(request).await?.build else {
            return Ok(None);
        };
        let steps = self.get(&format!("builds/{id}/steps")).await?;
        let mut out = Vec::new();
        for step in steps
            .get("steps")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(stepid) = step.get("stepid").and_then(Value::as_i64) else {
                continue;
            };
            out.push(StepTail {
                name: step
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                result: step
                    .get("results")
                    .and_then(Value::as_i64)
                    .map(|r| result_name(r).to_string()),
                tail: self.step_tail(stepid).await?,
            });
        }
        Ok(Some((self.build_ref(id, number, builder), out)))
    }
    /// Stops build request `request` wherever it stands, for a follower that is gone (a
    /// killed worker): its build when a worker took it, else the request; nothing once it
    /// is complete.
    pub async fn stop_request(&self, request: i64, reason: &str) {
        let build = match self.request(request).await {
            Ok(r) if r.complete => return,
            Ok(r) => r.build.map(|b| b.0),
            Err(_) => None,
        };
        self.halt(request, build, reason).await;
    }

    /// Stops the build, or cancels the request no worker took yet (best effort: the master
    /// may be gone).
    pub async fn halt(&self, request: i64, build: Option<i64>, reason: &str) {
        let reason = format!("lockstep: {reason}");
        let build = match build {
            Some(b) => Some(b),
            None => {
                let cancelled = self
                    .control(
                        &format!("buildrequests/{request}"),
                        "cancel",
                        json!({ "reason": reason }),
                    )
                    .await;
                if cancelled.is_ok() {
                    return;
                }
                // Claimed meanwhile: stop its build.
                self.request(request)
                    .await
                    .ok()
                    .and_then(|r| r.build)
                    .map(|b| b.0)
            }
        };
        if let Some(b) = build
            && let Err(e) = self
                .control(&format!("builds/{b}"), "stop", json!({ "reason": reason }))
                .await
        {
            tracing::warn!("cannot stop build {b} on {}: {e}", self.describe());
        }
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        let url = format!("{}api/v2/{path}", self.base);
        let req = self.with_login(self.client.get(&url)).await?;
        answer(req.send().await, &url).await
    }

    /// A JSON-RPC control call; its `result`.
    async fn control(&self, path: &str, method: &str, params: Value) -> Result<Value, String> {
        let url = format!("{}api/v2/{path}", self.base);
        let body = json!({ "jsonrpc": "2.0", "method": method, "params": params, "id": 1 });
        let req = self.with_login(self.client.post(&url).json(&body)).await?;
        let v = answer(req.send().await, &url).await?;
        if let Some(e) = v.get("error") {
            let message = e.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(format!("`{method}` on {url} was refused: {message}"));
        }
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Adds the session cookie, logging in first when the runner has a user.
    async fn with_login(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, String> {
        let Some((user, password)) = &self.login else {
            return Ok(req);
        };
        let mut cookie = self.cookie.lock().await;
        if cookie.is_none() {
            let url = format!("{}auth/login", self.base);
            let r = self
                .client
                .get(&url)
                .basic_auth(user, Some(password))
                .send()
                .await
                .map_err(|e| format!("cannot log in at {url}: {}", cause(&e)))?;
            let cookies: Vec<String> = r
                .headers()
                .get_all(reqwest::header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| v.split(';').next())
                .map(str::to_string)
                .collect();
            if !r.status().is_success() && !r.status().is_redirection() || cookies.is_empty() {
                return Err(format!(
                    "the master refused the login of `{user}` at {url} ({}); check `user` and \
                     the password variable",
                    r.status()
                ));
            }
            *cookie = Some(cookies.join("; "));
        }
        Ok(match cookie.as_deref() {
            Some(c) => req.header(reqwest::header::COOKIE, c),
            None => req,
        })
    }
}

/// The JSON of an answer, or why there is none.
async fn answer(
    sent: Result<reqwest::Response, reqwest::Error>,
    url: &str,
) -> Result<Value, String> {
    let r = sent.map_err(|e| format!("cannot reach {url}: {}", cause(&e)))?;
    let status = r.status();
    let text = r
        .text()
        .await
        .map_err(|e| format!("{url} answered {status}, then: {}", cause(&e)))?;
    let v: Result<Value, _> = serde_json::from_str(&text);
    match v {
        Ok(v) if status.is_success() || v.get("error").is_some() => Ok(v),
        _ => Err(format!(
            "{url} answered {status}: {}",
            crate::text::clip(&crate::text::escape(text.trim()), 200)
        )),
    }
}

/// What reqwest says of an HTTP error, and its innermost cause (`Connection refused (os
/// error 111)`).
fn cause(e: &reqwest::Error) -> String {
    let mut last = None;
    let mut next = std::error::Error::source(e);
    while let Some(s) = next {
        last = Some(s);
        next = s.source();
    }
    match last {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    }
}

/// The first object of a collection answer (`{"builds": [{…}]}`).
fn first<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).and_then(Value::as_array).and_then(|a| a.first())
}

/// The output lines of a chunk of a Buildbot log: each line starts with its stream (`o`
/// stdout, `e` stderr, `h` Buildbot's own header); the header is left out.
fn output_lines(content: &str) -> String {
    let mut out = String::new();
    for line in content.lines() {
        let mut chars = line.chars();
        if let Some('o' | 'e') = chars.next() {
            out.push_str(chars.as_str());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_pass_only_on_success_and_warnings() {
        let passing: Vec<i64> = (0..=6).filter(|c| passes(*c)).collect();
        assert_eq!(passing, [0, 1]);
        assert_eq!(result_name(2), "failure");
        assert_eq!(result_name(4), "exception");
        assert_eq!(result_name(6), "cancelled");
    }

    #[test]
    fn a_logs_header_lines_are_left_out() {
        assert_eq!(
            output_lines("hsh ci/test.sh\nh in dir /w\nofailing now\neoops\nhprogram finished\n"),
            "failing now\noops\n"
        );
    }
}
