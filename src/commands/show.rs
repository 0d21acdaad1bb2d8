//! `lockstep show` and `lockstep logs`: one delivery, its journal and its steps' output.

use anyhow::Context as _;

use super::{ago, runtime, say_line, store_of};
use crate::config::{Config, Located, RunnerKind};
use crate::domain::{DeliveryId, Phase};
use crate::exit::Exit;
use crate::runner::Buildbot;

/// `lockstep show ID`.
pub fn show(at: &Located, id: DeliveryId, json: bool) -> anyhow::Result<Exit> {
    runtime()?.block_on(async move {
        let (_, store) = store_of(at).await?;
        let d = store
            .delivery(id)
            .await?
            .with_context(|| format!("no delivery #{id}; see `lockstep queue`"))?;
        let repos = store.repos(id).await?;
        let journal = store.journal_of(id).await?;
        let steps = store.steps(id).await?;
        if json {
            let v = serde_json::json!({
                "delivery": d, "repos": repos, "steps": steps, "journal": journal
            });
            say!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(Exit::Success);
        }
        say!(
            "#{} {}: {} (phase {})",
            d.id,
            d.task,
            d.state.as_str(),
            d.phase.map_or("-", Phase::as_str)
        );
        let who = if d.requester.is_empty() {
            "?"
        } else {
            &d.requester
        };
        say!(
            "  requested by {who} via {}, {}",
            d.source,
            ago(Some(d.created_at))
        );
        if !d.error.is_empty() {
            say!("  {}", d.error);
        }
        if !d.built_on.is_empty() {
            say!("  built on {}", d.built_on);
        }
        if !d.held.is_empty() {
            say!(
                "  held (not reported while deliveries ahead are unresolved): {}",
                d.held
            );
        }
        if d.discards > 0 {
            say!("  prepared again {} time(s): a base changed", d.discards);
        }
        for r in &repos {
            say!(
                "  {:<12} {} {} → {} (on {}) {}",
                r.repo,
                r.branch,
                crate::git::short(&r.branch_sha),
                crate::git::short(&r.rebased_sha),
                crate::git::short(&r.base_sha),
                r.flags()
            );
        }
        say!("journal:");
        for j in &journal {
            say!(
                "  {}  {:<8} {:<10} {} {}",
                ago(Some(j.at)),
                j.stage,
                j.repo,
                j.event,
                j.detail
            );
        }
        Ok(Exit::Success)
    })
}

/// `lockstep logs ID`: each step's local log, then, for a step on a Buildbot runner, the end
/// of its build's logs fetched from the master.
pub fn logs(
    at: &Located,
    id: DeliveryId,
    repo: Option<&str>,
    step: Option<&str>,
    raw: bool,
) -> anyhow::Result<Exit> {
    runtime()?.block_on(async move {
        let (config, store) = store_of(at).await?;
        store
            .delivery(id)
            .await?
            .with_context(|| format!("no delivery #{id}; see `lockstep queue`"))?;
        let steps: Vec<_> = store
            .steps(id)
            .await?
            .into_iter()
            .filter(|s| {
                repo.is_none_or(|r| s.repo == r) && step.is_none_or(|x| s.step.as_str() == x)
            })
            .collect();
        if steps.is_empty() {
            say!("no step logs for #{id} with that filter");
        }
        let raw = raw || stdout_is_a_file();
        for s in steps {
            say!(
                "==> {} {} ({}, exit {}) <==",
                s.repo,
                s.step,
                s.outcome,
                s.exit_code.map_or("-".into(), |c| c.to_string())
            );
            // The file when the step ran on this host, else the copy another replica kept in
            // the store.
            let mut out = std::io::stdout().lock();
            match std::fs::File::open(&s.log_path) {
                Ok(file) if raw => {
                    std::io::copy(&mut std::io::BufReader::new(file), &mut out)?;
                }
                Ok(file) => crate::text::copy_escaped(file, &mut out)?,
                Err(e) => match store.step_log(s.id).await? {
                    Some(text) if raw => std::io::Write::write_all(&mut out, text.as_bytes())?,
                    Some(text) => crate::text::copy_escaped(text.as_bytes(), &mut out)?,
                    None => {
                        drop(out);
                        say!("(log unreadable: {e})");
                    }
                },
            }
            if let Some(build) = &s.runner_build {
                external_tail(&config, build, raw).await?;
            }
        }
        Ok(Exit::Success)
    })
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
    let mut out = std::io::stdout().lock();
    let mut put = |text: &str| -> std::io::Result<()> {
        if raw {
            std::io::Write::write_all(&mut out, text.as_bytes())
        } else {
            crate::text::copy_escaped(text.as_bytes(), &mut out)
        }
    };
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

/// Whether standard output is a regular file (`lockstep logs 1 > build.log`): the log is
/// copied as it is, not escaped for a terminal.
fn stdout_is_a_file() -> bool {
    std::fs::metadata("/proc/self/fd/1").is_ok_and(|m| m.is_file())
}
