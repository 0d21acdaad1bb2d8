//! The queue page (`GET /`): the delivery in flight with its grid and the steps running now,
//! the queue, and the deliveries that finished last.

use maud::{Markup, html};
use serde::Serialize;

use super::{ago, document, duration, grid_table, header, pill, requested, stages_line};
use crate::delivery::StageReport;
use crate::domain::Phase;
use crate::server::grid::GridRow;
use crate::store::{AutotestRow, DeliveryRow, ShowroomRow, StepRow};

/// The delivery in flight, ready to show.
#[derive(Debug, Clone, Serialize)]
pub struct InFlight {
    pub delivery: DeliveryRow,
    pub grid: Vec<GridRow>,
    /// The steps running now.
    pub current: Vec<StepRow>,
    /// Its stages and where each stands (`[delivery] stages`); none for one stage.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageReport>,
}

/// Everything the queue page shows.
#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    pub repos: Vec<String>,
    pub running: Vec<InFlight>,
    pub queued: Vec<DeliveryRow>,
    pub recent: Vec<DeliveryRow>,
    /// The latest autotests, newest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub autotests: Vec<AutotestRow>,
    /// The showrooms not down.
    pub showrooms: Vec<ShowroomRow>,
    pub now_ms: i64,
    #[serde(skip)]
    pub refresh_secs: u64,
}

/// The queue page.
pub fn queue_page(v: &QueueView) -> String {
    let title = match v.running.first() {
        Some(f) => format!("lockstep · delivering {}", f.delivery.task),
        None => "lockstep · queue".to_string(),
    };
    let refresh = v.refresh_secs.max(1);
    let stats = html! {
        span { b { (v.running.len()) } " running" }
        span { b { (v.queued.len()) } " queued" }
    };
    document(
        &title,
        Some(refresh),
        html! {
            (header(&v.repos, stats))
            main {
                (listing("in-flight", "In flight", "Nothing is being delivered right now.",
                    (!v.running.is_empty()).then(|| html! {
                        @for f in &v.running { (in_flight(f, v.now_ms)) }
                    })))
                (listing("queue", "Queue", "The queue is empty.",
                    (!v.queued.is_empty()).then(|| queued(v))))
                (listing("recent", "Recent", "No delivery has finished yet.",
                    (!v.recent.is_empty()).then(|| recent(v))))
                (super::autotests::autotests(&v.autotests, v.now_ms))
                @if !v.showrooms.is_empty() {
                    (listing("showrooms", "Showrooms", "",
                        Some(super::showrooms::showrooms(&v.showrooms, v.now_ms))))
                }
            }
            footer {
                "refreshes every " (refresh) "s · "
                a href="/api/queue" { "json" }
                " · "
                a href="/metrics" { "metrics" }
            }
        },
    )
}

fn in_flight(f: &InFlight, now_ms: i64) -> Markup {
    let d = &f.delivery;
    html! {
        div class="body" {
            div class="task" {
                a href={ "/deliveries/" (d.id) } { "#" (d.id) }
                " " (d.task) " " (pill("running", "running"))
                @if d.candidate {
                    " " (pill("candidate", "candidate"))
                }
            }
            @if d.candidate || !d.built_on.is_empty() || !d.held.is_empty() || d.discards > 0 {
                (train_place(d))
            }
            div class="meta" {
                (requested(d))
                " · phase " b { (d.phase.map_or("-", Phase::as_str)) }
                " · started "
                @match d.started_at {
                    Some(t) => (ago(now_ms, t)),
                    None => "-",
                }
            }
            (stages_line(&f.stages))
            (grid_table(&f.grid))
            @for step in &f.current {
                div class="now" {
                    "now: " b { (step.step) } " of " b { (step.repo) }
                    @if let Some(runner) = step.runner() {
                        " on runner " b { (runner) }
                    }
                    ", running for " (duration(now_ms - step.started_at)) " · "
                    a href={ "/deliveries/" (d.id) "/steps/" (step.id) "/log" } { "live log" }
                }
            }
        }
    }
}

/// Where a delivery stands in the pipeline: what it is built on, a failure held unreported,
/// how often it was prepared again.
fn train_place(d: &DeliveryRow) -> Markup {
    html! {
        div class="meta train" {
            @if d.candidate { "prepared behind the head" } @else { "head of the pipeline" }
            @if !d.built_on.is_empty() {
                " · built on " b { (d.built_on) }
            }
            @if d.discards > 0 {
                " · prepared again " (d.discards) "×"
            }
            @if !d.held.is_empty() {
                div class="why" { "held, not reported while deliveries ahead are unresolved: " (d.held) }
            }
        }
    }
}

/// A section of the page: its heading, then `body`, or the `empty` note when it has none.
fn listing(id: &str, title: &str, empty: &str, body: Option<Markup>) -> Markup {
    html! {
        section id=(id) {
            h2 { (title) }
            @match body {
                Some(body) => (body),
                None => p class="empty" { (empty) },
            }
        }
    }
}

fn queued(v: &QueueView) -> Markup {
    html! {
        table {
            thead {
                tr {
                    th { "#" } th { "delivery" } th { "task" } th { "priority" }
                    th { "requested" } th { "waiting" }
                }
            }
            tbody {
                @for (i, d) in v.queued.iter().enumerate() {
                    tr {
                        td class="num" { (i + 1) }
                        td { a href={ "/deliveries/" (d.id) } { "#" (d.id) } }
                        td { b { (d.task) } }
                        td class="num" { (d.priority) }
                        td { (requested(d)) }
                        td { (duration(v.now_ms - d.created_at)) }
                    }
                }
            }
        }
    }
}

fn recent(v: &QueueView) -> Markup {
    html! {
        table {
            thead {
                tr {
                    th { "delivery" } th { "task" } th { "outcome" } th { "duration" }
                    th { "finished" } th { "requested" } th {}
                }
            }
            tbody {
                @for d in &v.recent {
                    tr {
                        td { a href={ "/deliveries/" (d.id) } { "#" (d.id) } }
                        td {
                            b { (d.task) }
                            @if !d.error.is_empty() {
                                div class="why" { (d.error) }
                            }
                        }
                        td { (pill(d.state.as_str(), d.state.as_str())) }
                        td class="num" {
                            @match (d.started_at, d.finished_at) {
                                (Some(a), Some(b)) => (duration(b - a)),
                                _ => "-",
                            }
                        }
                        td {
                            @match d.finished_at {
                                Some(t) => (ago(v.now_ms, t)),
                                None => "-",
                            }
                        }
                        td { (requested(d)) }
                        td { a href={ "/deliveries/" (d.id) "#steps" } { "logs" } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::State;
    use crate::domain::{DeliveryId, Source};
    use crate::server::fixtures::{
        config, delivery, repo, step, steps_while_testing, tags_per_line,
    };
    use crate::server::grid::grid;

    /// A queue with a delivery in flight, two waiting (one from the tracker) and two done.
    fn busy_queue() -> QueueView {
        let c = config();
        let running = delivery(State::Running, "test");
        let repos = [repo("api"), repo("web")];
        let steps = steps_while_testing();
        let mut from_tracker = delivery(State::Queued, "");
        (from_tracker.id, from_tracker.task, from_tracker.source) =
            (DeliveryId(9), "TASK-3".into(), Source::Tracker);
        (from_tracker.requester, from_tracker.origin) = (String::new(), String::new());
        (from_tracker.started_at, from_tracker.created_at) = (None, 30_000);
        let mut urgent = delivery(State::Queued, "");
        (urgent.id, urgent.task, urgent.priority) = (DeliveryId(8), "TASK-2".into(), 5);
        (urgent.started_at, urgent.created_at) = (None, 20_000);
        let mut delivered = delivery(State::Delivered, "merge");
        (delivered.id, delivered.task) = (DeliveryId(6), "TASK-4".into());
        delivered.finished_at = Some(65_000);
        let mut failed = delivery(State::Failed, "deploy");
        (failed.id, failed.task) = (DeliveryId(5), "TASK-5".into());
        failed.finished_at = Some(4_000_000);
        failed.error = "delivery failed in deploy (web): `deploy` exited with 2".into();
        QueueView {
            repos: vec!["api".into(), "web".into()],
            running: vec![InFlight {
                grid: grid(&c, &running, &repos, &steps, &[]),
                delivery: running,
                current: vec![step(3, "api", "test", "running")],
                stages: vec![],
            }],
            queued: vec![urgent, from_tracker],
            recent: vec![delivered, failed],
            autotests: vec![],
            showrooms: Vec::new(),
            now_ms: 7_500_000,
            refresh_secs: 3,
        }
    }

    #[test]
    fn queue_page_layout() {
        insta::assert_snapshot!(tags_per_line(&queue_page(&busy_queue())));
    }

    #[test]
    fn pipelined_queue_page_layout() {
        let mut v = busy_queue();
        let c = config();
        let mut candidate = delivery(State::Running, "build");
        (candidate.id, candidate.task, candidate.candidate) =
            (DeliveryId(8), "TASK-2".into(), true);
        (candidate.built_on, candidate.discards) = ("#7".into(), 1);
        let mut held = delivery(State::Running, "test");
        (held.id, held.task, held.candidate) = (DeliveryId(9), "TASK-3".into(), true);
        held.built_on = "#8, #7".into();
        held.held = "delivery failed in test (web): `test` exited with 1".into();
        for d in [candidate, held] {
            v.running.push(InFlight {
                grid: grid(&c, &d, &[repo("web")], &[], &[]),
                delivery: d,
                current: vec![],
                stages: vec![],
            });
        }
        v.queued.clear();
        let page = queue_page(&v);
        assert!(page.contains("built on <b>#8, #7</b>"), "{page}");
        insta::assert_snapshot!(tags_per_line(&page));
    }

    #[test]
    fn a_staged_delivery_shows_its_stages() {
        let mut v = busy_queue();
        v.running[0].stages = vec![
            StageReport {
                stage: "staging".into(),
                state: crate::domain::StageState::Passed,
            },
            StageReport {
                stage: "<production>".into(),
                state: crate::domain::StageState::Running,
            },
        ];
        let page = queue_page(&v);
        assert!(
            page.contains(
                "<div class=\"meta stages\">stages: <span class=\"stage passed\">\
                 staging passed</span> → <span class=\"stage running\">\
                 &lt;production&gt; running</span></div>"
            ),
            "{page}"
        );
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["running"][0]["stages"][1]["state"], "running");
        // One stage: nothing more than before, on the page or in /api/queue.
        let v = busy_queue();
        assert!(!queue_page(&v).contains("stages:"));
        assert!(
            serde_json::to_value(&v).unwrap()["running"][0]
                .get("stages")
                .is_none()
        );
    }

    #[test]
    fn a_step_on_a_runner_says_which() {
        let mut v = busy_queue();
        v.running[0].current[0].runner_build = Some(format!("bb 27 {}", "a".repeat(40)));
        let page = queue_page(&v);
        assert!(
            page.contains("now: <b>test</b> of <b>api</b> on runner <b>bb</b>, running for"),
            "{page}"
        );
    }

    #[test]
    fn empty_queue_page_layout() {
        let v = QueueView {
            repos: vec!["api".into()],
            running: vec![],
            queued: vec![],
            recent: vec![],
            autotests: vec![],
            showrooms: Vec::new(),
            now_ms: 0,
            refresh_secs: 0,
        };
        insta::assert_snapshot!(tags_per_line(&queue_page(&v)));
    }
}
