//! `lockstep audit`: the decision log read, filtered and verified.

use std::path::Path;

use clap::Args;

use super::since;

use crate::config::{Config, Located};
use crate::exit::Exit;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only pushes to this repository (its name in the ecosystem)
    #[arg(long, value_name = "NAME")]
    pub repo: Option<String>,
    /// Only decisions this recent, e.g. `7d`, `12h`
    #[arg(long, value_name = "AGE")]
    pub since: Option<String>,
    /// Only decisions in which this rule refused, warned or failed
    #[arg(long, value_name = "NAME")]
    pub rule: Option<String>,
    /// One JSON object per line, as logged, with `verified`
    #[arg(long)]
    pub json: bool,
    /// Check the log's hash chain: name the first line edited, deleted, inserted or moved
    /// (exit 1), or count the entries verified and print the head hash to keep elsewhere
    #[arg(long, conflicts_with_all = ["repo", "since", "rule", "json"])]
    pub verify: bool,
}

pub fn audit(at: &Located, args: AuditArgs) -> anyhow::Result<Exit> {
    let Located { path, source } = at.clone();
    let config = Config::load_from(&path, source)?;
    let filter = crate::audit::Filter {
        repo: args.repo,
        since: args.since.as_deref().map(since).transpose()?,
        rule: args.rule,
    };
    let mut log = crate::audit::load(&config.state_dir(), config.audit.keep)?;
    // Gaps are noted in the state folder, or in the folder of the repository pushed to: those
    // the log names, and the ecosystem's that are folders here.
    let local: Vec<String> = config
        .repos
        .iter()
        .map(|r| config.resolve(Path::new(&r.url)))
        .filter(|p| p.is_dir())
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut git_dirs = log.git_dirs();
    git_dirs.extend(local.iter().map(String::as_str));
    let gaps = crate::audit::gap_warnings(&crate::audit::find_gaps(&config.state_dir(), &git_dirs));
    if args.verify {
        print!("{}", log.chain.report());
        for warning in &gaps {
            eprintln!("lockstep: {warning}");
        }
        return Ok(Exit::success_if(log.chain.broken.is_none()));
    }
    let picked: Vec<(crate::audit::Entry, bool)> = std::mem::take(&mut log.entries)
        .into_iter()
        .filter(|(e, _)| filter.matches(e))
        .collect();
    if args.json {
        print!("{}", crate::audit::json_lines(&picked)?);
    } else {
        print!("{}", crate::audit::render(&picked));
    }
    for warning in crate::audit::warnings(&log).iter().chain(&gaps) {
        eprintln!("lockstep: {warning}");
    }
    Ok(Exit::Success)
}
