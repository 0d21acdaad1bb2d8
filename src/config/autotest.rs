//! `[autotest]`: each task branch built and tested when it changes, before anyone asks for a
//! delivery.

use anyhow::bail;
use serde::Deserialize;

/// `[autotest]`: when a task branch is tested on its own (rebased on its upstream, then its
/// repository's `build` and `test`), and how many such tests run at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autotest {
    /// Test a task branch whenever it is pushed (the post-receive hook records the request,
    /// the worker runs it). Default false: only on demand (`lockstep autotest`,
    /// `git push -o autotest`).
    #[serde(default)]
    pub on_push: bool,
    /// Task statuses whose tasks have every branch tested (`lockstep serve`'s poller), e.g.
    /// `["Awaiting Autotests"]`. Default none.
    #[serde(default)]
    pub statuses: Vec<String>,
    /// Where such a task goes when every branch passed, e.g. `"Awaiting Review"`. Default:
    /// it stays where it is. A failure moves it back to `[tasks] returned`.
    pub passed: Option<String>,
    /// How many autotests run at once, in slots of their own: they never take a delivery's.
    /// Default 2.
    #[serde(default = "default_parallel")]
    pub parallel: usize,
}

impl Default for Autotest {
    fn default() -> Self {
        Autotest {
            on_push: false,
            statuses: Vec::new(),
            passed: None,
            parallel: default_parallel(),
        }
    }
}

fn default_parallel() -> usize {
    2
}

impl Autotest {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self.parallel == 0 {
            bail!(
                "`[autotest] parallel` is 0; make it at least 1 (autotests run in slots of their own)"
            );
        }
        if self.statuses.iter().any(|s| s.trim().is_empty()) {
            bail!("`[autotest] statuses` has an empty status; name the tracker's statuses");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let a: Autotest = toml::from_str("").unwrap();
        assert!(!a.on_push && a.statuses.is_empty() && a.passed.is_none());
        assert_eq!(a.parallel, 2);
        let a: Autotest = toml::from_str("parallel = 0").unwrap();
        assert!(a.check().unwrap_err().to_string().contains("at least 1"));
        assert!(toml::from_str::<Autotest>("on_pushed = true").is_err());
    }
}
