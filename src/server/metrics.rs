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

/// What kind of series a family holds, as its `# TYPE` line says.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The word of the `# TYPE` line.
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family: its name, its kind and the sentence of its `# HELP` line.
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
}

const DELIVERIES: Family = Family {
    name: "lockstep_deliveries_total",
    kind: Kind::Counter,
    help: "Deliveries that ended, by outcome.",
};
const QUEUE_DEPTH: Family = Family {
    name: "lockstep_queue_depth",
    kind: Kind::Gauge,
    help: "Deliveries waiting in the queue.",
};
const RUNNING: Family = Family {
    name: "lockstep_deliveries_running",
    kind: Kind::Gauge,
    help: "Deliveries running now.",
};
const ROLLBACKS: Family = Family {
    name: "lockstep_rollbacks_total",
    kind: Kind::Counter,
    help: "Rollbacks of deliveries, by what triggered them.",
};
const LEADER: Family = Family {
    name: "lockstep_leader",
    kind: Kind::Gauge,
    help: "Whether this replica works the ecosystem's queue (holds its lease).",
};
const LEASE_RENEWALS: Family = Family {
    name: "lockstep_lease_renewals_total",
    kind: Kind::Counter,
    help: "Renewals of the queue's lease by this replica.",
};
const LEASE_LOSSES: Family = Family {
    name: "lockstep_lease_losses_total",
    kind: Kind::Counter,
    help: "Times this replica lost the queue's lease while it worked the queue.",
};
const PHASE_DURATION: Family = Family {
    name: "lockstep_phase_duration_seconds",
    kind: Kind::Histogram,
    help: "How long each phase of a delivery took.",
};
const DISCARDED: Family = Family {
    name: "lockstep_candidates_discarded_total",
    kind: Kind::Counter,
    help: "Preparations of pipeline candidates thrown away because a base changed, by reason.",
};
const QUEUE_WAIT: Family = Family {
    name: "lockstep_queue_wait_seconds",
    kind: Kind::Histogram,
    help: "Time from a delivery's request to its start.",
};
const LEAD_TIME: Family = Family {
    name: "lockstep_lead_time_seconds",
    kind: Kind::Histogram,
    help: "Time from a delivery's request to its landing.",
};
const WEBHOOKS: Family = Family {
    name: "lockstep_webhook_requests_total",
    kind: Kind::Counter,
    help: "Webhook requests, by source and result.",
};
const HOOK_DECISIONS: Family = Family {
    name: "lockstep_hook_decisions_total",
    kind: Kind::Counter,
    help: "Policy verdicts of the git hooks, by rule and outcome.",
};

/// The exposition being written: families one after the other, each its header then its
/// series.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    /// Begins a family: its `# HELP` and `# TYPE` lines.
    fn family(&mut self, f: &Family) -> &mut Exposition {
        let _ = writeln!(self.0, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(self.0, "# TYPE {} {}", f.name, f.kind.as_str());
        self
    }

    /// One series of family `f`: its labels (values escaped) and its value.
    fn series(&mut self, f: &Family, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.0, "{}", f.name);
        for (i, (key, v)) in labels.iter().enumerate() {
            let open = if i == 0 { "{" } else { "," };
            let _ = write!(self.0, "{open}{key}=\"{}\"", label(v));
        }
        let close = if labels.is_empty() { "" } else { "}" };
        let _ = writeln!(self.0, "{close} {value}");
    }

    /// One histogram of family `f`, with `labels` (`phase="build"`, or empty).
    fn histogram(&mut self, f: &Family, labels: &str, h: &Histogram) {
        h.write(&mut self.0, f.name, labels);
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

    /// The whole exposition: the families the store counts, then the ones held in memory.
    pub fn render(&self, store: &StoreCounts) -> String {
        let mut x = Exposition::default();
        write_queue(&mut x, store);
        write_lease(&mut x, store);
        x.family(&PHASE_DURATION);
        {
            let phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
            for (phase, h) in phases.iter() {
                x.histogram(&PHASE_DURATION, &format!("phase=\"{}\"", label(phase)), h);
            }
        }
        x.family(&DISCARDED);
        for (reason, n) in &store.discards {
            x.series(&DISCARDED, &[("reason", reason)], n);
        }
        x.family(&QUEUE_WAIT)
            .histogram(&QUEUE_WAIT, "", &Histogram::of(&store.waits.queue_wait));
        x.family(&LEAD_TIME)
            .histogram(&LEAD_TIME, "", &Histogram::of(&store.waits.lead_time));
        x.family(&WEBHOOKS);
        {
            let hooks = self.webhooks.lock().unwrap_or_else(|e| e.into_inner());
            for ((source, result), n) in hooks.iter() {
                x.series(&WEBHOOKS, &[("source", source), ("result", result)], n);
            }
        }
        x.family(&HOOK_DECISIONS);
        for (rule, outcome, n) in &store.hook_decisions {
            x.series(&HOOK_DECISIONS, &[("rule", rule), ("outcome", outcome)], n);
        }
        x.0
    }
}

/// The deliveries by outcome, the queue's depth, the deliveries running, the rollbacks.
fn write_queue(x: &mut Exposition, store: &StoreCounts) {
    let state = |name: &str| {
        store
            .by_state
            .iter()
            .find(|(s, _)| s == name)
            .map_or(0, |(_, n)| *n)
    };
    x.family(&DELIVERIES);
    for outcome in ["delivered", "failed", "cancelled"] {
        x.series(&DELIVERIES, &[("outcome", outcome)], state(outcome));
    }
    x.family(&QUEUE_DEPTH)
        .series(&QUEUE_DEPTH, &[], state("queued"));
    x.family(&RUNNING).series(&RUNNING, &[], state("running"));
    x.family(&ROLLBACKS);
    for trigger in crate::delivery::Trigger::ALL {
        let n = store
            .rollbacks
            .iter()
            .find(|(t, _)| t == trigger.as_str())
            .map_or(0, |(_, n)| *n);
        x.series(&ROLLBACKS, &[("trigger", trigger.as_str())], n);
    }
}

/// Whether this replica holds the queue's lease, and how often it renewed and lost it.
fn write_lease(x: &mut Exposition, store: &StoreCounts) {
    x.family(&LEADER).series(
        &LEADER,
        &[("ecosystem", &store.ecosystem)],
        u8::from(store.leader),
    );
    x.family(&LEASE_RENEWALS)
        .series(&LEASE_RENEWALS, &[], store.lease.renewals);
    x.family(&LEASE_LOSSES)
        .series(&LEASE_LOSSES, &[], store.lease.losses);
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
