//! Policies: TOML files of rules whose conditions are CEL expressions.
//!
//! A rule applies at one or more stages (`push`, `deliver`, `merge`). It is skipped when its
//! `when` is false, passes when its `require` is true, and otherwise yields its message. Every
//! expression is compiled once at load; a rule that fails to evaluate is a violation (fail
//! closed) unless it says `on_error = "allow"`. Evaluation is a pure function of the facts
//! handed in, so the same rules explain a push, a delivery and a merge.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cel::common::value::Val;
use cel::parser::{Expression, ParseErrors, PrattParser};
use cel::{Context, Env, ExecutionError, Value};
use serde::Deserialize;

/// The longest expression accepted, in bytes: CEL has no cost limit, so size is bounded here.
pub const MAX_EXPRESSION_LEN: usize = 4096;
/// At most this many failing commits are reported for one `each = "commit"` rule.
pub const MAX_REPORTED_SUBJECTS: usize = 10;

/// When a rule is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
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

/// A rule as written in a policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    #[serde(default)]
    description: Option<String>,
    on: Vec<Stage>,
    #[serde(default)]
    when: Option<String>,
    require: String,
    message: String,
    #[serde(default)]
    message_expression: Option<String>,
    #[serde(default)]
    enforcement: Enforcement,
    #[serde(default)]
    on_error: OnEvalError,
    #[serde(default)]
    each: Option<Each>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

/// One compiled CEL expression and its source.
#[derive(Debug)]
pub struct Expr {
    pub source: String,
    ast: Expression,
    /// The variables the expression names, read once at compile time.
    vars: Vec<String>,
}

impl Expr {
    fn new(source: &str, ast: Expression) -> Expr {
        let mut vars: Vec<String> = ast
            .references()
            .variables()
            .into_iter()
            .map(String::from)
            .collect();
        vars.sort();
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
    pub description: Option<String>,
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

/// Everything wrong with a set of policy files, each naming its file, rule and field.
#[derive(Debug, Default)]
pub struct LoadErrors(pub Vec<String>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// All rules of an ecosystem, compiled.
pub struct PolicySet {
    env: Arc<Env>,
    pub rules: Vec<Rule>,
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySet")
            .field("rules", &self.rules)
            .finish()
    }
}

/// The facts known at every stage, for checking that rules name only known ones.
pub const FACTS: &[&str] = &[
    "repo",
    "ref",
    "branch",
    "tag",
    "old",
    "new",
    "created",
    "deleted",
    "fast_forward",
    "rewind",
    "pusher",
    "bot",
    "maintainers",
    "protected",
    "task",
    "commits",
    "push_options",
    "now",
    "tracker",
    "in_progress",
    "for_delivery",
    "commit",
    "requester",
    "approvals",
    "reviews",
    "pr",
    "repos",
    "branches",
    "delivery",
];

impl PolicySet {
    /// Loads every `*.toml` of the folders, in name order within each folder.
    pub fn load_dirs(dirs: &[PathBuf]) -> Result<PolicySet, LoadErrors> {
        let mut files = Vec::new();
        let mut errors = LoadErrors::default();
        for dir in dirs {
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(e) => errors.0.push(format!(
                    "cannot read policy folder `{}`: {e}; create it or fix `policies.dirs`",
                    dir.display()
                )),
            }
        }
        let mut sources = Vec::new();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => sources.push((file, text)),
                Err(e) => errors
                    .0
                    .push(format!("cannot read `{}`: {e}", file.display())),
            }
        }
        let parsed =
            PolicySet::parse_sources(sources.iter().map(|(p, t)| (p.as_path(), t.as_str())));
        match parsed {
            Ok(set) if errors.0.is_empty() => Ok(set),
            Ok(_) => Err(errors),
            Err(mut more) => {
                errors.0.append(&mut more.0);
                Err(errors)
            }
        }
    }

    /// Compiles policy texts; the paths only name them in errors.
    pub fn parse_sources<'a>(
        sources: impl IntoIterator<Item = (&'a Path, &'a str)>,
    ) -> Result<PolicySet, LoadErrors> {
        let env = Arc::new(policy_env());
        let probe = probe_context(&env);
        let mut rules: Vec<Rule> = Vec::new();
        let mut errors = LoadErrors::default();
        for (path, text) in sources {
            let file: PolicyFile = match toml::from_str(text) {
                Ok(f) => f,
                Err(e) => {
                    errors
                        .0
                        .push(format!("{}: {}", path.display(), e.to_string().trim_end()));
                    continue;
                }
            };
            for spec in file.rule {
                match compile_rule(&probe, path, spec) {
                    Ok(rule) => {
                        if let Some(other) = rules.iter().find(|r| r.name == rule.name) {
                            errors.0.push(format!(
                                "{}: rule `{}` is already defined in `{}`; rule names must be unique",
                                path.display(),
                                rule.name,
                                other.file.display()
                            ));
                        } else {
                            rules.push(rule);
                        }
                    }
                    Err(mut e) => errors.0.append(&mut e),
                }
            }
        }
        if errors.0.is_empty() {
            Ok(PolicySet { env, rules })
        } else {
            Err(errors)
        }
    }

    /// The rules that apply at a stage.
    pub fn rules_for(&self, stage: Stage) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |r| r.stages.contains(&stage))
    }

    /// Whether any rule of the stage needs this fact (so that costly facts are gathered only
    /// when a rule reads them).
    pub fn needs(&self, stage: Stage, var: &str) -> bool {
        self.rules_for(stage).any(|r| r.uses(var))
    }

    /// Evaluates every rule of the stage against the facts.
    pub fn evaluate(&self, stage: Stage, facts: &Facts) -> Decision {
        let mut ctx = Context::with_env(self.env.clone());
        // Binding a value converts all of it for CEL: bind only what some expression of the
        // stage names. `commits` of a large push is read by `each = "commit"` rules one
        // commit at a time, so it is bound only if an expression names it.
        for name in facts.names() {
            if self
                .rules_for(stage)
                .any(|r| r.exprs().any(|e| e.uses(name)))
                && let Some(value) = facts.get(name)
            {
                ctx.add_variable_from_value(name, value.clone());
            }
        }
        let verdicts = self
            .rules_for(stage)
            .map(|rule| Verdict {
                rule: rule.name.clone(),
                enforcement: rule.enforcement,
                outcome: evaluate_rule(rule, &ctx, facts),
            })
            .collect();
        Decision { verdicts }
    }
}

/// The CEL environment shared by all rules: the standard library plus the strings extension.
fn policy_env() -> Env {
    let mut env = Env::stdlib();
    // The extension only adds functions; failing to add it would be a bug in cel itself.
    let _ = env.add_extension(cel::extensions::strings);
    env
}

/// Parses one expression as [`Env::compile`] does for [`policy_env`] (the standard macros and
/// the optional syntax), with `cel`'s hand-written Pratt parser instead of its ANTLR one: the
/// same syntax tree (up to node numbering) in a fraction of the time, and with no grammar
/// tables to warm up. Hooks compile every rule in a fresh process, where that warm-up alone
/// cost about 3 ms. `parsers_agree` in the tests holds the two parsers to the same trees.
fn parse(source: &str) -> Result<Expression, ParseErrors> {
    PrattParser::default()
        .enable_optional_syntax(true)
        .parse(source)
}

fn compile_rule(probe: &Context, path: &Path, spec: RuleSpec) -> Result<Rule, Vec<String>> {
    let mut errors = Vec::new();
    let rule_name = spec.name.clone();
    let at = |field: &str| format!("{}: rule `{}`, `{field}`", path.display(), rule_name);
    if spec.name.trim().is_empty() {
        errors.push(format!("{}: a rule has an empty `name`", path.display()));
    }
    if spec.on.is_empty() {
        errors.push(format!(
            "{} is empty; name a stage: push, deliver or merge",
            at("on")
        ));
    }
    let mut compile = |field: &str, source: &str| -> Option<Expr> {
        if source.len() > MAX_EXPRESSION_LEN {
            errors.push(format!(
                "{} is {} bytes; the limit is {MAX_EXPRESSION_LEN}",
                at(field),
                source.len()
            ));
            return None;
        }
        match parse(source) {
            Ok(ast) => Some(Expr::new(source, ast)),
            Err(e) => {
                let detail = e
                    .errors
                    .iter()
                    .map(|pe| format!("line {} column {}: {}", pe.pos.0, pe.pos.1, pe.msg))
                    .collect::<Vec<_>>()
                    .join("; ");
                errors.push(format!(
                    "{}: syntax error at {detail}\n  | {source}",
                    at(field)
                ));
                None
            }
        }
    };
    let when = spec.when.as_deref().map(|s| compile("when", s));
    let require = compile("require", &spec.require);
    let message_expression = spec
        .message_expression
        .as_deref()
        .map(|s| compile("message_expression", s));
    for p in placeholders(&spec.message) {
        let root = p.split('.').next().unwrap_or_default();
        if !FACTS.contains(&root) {
            errors.push(format!(
                "{} names `{{{p}}}`, which is no fact{}",
                at("message"),
                did_you_mean(root, FACTS)
            ));
        }
    }
    if spec.each.is_some() && spec.on.iter().any(|s| *s != Stage::Push) {
        errors.push(format!(
            "{}: `each = \"commit\"` applies only to `on = [\"push\"]`",
            at("each")
        ));
    }
    let (Some(require), Some(when), Some(message_expression)) = (
        require,
        when.map_or(Some(None), |w| w.map(Some)),
        message_expression.map_or(Some(None), |m| m.map(Some)),
    ) else {
        return Err(errors);
    };
    let rule = Rule {
        name: spec.name,
        description: spec.description,
        file: path.to_path_buf(),
        stages: spec.on,
        when,
        require,
        message: spec.message,
        message_expression,
        enforcement: spec.enforcement,
        on_error: spec.on_error,
        each: spec.each,
    };
    // CEL has no type checker: probe each expression against sample facts so that a
    // misspelt variable is reported now rather than at the first push.
    for expr in rule.exprs() {
        if let Some(unknown) = unknown_variable(probe, expr) {
            let field = if rule.when.as_ref().is_some_and(|w| std::ptr::eq(w, expr)) {
                "when"
            } else if std::ptr::eq(&rule.require, expr) {
                "require"
            } else {
                "message_expression"
            };
            errors.push(format!(
                "{}: unknown variable `{unknown}`{}",
                at(field),
                did_you_mean(&unknown, FACTS)
            ));
        }
    }
    if errors.is_empty() {
        Ok(rule)
    } else {
        Err(errors)
    }
}

/// A context holding every fact with a plausible value, to probe expressions at load.
fn probe_context(env: &Arc<Env>) -> Context<'static, 'static> {
    let mut ctx = Context::with_env(env.clone());
    for (name, value) in Facts::sample().vars {
        ctx.add_variable_from_value(name, value);
    }
    ctx.add_variable_from_value("commit", Facts::sample_commit());
    ctx
}

fn unknown_variable(probe: &Context, expr: &Expr) -> Option<String> {
    match expr.execute(probe) {
        Err(ExecutionError::UndeclaredReference(name)) => Some(name.to_string()),
        _ => None,
    }
}

/// ` (did you mean `x`?)` when a known name is one or two edits away.
pub fn did_you_mean(name: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The named values a rule is evaluated against.
///
/// The new commits are kept as plain data: a push can bring a hundred thousand of them, and
/// an `each = "commit"` rule sees them one at a time, borrowed ([`commit_val`]). The CEL list
/// `commits` is built only if something reads it.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub vars: BTreeMap<String, Value>,
    commits: Option<Arc<Vec<crate::git::CommitInfo>>>,
    commits_value: std::sync::OnceLock<Value>,
}

impl Facts {
    pub fn set(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.vars.insert(name.to_string(), value.into());
        self
    }

    /// Sets the new commits: the `commits` fact, and what `each = "commit"` rules iterate
    /// (which a `commits` set with [`Facts::set`] is not).
    pub fn set_commits(&mut self, commits: Vec<crate::git::CommitInfo>) -> &mut Self {
        self.commits = Some(Arc::new(commits));
        self.commits_value = std::sync::OnceLock::new();
        self.vars.remove("commits");
        self
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        if name == "commits"
            && let Some(commits) = &self.commits
        {
            return Some(self.commits_value.get_or_init(|| {
                Value::List(Arc::new(commits.iter().map(commit_value).collect()))
            }));
        }
        self.vars.get(name)
    }

    /// The names of the facts set.
    fn names(&self) -> impl Iterator<Item = &str> {
        self.vars
            .keys()
            .map(String::as_str)
            .chain(self.commits.is_some().then_some("commits"))
    }

    /// The new commits, if gathered.
    pub fn commits(&self) -> &[crate::git::CommitInfo] {
        self.commits.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Facts of every kind with plausible values, used to probe expressions at load.
    fn sample() -> Facts {
        let mut f = Facts::default();
        for s in [
            "repo",
            "ref",
            "branch",
            "tag",
            "old",
            "new",
            "pusher",
            "bot",
            "tracker",
            "requester",
        ] {
            f.set(s, "x");
        }
        for b in ["created", "deleted", "fast_forward", "rewind"] {
            f.set(b, false);
        }
        for l in [
            "maintainers",
            "protected",
            "push_options",
            "in_progress",
            "for_delivery",
            "repos",
        ] {
            f.set(l, vec!["x".to_string()]);
        }
        f.set("task", task_value("X-1", true, "x", "x", "x", "x"));
        f.set("commits", vec![Facts::sample_commit()]);
        f.set("approvals", 0i64);
        f.set(
            "reviews",
            Value::List(Arc::new(vec![map([
                ("user", "x".into()),
                ("state", "APPROVED".into()),
            ])])),
        );
        f.set(
            "pr",
            map([
                ("number", 1i64.into()),
                ("author", "x".into()),
                ("head", "x".into()),
            ]),
        );
        f.set(
            "branches",
            Value::List(Arc::new(vec![map([
                ("repo", "x".into()),
                ("github", "x/x".into()),
                ("branch", "x".into()),
                (
                    "pr",
                    map([
                        ("number", 1i64.into()),
                        ("author", "x".into()),
                        ("approvals", 0i64.into()),
                    ]),
                ),
            ])])),
        );
        f.set("delivery", map([("id", 1i64.into())]));
        f.set("now", Value::Timestamp(chrono::Utc::now().fixed_offset()));
        f
    }

    fn sample_commit() -> Value {
        commit_value(&crate::git::CommitInfo::default())
    }
}

/// Builds a CEL map from string keys.
pub fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let m: HashMap<String, Value> = entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Value::from(m)
}

/// The `task` fact.
pub fn task_value(
    key: &str,
    exists: bool,
    status: &str,
    title: &str,
    assignee: &str,
    url: &str,
) -> Value {
    map([
        ("key", key.into()),
        ("exists", exists.into()),
        ("status", status.into()),
        ("title", title.into()),
        ("assignee", assignee.into()),
        ("url", url.into()),
    ])
}

/// One element of the `commits` fact.
pub fn commit_value(c: &crate::git::CommitInfo) -> Value {
    map([
        ("id", c.id.as_str().into()),
        ("short_id", c.id.get(..10).unwrap_or(&c.id).into()),
        ("summary", c.summary().into()),
        ("message", c.message.as_str().into()),
        ("author_name", c.author_name.as_str().into()),
        ("author_email", c.author_email.as_str().into()),
        ("committer_email", c.committer_email.as_str().into()),
        ("parents", Value::from(c.parents.clone())),
        ("signed", c.signed.into()),
    ])
}

/// One element of the `commits` fact, bound straight to CEL for an `each = "commit"` rule:
/// the same map as [`commit_value`], its strings borrowed rather than copied twice over.
pub fn commit_val(c: &crate::git::CommitInfo) -> Box<dyn Val + '_> {
    use cel::common::types::{CelBool, CelList, CelMap, CelMapKey, CelString};
    fn s(v: &str) -> Box<dyn Val + '_> {
        Box::new(CelString::from(v))
    }
    let parents: Vec<Box<dyn Val + '_>> = c.parents.iter().map(|p| s(p)).collect();
    let entries: HashMap<CelMapKey<'_>, Box<dyn Val + '_>> = [
        ("id", s(&c.id)),
        ("short_id", s(c.id.get(..10).unwrap_or(&c.id))),
        ("summary", s(c.summary())),
        ("message", s(&c.message)),
        ("author_name", s(&c.author_name)),
        ("author_email", s(&c.author_email)),
        ("committer_email", s(&c.committer_email)),
        ("parents", Box::new(CelList::from(parents))),
        ("signed", Box::new(CelBool::from(c.signed))),
    ]
    .into_iter()
    .map(|(k, v)| (CelMapKey::from(k), v))
    .collect();
    Box::new(CelMap::from(entries))
}

/// What became of one rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `when` was false.
    NotApplicable,
    Pass,
    /// `require` was false; the rendered messages (one per failing commit for `each` rules).
    Fail(Vec<String>),
    /// An expression could not be evaluated (counts as a failure unless `on_error = "pass"`).
    Error(String),
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub rule: String,
    pub enforcement: Enforcement,
    pub outcome: Outcome,
}

impl Verdict {
    /// Whether this verdict refuses the push or delivery.
    pub fn denies(&self) -> bool {
        self.enforcement == Enforcement::Deny
            && matches!(self.outcome, Outcome::Fail(_) | Outcome::Error(_))
    }

    /// Whether this verdict is a warning only.
    pub fn warns(&self) -> bool {
        self.enforcement == Enforcement::Warn
            && matches!(self.outcome, Outcome::Fail(_) | Outcome::Error(_))
    }

    /// The lines to show for a failing verdict.
    pub fn messages(&self) -> Vec<String> {
        match &self.outcome {
            Outcome::Fail(m) => m.clone(),
            Outcome::Error(e) => vec![e.clone()],
            _ => Vec::new(),
        }
    }
}

/// The verdicts of every rule of a stage.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    pub verdicts: Vec<Verdict>,
}

impl Decision {
    pub fn accepted(&self) -> bool {
        !self.verdicts.iter().any(Verdict::denies)
    }
    pub fn violations(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts.iter().filter(|v| v.denies())
    }
    pub fn warnings(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts.iter().filter(|v| v.warns())
    }
}

fn eval_bool(expr: &Expr, ctx: &Context) -> Result<bool, String> {
    match expr.execute(ctx) {
        Ok(Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!(
            "`{}` gave {}, not true or false",
            expr.source,
            show(&other)
        )),
        Err(e) => Err(format!("`{}` failed: {}", expr.source, explain(&e))),
    }
}

fn explain(e: &ExecutionError) -> String {
    match e {
        ExecutionError::UndeclaredReference(name) => {
            format!("unknown variable `{name}`{}", did_you_mean(name, FACTS))
        }
        ExecutionError::NoSuchKey(k) => format!("no field `{k}`"),
        other => other.to_string(),
    }
}

fn evaluate_rule(rule: &Rule, ctx: &Context, facts: &Facts) -> Outcome {
    let on_error = |msg: String| match rule.on_error {
        OnEvalError::Fail => Outcome::Error(format!("policy error: {msg}")),
        OnEvalError::Pass => Outcome::Pass,
    };
    if let Some(when) = &rule.when {
        match eval_bool(when, ctx) {
            Ok(false) => return Outcome::NotApplicable,
            Ok(true) => {}
            Err(e) => return on_error(e),
        }
    }
    match rule.each {
        None => match eval_bool(&rule.require, ctx) {
            Ok(true) => Outcome::Pass,
            Ok(false) => Outcome::Fail(vec![render_message(rule, ctx, facts, None)]),
            Err(e) => on_error(e),
        },
        Some(Each::Commit) => {
            let mut failing = Vec::new();
            let mut count = 0usize;
            for commit in facts.commits() {
                let mut scope = ctx.new_inner_scope();
                scope.add_variable_as_val("commit", commit_val(commit));
                match eval_bool(&rule.require, &scope) {
                    Ok(true) => {}
                    Ok(false) => {
                        count += 1;
                        if failing.len() < MAX_REPORTED_SUBJECTS {
                            let value = commit_value(commit);
                            failing.push(render_message(rule, &scope, facts, Some(&value)));
                        }
                    }
                    Err(e) => return on_error(e),
                }
            }
            if count > failing.len() {
                failing.push(format!("… and {} more commits", count - failing.len()));
            }
            if failing.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail(failing)
            }
        }
    }
}

fn render_message(rule: &Rule, ctx: &Context, facts: &Facts, commit: Option<&Value>) -> String {
    // Like Kubernetes' messageExpression: when it fails, fall back to the static message.
    if let Some(expr) = &rule.message_expression
        && let Ok(Value::String(s)) = expr.execute(ctx)
    {
        return s.to_string();
    }
    fill(&rule.message, |path| {
        let mut parts = path.split('.');
        let root = parts.next()?;
        let mut value = if root == "commit" {
            commit?.clone()
        } else {
            facts.get(root)?.clone()
        };
        for part in parts {
            value = match value {
                Value::Map(m) => m
                    .map
                    .get(&cel::objects::Key::from(part.to_string()))?
                    .clone(),
                _ => return None,
            };
        }
        Some(show(&value))
    })
}

/// The `{name}` and `{name.field}` placeholders of a message.
fn placeholders(message: &str) -> impl Iterator<Item = &str> {
    message.split('{').skip(1).filter_map(|rest| {
        let end = rest.find('}')?;
        let name = &rest[..end];
        (!name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .then_some(name)
    })
}

/// Replaces each placeholder by `lookup(name)`; unknown ones are left as written.
pub fn fill(message: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) if placeholders(&rest[start..]).next() == Some(&after[..end]) => {
                match lookup(&after[..end]) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&rest[start..start + end + 2]),
                }
                rest = &after[end + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A value as a person reads it in a message.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::List(l) => l.iter().map(show).collect::<Vec<_>>().join(", "),
        Value::Timestamp(t) => t.to_rfc3339(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hooks parse with `cel`'s Pratt parser ([`parse`]); `cel`'s documented compiler is
    /// its ANTLR parser. Both must read every expression the same way: the shipped policies
    /// and a corpus of CEL syntax give equal trees (node numbers aside), and bad input is an
    /// error for both.
    #[test]
    fn parsers_agree() {
        let numbering = regex::Regex::new(r"\bid: \d+").unwrap();
        let tree = |e: &Expression| {
            numbering
                .replace_all(&format!("{e:?}"), "id: _")
                .to_string()
        };
        let env = policy_env();
        let mut sources: Vec<String> = Vec::new();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        for entry in std::fs::read_dir(dir).unwrap() {
            let file: PolicyFile =
                toml::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
            for spec in file.rule {
                sources.extend(spec.when);
                sources.push(spec.require);
                sources.extend(spec.message_expression);
            }
        }
        assert!(sources.len() >= 10, "the shipped policies were not read");
        let corpus = [
            "commits.all(c, c.message.contains('x'))",
            "a.exists(x, x > 1) ? 'y' : 'n'",
            "[1, 2].map(x, x * 2).filter(y, y % 2 == 0)",
            "l.exists_one(s, s == 'x') && has(task.key)",
            "{'a': 1, 'b': [2, 3]}.a",
            "b'abc' == bytes('abc') && 1u + 2u == 3u && -1.5e3 < 0.0",
            r#"'a' + "b" + r'\n' + '''multi
line'''"#,
            "x[0].y.z(1, 'two', 3.0)",
            "!a || b && c || !!d || -(-e) > 0",
            "size(x) > 0 && x.startsWith('f') && x.matches('^f.*$')",
            "duration('1h') < duration('2h') && timestamp('2024-01-01T00:00:00Z') < now",
            r#"a in [1, 2, 3] && m["k"] != null && true ? false : null"#,
            "x.?y.orValue('z')",
            "pusher.lowerAscii().split('-').join('_')",
            "a.b.c.d.e",
        ];
        let bad = [
            "1 +",
            "a &&",
            "'unterminated",
            "foo(",
            ")",
            "a.",
            "[1, 2",
            "{1:",
            "a ? b",
            "",
        ];
        for src in sources.iter().map(String::as_str).chain(corpus) {
            let ours = parse(src).unwrap_or_else(|e| panic!("pratt refused `{src}`: {e:?}"));
            let theirs = env
                .compile(src)
                .unwrap_or_else(|e| panic!("antlr refused `{src}`: {e:?}"));
            assert_eq!(tree(&ours), tree(theirs.expression()), "`{src}`");
        }
        for src in bad {
            let err = parse(src).expect_err(src);
            assert!(env.compile(src).is_err(), "antlr accepted `{src}`");
            assert!(err.errors.iter().all(|e| e.pos.0 >= 1), "`{src}`: {err:?}");
        }
    }

    fn set(text: &str) -> Result<PolicySet, LoadErrors> {
        PolicySet::parse_sources([(Path::new("policies/test.toml"), text)])
    }

    fn facts(branch: &str) -> Facts {
        let mut f = Facts::default();
        f.set("branch", branch)
            .set("protected", vec!["master".to_string()]);
        f.set("task", Value::Null);
        f
    }

    const NAMING: &str = r#"
[[rule]]
name = "branch-names-a-task"
on = ["push"]
when = 'branch != "" && !(branch in protected)'
require = 'task != null'
message = "branch `{branch}` names no task"
"#;

    #[test]
    fn fail_pass_and_not_applicable() {
        let p = set(NAMING).unwrap();
        let d = p.evaluate(Stage::Push, &facts("fix-login"));
        assert!(!d.accepted());
        assert_eq!(
            d.verdicts[0].outcome,
            Outcome::Fail(vec!["branch `fix-login` names no task".into()])
        );
        let d = p.evaluate(Stage::Push, &facts("master"));
        assert_eq!(d.verdicts[0].outcome, Outcome::NotApplicable);
        let mut f = facts("feature/T-1");
        f.set("task", task_value("T-1", true, "In Progress", "", "", ""));
        assert_eq!(
            p.evaluate(Stage::Push, &f).verdicts[0].outcome,
            Outcome::Pass
        );
        assert!(p.evaluate(Stage::Deliver, &f).verdicts.is_empty());
    }

    #[test]
    fn syntax_error_names_file_rule_field_and_position() {
        let err =
            set("[[rule]]\nname='r'\non=['push']\nrequire='branch =='\nmessage='m'\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(
                "policies/test.toml: rule `r`, `require`: syntax error at line 1 column 10:"
            ),
            "{text}"
        );
        // Columns count from 1, as cel reports them: `)` is the first character.
        let err = set("[[rule]]\nname='r'\non=['push']\nrequire=')'\nmessage='m'\n").unwrap_err();
        assert!(
            err.to_string().contains("syntax error at line 1 column 1:"),
            "{err}"
        );
    }

    #[test]
    fn malformed_expressions_do_not_panic() {
        for bad in ["(", "'unterminated", "a ==", "}{", "1 +* 2", "\u{0}"] {
            let text = format!("[[rule]]\nname='r'\non=['push']\nrequire={bad:?}\nmessage='m'\n");
            assert!(set(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_variable_is_caught_at_load_with_a_hint() {
        let err = set("[[rule]]\nname='r'\non=['push']\nrequire='brnch == \"x\"'\nmessage='m'\n")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown variable `brnch` (did you mean `branch`?)"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_and_placeholder_are_errors() {
        let err =
            set("[[rule]]\nname='r'\non=['push']\nrequires='true'\nrequire='true'\nmessage='m'\n")
                .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `requires`"),
            "{err}"
        );
        let err = set("[[rule]]\nname='r'\non=['push']\nrequire='true'\nmessage='{brnch}'\n")
            .unwrap_err();
        assert!(
            err.to_string().contains("(did you mean `branch`?)"),
            "{err}"
        );
    }

    #[test]
    fn evaluation_error_fails_closed_unless_told() {
        let p = set("[[rule]]\nname='r'\non=['push']\nrequire='task.key == \"x\"'\nmessage='m'\n")
            .unwrap();
        let d = p.evaluate(Stage::Push, &facts("b"));
        assert!(!d.accepted());
        assert!(
            matches!(&d.verdicts[0].outcome, Outcome::Error(e) if e.starts_with("policy error:"))
        );
        let p = set("[[rule]]\nname='r'\non=['push']\nrequire='task.key == \"x\"'\nmessage='m'\non_error='pass'\n").unwrap();
        assert!(p.evaluate(Stage::Push, &facts("b")).accepted());
    }

    #[test]
    fn warn_does_not_deny() {
        let p = set(
            "[[rule]]\nname='r'\non=['push']\nrequire='false'\nmessage='m'\nenforcement='warn'\n",
        )
        .unwrap();
        let d = p.evaluate(Stage::Push, &facts("b"));
        assert!(d.accepted());
        assert_eq!(d.warnings().count(), 1);
    }

    #[test]
    fn message_expression_wins_and_falls_back() {
        let p = set("[[rule]]\nname='r'\non=['push']\nrequire='false'\nmessage='static'\nmessage_expression='\"dyn \" + branch'\n").unwrap();
        assert_eq!(
            p.evaluate(Stage::Push, &facts("b")).verdicts[0].messages(),
            ["dyn b"]
        );
        let p = set("[[rule]]\nname='r'\non=['push']\nrequire='false'\nmessage='static'\nmessage_expression='task.key'\n").unwrap();
        assert_eq!(
            p.evaluate(Stage::Push, &facts("b")).verdicts[0].messages(),
            ["static"]
        );
    }

    #[test]
    fn each_commit_reports_failing_commits() {
        let p = set("[[rule]]\nname='r'\non=['push']\neach='commit'\nrequire='commit.message.contains(\"T-1\")'\nmessage='commit {commit.id} lacks it'\n").unwrap();
        let mut f = facts("b");
        let mk = |id: &str, msg: &str| crate::git::CommitInfo {
            id: id.into(),
            message: msg.into(),
            ..Default::default()
        };
        f.set_commits(vec![mk("a1", "T-1 ok"), mk("b2", "nope")]);
        assert_eq!(
            p.evaluate(Stage::Push, &f).verdicts[0].messages(),
            ["commit b2 lacks it"]
        );
        assert!(p.needs(Stage::Push, "commits"));
    }

    #[test]
    fn borrowed_commit_reads_like_the_commit_map() {
        let c = crate::git::CommitInfo {
            id: "739d79046b22d9c9218776cab6d5a72bc584bb35".into(),
            parents: vec!["a".into(), "b".into()],
            author_name: "A B".into(),
            author_email: "a@x".into(),
            committer_email: "c@x".into(),
            message: "T-1 first line\n\nbody".into(),
            signed: true,
        };
        let env = Arc::new(policy_env());
        for src in [
            "commit.message.contains('T-1')",
            "commit.summary",
            "commit.short_id",
            "commit.parents.size() > 1",
            "commit.parents[1]",
            "commit.signed",
            "has(commit.id) && !has(commit.nope)",
            "'author_email' in commit",
            "size(commit)",
            "commit.all(k, k != '')",
            "commit.author_email.endsWith('@x') && commit.committer_email == 'c@x'",
            "commit.author_name + ' <' + commit.author_email + '>'",
            "commit.nope",
        ] {
            let ast = parse(src).unwrap();
            let mut a = Context::with_env(env.clone());
            a.add_variable_from_value("commit", commit_value(&c));
            let mut b = Context::with_env(env.clone());
            b.add_variable_as_val("commit", commit_val(&c));
            let (a, b) = (Value::resolve(&ast, &a), Value::resolve(&ast, &b));
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{src}");
        }
    }

    #[test]
    fn commits_fact_is_built_only_when_read() {
        let mut f = facts("b");
        f.set_commits(vec![crate::git::CommitInfo {
            id: "c1".into(),
            ..Default::default()
        }]);
        assert!(!f.vars.contains_key("commits"));
        let p = set("[[rule]]\nname='r'\non=['push']\nrequire='commits.size() == 1 && commits[0].id == \"c1\"'\nmessage='{commits}'\n").unwrap();
        assert!(p.evaluate(Stage::Push, &f).accepted());
        assert!(matches!(f.get("commits"), Some(Value::List(l)) if l.len() == 1));
    }

    #[test]
    fn commits_never_gathered_are_no_fact() {
        let p =
            set("[[rule]]\nname='r'\non=['push']\nrequire='commits.size() == 0'\nmessage='m'\n")
                .unwrap();
        let d = p.evaluate(Stage::Push, &facts("b"));
        assert!(
            matches!(&d.verdicts[0].outcome, Outcome::Error(e) if e.contains("unknown variable `commits`")),
            "{d:?}"
        );
    }

    #[test]
    fn duplicate_rule_names_are_refused() {
        let one = "[[rule]]\nname='r'\non=['push']\nrequire='true'\nmessage='m'\n";
        let err =
            PolicySet::parse_sources([(Path::new("a.toml"), one), (Path::new("b.toml"), one)])
                .unwrap_err();
        assert!(err.to_string().contains("already defined in `a.toml`"));
    }

    #[test]
    fn fill_leaves_unknown_and_odd_braces() {
        let s = fill("a {x} {y} {not a name} {", |n| {
            (n == "x").then(|| "1".to_string())
        });
        assert_eq!(s, "a 1 {y} {not a name} {");
    }
}
