//! The task key made a safe DNS label: lower-case, `[a-z0-9-]`, every run of other
//! characters one `-`, no `-` at either end, at most 63 characters. The only form of the key
//! a showroom's URL and its `LOCKSTEP_SHOWROOM` get.

use crate::domain::TaskKey;

/// A DNS label's longest (RFC 1035).
const MAX: usize = 63;

/// A task key as a safe DNS label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label(String);

impl Label {
    /// The label of a task key; an error when nothing of it is a letter or a digit.
    pub fn of(task: &TaskKey) -> anyhow::Result<Label> {
        let mut out = String::new();
        for c in task.as_str().chars().flat_map(char::to_lowercase) {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                out.push(c);
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        out.truncate(MAX);
        let label = out.trim_end_matches('-').to_string();
        if label.is_empty() {
            anyhow::bail!(
                "task `{}` has no letter or digit to name a showroom by",
                crate::text::escape(task.as_str())
            );
        }
        Ok(Label(label))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Label;
    use crate::domain::TaskKey;

    fn label(key: &str) -> String {
        Label::of(&TaskKey::new(key))
            .map(|l| l.0)
            .unwrap_or_default()
    }

    #[test]
    fn task_keys_become_safe_dns_labels() {
        assert_eq!(label("TASK-1;rm -rf"), "task-1-rm-rf");
        assert_eq!(label("TASK-7"), "task-7");
        assert_eq!(label("--A__b..C--"), "a-b-c");
        assert_eq!(label("$(reboot)\n`x`"), "reboot-x");
        assert_eq!(label("ÄRGER-1"), "rger-1");
        assert_eq!(label(";;;"), "");
        let long = label(&format!("{}-{}", "a".repeat(62), "b".repeat(10)));
        assert_eq!(long, "a".repeat(62));
        assert!(label(&"x1-".repeat(40)).len() <= 63);
        assert!(!label(&"x1-".repeat(40)).ends_with('-'));
    }
}
