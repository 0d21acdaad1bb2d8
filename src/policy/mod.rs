//! Policies: TOML files of rules whose conditions are CEL expressions.
//!
//! A rule applies at one or more stages (`push`, `deliver`, `merge`). It is skipped when its
//! `when` is false, passes when its `require` is true, and otherwise yields its message. Every
//! expression is compiled once at load; a rule that fails to evaluate is a violation (fail
//! closed: `on_error = "fail"`, the default) unless it says `on_error = "pass"`. Evaluation is
//! a pure function of the facts handed in, so the same rules explain a push, a delivery and a
//! merge.
//!
//! This module owns what a compiled policy set is: the stages, the rules and their
//! expressions. The rest is split by concern:
//! - `load`: reading policy files and compiling their rules, or saying what is wrong in them;
//! - `bound`: the variables an expression names, and the deadline every loop of it checks;
//! - `facts`: the named values rules read, and the CEL values a task or a commit becomes;
//! - `fields`: the fields of `commit` a per-commit rule reads, so that only those are bound;
//! - `eval`: a stage's rules evaluated against the facts, into a [`Decision`];
//! - `message`: the text a failing rule shows (placeholders, `message_expression`);
//! - `suggest`: the did-you-mean hint for a misspelt name.

mod bound;
mod eval;
mod facts;
mod fields;
mod load;
mod message;
mod suggest;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cel::parser::Expression;
use cel::{Context, Env, ExecutionError, Value};
use serde::Deserialize;

pub use eval::{Decision, Outcome, Verdict};
pub use facts::{FACTS, Facts, commit_val_of, commit_value, map, task_value};
pub use message::show;
pub use suggest::did_you_mean;

use message::placeholders;

/// The longest expression accepted, in bytes: CEL has no cost limit, so size is bounded here.
pub const MAX_EXPRESSION_LEN: usize = 4096;
/// At most this many failing commits are reported for one `each = "commit"` rule.
pub const MAX_REPORTED_SUBJECTS: usize = 10;

/// When a rule is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// For every ref of every `git push`, in the server's hooks.
    Push,
    /// When a delivery is requested, before it is queued.
    Deliver,
    /// Before the bot merges a delivered task.
    Merge,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Push => "push",
            Stage::Deliver => "deliver",
            Stage::Merge => "merge",
        })
    }
}

/// What a failing rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// The push or delivery is refused. The default.
    #[default]
    Deny,
    /// A warning is printed; nothing is refused (for rolling a rule out).
    Warn,
}

/// What a rule whose expression fails to evaluate counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnEvalError {
    /// A violation, with the error in the message (fail closed). The default.
    #[default]
    Fail,
    /// Treated as passing.
    Pass,
}

/// Evaluate a rule once per new commit, with the commit in `commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Each {
    Commit,
}

/// One compiled CEL expression and its source.
#[derive(Debug)]
pub struct Expr {
    pub source: String,
    /// The parsed expression, its loops made to check the deadline ([`bound::guard_loops`]).
    ast: Expression,
    /// The variables the expression reads, found in its syntax tree at compile time.
    vars: Vec<String>,
}

impl Expr {
    fn new(source: &str, mut ast: Expression, env: &Env) -> Expr {
        let vars = bound::free_variables(&ast, env).into_iter().collect();
        let mut next_id = bound::max_id(&ast);
        bound::guard_loops(&mut ast, &mut next_id);
        Expr {
            source: source.to_string(),
            ast,
            vars,
        }
    }

    fn execute(&self, ctx: &Context) -> Result<Value, ExecutionError> {
        Value::resolve(&self.ast, ctx)
    }

    /// Whether the expression names this variable (before any evaluation).
    pub fn uses(&self, var: &str) -> bool {
        self.vars.iter().any(|v| v == var)
    }
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub file: PathBuf,
    pub stages: Vec<Stage>,
    pub when: Option<Expr>,
    pub require: Expr,
    pub message: String,
    pub message_expression: Option<Expr>,
    pub enforcement: Enforcement,
    pub on_error: OnEvalError,
    pub each: Option<Each>,
}

impl Rule {
    fn exprs(&self) -> impl Iterator<Item = &Expr> {
        self.when
            .iter()
            .chain([&self.require])
            .chain(self.message_expression.iter())
    }

    /// Whether any of the rule's expressions or its message names this variable.
    pub fn uses(&self, var: &str) -> bool {
        self.exprs().any(|e| e.uses(var))
            || placeholders(&self.message).any(|p| p.split('.').next() == Some(var))
            || (var == "commits" && self.each == Some(Each::Commit))
    }
}

/// All rules of an ecosystem, compiled.
pub struct PolicySet {
    env: Arc<Env>,
    pub rules: Vec<Rule>,
    /// The policy set's revision: a hash of its files' names and texts, for the decision log.
    pub revision: String,
    /// How long one evaluation may take (`[policies] timeout`); a rule still running then
    /// counts as its `on_error` says.
    pub timeout: Duration,
    /// How many bytes one rule may grow the process by (`[policies] max_memory_mib`); a rule
    /// that builds more counts as its `on_error` says.
    pub max_memory: u64,
    /// When set, evaluations end by this instant however late they start (a hook's budget
    /// for the whole push).
    pub deadline: Option<Instant>,
}

/// Hashes policy files, in the order they are loaded, into a [`PolicySet::revision`].
#[derive(Default)]
struct Revision(sha2::Sha256);

impl Revision {
    fn add(&mut self, path: &std::path::Path, text: &str) {
        use sha2::Digest as _;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        for part in [name.as_bytes(), &b"\0"[..], text.as_bytes(), &b"\0"[..]] {
            self.0.update(part);
        }
    }

    /// The first 12 hex digits: enough to tell revisions apart in a log.
    fn finish(self) -> String {
        use sha2::Digest as _;
        let digest = hex::encode(self.0.finalize());
        digest[..12].to_string()
    }
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySet")
            .field("rules", &self.rules)
            .finish()
    }
}

impl PolicySet {
    /// The rules that apply at a stage.
    pub fn rules_for(&self, stage: Stage) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |r| r.stages.contains(&stage))
    }

    /// Whether any rule of the stage needs this fact (so that costly facts are gathered only
    /// when a rule reads them).
    pub fn needs(&self, stage: Stage, var: &str) -> bool {
        self.rules_for(stage).any(|r| r.uses(var))
    }

    /// Whether the text of some expression of the stage's rules has this word: for a field of
    /// a fact (`files` of `branches`), which [`PolicySet::needs`] does not see, so that it is
    /// gathered only when a rule may read it.
    pub fn mentions(&self, stage: Stage, word: &str) -> bool {
        self.rules_for(stage)
            .flat_map(|r| r.exprs())
            .any(|e| e.source.contains(word))
    }

    /// Whether some rule applies to pushes: with none, every push would be accepted.
    pub fn has_push_rules(&self) -> bool {
        self.rules_for(Stage::Push).next().is_some()
    }
}

/// What a hook or `policy check` says when no rule applies to pushes and the config does not
/// allow it.
pub const NO_PUSH_RULE: &str = "no rule applies to pushes, so every push would be accepted; \
     check `policies.dirs`, or set `policies.allow_empty = true` if that is what you want";

/// Helpers of the unit tests of the policy modules.
#[cfg(test)]
mod testing {
    use std::path::Path;

    use cel::Value;

    use super::load::LoadErrors;
    use super::{Facts, PolicySet};

    /// Compiles one policy text, as if read from `policies/test.toml`.
    pub fn set(text: &str) -> Result<PolicySet, LoadErrors> {
        PolicySet::parse_sources([(Path::new("policies/test.toml"), text)])
    }

    /// The facts of a push of `branch` that names no task, `master` protected.
    pub fn facts(branch: &str) -> Facts {
        let mut f = Facts::default();
        f.set("branch", branch)
            .set("protected", vec!["master".to_string()]);
        f.set("task", Value::Null);
        f
    }
}
