//! `GET /metrics`: the Prometheus text format, written by hand (a handful of series).
//!
//! Counts that must survive a restart (deliveries by outcome, hook decisions) are read from
//! the store at scrape time; the rest (webhook requests, phase durations) live in memory and
//! start from zero with the process, as Prometheus counters do.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::domain::{Event, Stage};
use crate::store::{JournalRow, LeaseEvents, Waits};

/// Upper bounds of the phase-duration buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn of(values: &[f64]) -> Histogram {
        let mut h = Histogram::default();
        for v in values {
            h.observe(*v);
        }
        h
    }

    /// The series of one histogram `name` with `labels` (`phase="build"`, or empty).
    fn write(&self, s: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                self.counts.get(i).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(
            s,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |x: &str| {
            if x.is_empty() {
                String::new()
            } else {
                format!("{{{x}}}")
            }
        };
        let _ = writeln!(s, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(s, "{name}_count{} {}", braces(labels), self.count);
    }

    fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// The in-memory series.
#[derive(Debug, Default)]
pub struct Metrics {
    webhooks: Mutex<BTreeMap<(String, String), u64>>,
    phases: Mutex<BTreeMap<String, Histogram>>,
}

/// What the store contributes to a scrape.
#[derive(Debug, Clone, Default)]
pub struct StoreCounts {
    /// Deliveries by state (`queued`, `running`, `delivered`, …).
    pub by_state: Vec<(String, i64)>,
    /// Rollbacks by trigger (`gate`, `alert`, `manual`).
    pub rollbacks: Vec<(String, i64)>,
    /// Hook decisions by rule and outcome.
    pub hook_decisions: Vec<(String, String, u64)>,
    /// The ecosystem (the meta-project's folder name) and whether this replica holds its
    /// queue's lease.
    pub ecosystem: String,
    pub leader: bool,
    /// The lease's renewals and losses in this process.
    pub lease: LeaseEvents,
    /// Candidates' preparations discarded, by reason.
    pub discards: Vec<(String, i64)>,
    /// How long deliveries waited in the queue and took to land.
    pub waits: Waits,
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// How long each phase of a delivery took, from its journal (a phase ends where the next
/// begins, the last one when the delivery is done).
pub fn phase_durations(journal: &[JournalRow]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut open: Option<(&str, i64)> = None;
    for j in journal {
        let ends = matches!(j.event, Event::Phase | Event::Requeued) || j.stage == Stage::Done;
        if ends && let Some((phase, at)) = open.take() {
            out.push((phase.to_string(), (j.at - at).max(0) as f64 / 1000.0));
        }
        if j.event == Event::Phase {
            open = Some((j.stage.as_str(), j.at));
        }
    }
    out
}

impl Metrics {
    /// Counts one webhook request: `source` is `github` or `tracker`; `result` says what
    /// became of it (`accepted`, `ignored`, `replayed`, `unauthorized`, `bad_request`, …).
    pub fn webhook(&self, source: &str, result: &str) {
        let mut m = self.webhooks.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((source.to_string(), result.to_string()))
            .or_default() += 1;
    }

    /// Records the phase durations of a finished delivery.
    pub fn delivery_finished(&self, journal: &[JournalRow]) {
        let mut m = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        for (phase, secs) in phase_durations(journal) {
            m.entry(phase).or_default().observe(secs);
        }
    }

    /// The whole exposition.
    pub fn render(&self, store: &StoreCounts) -> String {
        let mut s = String::new();
        let state = |name: &str| {
            store
                .by_state
                .iter()
                .find(|(s, _)| s == name)
                .map_or(0, |(_, n)| *n)
        };
        s.push_str("# HELP lockstep_deliveries_total Deliveries that ended, by outcome.\n");
        s.push_str("# TYPE lockstep_deliveries_total counter\n");
        for outcome in ["delivered", "failed", "cancelled"] {
            let _ = writeln!(
                s,
                "lockstep_deliveries_total{{outcome=\"{outcome}\"}} {}",
                state(outcome)
            );
        }
        s.push_str("# HELP lockstep_queue_depth Deliveries waiting in the queue.\n");
        s.push_str("# TYPE lockstep_queue_depth gauge\n");
        let _ = writeln!(s, "lockstep_queue_depth {}", state("queued"));
        s.push_str("# HELP lockstep_deliveries_running Deliveries running now.\n");
        s.push_str("# TYPE lockstep_deliveries_running gauge\n");
        let _ = writeln!(s, "lockstep_deliveries_running {}", state("running"));

        s.push_str(
            "# HELP lockstep_rollbacks_total Rollbacks of deliveries, by what triggered them.\n",
        );
        s.push_str("# TYPE lockstep_rollbacks_total counter\n");
        for trigger in crate::delivery::Trigger::ALL {
            let n = store
                .rollbacks
                .iter()
                .find(|(t, _)| t == trigger.as_str())
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(
                s,
                "lockstep_rollbacks_total{{trigger=\"{}\"}} {n}",
                trigger.as_str()
            );
        }
        s.push_str(
            "# HELP lockstep_leader Whether this replica works the ecosystem's queue (holds its lease).\n",
        );
        s.push_str("# TYPE lockstep_leader gauge\n");
        let _ = writeln!(
            s,
            "lockstep_leader{{ecosystem=\"{}\"}} {}",
            label(&store.ecosystem),
            u8::from(store.leader)
        );
        s.push_str(
            "# HELP lockstep_lease_renewals_total Renewals of the queue's lease by this replica.\n",
        );
        s.push_str("# TYPE lockstep_lease_renewals_total counter\n");
        let _ = writeln!(s, "lockstep_lease_renewals_total {}", store.lease.renewals);
        s.push_str("# HELP lockstep_lease_losses_total Times this replica lost the queue's lease while it worked the queue.\n");
        s.push_str("# TYPE lockstep_lease_losses_total counter\n");
        let _ = writeln!(s, "lockstep_lease_losses_total {}", store.lease.losses);

        s.push_str(
            "# HELP lockstep_phase_duration_seconds How long each phase of a delivery took.\n",
        );
        s.push_str("# TYPE lockstep_phase_duration_seconds histogram\n");
        {
            let phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
            for (phase, h) in phases.iter() {
                h.write(
                    &mut s,
                    "lockstep_phase_duration_seconds",
                    &format!("phase=\"{}\"", label(phase)),
                );
            }
        }

        s.push_str(
            "# HELP lockstep_candidates_discarded_total Preparations of pipeline candidates thrown away because a base changed, by reason.\n",
        );
        s.push_str("# TYPE lockstep_candidates_discarded_total counter\n");
        for (reason, n) in &store.discards {
            let _ = writeln!(
                s,
                "lockstep_candidates_discarded_total{{reason=\"{}\"}} {n}",
                label(reason)
            );
        }
        s.push_str(
            "# HELP lockstep_queue_wait_seconds Time from a delivery's request to its start.\n",
        );
        s.push_str("# TYPE lockstep_queue_wait_seconds histogram\n");
        Histogram::of(&store.waits.queue_wait).write(&mut s, "lockstep_queue_wait_seconds", "");
        s.push_str(
            "# HELP lockstep_lead_time_seconds Time from a delivery's request to its landing.\n",
        );
        s.push_str("# TYPE lockstep_lead_time_seconds histogram\n");
        Histogram::of(&store.waits.lead_time).write(&mut s, "lockstep_lead_time_seconds", "");

        s.push_str(
            "# HELP lockstep_webhook_requests_total Webhook requests, by source and result.\n",
        );
        s.push_str("# TYPE lockstep_webhook_requests_total counter\n");
        {
            let hooks = self.webhooks.lock().unwrap_or_else(|e| e.into_inner());
            for ((source, result), n) in hooks.iter() {
                let _ = writeln!(
                    s,
                    "lockstep_webhook_requests_total{{source=\"{}\",result=\"{}\"}} {n}",
                    label(source),
                    label(result)
                );
            }
        }

        s.push_str(
            "# HELP lockstep_hook_decisions_total Policy verdicts of the git hooks, by rule and \
             outcome.\n",
        );
        s.push_str("# TYPE lockstep_hook_decisions_total counter\n");
        for (rule, outcome, n) in &store.hook_decisions {
            let _ = writeln!(
                s,
                "lockstep_hook_decisions_total{{rule=\"{}\",outcome=\"{}\"}} {n}",
                label(rule),
                label(outcome)
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Phase;

    fn j(at: i64, stage: impl Into<Stage>, event: Event) -> JournalRow {
        JournalRow {
            at,
            stage: stage.into(),
            repo: String::new(),
            event,
            detail: String::new(),
        }
    }

    #[test]
    fn phases_from_the_journal() {
        let journal = [
            j(0, Stage::Queue, Event::Queued),
            j(10, Stage::Queue, Event::Started),
            j(1_000, Phase::Rebase, Event::Phase),
            j(1_500, Phase::Rebase, Event::Rebased),
            j(3_000, Phase::Build, Event::Phase),
            j(9_000, Phase::Test, Event::Phase),
            j(9_500, Phase::Test, Event::Failed),
            j(10_000, Stage::Done, Event::Failed),
        ];
        assert_eq!(
            phase_durations(&journal),
            [
                ("rebase".to_string(), 2.0),
                ("build".into(), 6.0),
                ("test".into(), 1.0)
            ]
        );
    }

    /// Metrics and counts that give every family at least one series.
    fn sample() -> (Metrics, StoreCounts) {
        let m = Metrics::default();
        m.webhook("github", "accepted");
        m.webhook("github", "accepted");
        m.webhook("github", "unauthorized");
        m.delivery_finished(&[
            j(0, Phase::Build, Event::Phase),
            j(2_000, Stage::Done, Event::Delivered),
        ]);
        let counts = StoreCounts {
            by_state: vec![("delivered".into(), 3), ("queued".into(), 2)],
            rollbacks: vec![("alert".into(), 2)],
            hook_decisions: vec![("branch \"names\"".into(), "deny".into(), 4)],
            ecosystem: "shop".into(),
            leader: true,
            lease: LeaseEvents {
                renewals: 7,
                losses: 1,
            },
            discards: vec![("ahead_changed".into(), 2), ("upstream_moved".into(), 0)],
            waits: Waits {
                queue_wait: vec![0.3, 12.0],
                lead_time: vec![40.0],
            },
        };
        (m, counts)
    }

    #[test]
    fn exposition() {
        let (m, counts) = sample();
        let text = m.render(&counts);
        for line in [
            "lockstep_deliveries_total{outcome=\"delivered\"} 3",
            "lockstep_deliveries_total{outcome=\"failed\"} 0",
            "lockstep_queue_depth 2",
            "lockstep_rollbacks_total{trigger=\"alert\"} 2",
            "lockstep_rollbacks_total{trigger=\"gate\"} 0",
            "lockstep_rollbacks_total{trigger=\"manual\"} 0",
            "lockstep_phase_duration_seconds_bucket{phase=\"build\",le=\"1\"} 0",
            "lockstep_phase_duration_seconds_bucket{phase=\"build\",le=\"5\"} 1",
            "lockstep_phase_duration_seconds_bucket{phase=\"build\",le=\"+Inf\"} 1",
            "lockstep_phase_duration_seconds_sum{phase=\"build\"} 2",
            "lockstep_webhook_requests_total{source=\"github\",result=\"accepted\"} 2",
            "lockstep_hook_decisions_total{rule=\"branch \\\"names\\\"\",outcome=\"deny\"} 4",
            "lockstep_leader{ecosystem=\"shop\"} 1",
            "lockstep_lease_renewals_total 7",
            "lockstep_lease_losses_total 1",
            "lockstep_candidates_discarded_total{reason=\"ahead_changed\"} 2",
            "lockstep_candidates_discarded_total{reason=\"upstream_moved\"} 0",
            "lockstep_queue_wait_seconds_bucket{le=\"0.5\"} 1",
            "lockstep_queue_wait_seconds_bucket{le=\"15\"} 2",
            "lockstep_queue_wait_seconds_count 2",
            "lockstep_lead_time_seconds_bucket{le=\"30\"} 0",
            "lockstep_lead_time_seconds_bucket{le=\"60\"} 1",
            "lockstep_lead_time_seconds_sum 40",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }

    /// The whole exposition, byte for byte: the order of the families, their help and type
    /// lines, and every series.
    #[test]
    fn the_whole_exposition() {
        let (m, counts) = sample();
        insta::assert_snapshot!(m.render(&counts));
    }
}
