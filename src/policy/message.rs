//! Messages: the text a failing rule shows, from its `message_expression` or its `message`
//! with `{fact}` and `{fact.field}` placeholders filled in, and values written for people.

use cel::{Context, Value};

use super::{Facts, Rule};

pub(super) fn render_message(
    rule: &Rule,
    ctx: &Context,
    facts: &Facts,
    commit: Option<&Value>,
) -> String {
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
pub(super) fn placeholders(message: &str) -> impl Iterator<Item = &str> {
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
    use crate::policy::Stage;
    use crate::policy::testing::{facts, set};

    #[test]
    fn message_expression_wins_and_falls_back() {
        let p = set(
            "[[rule]]\nname='r'\non=['push']\nrequire='false'\nmessage='static'\n\
             message_expression='\"dyn \" + branch'\n",
        )
        .unwrap();
        assert_eq!(
            p.evaluate(Stage::Push, &facts("b")).verdicts[0].messages(),
            ["dyn b"]
        );
        let p = set(
            "[[rule]]\nname='r'\non=['push']\nrequire='false'\nmessage='static'\n\
             message_expression='task.key'\n",
        )
        .unwrap();
        assert_eq!(
            p.evaluate(Stage::Push, &facts("b")).verdicts[0].messages(),
            ["static"]
        );
    }

    #[test]
    fn fill_leaves_unknown_and_odd_braces() {
        let s = fill("a {x} {y} {not a name} {", |n| {
            (n == "x").then(|| "1".to_string())
        });
        assert_eq!(s, "a 1 {y} {not a name} {");
    }
}
