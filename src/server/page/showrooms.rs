//! The showrooms on the queue page: each task's showroom, its link, its state, the commits
//! it runs, its age and who asked.

use maud::{Markup, html};

use super::{ago, pill};
use crate::store::ShowroomRow;

/// The showrooms' listing (the rows are those not down).
pub(super) fn showrooms(rows: &[ShowroomRow], now_ms: i64) -> Markup {
    html! {
        @for r in rows {
            div class="body" {
                div class="task" {
                    (r.task) " " (pill(r.state.as_str(), r.state.as_str())) " "
                    @if r.url.starts_with("https://") || r.url.starts_with("http://") {
                        a href=(r.url) { (r.url) }
                    } @else {
                        (r.url)
                    }
                }
                div class="meta" {
                    @for (i, (repo, sha)) in r.shas.iter().enumerate() {
                        @if i > 0 { ", " }
                        (repo) " " code { (crate::git::short(sha)) }
                    }
                    " · asked by " b { (r.requester) } " "
                    (ago(now_ms, r.created_at))
                }
                @if !r.reason.is_empty() {
                    div class="why" { (r.reason) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{ShowroomRow, ShowroomState};

    #[test]
    fn a_showroom_is_listed_with_its_link_and_untrusted_text_escaped() {
        let row = ShowroomRow {
            task: "TASK-1<script>".into(),
            label: "task-1-script".into(),
            url: "https://task-1-script.show.example.com".into(),
            shas: [("api".to_string(), "0123456789abcdef".to_string())].into(),
            requester: "alice".into(),
            state: ShowroomState::Up,
            reason: String::new(),
            created_at: 0,
            updated_at: 0,
            deployed_at: Some(0),
            task_status: Some("In Progress".into()),
        };
        let html = super::showrooms(&[row], 60_000).into_string();
        assert!(
            html.contains(
                "<a href=\"https://task-1-script.show.example.com\">\
             https://task-1-script.show.example.com</a>"
            ),
            "{html}"
        );
        assert!(html.contains("TASK-1&lt;script&gt;"), "{html}");
        assert!(html.contains("api <code>0123456789</code>"), "{html}");
        assert!(html.contains("asked by <b>alice</b>"), "{html}");
    }
}
