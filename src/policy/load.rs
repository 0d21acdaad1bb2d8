//! Loading policies: policy files read from their folders, parsed, and every rule compiled
//! and checked without running it, or every mistake in them listed with its file, rule and
//! field.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cel::Env;
use cel::parser::{Expression, ParseErrors, PrattParser};
use serde::Deserialize;

use super::message::placeholders;
use super::{
    Each, Enforcement, Expr, FACTS, MAX_EXPRESSION_LEN, OnEvalError, PolicySet, Rule, Stage,
    did_you_mean,
};
use crate::config::Config;

/// A rule as written in a policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    /// For the people who read the policy file; lockstep accepts it and shows it nowhere.
    #[serde(default, rename = "description")]
    _description: Option<String>,
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

impl PolicySet {
    /// Compiles the policies a loaded config names (`[policies] dirs`, relative to the
    /// config).
    pub fn for_config(config: &Config) -> Result<PolicySet, LoadErrors> {
        let dirs: Vec<PathBuf> = config
            .policies
            .dirs
            .iter()
            .map(|d| config.resolve(d))
            .collect();
        let mut set = PolicySet::load_dirs(&dirs)?;
        set.timeout = config.policies.timeout;
        set.max_memory = config.policies.max_memory();
        Ok(set)
    }

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
        let mut rules: Vec<Rule> = Vec::new();
        let mut errors = LoadErrors::default();
        let mut revision = super::Revision::default();
        for (path, text) in sources {
            revision.add(path, text);
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
                match compile_rule(&env, path, spec) {
                    Ok(rule) => {
                        if let Some(other) = rules.iter().find(|r| r.name == rule.name) {
                            errors.0.push(format!(
                                "{}: rule `{}` is already defined in `{}`; rule names must be \
                                 unique",
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
            Ok(PolicySet {
                env,
                rules,
                revision: revision.finish(),
                timeout: crate::config::Policies::default().timeout,
                max_memory: crate::config::Policies::default().max_memory(),
                deadline: None,
            })
        } else {
            Err(errors)
        }
    }
}

/// The CEL environment shared by all rules: the standard library plus the strings extension.
pub(super) fn policy_env() -> Env {
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
pub(super) fn parse(source: &str) -> Result<Expression, ParseErrors> {
    PrattParser::default()
        .enable_optional_syntax(true)
        .parse(source)
}

/// Compiles one rule of a policy file, or lists everything wrong with it, in the order of
/// its fields.
fn compile_rule(env: &Env, path: &Path, spec: RuleSpec) -> Result<Rule, Vec<String>> {
    let mut e = RuleErrors {
        path,
        rule: spec.name.clone(),
        errors: Vec::new(),
    };
    if spec.name.trim().is_empty() {
        e.errors
            .push(format!("{}: a rule has an empty `name`", path.display()));
    }
    if spec.on.is_empty() {
        let at = e.at("on");
        e.errors.push(format!(
            "{at} is empty; name a stage: push, deliver or merge"
        ));
    }
    let when = spec.when.as_deref().map(|s| e.compile(env, "when", s));
    let require = e.compile(env, "require", &spec.require);
    let message_expression = spec
        .message_expression
        .as_deref()
        .map(|s| e.compile(env, "message_expression", s));
    e.check_message(&spec.message);
    if spec.each.is_some() && spec.on.iter().any(|s| *s != Stage::Push) {
        let at = e.at("each");
        e.errors.push(format!(
            "{at}: `each = \"commit\"` applies only to `on = [\"push\"]`"
        ));
    }
    let (Some(require), Some(when), Some(message_expression)) = (
        require,
        when.map_or(Some(None), |w| w.map(Some)),
        message_expression.map_or(Some(None), |m| m.map(Some)),
    ) else {
        return Err(e.errors);
    };
    let rule = Rule {
        name: spec.name,
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
    e.check_variables(&rule);
    if e.errors.is_empty() {
        Ok(rule)
    } else {
        Err(e.errors)
    }
}

/// The mistakes found in one rule so far, each naming its file, rule and field.
struct RuleErrors<'a> {
    path: &'a Path,
    rule: String,
    errors: Vec<String>,
}

impl RuleErrors<'_> {
    /// Where a mistake is: the file, the rule and the field.
    fn at(&self, field: &str) -> String {
        format!("{}: rule `{}`, `{field}`", self.path.display(), self.rule)
    }

    /// Compiles the expression of `field`; `None`, and the mistake noted, when it is too long
    /// or does not parse.
    fn compile(&mut self, env: &Env, field: &str, source: &str) -> Option<Expr> {
        if source.len() > MAX_EXPRESSION_LEN {
            let at = self.at(field);
            self.errors.push(format!(
                "{at} is {} bytes; the limit is {MAX_EXPRESSION_LEN}",
                source.len()
            ));
            return None;
        }
        match parse(source) {
            Ok(ast) => Some(Expr::new(source, ast, env)),
            Err(e) => {
                let detail = e
                    .errors
                    .iter()
                    .map(|pe| format!("line {} column {}: {}", pe.pos.0, pe.pos.1, pe.msg))
                    .collect::<Vec<_>>()
                    .join("; ");
                let at = self.at(field);
                self.errors
                    .push(format!("{at}: syntax error at {detail}\n  | {source}"));
                None
            }
        }
    }

    /// Every placeholder of the message must name a fact.
    fn check_message(&mut self, message: &str) {
        for p in placeholders(message) {
            let root = p.split('.').next().unwrap_or_default();
            if !FACTS.contains(&root) {
                let at = self.at("message");
                self.errors.push(format!(
                    "{at} names `{{{p}}}`, which is no fact{}",
                    did_you_mean(root, FACTS)
                ));
            }
        }
    }

    /// CEL has no type checker: every variable an expression reads must be a fact, found in
    /// its syntax tree. Running the expression against sample facts would find them too, but
    /// with no bound on how long that takes.
    fn check_variables(&mut self, rule: &Rule) {
        let fields = [
            ("when", rule.when.as_ref()),
            ("require", Some(&rule.require)),
            ("message_expression", rule.message_expression.as_ref()),
        ];
        for (field, expr) in fields {
            for var in expr.iter().flat_map(|e| e.vars.iter()) {
                if !FACTS.contains(&var.as_str()) && var != "commit" {
                    let at = self.at(field);
                    self.errors.push(format!(
                        "{at}: unknown variable `{var}`{}",
                        did_you_mean(var, FACTS)
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::set;

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

    /// Issue 10: variables are found in the syntax tree, so one that evaluation would never
    /// reach (behind a short circuit) is caught, and comprehension variables, types and
    /// function namespaces are not mistaken for facts.
    #[test]
    fn issue10_unknown_variables_are_found_without_running_the_rule() {
        let err = set(
            "[[rule]]\nname='r'\non=['push']\nrequire='false && brnch == \"x\"'\nmessage='m'\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("`require`: unknown variable `brnch` (did you mean `branch`?)"),
            "{err}"
        );
        let fine = "commits.all(c, c.message != '') && [1, 2].exists(x, x == 2) \
            && type(branch) == string && strings.quote(branch) != '' \
            && {'k': pusher}.all(k, k == 'k')";
        set(&format!(
            "[[rule]]\nname='r'\non=['push']\nrequire=\"{fine}\"\nmessage='m'\n"
        ))
        .unwrap();
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
    fn duplicate_rule_names_are_refused() {
        let one = "[[rule]]\nname='r'\non=['push']\nrequire='true'\nmessage='m'\n";
        let err =
            PolicySet::parse_sources([(Path::new("a.toml"), one), (Path::new("b.toml"), one)])
                .unwrap_err();
        assert!(err.to_string().contains("already defined in `a.toml`"));
    }

    /// A rule's `on_error` is `fail` or `pass`; `allow` is the tracker's word, and a rule that
    /// borrows it is refused at load rather than silently failing closed or open.
    #[test]
    fn rule_on_error_is_fail_or_pass_not_allow() {
        let rule = |v: &str| {
            format!(
                "[[rule]]\nname='r'\non=['push']\nrequire='true'\nmessage='m'\non_error='{v}'\n"
            )
        };
        for ok in ["fail", "pass"] {
            assert!(set(&rule(ok)).is_ok(), "{ok}");
        }
        let err = set(&rule("allow")).unwrap_err().to_string();
        assert!(
            err.starts_with("policies/test.toml: ")
                && err.contains("unknown variant `allow`, expected `fail` or `pass`"),
            "{err}"
        );
    }
}
