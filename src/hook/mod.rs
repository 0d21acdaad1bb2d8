//! The server-side hooks: `pre-receive`, `update` and `post-receive`.
//!
//! `pre-receive` decides the whole push (one bad ref rejects all); `update` decides one ref
//! (for servers that want per-ref decisions); `post-receive` acts on an accepted push (the
//! `deliver` push option, a push to `refs/deliver/<TASK>`). The deciding hooks never write
//! refs: during `pre-receive` the pushed objects are in git's quarantine, where a ref update
//! would be refused or, worse, point at objects that are about to vanish. The one ref a hook
//! writes is `post-receive` deleting a `refs/deliver/<TASK>` it has acted on.
//!
//! Exit codes: [`Exit::Success`] accepted, [`Exit::Failed`] rejected by policy (a rule that
//! errs, the tracker not answering, counts as its `on_error` says), [`Exit::Error`] rejected
//! because lockstep could not decide (bad config, unreadable object): it always fails closed.

use std::ffi::OsStr;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

mod showroom;

use crate::audit;
use crate::config::{AuditOnError, Config, ConfigSource};
use crate::delivery::{self, Request, Requested, refusal_lines};
use crate::domain::{Source, TaskKey};
use crate::exit::Exit;
use crate::git::Git;
use crate::policy::PolicySet;
use crate::push::{
    self, Early, NewCommits, PushContext, RefDecision, RefUpdate, Report, deliver_ref,
};
use crate::store::Store;
use crate::text::escape;
use crate::{timings, tracker};

/// Finds the config: `--config`, else `LOCKSTEP_CONFIG`, else the repository's git config
/// `lockstep.config`.
pub fn find_config(explicit: Option<&Path>, git: &Git) -> anyhow::Result<(PathBuf, ConfigSource)> {
    if let Some(p) = explicit {
        return Ok((p.to_path_buf(), ConfigSource::Flag));
    }
    if let Some(p) = std::env::var_os("LOCKSTEP_CONFIG").filter(|v| !v.is_empty()) {
        return Ok((PathBuf::from(p), ConfigSource::Env));
    }
    match git.config_get_local_first("lockstep.config")? {
        Some(p) => Ok((PathBuf::from(p), ConfigSource::Repository)),
        None => anyhow::bail!(
            "no config found; pass `--config PATH`, set `LOCKSTEP_CONFIG`, or run \
             `lockstep install-hooks --config PATH` on this repository"
        ),
    }
}

/// The config of `post-receive`, found and read the first time something asks for it, then
/// shared: a push that asks nothing of the hook never reads it.
struct OnceConfig<'a> {
    explicit: Option<&'a Path>,
    read: std::cell::OnceCell<Result<Config, String>>,
}

impl<'a> OnceConfig<'a> {
    fn new(explicit: Option<&'a Path>) -> OnceConfig<'a> {
        OnceConfig {
            explicit,
            read: std::cell::OnceCell::new(),
        }
    }

    /// The config, or why it could not be read (the same reason every time).
    fn get(&self) -> anyhow::Result<&Config> {
        self.read
            .get_or_init(|| {
                let found = Git::for_hook().and_then(|git| find_config(self.explicit, &git));
                found
                    .and_then(|(path, source)| Config::load_from(&path, source))
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// Loads the config and compiles the policies it names. A set with no rule for pushes would
/// accept every push (an empty or misplaced policy folder): refused unless the config says
/// `[policies] allow_empty = true`.
pub fn load(config_path: &Path, source: ConfigSource) -> anyhow::Result<(Config, PolicySet)> {
    let config = Config::load_from(config_path, source)?;
    timings::mark("config");
    let policies = PolicySet::for_config(&config)?;
    timings::mark("policies");
    if !policies.has_push_rules() && !config.policies.allow_empty {
        anyhow::bail!("{}", crate::policy::NO_PUSH_RULE);
    }
    Ok((config, policies))
}

/// How long past `[policies] timeout` a hook waits for a decision before it gives up on it.
const HOOK_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The decisions on a push, the state folder its verdicts are counted in, and its line of
/// the decision log.
struct Decided {
    decisions: Vec<RefDecision>,
    state_dir: PathBuf,
    logged: audit::Entry,
    limits: crate::config::Audit,
}

/// Decides a push in a hook's environment, under the policy deadline.
fn decide_in_hook(config_path: Option<&Path>, updates: Vec<RefUpdate>) -> anyhow::Result<Decided> {
    timings::mark("read-push");
    let git = Git::for_hook()?;
    // git walks the new commits while the config, the policies and the tracker load.
    let early = Early::start(&git, &updates);
    timings::mark("git-spawn");
    let (path, source) = find_config(config_path, &git)?;
    let (config, mut policies) = load(&path, source)?;
    let ctx = PushContext {
        repo: push::repo_name(&config, git.dir()),
        pusher: push::pusher_from_env(&config),
        options: push::push_options_from_env(),
    };
    let tracker = tracker::open(&config)?;
    let keys = push::task_keys(&config, &policies, &updates);
    let tasks = if keys.is_empty() {
        Default::default()
    } else {
        let rt = crate::runtime::current_thread()?;
        rt.block_on(push::fetch_tasks(&config, tracker.as_ref(), &keys))
    };
    timings::mark("tracker");
    let timeout = config.policies.timeout;
    // Every rule stops at the deadline and counts as its `on_error` says. What else deciding
    // does (reading commits) is bounded by giving up a moment later: the process exits right
    // after, taking an overrunning worker with it.
    policies.deadline = Some(std::time::Instant::now() + timeout);
    let state_dir = config.state_dir();
    let limits = config.audit.clone();
    let (tx, rx) = mpsc::channel();
    let tracker_name = tracker.name();
    let git_dir = std::path::absolute(git.dir())
        .unwrap_or_else(|_| git.dir().to_path_buf())
        .to_string_lossy()
        .into_owned();
    std::thread::spawn(move || {
        let r = push::decide(
            &config,
            &policies,
            &git,
            &push::Pushed {
                ctx: &ctx,
                updates: &updates,
                tracker: tracker_name,
                tasks: &tasks,
            },
            NewCommits::NotOnAnyRef(&early),
        )
        .map(|mut decisions| {
            // The approvals the rule let through so far, judged by their authors: the pushers
            // of the branch's commits, as the log recorded them, do not approve it either.
            audit::refuse_approvals_by_pushers(&config, &git, &ctx, &mut decisions);
            let logged = audit::Entry::push(
                &ctx,
                &git_dir,
                tracker_name,
                &tasks,
                &decisions,
                &policies.revision,
            );
            timings::mark("log-entry");
            (decisions, logged)
        });
        let _ = tx.send(r);
    });
    let result = match rx.recv_timeout(timeout + HOOK_GRACE) {
        Ok(r) => r,
        Err(_) => anyhow::bail!(
            "policies did not finish in {}; simplify them or raise `policies.timeout`",
            crate::config::humanize(timeout)
        ),
    };
    result.map(|(decisions, logged)| Decided {
        decisions,
        state_dir,
        logged,
        limits,
    })
}

/// The metric label of a verdict: `pass`, `skip` (its `when` was false), `deny`, `warn` or
/// `error`.
pub fn outcome_label(v: &crate::policy::Verdict) -> &'static str {
    v.label()
}

/// Counts the verdicts of a push for `lockstep serve`'s metrics ([`crate::verdict_counts`]).
/// Only when the state folder exists (a hook never creates it), within a short deadline, and
/// never with any effect on the push: a failure here is logged at debug level and forgotten.
fn count_decisions(state_dir: &Path, decisions: &[RefDecision]) {
    timings::mark("report");
    if !state_dir.is_dir() {
        return;
    }
    let pairs: Vec<(String, String)> = decisions
        .iter()
        .flat_map(|d| d.decision.verdicts.iter())
        .map(|v| (v.rule.clone(), outcome_label(v).to_string()))
        .collect();
    if pairs.is_empty() {
        return;
    }
    let wait = std::time::Duration::from_millis(50);
    if let Err(e) = crate::verdict_counts::add(state_dir, &pairs, wait) {
        tracing::debug!("hook decisions not counted: {e:#}");
    }
}

/// Prints the verdict, then counts it for the metrics and appends it to the decision log:
/// the pusher reads why before the hook touches the disk.
fn finish(result: anyhow::Result<Decided>) -> Exit {
    let gitlab = std::env::var_os("GL_ID").is_some();
    let mut err = std::io::stderr().lock();
    match result {
        Ok(Decided {
            decisions,
            state_dir,
            logged,
            limits,
        }) => {
            let report = Report {
                decisions: &decisions,
                gitlab,
            }
            .to_string();
            // Rule messages quote commit messages and other text pushers chose.
            let _ = write!(err, "{}", escape(&report));
            let _ = err.flush();
            drop(err);
            count_decisions(&state_dir, &decisions);
            let accepted = decisions.iter().all(|d| d.decision.accepted());
            if let Err(e) = audit::append(&state_dir, &logged, &limits) {
                let lost = audit::Unlogged::new(&state_dir, &logged, &e);
                let (text, exit) = match limits.on_error {
                    AuditOnError::Reject => (lost.refusal(accepted), Exit::Error),
                    AuditOnError::Warn => (
                        lost.warning(lost.note().as_deref()),
                        Exit::success_if(accepted),
                    ),
                };
                // GitLab shows a hook's lines only on a rejection, prefixed.
                let text = push::gitlab_lines(&text, gitlab && exit != Exit::Success);
                let _ = write!(std::io::stderr(), "{}", escape(&text));
                tracing::error!(
                    "push decision not logged in `{}`: {}",
                    state_dir.display(),
                    escape(&lost.reason)
                );
                return exit;
            }
            Exit::success_if(accepted)
        }
        Err(e) => {
            let text = format!("lockstep: push rejected: {e:#}");
            let _ = write!(err, "{}", escape(&push::gitlab_lines(&text, gitlab)));
            // Lockstep could not decide, so the push is rejected.
            Exit::Error
        }
    }
}

/// The hook a hook file stands for: its name (`hooks/update`), or the name of its folder
/// (`custom_hooks/pre-receive.d/lockstep`, as GitLab and Gitea run several).
pub fn kind_of_file(path: &Path) -> Option<&'static str> {
    const HOOKS: [&str; 3] = ["pre-receive", "update", "post-receive"];
    let named = |name: Option<&OsStr>| {
        let name = name?.to_str()?;
        HOOKS.into_iter().find(|h| *h == name)
    };
    named(path.file_name()).or_else(|| {
        let folder = path.parent()?.file_name()?.to_str()?.strip_suffix(".d")?;
        named(Some(OsStr::new(folder)))
    })
}

/// `lockstep hook FILE [ARGS]...`: what the kernel runs for a hook file whose first line is
/// `#!/path/to/lockstep hook`. Runs the hook the file stands for with git's arguments.
pub fn from_file(config: Option<&Path>, argv: &[std::ffi::OsString]) -> Exit {
    let Some((file, args)) = argv.split_first() else {
        return finish(Err(anyhow::anyhow!("no hook named")));
    };
    match (kind_of_file(Path::new(file)), args) {
        (Some("pre-receive"), []) => pre_receive(config),
        (Some("post-receive"), []) => post_receive(config),
        (Some("update"), [refname, old, new]) => update(config, refname, old, new),
        (Some(kind), _) => finish(Err(anyhow::anyhow!(
            "`{}` is the {kind} hook, but git passed {} argument(s); git runs update with \
             <ref> <old> <new> and the others with none",
            file.to_string_lossy(),
            args.len()
        ))),
        (None, _) => finish(Err(anyhow::anyhow!(
            "`lockstep hook {}`: no such hook; name one of pre-receive, update, post-receive, \
             or run it from a hook file named after one (or in a `<hook>.d` folder)",
            file.to_string_lossy()
        ))),
    }
}

/// `lockstep hook pre-receive`: reads `<old> <new> <ref>` lines from stdin.
pub fn pre_receive(config: Option<&Path>) -> Exit {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        return finish(Err(anyhow::anyhow!("cannot read the ref updates: {e}")));
    }
    let result = push::parse_updates(&input)
        .map_err(|e| anyhow::anyhow!("git sent a ref update lockstep cannot read: {e}"))
        .and_then(|updates| decide_in_hook(config, updates));
    finish(result)
}

/// `lockstep hook update <ref> <old> <new>`: decides one ref. The arguments are taken as git
/// passes them, so that a ref name that is not UTF-8 gets lockstep's answer, not a usage error.
pub fn update(config: Option<&Path>, refname: &OsStr, old: &OsStr, new: &OsStr) -> Exit {
    let parts = match (refname.to_str(), old.to_str(), new.to_str()) {
        (Some(refname), Some(old), Some(new)) => push::update_from_parts(1, old, new, refname),
        _ => Err(push::ParseError::NotUtf8 { line: 1 }),
    };
    let result = parts
        .map_err(|e| anyhow::anyhow!("git sent a ref update lockstep cannot read: {e}"))
        .and_then(|u| decide_in_hook(config, vec![u]));
    finish(result)
}

/// What `post-receive` was asked to do, parsed from the push options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostReceiveRequest {
    /// `-o deliver` or `-o deliver=PRIORITY`.
    pub deliver: Option<i64>,
    /// `-o autotest`.
    pub autotest: bool,
}

/// Parses the push options `post-receive` acts on.
pub fn parse_post_receive_options(options: &[String]) -> Result<PostReceiveRequest, String> {
    let mut req = PostReceiveRequest::default();
    for o in options {
        if o == "autotest" {
            req.autotest = true;
        } else if o == "deliver" {
            req.deliver = Some(0);
        } else if let Some(p) = o.strip_prefix("deliver=") {
            let n = p
                .strip_prefix("priority=")
                .unwrap_or(p)
                .parse()
                .map_err(|_| {
                    format!("push option `{o}`: priority must be a whole number, e.g. `deliver=10`")
                })?;
            req.deliver = Some(n);
        }
    }
    Ok(req)
}

/// `lockstep hook post-receive`: after an accepted push; enqueues deliveries when asked with
/// `git push -o deliver` (of a task branch, or of an approval) or by a push to
/// `refs/deliver/<TASK>`, which it then deletes. It cannot undo the push, so it only reports
/// problems.
pub fn post_receive(config_path: Option<&Path>) -> Exit {
    let mut input = Vec::new();
    if std::io::stdin().read_to_end(&mut input).is_err() {
        return Exit::Success;
    }
    let result = (|| -> anyhow::Result<()> {
        let updates = push::parse_updates(&input)?;
        // Showrooms, autotests and deliveries each may need the config: it is read once.
        let config = OnceConfig::new(config_path);
        showroom::after_push(&updates, &push::push_options_from_env(), || config.get());
        let req = parse_post_receive_options(&push::push_options_from_env())
            .map_err(anyhow::Error::msg)?;
        if let Err(e) = autotests_asked(&config, &updates, req.autotest) {
            eprintln!("lockstep: no autotest: {}", escape(&format!("{e:#}")));
        }
        let by_ref: Vec<&RefUpdate> = updates
            .iter()
            .filter(|u| !u.deleted() && u.name.starts_with(deliver_ref::PREFIX))
            .collect();
        if req.deliver.is_none() && by_ref.is_empty() {
            return Ok(());
        }
        let git = Git::for_hook()?;
        // A delivery request leaves no ref behind, whatever becomes of it. After pre-receive,
        // the pushed objects are out of quarantine: the ref can be deleted here.
        for u in &by_ref {
            if let Err(e) = git.run(&["update-ref", "-d", &u.name, &u.new]) {
                eprintln!(
                    "lockstep: could not delete `{}`: {}",
                    escape(&u.name),
                    escape(&format!("{e:#}"))
                );
            }
        }
        let config = config.get()?;
        let keys = deliver_ref::tasks_asked(config, &updates, req.deliver.is_some());
        if keys.is_empty() {
            eprintln!("lockstep: `-o deliver` ignored: no pushed branch or approval names a task");
            return Ok(());
        }
        let requester = push::pusher_from_env(config);
        if requester.is_empty() {
            // pre-receive refuses such a push; this is for a server that runs only this hook.
            let why = deliver_ref::no_identity(config, "ask for a delivery");
            eprintln!("lockstep: nothing queued: {}", escape(&why));
            return Ok(());
        }
        let priority = req.deliver.unwrap_or(0);
        for key in keys {
            match enqueue(config, key, priority, &requester) {
                Ok(msg) => eprintln!("lockstep: {}", escape(&msg)),
                Err(e) => eprintln!(
                    "lockstep: could not queue the delivery of `{key}`: {}",
                    escape(&format!("{e:#}"))
                ),
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("lockstep: post-receive: {}", escape(&format!("{e:#}")));
    }
    Exit::Success
}

/// Records the autotests a push asks for: its task branches' heads, with `-o autotest` or
/// `[autotest] on_push`. Only a push updating a branch reads the config for it.
fn autotests_asked(
    config: &OnceConfig<'_>,
    updates: &[RefUpdate],
    asked: bool,
) -> anyhow::Result<()> {
    if !updates
        .iter()
        .any(|u| !u.deleted() && u.name.starts_with("refs/heads/"))
    {
        return Ok(());
    }
    let config = config.get()?;
    if !(asked || config.autotest.on_push) {
        return Ok(());
    }
    let git = Git::for_hook()?;
    let repo = push::repo_name(config, git.dir());
    let requester = push::pusher_from_env(config);
    for line in delivery::autotest::after_push(config, &repo, updates, &requester)? {
        eprintln!("lockstep: {}", escape(&line));
    }
    Ok(())
}

/// Queues the delivery of a task for `git push -o deliver`: the push declares the task ready,
/// so it is moved to For Delivery first; then a detached worker is started so the push does
/// not wait for the delivery.
fn enqueue(config: &Config, key: &str, priority: i64, requester: &str) -> anyhow::Result<String> {
    let key = &TaskKey::new(key);
    let rt = crate::runtime::current_thread()?;
    let policies = PolicySet::for_config(config)?;
    rt.block_on(async {
        let tracker = tracker::open(config)?;
        // The push declares the task ready: its deliver rules are judged with it so.
        let who = if requester.is_empty() {
            "a push"
        } else {
            requester
        };
        let note = format!("ready for delivery: {who} pushed with `-o deliver`");
        let moved_from = delivery::ready::mark(config, tracker.as_ref(), key, &note).await?;
        let req = Request {
            task: key.clone(),
            priority,
            source: Source::Push,
            requester: requester.to_string(),
            ..Default::default()
        };
        let requested = async {
            let store = Store::for_config(config).await?;
            delivery::request(config, &policies, tracker.as_ref(), None, &store, &req).await
        }
        .await;
        // A request that goes nowhere leaves the task where the push found it.
        let why = match &requested {
            Ok(Requested::Refused(d)) => Some(refusal_lines(d).join("; ")),
            Err(e) => Some(format!("{e:#}")),
            Ok(_) => None,
        };
        let mut put_back = String::new();
        if let (Some(why), Some(previous)) = (why, &moved_from) {
            let note = format!("not delivered: {why}; back to {previous}");
            put_back = match tracker
                .move_to(key, previous, &crate::text::note(&note))
                .await
            {
                Ok(()) => format!(" (task moved back to {previous})"),
                Err(e) => format!(" (and it could not be moved back to {previous}: {e})"),
            };
        }
        let msg = match requested.map_err(|e| anyhow::anyhow!("{e:#}{put_back}"))? {
            Requested::Queued { id, position } => {
                delivery::worker::spawn_detached(config)?;
                format!(
                    "delivery #{id} of `{key}` queued (position {position}); follow it with \
                     `lockstep show {id}`"
                )
            }
            Requested::AlreadyQueued { id } => {
                format!("`{key}` is already queued as delivery #{id}")
            }
            Requested::Refused(d) => format!(
                "delivery of `{key}` refused: {}{put_back}",
                refusal_lines(&d).join("; ")
            ),
        };
        Ok(msg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_options() {
        let o = |v: &[&str]| {
            parse_post_receive_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(o(&[]).unwrap().deliver, None);
        assert!(o(&["autotest"]).unwrap().autotest && !o(&[]).unwrap().autotest);
        assert_eq!(o(&["deliver"]).unwrap().deliver, Some(0));
        assert_eq!(o(&["ci.skip", "deliver=5"]).unwrap().deliver, Some(5));
        assert_eq!(o(&["deliver=priority=7"]).unwrap().deliver, Some(7));
        assert!(o(&["deliver=soon"]).is_err());
    }
}
