//! What a push is: the ref updates, who pushes, and the facts policies read about each ref.
//!
//! Parsing is pure ([`parse_updates`]); gathering facts touches git and the tracker only
//! for what the loaded rules actually read, and asks the tracker once per task however many
//! refs name it.

use std::collections::HashMap;
use std::fmt;

use cel::Value;

use crate::config::{Config, OnError};
use crate::git::{self, Git, PendingCommits};
use crate::policy::{self, Decision, Facts, PolicySet, Stage};
use crate::tracker::{self, Task, Tracker};

/// One line of `pre-receive`'s stdin, or the arguments of `update`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub name: String,
}

impl RefUpdate {
    pub fn created(&self) -> bool {
        git::is_zero(&self.old)
    }
    pub fn deleted(&self) -> bool {
        git::is_zero(&self.new)
    }
    /// The branch's short name, or "" when the ref is not a branch.
    pub fn branch(&self) -> &str {
        self.name.strip_prefix("refs/heads/").unwrap_or("")
    }
    /// The tag's short name, or "".
    pub fn tag(&self) -> &str {
        self.name.strip_prefix("refs/tags/").unwrap_or("")
    }
}

/// Why a ref update line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: expected `<old-oid> <new-oid> <ref>`, got {got} field(s)")]
    FieldCount { line: usize, got: usize },
    #[error("line {line}: `{value}` is not an object id")]
    BadOid { line: usize, value: String },
    #[error("line {line}: ref name is not UTF-8; name refs in UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line}: ref `{name}` is not under `refs/`")]
    BadRef { line: usize, name: String },
}

/// Parses the whole stdin of `pre-receive` / `post-receive`.
pub fn parse_updates(input: &[u8]) -> Result<Vec<RefUpdate>, ParseError> {
    input
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| parse_update(i + 1, l))
        .collect()
}

fn parse_update(line: usize, bytes: &[u8]) -> Result<RefUpdate, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::NotUtf8 { line })?;
    let fields: Vec<&str> = text.trim_end_matches('\r').split(' ').collect();
    let [old, new, name] = fields[..] else {
        return Err(ParseError::FieldCount {
            line,
            got: fields.len(),
        });
    };
    update_from_parts(line, old, new, name)
}

/// Checks the three parts of a ref update (also used for `update`'s arguments).
pub fn update_from_parts(
    line: usize,
    old: &str,
    new: &str,
    name: &str,
) -> Result<RefUpdate, ParseError> {
    for oid in [old, new] {
        if !git::is_oid(oid) {
            return Err(ParseError::BadOid {
                line,
                value: oid.chars().take(80).collect(),
            });
        }
    }
    if !name.starts_with("refs/") || name.len() <= 5 {
        return Err(ParseError::BadRef {
            line,
            name: name.chars().take(200).collect(),
        });
    }
    Ok(RefUpdate {
        old: old.into(),
        new: new.into(),
        name: name.into(),
    })
}

/// Who pushes, to which repository, with which options.
#[derive(Debug, Clone, Default)]
pub struct PushContext {
    pub repo: String,
    pub pusher: String,
    pub options: Vec<String>,
}

/// The pusher named by the first set variable of `[identity] env`.
pub fn pusher_from_env(config: &Config) -> String {
    config
        .identity
        .env
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_default()
}

/// `GIT_PUSH_OPTION_0..N`, as git hands them to hooks.
pub fn push_options_from_env() -> Vec<String> {
    let count: usize = std::env::var("GIT_PUSH_OPTION_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (0..count.min(1000))
        .filter_map(|i| std::env::var(format!("GIT_PUSH_OPTION_{i}")).ok())
        .collect()
}

/// The ecosystem name of the repository a hook runs in: from the git server's variables,
/// else by matching its path with a `[[repo]] url`, else its folder name without `.git`.
pub fn repo_name(config: &Config, git_dir: &std::path::Path) -> String {
    for var in [
        "GL_REPO",
        "GL_PROJECT_PATH",
        "GITHUB_REPO_NAME",
        "GITEA_REPO_NAME",
    ] {
        if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
            if let Some(r) = config
                .repos
                .iter()
                .find(|r| r.name == v || r.github.as_deref() == Some(&v))
            {
                return r.name.clone();
            }
            let last = v.rsplit('/').next().unwrap_or(&v).trim_end_matches(".git");
            if let Some(r) = config.repos.iter().find(|r| r.name == last) {
                return r.name.clone();
            }
            return v;
        }
    }
    let here = std::fs::canonicalize(git_dir).ok();
    if let Some(here) = &here {
        for r in &config.repos {
            let url = r.url.strip_prefix("file://").unwrap_or(&r.url);
            if std::fs::canonicalize(config.resolve(std::path::Path::new(url)))
                .ok()
                .as_ref()
                == Some(here)
            {
                return r.name.clone();
            }
        }
    }
    let path = here.unwrap_or_else(|| git_dir.to_path_buf());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.strip_suffix(".git").unwrap_or(&name).to_string();
    if name == ".git" || name.is_empty() {
        path.parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        name
    }
}

/// How the new commits of a ref are told apart from what the repository already has.
#[derive(Debug, Clone, Copy)]
pub enum NewCommits<'a> {
    /// In a hook: everything not reachable from any existing ref; the listings started
    /// early are taken from `Early`.
    NotOnAnyRef(&'a Early),
    /// In a dry run: everything not reachable from `old` or from refs other than this one.
    AsIfPushedNow,
}

/// The new commits of a push, listed ahead of the decision: a hook starts `git rev-list` for
/// each pushed tip first thing, so that git walks while lockstep loads its config, compiles
/// the policies and asks the tracker (none of which changes what is new). When no rule turns
/// out to read `commits`, the listings are dropped unread.
#[derive(Debug, Default)]
pub struct Early(std::sync::Mutex<HashMap<String, PendingCommits>>);

impl Early {
    /// At most this many tips are listed early; the rest are listed when decided.
    const MAX: usize = 8;

    /// Starts listing the new commits of the pushed tips (not of deletions). A listing that
    /// cannot start is left to the decision, which reports the error itself.
    pub fn start(git: &Git, updates: &[RefUpdate]) -> Early {
        let mut started = HashMap::new();
        for u in updates.iter().filter(|u| !u.deleted()) {
            if started.len() == Early::MAX {
                break;
            }
            if !started.contains_key(&u.new)
                && let Ok(pending) = git.start_commits(&u.new, &["--all"])
            {
                started.insert(u.new.clone(), pending);
            }
        }
        Early(std::sync::Mutex::new(started))
    }

    fn take(&self, new: &str) -> Option<PendingCommits> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(new)
    }
}

/// The verdicts on one ref.
#[derive(Debug, Clone)]
pub struct RefDecision {
    pub update: RefUpdate,
    pub decision: Decision,
}

/// The tracker's answers for the tasks a push names, fetched once per task.
pub type TaskAnswers = HashMap<String, Result<Option<Task>, String>>;

/// The task keys the refs name (only if some push rule reads `task`).
pub fn task_keys(config: &Config, policies: &PolicySet, updates: &[RefUpdate]) -> Vec<String> {
    if !policies.needs(Stage::Push, "task") {
        return Vec::new();
    }
    let mut keys: Vec<String> = updates
        .iter()
        .filter_map(|u| config.tasks.task_of(u.branch()).map(String::from))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Asks the tracker about each task, concurrently, each under the tracker timeout.
pub async fn fetch_tasks(config: &Config, tracker: &dyn Tracker, keys: &[String]) -> TaskAnswers {
    let timeout = config.tracker.timeout;
    let answers = keys.iter().map(|k| async move {
        let r = tracker::task_with_timeout(tracker, k, timeout)
            .await
            .map_err(|e| e.to_string());
        (k.clone(), r)
    });
    futures::future::join_all(answers)
        .await
        .into_iter()
        .collect()
}

/// Evaluates the push rules for every ref.
pub fn decide(
    config: &Config,
    policies: &PolicySet,
    git: &Git,
    ctx: &PushContext,
    updates: &[RefUpdate],
    tracker_name: &str,
    tasks: &TaskAnswers,
    mode: NewCommits<'_>,
) -> anyhow::Result<Vec<RefDecision>> {
    let need_commits = policies.needs(Stage::Push, "commits");
    let need_ff = policies.needs(Stage::Push, "fast_forward");
    let need_rewind = policies.needs(Stage::Push, "rewind");
    let now = Value::Timestamp(chrono::Utc::now().fixed_offset());
    let mut out = Vec::with_capacity(updates.len());
    for u in updates {
        let mut facts = Facts::default();
        facts
            .set("repo", ctx.repo.as_str())
            .set("ref", u.name.as_str())
            .set("branch", u.branch())
            .set("tag", u.tag())
            .set("old", u.old.as_str())
            .set("new", u.new.as_str())
            .set("created", u.created())
            .set("deleted", u.deleted())
            .set("pusher", ctx.pusher.as_str())
            .set("bot", config.bot.user.as_str())
            .set("maintainers", config.bot.maintainers.clone())
            .set("protected", config.policies.protected.clone())
            .set("push_options", ctx.options.clone())
            .set(
                "tracker",
                if tracker_name == "file" {
                    "the tasks file"
                } else {
                    tracker_name
                },
            )
            .set("in_progress", config.tasks.in_progress.clone())
            .set("for_delivery", config.tasks.for_delivery.clone())
            .set("now", now.clone());
        let ff = if need_ff && !u.created() && !u.deleted() {
            git.is_ancestor(&u.old, &u.new)?
        } else {
            !u.deleted()
        };
        facts.set("fast_forward", ff);
        let rewind = need_rewind
            && !ff
            && !u.created()
            && !u.deleted()
            && git.is_ancestor(&u.new, &u.old)?;
        facts.set("rewind", rewind);
        let early = match mode {
            NewCommits::NotOnAnyRef(early) if need_commits && !u.deleted() => early.take(&u.new),
            _ => None,
        };
        let commits = if let Some(pending) = early {
            pending.wait()?
        } else if need_commits && !u.deleted() {
            let excluded;
            let hide: Vec<&str> = match mode {
                NewCommits::NotOnAnyRef(_) => vec!["--all"],
                NewCommits::AsIfPushedNow => {
                    // Every ref but this one. Not `--all`: it adds `HEAD`, which in a clone
                    // often is this very branch and would hide every new commit.
                    excluded = format!("--exclude={}", u.name);
                    let mut h = vec![excluded.as_str(), "--glob=refs/*"];
                    if !u.created() {
                        h.push(u.old.as_str());
                    }
                    h
                }
            };
            git.commits(&u.new, &hide)?
        } else {
            Vec::new()
        };
        facts.set_commits(commits);
        let mut unavailable = None;
        let task = match config.tasks.task_of(u.branch()) {
            None => Value::Null,
            Some(key) => match tasks.get(key) {
                Some(Ok(Some(t))) => {
                    policy::task_value(&t.key, true, &t.status, &t.title, &t.assignee, &t.url)
                }
                Some(Ok(None)) | None => policy::task_value(key, false, "", "", "", ""),
                Some(Err(e)) => {
                    unavailable = Some(e.clone());
                    policy::task_value(key, false, "", "", "", "")
                }
            },
        };
        facts.set("task", task);
        let mut decision = policies.evaluate(Stage::Push, &facts);
        if let Some(reason) = unavailable {
            mark_unavailable(policies, &mut decision, &reason, config.tracker.on_error);
        }
        out.push(RefDecision {
            update: u.clone(),
            decision,
        });
    }
    Ok(out)
}

/// Rules that read `task` cannot be trusted when the tracker did not answer: they become
/// errors (or warnings under `[tracker] on_error = "allow"`) that say so.
fn mark_unavailable(
    policies: &PolicySet,
    decision: &mut Decision,
    reason: &str,
    on_error: OnError,
) {
    for v in &mut decision.verdicts {
        let uses_task = policies
            .rules
            .iter()
            .any(|r| r.name == v.rule && r.uses("task"));
        if !uses_task || v.outcome == policy::Outcome::NotApplicable {
            continue;
        }
        if on_error == OnError::Allow {
            v.enforcement = policy::Enforcement::Warn;
        }
        // A rule that only warns never rejects, whatever `on_error` says.
        let verb = match v.enforcement {
            policy::Enforcement::Deny => "push rejected",
            policy::Enforcement::Warn => "push accepted without this check",
        };
        v.outcome = policy::Outcome::Error(format!("{reason}; {verb} (rule {})", v.rule));
    }
}

/// A short id for messages.
pub fn short(oid: &str) -> &str {
    &oid[..oid.len().min(10)]
}

/// Renders the result of a push the way `git push` shows it (each line gets `remote: `).
pub struct Report<'a> {
    pub decisions: &'a [RefDecision],
    /// GitLab shows lines starting `GL-HOOK-ERR:` in its web UI.
    pub gitlab: bool,
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rejected = self.decisions.iter().any(|d| !d.decision.accepted());
        for d in self.decisions {
            for v in d.decision.warnings() {
                for m in v.messages() {
                    writeln!(f, "lockstep: warning: {}: [{}] {m}", d.update.name, v.rule)?;
                }
            }
        }
        if rejected {
            let mut text = String::from("lockstep: push rejected\n");
            for d in self.decisions {
                for v in d.decision.violations() {
                    for m in v.messages() {
                        text.push_str(&format!("  {}: [{}] {m}\n", d.update.name, v.rule));
                    }
                }
            }
            write!(f, "{}", gitlab_lines(&text, self.gitlab))?;
        }
        Ok(())
    }
}

/// GitLab shows a hook's output in its web UI only line by line, for lines that start with
/// `GL-HOOK-ERR:`; with `gitlab`, every line of `text` gets the prefix.
pub fn gitlab_lines(text: &str, gitlab: bool) -> String {
    if !gitlab {
        let mut out = text.to_string();
        if !out.ends_with('\n') {
            out.push('\n');
        }
        return out;
    }
    text.lines()
        .map(|l| format!("GL-HOOK-ERR: {l}\n"))
        .collect()
}

/// A per-rule explanation, for `lockstep policy test`.
pub fn explain(decisions: &[RefDecision], ctx: &PushContext) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for d in decisions {
        let u = &d.update;
        let pusher = if ctx.pusher.is_empty() {
            "an unknown pusher"
        } else {
            &ctx.pusher
        };
        let _ = writeln!(
            s,
            "{} {} → {} by {pusher} in `{}`",
            u.name,
            short(&u.old),
            short(&u.new),
            ctx.repo
        );
        let width = d
            .decision
            .verdicts
            .iter()
            .map(|v| v.rule.len())
            .max()
            .unwrap_or(0);
        for v in &d.decision.verdicts {
            let (label, msgs) = match &v.outcome {
                policy::Outcome::NotApplicable => ("n/a ", Vec::new()),
                policy::Outcome::Pass => ("pass", Vec::new()),
                _ if v.warns() => ("warn", v.messages()),
                _ => ("FAIL", v.messages()),
            };
            if msgs.is_empty() {
                let _ = write!(s, "  {label}  {}", v.rule);
            } else {
                let _ = write!(s, "  {label}  {:width$}", v.rule);
            }
            for (i, m) in msgs.iter().enumerate() {
                if i == 0 {
                    let _ = write!(s, "  {m}");
                } else {
                    let _ = write!(s, "\n        {:width$}  {m}", "");
                }
            }
            s.push('\n');
        }
    }
    let accepted = decisions.iter().all(|d| d.decision.accepted());
    let _ = writeln!(
        s,
        "{}",
        if accepted {
            "result: accepted"
        } else {
            "result: rejected"
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn decision(rule: &str, outcome: policy::Outcome) -> RefDecision {
        RefDecision {
            update: parse_updates(format!("{Z} {A} refs/heads/fix").as_bytes()).unwrap()[0].clone(),
            decision: Decision {
                verdicts: vec![policy::Verdict {
                    rule: rule.into(),
                    enforcement: policy::Enforcement::Deny,
                    outcome,
                }],
            },
        }
    }

    #[test]
    fn gitlab_sees_every_line_of_a_rejection() {
        let d = [decision(
            "r",
            policy::Outcome::Fail(vec!["first\nsecond".into()]),
        )];
        let plain = Report {
            decisions: &d,
            gitlab: false,
        }
        .to_string();
        assert_eq!(
            plain,
            "lockstep: push rejected\n  refs/heads/fix: [r] first\nsecond\n"
        );
        let gitlab = Report {
            decisions: &d,
            gitlab: true,
        }
        .to_string();
        assert_eq!(
            gitlab,
            "GL-HOOK-ERR: lockstep: push rejected\nGL-HOOK-ERR:   refs/heads/fix: [r] first\n\
             GL-HOOK-ERR: second\n"
        );
        assert_eq!(
            gitlab_lines("a: b\n  | c", true),
            "GL-HOOK-ERR: a: b\nGL-HOOK-ERR:   | c\n"
        );
        assert_eq!(gitlab_lines("a", false), "a\n");
    }

    #[test]
    fn tracker_down_never_makes_a_warning_claim_a_rejection() {
        let policies = PolicySet::parse_sources([(
            std::path::Path::new("p.toml"),
            "[[rule]]\nname='deny'\non=['push']\nrequire='task.exists'\nmessage='m'\n\
             [[rule]]\nname='warn'\non=['push']\nrequire='task.key != \"\"'\nmessage='m'\n\
             enforcement='warn'\n",
        )])
        .unwrap();
        let verdict = |rule: &str, enforcement| policy::Verdict {
            rule: rule.into(),
            enforcement,
            outcome: policy::Outcome::Pass,
        };
        let fresh = || Decision {
            verdicts: vec![
                verdict("deny", policy::Enforcement::Deny),
                verdict("warn", policy::Enforcement::Warn),
            ],
        };
        let mut d = fresh();
        mark_unavailable(&policies, &mut d, "down", OnError::Reject);
        assert!(!d.accepted());
        assert_eq!(
            d.verdicts[0].messages(),
            ["down; push rejected (rule deny)"]
        );
        assert_eq!(
            d.verdicts[1].messages(),
            ["down; push accepted without this check (rule warn)"]
        );
        let mut d = fresh();
        mark_unavailable(&policies, &mut d, "down", OnError::Allow);
        assert!(d.accepted());
        assert_eq!(
            d.verdicts[0].messages(),
            ["down; push accepted without this check (rule deny)"]
        );
    }

    #[test]
    fn parses_lines() {
        let input = format!("{Z} {A} refs/heads/feature/T-1\n{A} {Z} refs/tags/v1\n");
        let u = parse_updates(input.as_bytes()).unwrap();
        assert_eq!(u.len(), 2);
        assert!(u[0].created() && u[0].branch() == "feature/T-1");
        assert!(u[1].deleted() && u[1].tag() == "v1" && u[1].branch().is_empty());
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"garbage".to_vec(), "got 1 field"),
            (format!("{Z} {A}").into_bytes(), "got 2 field"),
            (
                format!("{Z} nothex refs/heads/x").into_bytes(),
                "`nothex` is not an object id",
            ),
            (format!("{Z} {A} HEAD").into_bytes(), "not under `refs/`"),
            (
                [
                    format!("{Z} {A} refs/heads/").into_bytes(),
                    vec![0xff, 0xfe],
                ]
                .concat(),
                "not UTF-8",
            ),
            (
                format!("{Z} {A} refs/heads/a b").into_bytes(),
                "got 4 field",
            ),
        ];
        for (input, want) in cases {
            let e = parse_updates(&input).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
        assert_eq!(parse_updates(b"").unwrap(), vec![]);
    }
}
