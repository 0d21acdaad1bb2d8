//! What the pusher reads: the warnings and the rejection of a push (with GitLab's prefix when
//! it runs the hook), and the per-rule explanation of `lockstep policy test`.

use std::fmt;

use super::{PushContext, RefDecision};
use crate::git::short;
use crate::policy;

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
    use crate::policy::Decision;
    use crate::push::parse_updates;

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
}
