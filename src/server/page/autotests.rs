//! The queue page's autotests: the latest task branches tested on their own, their state and
//! what each was rebased on.

use maud::{Markup, html};

use super::{ago, duration, pill};
use crate::store::AutotestRow;

/// The autotests section of the queue page: nothing when there are none.
pub(super) fn autotests(rows: &[AutotestRow], now_ms: i64) -> Markup {
    if rows.is_empty() {
        return html! {};
    }
    html! {
        section id="autotests" {
            h2 { "Autotests" }
            table {
                thead {
                    tr {
                        th { "autotest" } th { "task" } th { "repository" } th { "branch" }
                        th { "head" } th { "state" } th { "rebased on" } th { "duration" }
                        th { "ended" }
                    }
                }
                tbody {
                    @for a in rows {
                        tr {
                            td { "#" (a.id) }
                            td {
                                b { (a.task) }
                                @if !a.reason.is_empty() {
                                    div class="why" { (a.reason) }
                                }
                            }
                            td { (a.repo) }
                            td { code { (a.branch) } }
                            td { code { (crate::git::short(&a.sha)) } }
                            td { (pill(a.state.as_str(), a.state.as_str())) }
                            td { code { (crate::git::short(&a.rebased_on)) } }
                            td class="num" {
                                @match (a.started_at, a.finished_at) {
                                    (Some(s), Some(f)) => (duration(f - s)),
                                    (Some(s), None) => (duration(now_ms - s)),
                                    _ => "-",
                                }
                            }
                            td {
                                @match a.finished_at {
                                    Some(t) => (ago(now_ms, t)),
                                    None => "-",
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AutotestState, RepoName, Source, TaskKey};

    fn row(id: i64, state: AutotestState, reason: &str) -> AutotestRow {
        AutotestRow {
            id,
            task: TaskKey::new("TASK-<1>"),
            repo: RepoName::new("api"),
            branch: "feature/<b>x</b>".into(),
            sha: "a".repeat(40),
            source: Source::Push,
            requester: "alice".into(),
            state,
            rebased_on: "b".repeat(40),
            tested_sha: "c".repeat(40),
            step: String::new(),
            reason: reason.into(),
            log: String::new(),
            pid: None,
            requested_at: 1_000,
            started_at: Some(2_000),
            finished_at: (state != AutotestState::Running).then_some(65_000),
            runner_build: None,
        }
    }

    #[test]
    fn the_section_lists_each_autotest_escaped_and_is_absent_without_any() {
        assert_eq!(autotests(&[], 0).into_string(), "");
        let rows = [
            row(2, AutotestState::Failed, "`test` exited with 1: <boom>"),
            row(1, AutotestState::Passed, ""),
        ];
        let html = autotests(&rows, 70_000).into_string();
        assert!(html.contains("<h2>Autotests</h2>"), "{html}");
        assert!(
            html.contains("<span class=\"pill failed\">failed</span>"),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"pill passed\">passed</span>"),
            "{html}"
        );
        assert!(html.contains("feature/&lt;b&gt;x&lt;/b&gt;"), "{html}");
        assert!(html.contains("TASK-&lt;1&gt;"), "{html}");
        assert!(html.contains("exited with 1: &lt;boom&gt;"), "{html}");
        assert!(html.contains("<code>aaaaaaa"), "{html}");
        assert!(!html.contains("<boom>") && !html.contains("<b>x"), "{html}");
    }
}
