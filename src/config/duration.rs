//! Durations as the config writes them: `250ms`, `2s`, `30m`, `1h`, `7d`, or a bare number of
//! seconds. Fields read them with `#[serde(with = "duration")]`; messages print them back in
//! the same words with [`humanize`].

use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error};

/// Reads a duration field.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(D::Error::custom)
}

/// Parses `250ms`, `2s`, `30m`, `1h`, `7d`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration `{text}`; write it like `30s`, `5m` or `250ms`"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => {
            return Err(format!(
                "bad duration unit `{other}` in `{text}`; use ms, s, m, h or d"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration `{text}`"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `2s`, `1.5s`, `250ms`: a duration for a message, in words [`parse_duration`] reads back.
pub fn humanize(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn humanized_durations_read_back() {
        for (ms, text) in [(2000, "2s"), (1500, "1.5s"), (250, "250ms"), (0, "0s")] {
            let d = Duration::from_millis(ms);
            assert_eq!(humanize(d), text);
            assert_eq!(parse_duration(text).unwrap(), d, "{text}");
        }
    }
}
