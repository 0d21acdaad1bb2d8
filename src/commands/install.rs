//! `lockstep install-hooks`: the hooks put in front of bare repositories.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::say_line;
use crate::config::Located;
use crate::exit::Exit;
use crate::hook;

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Replace hooks that lockstep did not write
    #[arg(long)]
    pub force: bool,
    /// Decide ref by ref with the `update` hook instead of the whole push in `pre-receive`
    #[arg(long)]
    pub per_ref: bool,
    /// Install in gitolite's folder of hooks common to every repository
    /// (`$LOCAL_CODE/hooks/common` or `~/.gitolite/hooks/common`), as gitolite's account; then
    /// run `gitolite setup --hooks-only`
    #[arg(long, value_name = "DIR")]
    pub gitolite: Option<PathBuf>,
    /// Bare repositories to guard
    #[arg(required_unless_present = "gitolite", value_name = "REPO.git")]
    pub repos: Vec<PathBuf>,
}

pub fn install_hooks(at: &Located, args: InstallArgs) -> anyhow::Result<Exit> {
    let Located { path, source } = at.clone();
    // Refuse to point hooks at a config that does not load: every push would be rejected.
    hook::load(&path, source)
        .with_context(|| format!("the hooks would read `{}`", path.display()))?;
    let opts = crate::install::Install {
        config: std::path::absolute(&path)?,
        binary: std::env::current_exe().context("cannot find the lockstep executable")?,
        force: args.force,
        per_ref: args.per_ref,
    };
    if let Some(dir) = &args.gitolite {
        say_line(&crate::install::install_gitolite(dir, &opts)?)?;
    }
    for repo in &args.repos {
        say_line(&crate::install::install(repo, &opts)?)?;
    }
    Ok(Exit::Success)
}
