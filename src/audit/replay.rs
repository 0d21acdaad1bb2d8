//! Policy replay: a candidate policy set evaluated against the pushes in the decision log, to
//! see what it would change before it is enforced.
//!
//! Each logged push is decided again as `lockstep policy test` decides a push: the commits
//! are read from the repository as it is now (those not reachable from the ref's old value or
//! from another ref), and the task facts are the tracker's answers logged with the push, so a
//! replay asks the tracker nothing. A push whose repository or objects are gone cannot be
//! replayed and is reported so; one git will not read (another account owns it, and git's
//! ownership check refuses it) is reported as not read, and the replay as incomplete. Pushes are replayed on every core, each repository's objects
//! checked in one `git cat-file` first.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use std::fmt::Write as _;

use super::{Entry, TaskSeen};
use crate::config::Config;
use crate::git::{self, Git};
use crate::policy::{PolicySet, Stage};
use crate::push::{self, NewCommits, PushContext, RefDecision, RefUpdate, TaskAnswers};
use crate::text::escape;
use crate::tracker::Task;

/// What replaying one push gave.
#[derive(Debug)]
pub enum Change {
    /// Decided now as it was then.
    Same,
    /// Accepted then, refused now: the refusals, per ref.
    NowRefused(Vec<RefDecision>),
    /// Refused then, accepted now.
    NowAccepted(Vec<RefDecision>),
    /// Not replayable: why.
    Gone(String),
    /// Not read: git refused the repository (another account owns it) or failed; why.
    Unreadable(String),
}

/// Picks the pushes of one section of [`Replay::render`].
type Pick = fn(&Change) -> bool;

/// A replay: each logged push and what the candidate makes of it.
#[derive(Debug, Default)]
pub struct Replay<'a> {
    pub pushes: Vec<(&'a Entry, Change)>,
}

impl Replay<'_> {
    pub fn count(&self, f: impl Fn(&Change) -> bool) -> usize {
        self.pushes.iter().filter(|(_, c)| f(c)).count()
    }

    /// Whether some push could not be read: the replay did not do what it was asked.
    pub fn unreadable(&self) -> usize {
        self.count(|c| matches!(c, Change::Unreadable(_)))
    }

    /// Whether the candidate would decide some push otherwise.
    pub fn changes(&self) -> bool {
        self.count(|c| matches!(c, Change::NowRefused(_) | Change::NowAccepted(_))) > 0
    }

    /// What would change, for people: the pushes refused now, those accepted now, those that
    /// could not be replayed, each with its refs and the messages of the rules that refuse.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let refused = self.count(|c| matches!(c, Change::NowRefused(_)));
        let accepted = self.count(|c| matches!(c, Change::NowAccepted(_)));
        let gone = self.count(|c| matches!(c, Change::Gone(_)));
        let unreadable = self.unreadable();
        let _ = write!(
            s,
            "replayed {} push(es): {refused} accepted then would be refused now, {accepted} \
             refused then would be accepted now, {gone} not replayable",
            self.pushes.len()
        );
        if unreadable > 0 {
            let _ = write!(s, ", {unreadable} not read");
        }
        s.push('\n');
        let sections: [(&str, Pick); 4] = [
            ("accepted then, refused now:", |c| {
                matches!(c, Change::NowRefused(_))
            }),
            ("refused then, accepted now:", |c| {
                matches!(c, Change::NowAccepted(_))
            }),
            ("not replayable:", |c| matches!(c, Change::Gone(_))),
            ("not read (the replay is incomplete):", |c| {
                matches!(c, Change::Unreadable(_))
            }),
        ];
        for (title, pick) in sections {
            if self.count(pick) == 0 {
                continue;
            }
            let _ = writeln!(s, "\n{title}");
            for (e, change) in self.pushes.iter().filter(|(_, c)| pick(c)) {
                let _ = writeln!(
                    s,
                    "  {}  {}  {}",
                    e.time.format("%Y-%m-%d %H:%M:%S"),
                    escape(&e.repo),
                    escape(if e.pusher.is_empty() {
                        "(unknown)"
                    } else {
                        &e.pusher
                    })
                );
                match change {
                    Change::Gone(why) | Change::Unreadable(why) => {
                        for r in &e.refs {
                            let _ = writeln!(s, "    {} {}", escape(&r.name), git::short(&r.new));
                        }
                        let _ = writeln!(s, "    {}", escape(why));
                    }
                    Change::NowRefused(now) | Change::NowAccepted(now) => {
                        for d in now {
                            let _ = writeln!(
                                s,
                                "    {} {} → {}",
                                escape(&d.update.name),
                                git::short(&d.update.old),
                                git::short(&d.update.new)
                            );
                            for v in d.decision.violations().chain(d.decision.warnings()) {
                                for m in v.messages() {
                                    let _ = writeln!(
                                        s,
                                        "      {} [{}] {}",
                                        v.label(),
                                        escape(&v.rule),
                                        escape(&m)
                                    );
                                }
                            }
                        }
                    }
                    Change::Same => {}
                }
            }
        }
        s
    }
}

/// Replays the logged pushes among `entries` against `candidate`.
pub fn replay<'a>(config: &Config, candidate: &PolicySet, entries: &'a [Entry]) -> Replay<'a> {
    let pushes: Vec<&Entry> = entries.iter().filter(|e| e.stage == Stage::Push).collect();
    let present = objects_present(&pushes);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let chunk = pushes.len().div_ceil(workers).max(1);
    let mut out: Vec<(&Entry, Change)> = Vec::with_capacity(pushes.len());
    std::thread::scope(|scope| {
        let running: Vec<_> = pushes
            .chunks(chunk)
            .map(|part| {
                let present = &present;
                scope.spawn(move || {
                    part.iter()
                        .map(|e| (*e, replay_one(config, candidate, e, present)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for r in running {
            match r.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    Replay { pushes: out }
}

/// Per repository folder, the logged objects it still has (None: the folder is gone; an
/// error: git would not read it).
type Present = HashMap<String, Option<Result<std::collections::HashSet<String>, String>>>;

fn objects_present(pushes: &[&Entry]) -> Present {
    let mut wanted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in pushes {
        let oids = wanted.entry(e.git_dir.as_str()).or_default();
        for r in &e.refs {
            oids.extend(
                [r.old.as_str(), r.new.as_str()]
                    .into_iter()
                    .filter(|o| !git::is_zero(o)),
            );
        }
    }
    wanted
        .into_iter()
        .map(|(dir, oids)| {
            let found = (!dir.is_empty() && Path::new(dir).is_dir())
                .then(|| Git::new(dir).existing(&oids).map_err(|e| format!("{e:#}")));
            (dir.to_string(), found)
        })
        .collect()
}

fn replay_one(config: &Config, candidate: &PolicySet, e: &Entry, present: &Present) -> Change {
    let objects = match present.get(&e.git_dir) {
        Some(Some(Ok(objects))) => objects,
        Some(Some(Err(why))) => return Change::Unreadable(why.clone()),
        _ => return Change::Gone(format!("repository `{}` is gone", e.git_dir)),
    };
    let missing: Vec<&str> = e
        .refs
        .iter()
        .flat_map(|r| [r.old.as_str(), r.new.as_str()])
        .filter(|o| !git::is_zero(o) && !objects.contains(*o))
        .collect();
    if !missing.is_empty() {
        let ids: Vec<&str> = missing.iter().map(|o| git::short(o)).collect();
        return Change::Gone(format!("objects gone: {}", ids.join(", ")));
    }
    let updates: Result<Vec<RefUpdate>, _> = e
        .refs
        .iter()
        .map(|r| push::update_from_parts(1, &r.old, &r.new, &r.name))
        .collect();
    let Ok(updates) = updates else {
        return Change::Gone("the logged refs cannot be read".into());
    };
    let ctx = PushContext {
        repo: e.repo.clone(),
        pusher: e.pusher.clone(),
        options: e.options.clone(),
    };
    let tasks: TaskAnswers = e
        .tasks
        .iter()
        .map(|(key, seen)| (key.clone(), answer(key, seen)))
        .collect();
    let decided = push::decide(
        config,
        candidate,
        &Git::new(&e.git_dir),
        &push::Pushed {
            ctx: &ctx,
            updates: &updates,
            tracker: &e.tracker,
            tasks: &tasks,
        },
        NewCommits::AsIfPushedNow,
    );
    match decided {
        Err(err) => Change::Gone(format!("{err:#}")),
        Ok(now) => {
            let accepted = now.iter().all(|d| d.decision.accepted());
            match (e.accepted, accepted) {
                (true, false) => Change::NowRefused(now),
                (false, true) => Change::NowAccepted(now),
                _ => Change::Same,
            }
        }
    }
}

/// The tracker's logged answer about a task, as a hook had it.
fn answer(key: &str, seen: &TaskSeen) -> Result<Option<Task>, String> {
    if let Some(e) = &seen.error {
        return Err(e.clone());
    }
    Ok(seen.exists.then(|| Task {
        key: key.to_string(),
        status: seen.status.clone(),
        title: seen.title.clone(),
        assignee: seen.assignee.clone(),
        url: seen.url.clone(),
    }))
}
