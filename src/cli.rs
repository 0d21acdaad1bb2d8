//! The command line: every command, its help, and which command runs; each returns how it
//! ended, an [`Exit`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::commands::policy::{PolicyTestArgs, ReplayArgs};
use crate::commands::{self, AuditArgs, InstallArgs, LogFilter, LogsOf};
use crate::config::{ConfigSource, Located};
use crate::domain::{DeliveryId, TaskKey};
use crate::exit::Exit;
use crate::hook;

/// lockstep: a git-native merge bot and policy engine.
///
/// Server-side hooks accept or reject every `git push` by policies written in TOML + CEL; the
/// bot delivers a task across every repository of an ecosystem in lockstep, all or nothing.
///
/// Start with `lockstep demo`. Exit codes: 0 ok, 1 refused by policy or failed, 2 usage or
/// config error.
#[derive(Debug, Parser)]
#[command(name = "lockstep", version, max_term_width = 100)]
pub struct Cli {
    /// The meta-project's config [default: $LOCKSTEP_CONFIG, else ./lockstep.toml; in hooks,
    /// the repository's `lockstep.config`]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More logging (-v info, -vv debug); `LOCKSTEP_LOG` takes a full filter
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Reads the command line: the one of a hook file directly, any other with clap.
    pub fn from_args() -> Cli {
        let args: Vec<OsString> = std::env::args_os().collect();
        Cli::of_hook_file(&args).unwrap_or_else(|| Cli::parse_from(args))
    }

    /// The command line a hook file's `#!/path/to/lockstep hook` line gives, on every push:
    /// `lockstep hook FILE ARGS...`, where git runs FILE by a path. Read without clap, whose
    /// parser takes a third of a millisecond to build; it reads it the same way (the test
    /// `hook_files_skip_clap_and_mean_the_same` holds them together).
    fn of_hook_file(args: &[OsString]) -> Option<Cli> {
        let [_, hook, file, ..] = args else {
            return None;
        };
        let path = file.as_encoded_bytes();
        (hook == "hook" && path.contains(&b'/') && !path.starts_with(b"-")).then(|| Cli {
            config: None,
            log_format: LogFormat::Text,
            verbose: 0,
            command: Command::Hook(HookCommand::File(args[2..].to_vec())),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a narrated tour in a sandbox: real repositories, real hooks, real pushes
    Demo {
        /// Build the sandbox in DIR and keep it (default: a temporary folder, removed after)
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
    /// Entry points for git's server-side hooks (called by the hooks `install-hooks` writes)
    #[command(
        subcommand,
        after_help = "`lockstep hook FILE [ARGS]...` runs the hook FILE is named after (or, in a \
                      `<hook>.d` folder, the hook of the folder): that is how the kernel runs a \
                      hook file whose first line is `#!/path/to/lockstep hook`."
    )]
    Hook(HookCommand),
    /// Put lockstep in front of bare repositories: write the hook shims, record the config
    InstallHooks(InstallArgs),
    /// Check repositories as a server admin would before the first push: lockstep's hooks in
    /// place, the config and policies loading, the state folder and the tracker file writable
    /// by the accounts that run the hooks, the pusher's identity (exit 0 nothing to fix, 1
    /// something is)
    #[command(
        after_help = "Checks the running account by trying to write, the repository's \
                      owner and each `--as` account by mode bits and ownership. The config is \
                      the one each repository's hooks find (`lockstep.config` of its git \
                      config, `LOCKSTEP_CONFIG`) unless `--config` names one. See \
                      docs/accounts.md for what each account must be able to write."
    )]
    Doctor(DoctorArgs),
    /// Check the policies, try them on a push, or replay the logged pushes against candidates
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Deliver a task: queue it, then rebase, build, test, deploy, verify and merge it in every
    /// repository that has a branch for it, all or nothing (exit 0 delivered, 1 failed)
    Deliver {
        /// The task, e.g. `TASK-7` (or `34` with Redmine-style numbers)
        task: String,
        /// Higher runs sooner; equal priorities run first come, first served
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i64,
        /// Queue it and return at once (a background worker runs it)
        #[arg(long)]
        no_wait: bool,
    },
    /// Build and test a task's branches on their own (each rebased on its upstream, never
    /// deployed nor merged): queued for the worker, started in the background if none runs
    Autotest {
        /// The task, e.g. `TASK-7`
        task: String,
        /// Only the branch of this repository
        #[arg(long, value_name = "NAME")]
        repo: Option<String>,
    },
    /// Show the autotests (of one task), newest first: state, head, what it was rebased on
    Autotests {
        /// Only this task's
        task: Option<String>,
        /// Machine-readable output: one object per autotest
        #[arg(long)]
        json: bool,
        /// Print the log of autotest ID instead (the end of it the store keeps; `lockstep logs
        /// --autotest ID` prints each step's whole log)
        #[arg(long, value_name = "ID")]
        log: Option<i64>,
    },
    /// Show the queue: the delivery in flight, those waiting, the recent ones
    Queue {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Show one delivery (its repositories, shas and journal), or all of a task: its
    /// deliveries, its autotests and its showroom
    #[command(
        after_help = "A number is a delivery's id, anything else a task key: `lockstep \
                            show 12`, `lockstep show TASK-7`. With task keys that are numbers \
                            (Redmine's), `--task` reads it as one: `lockstep show 34 --task`. \
                            A task lockstep knows nothing of is an error (exit 2) that says \
                            what to run."
    )]
    Show {
        /// A delivery's id, or a task key
        #[arg(value_name = "ID|TASK")]
        what: String,
        /// Read the argument as a task key even when it is a number
        #[arg(long)]
        task: bool,
        /// Machine-readable output: the delivery, its repos, steps and journal; or, for a
        /// task, an object with its `task`, `deliveries`, `autotests` and `showroom`
        #[arg(long)]
        json: bool,
    },
    /// Print the logs of a delivery's steps, of an autotest's or of a showroom's (for a
    /// delivery's step on Buildbot, also the end of its build's logs, fetched from the master)
    #[command(
        group(ArgGroup::new("whose").required(true).args(["id", "autotest", "showroom"])),
        after_help = "Name one of them: `lockstep logs 12` (delivery 12), `lockstep logs \
                      --autotest 5` (autotest 5, as `lockstep autotests` lists them), \
                      `lockstep logs --showroom TASK-7` (the build and deploy steps of the \
                      showroom's last deploy, and the teardown if one ran since)."
    )]
    Logs {
        /// The delivery
        id: Option<i64>,
        /// The steps of this autotest instead of a delivery's
        #[arg(long, value_name = "ID")]
        autotest: Option<i64>,
        /// The steps of this task's showroom instead of a delivery's
        #[arg(long, value_name = "TASK")]
        showroom: Option<String>,
        /// Only this repository
        #[arg(long)]
        repo: Option<String>,
        /// Only this step (build, test, deploy, verify, rollback; a showroom's teardown)
        #[arg(long)]
        step: Option<String>,
        /// Print the logs as the steps wrote them, control characters included (the default
        /// when standard output is a file; a terminal gets them escaped)
        #[arg(long)]
        raw: bool,
    },
    /// Cancel a queued delivery, or stop a running one at its next step (rolling back)
    Cancel { id: i64 },
    /// Run the rollback steps of a finished delivery and move its task back
    Rollback {
        id: i64,
        /// Also push revert commits of what the delivery merged
        #[arg(long)]
        revert: bool,
    },
    /// Finish or undo what a killed worker left behind (`deliver`, `work` and `serve` do this first)
    Recover,
    /// Run queued deliveries and autotests until none is left (started in the background by
    /// `git push -o deliver` and by the pushes that ask for autotests)
    Work,
    /// Show the decision log: every push the hooks judged, every delivery and merge decision
    Audit(AuditArgs),
    /// The store: the queue, the history and the journal
    #[command(subcommand)]
    Store(StoreCommand),
    /// Bring up a task's showroom: its branches rebased on upstream, built and deployed with
    /// `[environments.showroom]`, beside the delivery line (nothing merged); or take it down
    #[command(
        after_help = "The URL is `[environments.showroom] url` with `{task}` the task \
                      key made a DNS label (`TASK-1` is `task-1`). Past `max` showrooms the \
                      oldest is torn down, or the request refused (`on_full`). Exit 0 up or \
                      down, 1 failed or refused. See docs/showrooms.md."
    )]
    Showroom(commands::ShowroomArgs),
    /// List the showrooms: task, state, URL, the commit of each repository, age, who asked
    Showrooms {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Run the bot: the queue worker, GitHub commands (`/deliver` …), tracker-driven
    /// deliveries, the queue page and metrics, until SIGTERM or ctrl-c
    Serve {
        /// Listen on this address instead of `[server] listen` (port 0 picks a free one; the
        /// address is printed on stdout)
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy the store (queue, history, journal, step records, replay ids) into an empty
    /// PostgreSQL database, keeping ids: the way from the embedded SQLite to replicas
    Copy {
        /// The environment variable holding the target's postgres:// URL (the URL itself
        /// never goes on a command line)
        #[arg(long, value_name = "VAR")]
        to_env: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Decide a whole push; reads `<old> <new> <ref>` lines on stdin (exit 0 accept, 1 reject)
    PreReceive,
    /// Decide one ref: `update <ref> <old> <new>` (exit 0 accept, 1 reject)
    Update {
        /// The ref being updated, e.g. `refs/heads/master`
        #[arg(value_name = "REF")]
        refname: OsString,
        /// Its current commit (all zeros when it is created)
        old: OsString,
        /// The commit pushed (all zeros when it is deleted)
        new: OsString,
    },
    /// Act on an accepted push (`git push -o deliver` queues the task's delivery)
    PostReceive,
    /// `hook PATH [ARGS]...`: run the hook a hook file is named after. This is how the kernel
    /// runs a hook file whose first line is `#!/path/to/lockstep hook`; `PATH` is
    /// `pre-receive`, `update` or `post-receive`, or a file in a `<hook>.d` folder.
    #[command(external_subcommand)]
    File(Vec<OsString>),
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also check that this account (the git server's, the bot's: a name or a uid) can write
    /// what the hooks write, by mode bits and ownership; repeatable
    #[arg(long = "as", value_name = "USER")]
    pub accounts: Vec<String>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    /// Bare repositories to check
    #[arg(required = true, value_name = "REPO.git")]
    pub repos: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load and compile every policy, and run every `[[gate]]` query once against Prometheus;
    /// report every error (exit 0 valid, 1 not)
    Check,
    /// Dry-run a push and explain every rule (exit 0 would be accepted, 1 rejected)
    Test(PolicyTestArgs),
    /// Evaluate candidate policies against the logged pushes and show what would change
    /// (exit 0 nothing would, 1 some push would be decided otherwise)
    Replay(ReplayArgs),
}

/// Whether the log is coloured: only on a terminal (a container's, systemd's or a file's log
/// would keep the escape codes as text), and never when `NO_COLOR` is set to anything but
/// the empty string (<https://no-color.org>).
fn log_in_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Sets up `tracing` on stderr.
pub fn init_tracing(cli: &Cli) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    // A server's log is its only voice: `serve` says what it does by default.
    let serving = matches!(cli.command, Command::Serve { .. });
    let default = match (cli.verbose, serving) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    let filter =
        EnvFilter::try_from_env("LOCKSTEP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let colour = log_in_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        // A log line stderr cannot take (its reader gone, `lockstep queue 2>&1 | head`) is
        // dropped: reporting that failure on the same stderr panics the thread that logged.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}

/// The config for commands run by a person: `--config`, `LOCKSTEP_CONFIG`, `./lockstep.toml`.
pub fn config_path(explicit: Option<&Path>) -> Located {
    let (path, source) = match explicit {
        Some(p) => (p.to_path_buf(), ConfigSource::Flag),
        None => match std::env::var_os("LOCKSTEP_CONFIG").filter(|v| !v.is_empty()) {
            Some(p) => (PathBuf::from(p), ConfigSource::Env),
            None => (PathBuf::from("lockstep.toml"), ConfigSource::Default),
        },
    };
    Located { path, source }
}

/// Runs a command; returns how it ended.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Demo { keep } => crate::demo::run(keep.as_deref()),
        Command::Hook(HookCommand::PreReceive) => Ok(hook::pre_receive(config)),
        Command::Hook(HookCommand::Update { refname, old, new }) => {
            Ok(hook::update(config, &refname, &old, &new))
        }
        Command::Hook(HookCommand::PostReceive) => Ok(hook::post_receive(config)),
        Command::Hook(HookCommand::File(argv)) => Ok(hook::from_file(config, &argv)),
        Command::InstallHooks(args) => commands::install_hooks(&config_path(config), args),
        Command::Doctor(args) => crate::doctor::run(
            &args.repos,
            &crate::doctor::Options {
                config: config.map(Path::to_path_buf),
                accounts: args.accounts,
                json: args.json,
            },
        ),
        Command::Policy(PolicyCommand::Check) => commands::policy::check(&config_path(config)),
        Command::Policy(PolicyCommand::Test(args)) => {
            commands::policy::test(&config_path(config), args)
        }
        Command::Policy(PolicyCommand::Replay(args)) => {
            commands::policy::replay(&config_path(config), args)
        }
        Command::Audit(args) => commands::audit(&config_path(config), args),
        Command::Deliver {
            task,
            priority,
            no_wait,
        } => commands::deliver(&config_path(config), &task, priority, no_wait),
        Command::Autotest { task, repo } => {
            commands::autotest(&config_path(config), &task, repo.as_deref())
        }
        Command::Autotests { task, json, log } => {
            commands::autotests(&config_path(config), task.as_deref(), json, log)
        }
        Command::Queue { json } => commands::queue(&config_path(config), json),
        Command::Show { what, task, json } => {
            commands::show(&config_path(config), &what, task, json)
        }
        Command::Logs {
            id,
            autotest,
            showroom,
            repo,
            step,
            raw,
        } => {
            let of = match (id, autotest, showroom) {
                (Some(id), None, None) => LogsOf::Delivery(DeliveryId(id)),
                (None, Some(id), None) => LogsOf::Autotest(id),
                (None, None, Some(task)) => LogsOf::Showroom(TaskKey::new(task.trim())),
                _ => anyhow::bail!("name one of ID, `--autotest ID` or `--showroom TASK`"),
            };
            let filter = LogFilter {
                repo: repo.as_deref(),
                step: step.as_deref(),
                raw,
            };
            commands::logs(&config_path(config), &of, filter)
        }
        Command::Cancel { id } => commands::cancel(&config_path(config), DeliveryId(id)),
        Command::Rollback { id, revert } => {
            commands::rollback(&config_path(config), DeliveryId(id), revert)
        }
        Command::Recover => commands::recover(&config_path(config)),
        Command::Work => commands::work(&config_path(config)),
        Command::Store(StoreCommand::Copy { to_env }) => {
            commands::store_copy(&config_path(config), &to_env)
        }
        Command::Showroom(args) => commands::showroom(&config_path(config), &args),
        Command::Showrooms { json } => commands::showrooms(&config_path(config), json),
        Command::Serve { listen } => {
            crate::server::run_cli(&config_path(config), listen.as_deref())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_files_skip_clap_and_mean_the_same() {
        let argv = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        for args in [
            argv(&["lockstep", "hook", "/srv/git/api.git/hooks/pre-receive"]),
            argv(&[
                "lockstep",
                "hook",
                "hooks/update",
                "refs/heads/x",
                "0000",
                "1111",
            ]),
            argv(&[
                "lockstep",
                "hook",
                "./custom_hooks/pre-receive.d/lockstep",
                "--config",
                "x",
            ]),
        ] {
            let fast = Cli::of_hook_file(&args).expect("a hook file's command line");
            let clap = Cli::try_parse_from(&args).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{clap:?}"), "{args:?}");
        }
        for args in [
            argv(&["lockstep", "hook", "pre-receive"]),
            argv(&["lockstep", "--config", "x/y.toml", "hook", "pre-receive"]),
            argv(&["lockstep", "hook", "-v/x"]),
            argv(&["lockstep", "policy", "check/x"]),
            argv(&["lockstep", "hook"]),
            argv(&["lockstep"]),
        ] {
            assert!(Cli::of_hook_file(&args).is_none(), "{args:?}");
        }
    }
    #[test]
    fn the_log_is_coloured_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(log_in_colour(true, None));
        assert!(log_in_colour(true, Some(OsStr::new(""))));
        assert!(!log_in_colour(true, Some(OsStr::new("1"))));
        assert!(!log_in_colour(true, Some(OsStr::new("0"))));
        assert!(!log_in_colour(false, None));
        assert!(!log_in_colour(false, Some(OsStr::new(""))));
    }

    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
