//! The HTML of `lockstep serve`: the queue page (`queue`) and a delivery's page (`delivery`),
//! plain HTML without JavaScript, refreshed by a `<meta>`. Here are the pieces both share:
//! the document and its style sheet, the header, pills, the grid table, how times read.
//!
//! The pages are [`maud`] templates, so every value spliced into them is escaped by
//! construction: task keys, branch names, requesters and logs come from people and build
//! tools, not from us. The only text written out as it is is ours: the doctype and the style
//! sheet (`PreEscaped`).

mod autotests;
mod delivery;
mod queue;
mod showrooms;

pub use delivery::{DeliveryView, StepLog, delivery_page};
pub use queue::{InFlight, QueueView, queue_page};

use maud::{Markup, PreEscaped, html};

use super::grid::GridRow;
use crate::domain::Phase;
use crate::store::DeliveryRow;

const CSS: &str = r#"
:root{--bg:#f6f7f9;--card:#fff;--ink:#1d2330;--muted:#667085;--line:#e4e7ec;
--ok:#12805c;--ok-bg:#e3f6ee;--bad:#c4320a;--bad-bg:#fdeceb;--run:#1c64f2;--run-bg:#e6efff;
--wait:#98a2b3;--wait-bg:#f2f4f7;--skip-bg:#fafafa}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:#111827;color:#fff;padding:14px 28px;display:flex;align-items:center;gap:18px}
header h1{font-size:18px;margin:0;letter-spacing:.3px}
header h1 a{color:#fff;text-decoration:none}
header .eco{color:#9ca3af;font-size:13px}
header .stats{margin-left:auto;display:flex;gap:14px;font-size:13px;color:#d1d5db}
header .stats b{color:#fff}
main{max-width:1180px;margin:0 auto;padding:22px 28px 40px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;margin-bottom:20px;
box-shadow:0 1px 2px rgba(16,24,40,.04)}
section>h2{font-size:13px;text-transform:uppercase;letter-spacing:.6px;color:var(--muted);
margin:0;padding:12px 18px;border-bottom:1px solid var(--line)}
.body{padding:16px 18px}
.empty{color:var(--muted);padding:16px 18px;margin:0}
.task{font-size:20px;font-weight:650}
.meta{color:var(--muted);margin-top:2px}
.meta code,td code{background:#f2f4f7;border-radius:4px;padding:1px 5px;font-size:12.5px}
table{border-collapse:collapse;width:100%}
th{font-size:12px;text-align:left;color:var(--muted);font-weight:600;padding:8px 12px;
border-bottom:1px solid var(--line);white-space:nowrap}
td{padding:9px 12px;border-bottom:1px solid var(--line);vertical-align:middle}
tr:last-child td{border-bottom:0}
table.grid{margin-top:14px;table-layout:fixed}
table.grid th:first-child{width:24%}
table.grid td.cell{text-align:center;padding:6px}
.pill{display:inline-block;min-width:78px;padding:4px 10px;border-radius:999px;font-size:12px;
font-weight:600;text-align:center}
.passed{background:var(--ok-bg);color:var(--ok)}
.failed{background:var(--bad-bg);color:var(--bad)}
.running{background:var(--run-bg);color:var(--run);animation:pulse 1.6s ease-in-out infinite}
.pending{background:var(--wait-bg);color:var(--wait)}
.skipped{background:var(--skip-bg);color:#b0b7c3;border:1px dashed #d0d5dd}
.delivered{background:var(--ok-bg);color:var(--ok)}
.cancelled{background:var(--wait-bg);color:var(--muted)}
.queued{background:var(--wait-bg);color:var(--muted)}
@keyframes pulse{50%{opacity:.55}}
.now{margin-top:14px;padding:10px 12px;background:var(--run-bg);border-radius:8px;color:#1e3a8a}
.why{color:var(--bad);font-size:13px;max-width:520px;overflow-wrap:anywhere}
a{color:#1c64f2;text-decoration:none}a:hover{text-decoration:underline}
.num{color:var(--muted);font-variant-numeric:tabular-nums;white-space:nowrap}
pre.log{background:#0f172a;color:#e2e8f0;padding:12px 14px;border-radius:8px;overflow:auto;
max-height:420px;font:12px/1.5 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;margin:8px 0 0;
white-space:pre-wrap;overflow-wrap:anywhere}
details{border-top:1px solid var(--line);padding:10px 0}
details:first-of-type{border-top:0}
summary{cursor:pointer;font-weight:600}
footer{color:var(--muted);font-size:12px;text-align:center;padding-bottom:24px}
"#;

/// A whole page: the document head (title, style sheet, refresh) around `body`.
fn document(title: &str, refresh: Option<u64>, body: Markup) -> String {
    html! {
        (PreEscaped("<!doctype html>\n"))
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(r) = refresh {
                    meta http-equiv="refresh" content=(r);
                }
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body { (body) }
        }
    }
    .into_string()
}

/// The 404 page.
pub fn not_found_page(what: &str) -> String {
    html! {
        (PreEscaped("<!doctype html>"))
        title { "not found" }
        p { (what) }
        p { a href="/" { "the queue" } }
    }
    .into_string()
}

/// The dark band at the top: the ecosystem's repositories and `stats` on the right.
fn header(repos: &[String], stats: Markup) -> Markup {
    html! {
        header {
            h1 { a href="/" { "lockstep" } }
            span class="eco" { (repos.join(" · ")) }
            div class="stats" { (stats) }
        }
    }
}

/// `stages: staging passed → production running`; nothing for a delivery of one stage.
fn stages_line(stages: &[crate::delivery::StageReport]) -> Markup {
    html! {
        @if !stages.is_empty() {
            div class="meta stages" {
                "stages: "
                @for (i, s) in stages.iter().enumerate() {
                    @if i > 0 { " → " }
                    span class={ "stage " (s.state.as_str().replace(' ', "-")) } {
                        (s.stage) " " (s.state)
                    }
                }
            }
        }
    }
}

fn pill(class: &str, label: &str) -> Markup {
    html! { span class={ "pill " (class) } { (label) } }
}

/// Who asked for a delivery, and from where.
fn requested(d: &DeliveryRow) -> Markup {
    let who = if d.requester.is_empty() {
        "someone"
    } else {
        d.requester.as_str()
    };
    html! {
        "by " b { (who) } " via " (d.source)
        @if !d.origin.is_empty() {
            " (" code { (d.origin) } ")"
        }
    }
}

/// The repo × phase grid of a delivery.
fn grid_table(grid: &[GridRow]) -> Markup {
    html! {
        table class="grid" {
            thead {
                tr {
                    th { "repository" }
                    @for p in Phase::LINE {
                        th style="text-align:center" { (p.as_str()) }
                    }
                }
            }
            tbody {
                @for row in grid {
                    tr {
                        td {
                            b { (row.repo) }
                            @if !row.branch.is_empty() {
                                div class="meta" { code { (row.branch) } }
                            }
                        }
                        @for (phase, cell) in &row.cells {
                            td class="cell" data-phase=(phase) data-state=(cell.class()) {
                                (pill(cell.class(), cell.label()))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `1m 05s`, `42s`, `2h 03m`.
pub fn duration(ms: i64) -> String {
    let s = (ms.max(0) + 500) / 1000;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    }
}

fn clock(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

fn time_of_day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%H:%M:%S").to_string())
        .unwrap_or_default()
}

/// How long ago `then` was, with the time itself on hover.
fn ago(now: i64, then: i64) -> Markup {
    html! { span title=(clock(then)) { (duration(now - then)) " ago" } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::State;
    use crate::server::fixtures::{config, delivery, repo, step};
    use crate::server::grid::grid;

    #[test]
    fn untrusted_text_is_escaped() {
        let mut d = delivery(State::Running, "build");
        d.task = "<script>alert(1)</script>".into();
        d.requester = "\"><img src=x onerror=alert(1)>".into();
        let mut r = repo("api");
        r.branch = "feature/<b>x</b>&'\"".into();
        let v = QueueView {
            repos: vec!["api".into()],
            running: vec![InFlight {
                grid: grid(&config(), &d, std::slice::from_ref(&r), &[], &[]),
                delivery: d.clone(),
                current: vec![step(1, "api", "build", "running")],
                stages: vec![],
            }],
            queued: vec![d.clone()],
            recent: vec![],
            autotests: vec![],
            showrooms: Vec::new(),
            now_ms: 10_000,
            refresh_secs: 5,
        };
        let html = queue_page(&v);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"));
        assert!(!html.contains("<b>x</b>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        // `'` stays as it is: every attribute the templates write is double-quoted.
        assert!(html.contains("feature/&lt;b&gt;x&lt;/b&gt;&amp;'&quot;"));
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        let dv = DeliveryView {
            repos_all: vec![],
            delivery: d,
            repos: vec![r],
            grid: vec![],
            steps: vec![StepLog {
                step: step(1, "api", "build", "failed"),
                log: "</pre><script>x</script>".into(),
            }],
            journal: vec![],
            now_ms: 0,
            refresh_secs: 5,
        };
        let html = delivery_page(&dv);
        assert!(!html.contains("<script>x"));
        assert!(html.contains("&lt;/pre&gt;&lt;script&gt;x&lt;/script&gt;"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration(42_000), "42s");
        assert_eq!(duration(65_000), "1m 05s");
        assert_eq!(duration(7_380_000), "2h 03m");
        assert_eq!(duration(-5), "0s");
    }
}
