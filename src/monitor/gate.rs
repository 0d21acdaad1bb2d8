//! Metric gates: a `[[gate]]`'s query sampled every `every` for `for`, each sample held to the
//! gate's bounds. The judgement of one answer is a pure function ([`judge`]); [`watch`] samples
//! over time. A gate fails closed: Prometheus unreachable or refusing the query fails it.

use super::prometheus::{Prometheus, QueryError, Sample};
use crate::config::{Gate, NoData};

/// What one sample of a gate gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Judged {
    /// Every series within the bounds; the values seen (empty when there was no data and
    /// `no_data = "pass"`).
    Within(Vec<f64>),
    /// Why the gate fails, in a sentence naming the gate, the query, the value and the bound.
    Crossed(String),
}

/// A number as a message prints it: no trailing zeros, `NaN` and `+Inf` as Prometheus writes
/// them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        let s = format!("{v:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// `{code="500", job="api"}`, for a series among several.
fn series_name(labels: &std::collections::BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::from(v.as_str())))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

/// Holds one answer of the gate's query to its bounds. A `NaN` (a ratio over no traffic) is no
/// data.
pub fn judge(gate: &Gate, samples: &[Sample]) -> Judged {
    let lead = format!("gate `{}`: `{}`", gate.name, gate.query);
    let numbers: Vec<&Sample> = samples.iter().filter(|s| !s.value.is_nan()).collect();
    if numbers.is_empty() {
        return match gate.no_data {
            NoData::Pass => Judged::Within(Vec::new()),
            NoData::Fail => Judged::Crossed(format!(
                "{lead} returned no data, and the gate has `no_data = \"fail\"`"
            )),
        };
    }
    for s in &numbers {
        let which = if numbers.len() > 1 {
            format!(" for {}", series_name(&s.labels))
        } else {
            String::new()
        };
        let crossed = match (gate.min, gate.max) {
            (_, Some(max)) if s.value > max => Some(format!("above `max = {}`", number(max))),
            (Some(min), _) if s.value < min => Some(format!("below `min = {}`", number(min))),
            _ => None,
        };
        if let Some(bound) = crossed {
            return Judged::Crossed(format!("{lead} was {}{which}, {bound}", number(s.value)));
        }
    }
    Judged::Within(numbers.iter().map(|s| s.value).collect())
}

/// What a gate's failure to ask Prometheus says: the gate fails closed.
pub fn unanswered(gate: &Gate, e: &QueryError) -> String {
    format!("gate `{}`: {e}; the gate fails closed", gate.name)
}

/// How a gate's watch ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Watched {
    /// Every sample within bounds: how many were taken, and the last values.
    Passed {
        samples: usize,
        last: Vec<f64>,
    },
    Failed(String),
}

impl Watched {
    /// A line for the journal.
    pub fn describe(&self, gate: &Gate) -> String {
        match self {
            Watched::Passed { samples, last } => {
                let last: Vec<String> = last.iter().map(|v| number(*v)).collect();
                let seen = if last.is_empty() {
                    "no data".to_string()
                } else {
                    last.join(", ")
                };
                format!(
                    "gate `{}`: {samples} sample(s) within {}; last {seen}",
                    gate.name,
                    gate.bounds()
                )
            }
            Watched::Failed(why) => why.clone(),
        }
    }
}

/// Samples a gate at once, then every `every` until `for` has passed since the first; stops at
/// the first sample that crosses a bound or cannot be taken.
pub async fn watch(prometheus: &Prometheus, gate: &Gate) -> Watched {
    let start = tokio::time::Instant::now();
    let mut samples = 0;
    loop {
        let judged = match prometheus.query(&gate.query).await {
            Ok(s) => judge(gate, &s),
            Err(e) => Judged::Crossed(unanswered(gate, &e)),
        };
        samples += 1;
        let last = match judged {
            Judged::Crossed(why) => return Watched::Failed(why),
            Judged::Within(values) => values,
        };
        let next = start + gate.every * samples as u32;
        if next > start + gate.duration {
            return Watched::Passed { samples, last };
        }
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(extra: &str) -> Gate {
        let text = format!(
            "[prometheus]\nurl='http://p:9090'\n[[gate]]\nname='error-rate'\nquery='sum(rate(errors[1m]))'\n{extra}"
        );
        crate::config::Config::parse_str(&text)
            .unwrap()
            .gates
            .remove(0)
    }

    fn sample(value: f64, labels: &[(&str, &str)]) -> Sample {
        Sample {
            value,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_crossing_names_the_gate_the_query_the_value_and_the_bound() {
        let g = gate("max = 0.01");
        assert_eq!(
            judge(&g, &[sample(0.005, &[])]),
            Judged::Within(vec![0.005])
        );
        assert_eq!(
            judge(&g, &[sample(0.25, &[])]),
            Judged::Crossed(
                "gate `error-rate`: `sum(rate(errors[1m]))` was 0.25, above `max = 0.01`".into()
            )
        );
        let g = gate("min = 2\nmax = 10");
        assert_eq!(
            judge(
                &g,
                &[
                    sample(3.0, &[("job", "api")]),
                    sample(1.5, &[("job", "web")])
                ]
            ),
            Judged::Crossed(
                "gate `error-rate`: `sum(rate(errors[1m]))` was 1.5 for {job=\"web\"}, below \
                 `min = 2`"
                    .into()
            )
        );
        assert_eq!(
            judge(&g, &[sample(f64::INFINITY, &[])]),
            Judged::Crossed(
                "gate `error-rate`: `sum(rate(errors[1m]))` was +Inf, above `max = 10`".into()
            )
        );
    }

    #[test]
    fn no_data_fails_unless_the_gate_lets_it_pass() {
        let g = gate("max = 1");
        let nothing = Judged::Crossed(
            "gate `error-rate`: `sum(rate(errors[1m]))` returned no data, and the gate has \
             `no_data = \"fail\"`"
                .into(),
        );
        assert_eq!(judge(&g, &[]), nothing);
        assert_eq!(judge(&g, &[sample(f64::NAN, &[])]), nothing);
        let g = gate("max = 1\nno_data = 'pass'");
        assert_eq!(judge(&g, &[]), Judged::Within(vec![]));
    }

    #[test]
    fn numbers_print_short() {
        assert_eq!(number(0.01), "0.01");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(1.0 / 3.0), "0.333333");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
    }

    /// An unreachable Prometheus fails the gate at its first sample, naming the URL.
    #[tokio::test]
    async fn an_unreachable_prometheus_fails_the_gate_closed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let p = Prometheus::new(&url, None, std::time::Duration::from_secs(2)).unwrap();
        let Watched::Failed(why) = watch(&p, &gate("max = 1\nfor = '1h'")).await else {
            panic!("the gate passed");
        };
        assert!(
            why.starts_with(&format!(
                "gate `error-rate`: cannot reach Prometheus at `{url}/api/v1/query`: "
            )),
            "{why}"
        );
        assert!(why.ends_with("; the gate fails closed"), "{why}");
    }
}
