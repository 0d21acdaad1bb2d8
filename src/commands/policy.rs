//! `lockstep policy check`, `policy test` and `policy replay`: the policies checked, a push
//! dry-run, candidate policies replayed against the logged pushes.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::{say_line, since};
use crate::config::{Config, Located};
use crate::exit::Exit;
use crate::git::{self, Git};
use crate::hook;
use crate::policy::PolicySet;
use crate::push::{self, NewCommits, PushContext};
use crate::text::escape;

#[derive(Debug, Args)]
pub struct PolicyTestArgs {
    /// The repository the push goes to
    #[arg(long, value_name = "PATH")]
    pub repo: PathBuf,
    /// The full ref name, e.g. `refs/heads/feature/TASK-1`
    #[arg(long = "ref", value_name = "REF")]
    pub refname: String,
    /// The ref's current commit (all zeros, or omitted, for a new ref)
    #[arg(long, value_name = "SHA")]
    pub old: Option<String>,
    /// The commit pushed (all zeros for a deletion); a branch name or `HEAD` works too
    #[arg(long, value_name = "SHA")]
    pub new: String,
    /// Who pushes (default: from the `[identity] env` variables, else unknown)
    #[arg(long, value_name = "USER")]
    pub pusher: Option<String>,
    /// A push option, as with `git push -o` (repeatable)
    #[arg(short = 'o', long = "push-option", value_name = "OPT")]
    pub options: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Replay the pushes this recent
    #[arg(long, value_name = "AGE", default_value = "30d")]
    pub since: String,
    /// The candidate policies (default: the config's `[policies] dirs`)
    #[arg(long, value_name = "DIR")]
    pub policies: Vec<PathBuf>,
}

pub fn check(at: &Located) -> anyhow::Result<Exit> {
    let Located { path, source } = at.clone();
    let config = Config::load_from(&path, source)?;
    match PolicySet::for_config(&config) {
        Ok(set) => {
            for stage in [
                crate::policy::Stage::Push,
                crate::policy::Stage::Deliver,
                crate::policy::Stage::Merge,
            ] {
                let names: Vec<&str> = set.rules_for(stage).map(|r| r.name.as_str()).collect();
                if !names.is_empty() {
                    say_line(&format!("{stage}: {}", names.join(", ")))?;
                }
            }
            if !set.has_push_rules() && !config.policies.allow_empty {
                eprintln!("lockstep: {}", crate::policy::NO_PUSH_RULE);
                return Ok(Exit::Failed);
            }
            let folders = config.policies.dirs.len();
            say_line(&format!(
                "ok: {} rules in {folders} folder(s)",
                set.rules.len()
            ))?;
            gate_check(&config)
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("lockstep: {}", crate::text::escape(e));
            }
            eprintln!("lockstep: {} error(s)", errors.0.len());
            Ok(Exit::Failed)
        }
    }
}

/// Asks Prometheus to run every gate's query once, so a typo in PromQL shows now and not in
/// the verify phase of the first delivery that needs it.
fn gate_check(config: &Config) -> anyhow::Result<Exit> {
    let Some(prometheus) = &config.prometheus else {
        return Ok(Exit::Success);
    };
    if config.gates.is_empty() {
        return Ok(Exit::Success);
    }
    let client = crate::monitor::Prometheus::from_config(prometheus)?;
    let rt = crate::runtime::current_thread()?;
    let mut bad = 0;
    for gate in &config.gates {
        match rt.block_on(client.query(&gate.query)) {
            Ok(samples) => say_line(&format!(
                "gate `{}`: Prometheus runs its query ({} series now)",
                gate.name,
                samples.len()
            ))?,
            Err(e) => {
                // Prometheus's error body is its own text, not ours: escaped like step output.
                eprintln!(
                    "lockstep: gate `{}`: {}",
                    escape(&gate.name),
                    escape(&e.to_string())
                );
                bad += 1;
            }
        }
    }
    if bad > 0 {
        eprintln!(
            "lockstep: {bad} gate(s) cannot be checked; fix them before a delivery needs them"
        );
        return Ok(Exit::Failed);
    }
    say_line(&format!(
        "ok: {} gate(s) against `{}`",
        config.gates.len(),
        client.url()
    ))?;
    Ok(Exit::Success)
}

pub fn test(at: &Located, args: PolicyTestArgs) -> anyhow::Result<Exit> {
    let Located { path, source } = at.clone();
    let (config, policies) = hook::load(&path, source)?;
    let git = Git::new(&args.repo);
    let zero = "0".repeat(40);
    let resolve = |rev: &str| -> anyhow::Result<String> {
        if git::is_zero(rev) || git::is_oid(rev) {
            return Ok(rev.to_string());
        }
        git.resolve(rev)?
            .with_context(|| format!("`{rev}` names no commit in `{}`", args.repo.display()))
    };
    let old = match &args.old {
        Some(o) => resolve(o)?,
        None => zero,
    };
    let new = resolve(&args.new)?;
    let update = push::update_from_parts(1, &old, &new, &args.refname)?;
    let ctx = PushContext {
        repo: push::repo_name(&config, &args.repo),
        pusher: args
            .pusher
            .unwrap_or_else(|| push::pusher_from_env(&config)),
        options: args.options,
    };
    let tracker = crate::tracker::open(&config)?;
    let updates = vec![update];
    let keys = push::task_keys(&config, &policies, &updates);
    let rt = crate::runtime::current_thread()?;
    let tasks = rt.block_on(push::fetch_tasks(&config, tracker.as_ref(), &keys));
    let decisions = push::decide(
        &config,
        &policies,
        &git,
        &push::Pushed {
            ctx: &ctx,
            updates: &updates,
            tracker: tracker.name(),
            tasks: &tasks,
        },
        NewCommits::AsIfPushedNow,
    )?;
    {
        use std::io::Write as _;
        write!(
            std::io::stdout().lock(),
            "{}",
            crate::text::escape(&push::explain(&decisions, &ctx))
        )?;
    }
    Ok(Exit::success_if(
        decisions.iter().all(|d| d.decision.accepted()),
    ))
}

pub fn replay(at: &Located, args: ReplayArgs) -> anyhow::Result<Exit> {
    let Located { path, source } = at.clone();
    let config = Config::load_from(&path, source)?;
    let loaded = if args.policies.is_empty() {
        PolicySet::for_config(&config)
    } else {
        PolicySet::load_dirs(&args.policies)
    };
    let mut candidate = loaded.map_err(|e| {
        anyhow::anyhow!("the candidate policies do not load:\n{e}\nfix them, then replay again")
    })?;
    candidate.timeout = config.policies.timeout;
    candidate.max_memory = config.policies.max_memory();
    // A hook refuses to run without a push rule: replaying such a set would show every push
    // accepted where each would in fact be rejected.
    if !candidate.has_push_rules() && !config.policies.allow_empty {
        anyhow::bail!("the candidate policies: {}", crate::policy::NO_PUSH_RULE);
    }
    let from = since(&args.since)?;
    let (entries, _) = crate::audit::read(&config.state_dir(), config.audit.keep)?;
    let recent: Vec<crate::audit::Entry> = entries.into_iter().filter(|e| e.time >= from).collect();
    let replay = crate::audit::replay(&config, &candidate, &recent);
    println!(
        "candidate policies {} (since {})",
        candidate.revision,
        from.format("%Y-%m-%d %H:%M")
    );
    print!("{}", replay.render());
    if replay.unreadable() > 0 {
        eprintln!(
            "lockstep: {} push(es) could not be read, so the replay is incomplete; see \
             \"not read\" above",
            replay.unreadable()
        );
        return Ok(Exit::Error);
    }
    Ok(Exit::success_if(!replay.changes()))
}
