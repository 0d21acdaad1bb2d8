//! Evaluation: every rule of a stage against the facts, each into a [`Verdict`], together a
//! [`Decision`]. An expression that fails, runs past the deadline or uses more than its memory
//! ([`super::bound`]) counts as the rule's `on_error` says.

use std::time::Instant;

use cel::{Context, ExecutionError, Value};

use super::bound::{add_deadline, past_deadline};
use super::message::render_message;
use super::{
    Each, Enforcement, Expr, FACTS, Facts, MAX_REPORTED_SUBJECTS, OnEvalError, PolicySet, Rule,
    Stage, commit_val_of, commit_value, did_you_mean, show,
};

impl PolicySet {
    /// Evaluates every rule of the stage against the facts, within `[policies] timeout` (or
    /// by [`PolicySet::deadline`] when that is set) and `[policies] max_memory_mib` a rule.
    pub fn evaluate(&self, stage: Stage, facts: &Facts) -> Decision {
        let deadline = self
            .deadline
            .unwrap_or_else(|| Instant::now() + self.timeout);
        let mut ctx = Context::with_env(self.env.clone());
        let meter = add_deadline(&mut ctx, deadline, self.timeout, self.max_memory);
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
            .map(|rule| {
                // Each rule's memory counts from its own start.
                meter.rebase();
                Verdict {
                    rule: rule.name.clone(),
                    enforcement: rule.enforcement,
                    outcome: evaluate_rule(rule, &ctx, facts, deadline),
                }
            })
            .collect();
        Decision { verdicts }
    }
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

    /// `pass`, `skip` (its `when` was false), `deny`, `warn` or `error`: the verdict in a
    /// word, for the metrics and the decision log.
    pub fn label(&self) -> &'static str {
        match (&self.outcome, self.enforcement) {
            (Outcome::NotApplicable, _) => "skip",
            (Outcome::Pass, _) => "pass",
            (Outcome::Fail(_), Enforcement::Deny) => "deny",
            (Outcome::Fail(_), Enforcement::Warn) => "warn",
            (Outcome::Error(_), _) => "error",
        }
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
    if let Some(said) = past_deadline(e) {
        return said.to_string();
    }
    match e {
        ExecutionError::UndeclaredReference(name) => {
            format!("unknown variable `{name}`{}", did_you_mean(name, FACTS))
        }
        ExecutionError::NoSuchKey(k) => format!("no field `{k}`"),
        other => other.to_string(),
    }
}

fn evaluate_rule(rule: &Rule, ctx: &Context, facts: &Facts, deadline: Instant) -> Outcome {
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
            let fields = super::fields::commit_fields(rule);
            for commit in facts.commits() {
                if Instant::now() >= deadline {
                    return on_error(format!(
                        "`{}` ran past `policies.timeout` over the new commits and was stopped",
                        rule.require.source
                    ));
                }
                let mut scope = ctx.new_inner_scope();
                scope.add_variable_as_val("commit", commit_val_of(commit, fields.as_deref()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::task_value;
    use crate::policy::testing::{facts, set};

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
    fn evaluation_error_fails_closed_unless_told() {
        let p = set("[[rule]]\nname='r'\non=['push']\nrequire='task.key == \"x\"'\nmessage='m'\n")
            .unwrap();
        let d = p.evaluate(Stage::Push, &facts("b"));
        assert!(!d.accepted());
        assert!(
            matches!(&d.verdicts[0].outcome, Outcome::Error(e) if e.starts_with("policy error:"))
        );
        let p = set(
            "[[rule]]\nname='r'\non=['push']\nrequire='task.key == \"x\"'\nmessage='m'\n\
             on_error='pass'\n",
        )
        .unwrap();
        assert!(p.evaluate(Stage::Push, &facts("b")).accepted());
    }

    /// Issue 10: nested comprehensions over literal lists (10^7 steps) are cut at the
    /// deadline, and the rule counts as its `on_error` says; a rule with no loop still runs.
    #[test]
    fn issue10_a_rule_past_the_deadline_counts_as_its_on_error() {
        let list = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]";
        let mut expr = "a + b + c + d + e + f + g >= 0".to_string();
        for v in ["g", "f", "e", "d", "c", "b", "a"] {
            expr = format!("{list}.all({v}, {expr})");
        }
        for (on_error, accepted) in [("fail", false), ("pass", true)] {
            let text = format!(
                "[[rule]]\nname='slow'\non=['push']\nrequire='''{expr}'''\nmessage='m'\non_error='{on_error}'\n\
                 [[rule]]\nname='quick'\non=['push']\nrequire='branch == \"b\"'\nmessage='m'\n"
            );
            let mut p = set(&text).unwrap();
            p.timeout = std::time::Duration::from_millis(100);
            let d = p.evaluate(Stage::Push, &facts("b"));
            assert_eq!(d.accepted(), accepted, "{:?}", d.verdicts);
            assert_eq!(d.verdicts[1].outcome, Outcome::Pass);
            if on_error == "fail" {
                assert!(
                    matches!(&d.verdicts[0].outcome, Outcome::Error(e)
                        if e.ends_with("ran past `policies.timeout` (100ms) and was stopped")),
                    "{:?}",
                    d.verdicts[0]
                );
            }
        }
    }

    /// A rule of nested `map`s building ten million strings.
    pub(crate) fn hog_rule(on_error: &str) -> String {
        let list = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]";
        let mut expr =
            "'a string of some length, built ten million times: ' + string(g)".to_string();
        for v in ["g", "f", "e", "d", "c", "b", "a"] {
            expr = format!("{list}.map({v}, {expr})");
        }
        format!(
            "[[rule]]\nname='hog'\non=['push']\nrequire=\"{expr}.size() > 0\"\nmessage='m'\n\
             on_error='{on_error}'\n"
        )
    }

    /// Issue 22: a rule that builds more than `max_memory_mib` is stopped long before its
    /// timeout, by name and saying which limit it hit; the next rule still runs.
    #[test]
    fn issue22_a_rule_that_builds_too_much_is_stopped() {
        let text = format!(
            "{}[[rule]]\nname='quick'\non=['push']\nrequire='branch == \"b\"'\nmessage='m'\n",
            hog_rule("fail")
        );
        let mut p = set(&text).unwrap();
        p.timeout = std::time::Duration::from_secs(120);
        p.max_memory = 16 * 1024 * 1024;
        let started = Instant::now();
        let d = p.evaluate(Stage::Push, &facts("b"));
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        assert_eq!(d.verdicts[0].rule, "hog");
        assert!(
            matches!(&d.verdicts[0].outcome, Outcome::Error(e)
                if e.ends_with("used more than `policies.max_memory_mib` (16 MiB) and was \
                    stopped; simplify the rule or raise `[policies] max_memory_mib`")),
            "{:?}",
            d.verdicts[0]
        );
        assert_eq!(d.verdicts[1].outcome, Outcome::Pass);
    }

    /// The loops made to check the deadline give the same results as before.
    #[test]
    fn guarded_loops_keep_their_meaning() {
        for (expr, want) in [
            ("[1, 2, 3].all(x, x > 0)", true),
            ("[1, 2, 3].exists(x, x > 2)", true),
            ("[1, 2, 3].exists_one(x, x > 1)", false),
            ("[1, 2, 3].map(x, x * 2) == [2, 4, 6]", true),
            ("[1, 2, 3].map(x, x > 1, x) == [2, 3]", true),
            ("[1, 2, 3].filter(x, x != 2) == [1, 3]", true),
            ("{'a': 1}.all(k, k == 'a')", true),
            ("[[1], [2, 3]].all(l, l.exists(x, x > 0))", true),
            ("'a' + 'b' == 'ab' && [1] + [2] == [1, 2]", true),
            ("'aXa'.replace('X', 'b') == 'aba'", true),
            (
                "'a-b'.split('-') == ['a', 'b'] && ['a', 'b'].join('-') == 'a-b'",
                true,
            ),
            ("[1, 2].map(x, [x] + [x]) == [[1, 1], [2, 2]]", true),
            ("[1, 2, 3].exists_one(x, x + 1 == 3)", true),
        ] {
            let p = set(&format!(
                "[[rule]]\nname='r'\non=['push']\nrequire='''{expr}'''\nmessage='m'\non_error='pass'\n"
            ))
            .unwrap();
            let d = p.evaluate(Stage::Push, &facts("b"));
            let got = matches!(d.verdicts[0].outcome, Outcome::Pass);
            assert_eq!(got, want, "{expr}: {:?}", d.verdicts[0]);
        }
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
    fn each_commit_reports_failing_commits() {
        let p = set("[[rule]]\nname='r'\non=['push']\neach='commit'\n\
             require='commit.message.contains(\"T-1\")'\n\
             message='commit {commit.id} lacks it'\n")
        .unwrap();
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
}
