//! The queue page (`GET /`): the delivery in flight with its grid and the steps running now,
//! the queue, and the deliveries that finished last.

use std::fmt::Write as _;

use serde::Serialize;

use super::{ago, duration, esc, grid_table, head, header, pill, requested};
use crate::server::grid::GridRow;
use crate::store::{DeliveryRow, StepRow};

/// The delivery in flight, ready to show.
#[derive(Debug, Clone, Serialize)]
pub struct InFlight {
    pub delivery: DeliveryRow,
    pub grid: Vec<GridRow>,
    /// The steps running now.
    pub current: Vec<StepRow>,
}

/// Everything the queue page shows.
#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    pub repos: Vec<String>,
    pub running: Vec<InFlight>,
    pub queued: Vec<DeliveryRow>,
    pub recent: Vec<DeliveryRow>,
    pub now_ms: i64,
    #[serde(skip)]
    pub refresh_secs: u64,
}

/// The queue page.
pub fn queue_page(v: &QueueView) -> String {
    let mut s = head(
        &match v.running.first() {
            Some(f) => format!("lockstep · delivering {}", f.delivery.task),
            None => "lockstep · queue".to_string(),
        },
        Some(v.refresh_secs.max(1)),
    );
    let stats = format!(
        "<span><b>{}</b> running</span><span><b>{}</b> queued</span>",
        v.running.len(),
        v.queued.len()
    );
    s.push_str(&header(&v.repos, &stats));
    s.push_str("<main>");

    s.push_str("<section id=\"in-flight\"><h2>In flight</h2>");
    if v.running.is_empty() {
        s.push_str("<p class=\"empty\">Nothing is being delivered right now.</p>");
    }
    for f in &v.running {
        let d = &f.delivery;
        let _ = write!(
            s,
            "<div class=\"body\"><div class=\"task\"><a href=\"/deliveries/{id}\">#{id}</a> {task} {pill}</div>\
             <div class=\"meta\">{req} · phase <b>{phase}</b> · started {started}</div>",
            id = d.id,
            task = esc(&d.task),
            pill = pill("running", "running"),
            req = requested(d),
            phase = esc(if d.phase.is_empty() { "-" } else { &d.phase }),
            started = d.started_at.map_or("-".into(), |t| ago(v.now_ms, t)),
        );
        s.push_str(&grid_table(&f.grid));
        for step in &f.current {
            let _ = write!(
                s,
                "<div class=\"now\">now: <b>{}</b> of <b>{}</b>, running for {} · \
                 <a href=\"/deliveries/{}/steps/{}/log\">live log</a></div>",
                esc(&step.step),
                esc(&step.repo),
                duration(v.now_ms - step.started_at),
                d.id,
                step.id
            );
        }
        s.push_str("</div>");
    }
    s.push_str("</section>");

    s.push_str("<section id=\"queue\"><h2>Queue</h2>");
    if v.queued.is_empty() {
        s.push_str("<p class=\"empty\">The queue is empty.</p>");
    } else {
        s.push_str(
            "<table><thead><tr><th>#</th><th>delivery</th><th>task</th><th>priority</th>\
             <th>requested</th><th>waiting</th></tr></thead><tbody>",
        );
        for (i, d) in v.queued.iter().enumerate() {
            let _ = write!(
                s,
                "<tr><td class=\"num\">{}</td><td><a href=\"/deliveries/{id}\">#{id}</a></td>\
                 <td><b>{}</b></td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                i + 1,
                esc(&d.task),
                d.priority,
                requested(d),
                duration(v.now_ms - d.created_at),
                id = d.id,
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</section>");

    s.push_str("<section id=\"recent\"><h2>Recent</h2>");
    if v.recent.is_empty() {
        s.push_str("<p class=\"empty\">No delivery has finished yet.</p>");
    } else {
        s.push_str(
            "<table><thead><tr><th>delivery</th><th>task</th><th>outcome</th><th>duration</th>\
             <th>finished</th><th>requested</th><th></th></tr></thead><tbody>",
        );
        for d in &v.recent {
            let took = match (d.started_at, d.finished_at) {
                (Some(a), Some(b)) => duration(b - a),
                _ => "-".into(),
            };
            let _ = write!(
                s,
                "<tr><td><a href=\"/deliveries/{id}\">#{id}</a></td><td><b>{}</b>",
                esc(&d.task),
                id = d.id
            );
            if !d.error.is_empty() {
                let _ = write!(s, "<div class=\"why\">{}</div>", esc(&d.error));
            }
            let _ = write!(
                s,
                "</td><td>{}</td><td class=\"num\">{took}</td><td>{}</td><td>{}</td>\
                 <td><a href=\"/deliveries/{}#steps\">logs</a></td></tr>",
                pill(d.state.as_str(), d.state.as_str()),
                d.finished_at.map_or("-".into(), |t| ago(v.now_ms, t)),
                requested(d),
                d.id
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</section></main>");
    let _ = write!(
        s,
        "<footer>refreshes every {}s · <a href=\"/api/queue\">json</a> · <a href=\"/metrics\">metrics</a></footer></body></html>",
        v.refresh_secs.max(1)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fixtures::{config, delivery, repo, step, tags_per_line};
    use crate::server::grid::grid;
    use crate::store::State;

    /// A queue with a delivery in flight, two waiting (one from the tracker) and two done.
    fn busy_queue() -> QueueView {
        let c = config();
        let running = delivery(State::Running, "test");
        let repos = [repo("api"), repo("web")];
        let steps = [
            step(1, "api", "build", "passed"),
            step(2, "web", "build", "passed"),
            step(3, "api", "test", "running"),
            step(4, "web", "test", "passed"),
        ];
        let mut from_tracker = delivery(State::Queued, "");
        (from_tracker.id, from_tracker.task, from_tracker.source) =
            (9, "TASK-3".into(), "tracker".into());
        (from_tracker.requester, from_tracker.origin) = (String::new(), String::new());
        (from_tracker.started_at, from_tracker.created_at) = (None, 30_000);
        let mut urgent = delivery(State::Queued, "");
        (urgent.id, urgent.task, urgent.priority) = (8, "TASK-2".into(), 5);
        (urgent.started_at, urgent.created_at) = (None, 20_000);
        let mut delivered = delivery(State::Delivered, "merge");
        (delivered.id, delivered.task) = (6, "TASK-4".into());
        delivered.finished_at = Some(65_000);
        let mut failed = delivery(State::Failed, "deploy");
        (failed.id, failed.task) = (5, "TASK-5".into());
        failed.finished_at = Some(4_000_000);
        failed.error = "delivery failed in deploy (web): `deploy` exited with 2".into();
        QueueView {
            repos: vec!["api".into(), "web".into()],
            running: vec![InFlight {
                grid: grid(&c, &running, &repos, &steps, &[]),
                delivery: running,
                current: vec![step(3, "api", "test", "running")],
            }],
            queued: vec![urgent, from_tracker],
            recent: vec![delivered, failed],
            now_ms: 7_500_000,
            refresh_secs: 3,
        }
    }

    #[test]
    fn queue_page_layout() {
        insta::assert_snapshot!(tags_per_line(&queue_page(&busy_queue())));
    }

    #[test]
    fn empty_queue_page_layout() {
        let v = QueueView {
            repos: vec!["api".into()],
            running: vec![],
            queued: vec![],
            recent: vec![],
            now_ms: 0,
            refresh_secs: 0,
        };
        insta::assert_snapshot!(tags_per_line(&queue_page(&v)));
    }
}
