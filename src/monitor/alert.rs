//! Alertmanager's webhook notifications (payload version 4), read into typed values by a pure
//! function, and the words lockstep quotes an alert in. An alert's labels and annotations come
//! from whatever Prometheus scraped: they are quoted escaped and cut short, never trusted.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A notification: a group of alerts, as Alertmanager posts it (lockstep reads its alerts,
/// each with its own status; the version is checked by [`parse`], the rest is ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Notification {
    pub alerts: Vec<Alert>,
}

/// Whether an alert fires or has resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// One alert of a notification.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertStatus,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (RFC 3339).
    pub starts_at: String,
    /// Alertmanager's id of the alert (a hash of its labels).
    pub fingerprint: String,
}

/// Why a body is not a notification lockstep reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertParseError {
    #[error("the body is not an Alertmanager notification: {0}")]
    Malformed(String),
    #[error(
        "payload version `{0}` is not one lockstep reads; it reads version 4 (Alertmanager 0.x)"
    )]
    Version(String),
    #[error("alert {0} has no `fingerprint`")]
    NoFingerprint(usize),
    #[error("alert {index}: `startsAt = {value}` is not an RFC 3339 time")]
    StartsAt { index: usize, value: String },
}

impl Alert {
    /// `alertname`, or `(unnamed)`.
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map_or("(unnamed)", String::as_str)
    }

    /// When it started firing, in milliseconds since the epoch.
    pub fn started_ms(&self) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(&self.starts_at)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// What an alert is, for a note or a log line: its name, labels and summary, escaped.
    /// ``alert `HighErrorRate` {lockstep_repo="api", severity="page"}: 5xx above 1%``
    pub fn quote(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| *k != "alertname")
            .map(|(k, v)| format!("{}={}", escape(k, 60), quoted(v)))
            .collect();
        let mut s = format!("alert `{}`", escape(self.name(), 100));
        if !labels.is_empty() {
            s.push_str(&format!(" {{{}}}", labels.join(", ")));
        }
        let summary = self
            .annotations
            .get("summary")
            .or_else(|| self.annotations.get("description"));
        if let Some(text) = summary {
            s.push_str(&format!(": {}", quoted(text)));
        }
        s
    }
}

/// A value in double quotes, escaped and cut short.
fn quoted(v: &str) -> String {
    format!("\"{}\"", escape(v, 200).replace('"', "\\\""))
}

/// One line of untrusted text, fit to quote in a code span: at most `max` characters kept
/// (then `…`), control characters escaped as everywhere else ([`crate::text::escape`]), and
/// newlines, tabs and backticks too, so the quote stays on its line and inside its span.
pub fn escape(text: &str, max: usize) -> String {
    let kept = match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    };
    crate::text::escape(&kept)
        .replace('\n', "\\n")
        .replace('\t', "\\t")
        .replace('`', "\\u{60}")
}

/// Reads a notification; checks its version and that each alert can be told apart.
pub fn parse(body: &[u8]) -> Result<Notification, AlertParseError> {
    #[derive(Deserialize)]
    struct Version {
        version: Option<serde_json::Value>,
    }
    let v: Version =
        serde_json::from_slice(body).map_err(|e| AlertParseError::Malformed(e.to_string()))?;
    match v.version {
        Some(serde_json::Value::String(s)) if s == "4" => {}
        Some(other) => {
            let text = other
                .as_str()
                .map_or_else(|| other.to_string(), String::from);
            return Err(AlertParseError::Version(escape(&text, 20)));
        }
        None => return Err(AlertParseError::Malformed("missing field `version`".into())),
    }
    let n: Notification =
        serde_json::from_slice(body).map_err(|e| AlertParseError::Malformed(e.to_string()))?;
    for (i, a) in n.alerts.iter().enumerate() {
        if a.fingerprint.trim().is_empty() {
            return Err(AlertParseError::NoFingerprint(i));
        }
        if a.started_ms().is_none() {
            return Err(AlertParseError::StartsAt {
                index: i,
                value: escape(&a.starts_at, 40),
            });
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notification as Alertmanager 0.25 posts it.
    pub const SAMPLE: &str = r#"{"receiver":"lockstep","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"HighErrorRate","lockstep_repo":"api","severity":"page"},"annotations":{"summary":"5xx above 1%\u001b[31m\nnow"},"startsAt":"2026-11-30T08:50:01.123456789Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://127.0.0.1:9090/graph","fingerprint":"0c4c2b1ff3a3b5a9"}],"groupLabels":{"alertname":"HighErrorRate"},"commonLabels":{"alertname":"HighErrorRate"},"commonAnnotations":{},"externalURL":"http://127.0.0.1:9093","version":"4","groupKey":"{}:{alertname=\"HighErrorRate\"}","truncatedAlerts":0}"#;

    #[test]
    fn a_notification_reads_and_quotes_its_alert_escaped() {
        let n = parse(SAMPLE.as_bytes()).unwrap();
        let a = &n.alerts[0];
        assert_eq!(a.status, AlertStatus::Firing);
        assert_eq!(a.name(), "HighErrorRate");
        assert_eq!(a.started_ms(), Some(1_796_028_601_123));
        assert_eq!(
            a.quote(),
            r#"alert `HighErrorRate` {lockstep_repo="api", severity="page"}: "5xx above 1%\x1b[31m\nnow""#
        );
    }

    #[test]
    fn bad_bodies_are_refused_with_the_reason() {
        let err = |body: &str| parse(body.as_bytes()).unwrap_err().to_string();
        assert!(err("{").starts_with("the body is not an Alertmanager notification: "));
        assert_eq!(
            err(&SAMPLE.replace(r#""version":"4""#, r#""version":"3""#)),
            "payload version `3` is not one lockstep reads; it reads version 4 (Alertmanager 0.x)"
        );
        assert_eq!(
            err(&SAMPLE.replace(r#""fingerprint":"0c4c2b1ff3a3b5a9""#, r#""fingerprint":"""#)),
            "alert 0 has no `fingerprint`"
        );
        assert!(
            err(&SAMPLE.replace("2026-11-30T08:50:01.123456789Z", "yesterday"))
                .contains("`startsAt = yesterday` is not an RFC 3339 time")
        );
        assert!(
            err(&SAMPLE.replace(r#""status":"firing","labels""#, r#""status":"on","labels""#))
                .contains("unknown variant `on`")
        );
    }

    #[test]
    fn escape_cuts_and_neutralises() {
        assert_eq!(escape("a`b\u{7}\n", 10), "a\\u{60}b\\x07\\n");
        assert_eq!(escape("abcdef", 3), "abc…");
    }
}
