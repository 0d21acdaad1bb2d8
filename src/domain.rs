//! The domain's vocabulary: the small value types every layer speaks in.
//!
//! A type lives here when the core (policy, delivery, store, config) and the edges (hooks,
//! server, the GitHub and tracker clients) both name it, so that no module has to import
//! another's room to say what it means. Each is plain data with its parsing and formatting:
//! no I/O, no dependency on any other module of the crate.
//!
//! The enums ([`Phase`], [`State`], [`StepState`], [`Source`], [`PrState`], and the journal's
//! [`Stage`] and [`Event`]) are stored and serialized as the lowercase text they always were, the newtypes ([`DeliveryId`],
//! [`TaskKey`], [`RepoName`]) as the number or text inside: a store written before they were
//! types reads the same, and `--json` and `/api/*` print the same (`store/codec.rs` says how).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The phases of the delivery line, in their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Rebase,
    Build,
    Test,
    Deploy,
    Verify,
    Merge,
    /// The delivery failed and what it deployed is being rolled back.
    Rollback,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Rebase,
        Phase::Build,
        Phase::Test,
        Phase::Deploy,
        Phase::Verify,
        Phase::Merge,
        Phase::Rollback,
    ];

    /// The line itself, rebase to merge: every phase but the rollback.
    pub const LINE: &'static [Phase] = Phase::ALL.split_at(6).0;

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Rebase => "rebase",
            Phase::Build => "build",
            Phase::Test => "test",
            Phase::Deploy => "deploy",
            Phase::Verify => "verify",
            Phase::Merge => "merge",
            Phase::Rollback => "rollback",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Running,
    Delivered,
    Failed,
    Cancelled,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Queued,
        State::Running,
        State::Delivered,
        State::Failed,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Delivered => "delivered",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, State::Delivered | State::Failed | State::Cancelled)
    }
}

/// Where one repository stands in one phase: how its step runs or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Running,
    Passed,
    Failed,
    #[serde(rename = "timed out")]
    TimedOut,
    /// Killed because another repository's step of the same phase failed.
    Stopped,
    /// It could not be started at all.
    #[serde(rename = "not started")]
    NotStarted,
    /// Its worker died while it ran; the next worker stopped it.
    Interrupted,
}

impl StepState {
    pub const ALL: [StepState; 7] = [
        StepState::Running,
        StepState::Passed,
        StepState::Failed,
        StepState::TimedOut,
        StepState::Stopped,
        StepState::NotStarted,
        StepState::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Running => "running",
            StepState::Passed => "passed",
            StepState::Failed => "failed",
            StepState::TimedOut => "timed out",
            StepState::Stopped => "stopped",
            StepState::NotStarted => "not started",
            StepState::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<StepState> {
        StepState::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Where a delivery request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `lockstep deliver`.
    #[default]
    Cli,
    /// `git push -o deliver`.
    Push,
    /// The tracker marked the task ready.
    Tracker,
    /// `/deliver` on a pull request.
    #[serde(rename = "github")]
    GitHub,
}

impl Source {
    pub const ALL: [Source; 4] = [Source::Cli, Source::Push, Source::Tracker, Source::GitHub];

    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cli => "cli",
            Source::Push => "push",
            Source::Tracker => "tracker",
            Source::GitHub => "github",
        }
    }
}

/// Whether a pull request is open, as GitHub words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrState {
    #[default]
    Open,
    Closed,
}

impl PrState {
    pub fn as_str(self) -> &'static str {
        match self {
            PrState::Open => "open",
            PrState::Closed => "closed",
        }
    }
}

/// Where in a delivery's life a journal entry happened: a phase of the line, or the queue,
/// the watch after merge, the reports to the tracker and GitHub, the end.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Stage {
    Queue,
    Phase(Phase),
    /// A running delivery between two preparations (its phase was discarded): the empty text.
    NoPhase,
    Watch,
    Report,
    Done,
    /// Text this version does not know (a store written by another version): read back and
    /// shown as it is, matched by nothing, never written.
    Other(String),
}

impl Stage {
    pub fn as_str(&self) -> &str {
        match self {
            Stage::Queue => "queue",
            Stage::Phase(p) => p.as_str(),
            Stage::NoPhase => "",
            Stage::Watch => "watch",
            Stage::Report => "report",
            Stage::Done => "done",
            Stage::Other(s) => s,
        }
    }

    /// Reads stored text; what it does not know is kept as [`Stage::Other`].
    pub fn parse(s: &str) -> Stage {
        match s {
            "queue" => Stage::Queue,
            "" => Stage::NoPhase,
            "watch" => Stage::Watch,
            "report" => Stage::Report,
            "done" => Stage::Done,
            _ => Phase::parse(s).map_or_else(|| Stage::Other(s.to_string()), Stage::Phase),
        }
    }

    /// The phase of the line this entry belongs to, if any.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            Stage::Phase(p) => Some(*p),
            _ => None,
        }
    }
}

impl From<Phase> for Stage {
    fn from(p: Phase) -> Stage {
        Stage::Phase(p)
    }
}

impl From<Option<Phase>> for Stage {
    fn from(p: Option<Phase>) -> Stage {
        p.map_or(Stage::NoPhase, Stage::Phase)
    }
}

/// What a journal entry records. Each is stored as the text it always was; what this version
/// does not know reads back as [`Event::Other`].
macro_rules! events {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum Event {
            $($(#[$doc])* $variant,)*
            /// Text this version does not know (a store written by another version): read
            /// back and shown as it is, matched by nothing, never written.
            Other(String),
        }

        impl Event {
            pub const KNOWN: &'static [Event] = &[$(Event::$variant),*];

            pub fn as_str(&self) -> &str {
                match self {
                    $(Event::$variant => $text,)*
                    Event::Other(s) => s,
                }
            }

            /// Reads stored text; what it does not know is kept as [`Event::Other`].
            pub fn parse(s: &str) -> Event {
                match s {
                    $($text => Event::$variant,)*
                    _ => Event::Other(s.to_string()),
                }
            }
        }
    };
}

events! {
    // The queue.
    Queued = "queued",
    /// Claimed by a worker, as the head or a candidate.
    Started = "started",
    /// A candidate became the head of the pipeline.
    Head = "head",
    Discarded = "discarded",
    Requeued = "requeued",
    // Any phase.
    /// The delivery entered the phase.
    Phase = "phase",
    CancelRequested = "cancel requested",
    /// A candidate's failure, held until the deliveries ahead are resolved.
    Held = "held",
    /// The phase failed (in its stage) or the delivery did (in [`Stage::Done`]).
    Failed = "failed",
    StepStarted = "step started",
    StepFinished = "step finished",
    StepInterrupted = "step interrupted",
    /// Where a step runs on a `[runners.*]` CI (its detail: the runner, the build request or
    /// the build's page).
    OnRunner = "on runner",
    Recovered = "recovered",
    Resumed = "resumed",
    NotResumed = "not resumed",
    // Rebase.
    Rebased = "rebased",
    LeftAlone = "left alone",
    BuiltOn = "built on",
    // Verify and the watch after merge.
    GateStarted = "gate started",
    GatePassed = "gate passed",
    GateFailed = "gate failed",
    GatesWatched = "gates watched",
    GatesHeld = "gates held",
    // Merge.
    Push = "push",
    Pushed = "pushed",
    PushFailed = "push failed",
    Undo = "undo",
    UndoFailed = "undo failed",
    Reconcile = "reconcile",
    // Rollback.
    /// What started a rollback (its detail: `gate`, `alert` or `manual`).
    RollbackTriggered = "rollback triggered",
    /// A rollback asked for after the merge, with or without revert.
    Requested = "requested",
    NoRollbackStep = "no rollback step",
    NoCheckout = "no checkout",
    RollbackFailed = "rollback failed",
    Reverted = "reverted",
    RevertFailed = "revert failed",
    RevertUndone = "revert undone",
    // Reports.
    TaskMoved = "task moved",
    TaskNotMoved = "task not moved",
    Branch = "branch",
    Approvals = "approvals",
    // The end (with `Failed`).
    Delivered = "delivered",
    Cancelled = "cancelled",
}

/// [`Stage`] and [`Event`] are serialized as their text (and stored so: `store/codec.rs`); an
/// unknown text reads back as `Other` instead of failing the whole read.
macro_rules! serialized_as_text {
    ($($t:ident),*) => {$(
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    )*};
}
serialized_as_text!(Stage, Event);

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
    )*};
}
display_as_str!(Phase, State, StepState, Source, PrState, Stage, Event);

/// The id of a delivery in the store, shown as `#12`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct DeliveryId(pub i64);

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A text newtype: built from any string (it is checked where it comes in), read with
/// `as_str()`, printed with `Display`.
macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> $name {
                $name(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                $name(s.to_string())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> $name {
                $name(s)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }
    };
}

text_newtype!(
    /// A task's key in the tracker (`PROJ-123`, `#42`), as a branch names it.
    TaskKey
);
text_newtype!(
    /// A repository of the ecosystem, by its `[[repo]] name` in `lockstep.toml`.
    RepoName
);

/// `owner/name` of a GitHub repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GitHubRepo {
    pub owner: String,
    pub name: String,
}

impl GitHubRepo {
    /// Parses `owner/name`; `None` unless both parts are GitHub-style names.
    pub fn parse(full: &str) -> Option<GitHubRepo> {
        let (owner, name) = full.split_once('/')?;
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 100
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && s != "."
                && s != ".."
        };
        (ok(owner) && ok(name)).then(|| GitHubRepo {
            owner: owner.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for GitHubRepo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_as_the_same_value() {
        for p in Phase::ALL {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
            assert_eq!(p.to_string(), p.as_str());
        }
        assert!(Phase::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Phase::parse(""), None);
        assert_eq!(Phase::parse("Build"), None);
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        for s in StepState::ALL {
            assert_eq!(StepState::parse(s.as_str()), Some(s));
        }
        for e in Event::KNOWN {
            assert_eq!(&Event::parse(e.as_str()), e);
        }
        let stages = [
            Stage::Queue,
            Stage::NoPhase,
            Stage::Watch,
            Stage::Report,
            Stage::Done,
        ];
        for s in stages.into_iter().chain(Phase::ALL.map(Stage::Phase)) {
            assert_eq!(Stage::parse(s.as_str()), s);
        }
    }

    /// A stage or an event this version does not know (an older or newer store) reads back
    /// as itself, text for text, instead of failing the read of the whole journal.
    #[test]
    fn unknown_journal_text_reads_back_as_it_was() {
        assert_eq!(Stage::parse("plan"), Stage::Other("plan".into()));
        assert_eq!(Stage::parse("plan").to_string(), "plan");
        assert_eq!(Event::parse("Phase"), Event::Other("Phase".into()));
        assert_eq!(
            serde_json::to_string(&Event::parse("tea break")).unwrap(),
            r#""tea break""#
        );
    }

    #[test]
    fn serialized_as_the_text_and_numbers_they_replace() {
        let json = serde_json::json!({
            "phase": Phase::Rollback,
            "state": State::Cancelled,
            "step": StepState::TimedOut,
            "source": Source::GitHub,
            "id": DeliveryId(7),
            "task": TaskKey::new("T-1"),
            "repo": RepoName::new("api"),
            "stage": Stage::Phase(Phase::Merge),
            "event": Event::CancelRequested,
        });
        assert_eq!(
            json.to_string(),
            r#"{"event":"cancel requested","id":7,"phase":"rollback","repo":"api","source":"github","stage":"merge","state":"cancelled","step":"timed out","task":"T-1"}"#
        );
    }

    #[test]
    fn github_repos() {
        assert_eq!(
            GitHubRepo::parse("acme/api").unwrap().to_string(),
            "acme/api"
        );
        for bad in [
            "acme",
            "acme/",
            "/api",
            "a/b/c",
            "acme/a pi",
            "../x",
            "a/..",
        ] {
            assert!(GitHubRepo::parse(bad).is_none(), "{bad}");
        }
    }
}
