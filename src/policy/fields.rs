//! The fields of `commit` an `each = "commit"` rule reads, found in its syntax trees: a push
//! of a hundred thousand commits binds `commit` a hundred thousand times, and a map of the two
//! fields the shipped rule reads costs a third of one of all nine.
//!
//! Only `commit.field` (and `has(commit.field)`) is understood. Anything else that reaches
//! `commit` (the bare name, `commit["field"]`, `commit.?field`, `commit == …`) means the
//! whole map is bound, as it always was: a rule sees the same values either way.

use std::collections::BTreeSet;

use cel::common::ast::{EntryExpr, Expr as Node, IdedExpr};

use super::Rule;

/// The fields of `commit` the rule's per-commit expressions (`require`,
/// `message_expression`) read, or `None` when they may read the whole of it.
pub(super) fn commit_fields(rule: &Rule) -> Option<Vec<String>> {
    let mut fields = BTreeSet::new();
    let exprs = [Some(&rule.require), rule.message_expression.as_ref()];
    for expr in exprs.into_iter().flatten() {
        if !walk(&expr.ast, &mut fields) {
            return None;
        }
    }
    Some(fields.into_iter().collect())
}

/// Adds the fields selected on `commit` under `e`; false when `commit` is read otherwise.
fn walk(e: &IdedExpr, fields: &mut BTreeSet<String>) -> bool {
    match &e.expr {
        Node::Ident(name) => name != "commit",
        Node::Select(s) => match &s.operand.expr {
            Node::Ident(name) if name == "commit" => {
                fields.insert(s.field.clone());
                true
            }
            _ => walk(&s.operand, fields),
        },
        Node::Call(call) => {
            call.target.as_deref().is_none_or(|t| walk(t, fields))
                && call.args.iter().all(|a| walk(a, fields))
        }
        Node::Comprehension(c) => [
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ]
        .into_iter()
        .all(|x| walk(x, fields)),
        Node::List(l) => l.elements.iter().all(|x| walk(x, fields)),
        Node::Map(m) => m.entries.iter().all(|x| walk_entry(&x.expr, fields)),
        Node::Struct(s) => s.entries.iter().all(|x| walk_entry(&x.expr, fields)),
        Node::Literal(_) | Node::Unspecified => true,
    }
}

fn walk_entry(e: &EntryExpr, fields: &mut BTreeSet<String>) -> bool {
    match e {
        EntryExpr::StructField(f) => walk(&f.value, fields),
        EntryExpr::MapEntry(m) => walk(&m.key, fields) && walk(&m.value, fields),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicySet;

    fn fields_of(require: &str, message_expression: Option<&str>) -> Option<Vec<String>> {
        let extra = message_expression
            .map(|m| format!("message_expression = '{m}'\n"))
            .unwrap_or_default();
        let text = format!(
            "[[rule]]\nname = 'r'\non = ['push']\neach = 'commit'\nrequire = '{require}'\n\
             message = 'm'\n{extra}"
        );
        let set =
            PolicySet::parse_sources([(std::path::Path::new("p.toml"), text.as_str())]).unwrap();
        commit_fields(&set.rules[0])
    }

    #[test]
    fn selected_fields_are_found_and_anything_else_binds_the_whole_commit() {
        assert_eq!(
            fields_of(
                "commit.message.contains(task.key) || commit.parents.size() > 1",
                None
            ),
            Some(vec!["message".into(), "parents".into()])
        );
        assert_eq!(
            fields_of(
                "has(commit.signed) && commit.signed",
                Some("\"unsigned: \" + commit.short_id")
            ),
            Some(vec!["short_id".into(), "signed".into()])
        );
        // A loop over the parents reads only `parents`.
        assert_eq!(
            fields_of("commit.parents.all(p, p != \"\")", None),
            Some(vec!["parents".into()])
        );
        for whole in [
            "commit != null",
            "commit[\"message\"] != \"\"",
            "commit.?message.hasValue()",
            "size(commit) > 0",
            "[commit].size() == 1",
        ] {
            assert_eq!(fields_of(whole, None), None, "{whole}");
        }
        assert_eq!(
            fields_of("commit.signed", Some("string(commit)")),
            None,
            "the message expression reads it whole"
        );
    }
}
