//! A small client of Prometheus's HTTP API: instant queries (`GET /api/v1/query`), nothing
//! more. The expression is configuration only and travels as a query parameter, encoded by
//! the URL builder; no value of a delivery is ever part of it.
//!
//! Every failure names the URL it was sent to, so a gate that fails closed says where it
//! looked.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::config::PrometheusConfig;
use crate::text::{clip, escape};

/// One series of an instant vector (or the one value of a scalar): its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Why a query gave no samples.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Nothing answered, or not in time.
    #[error("cannot reach Prometheus at `{url}`: {reason}")]
    Unreachable { url: String, reason: String },
    /// Prometheus answered an error (a bad expression is `400 bad_data`).
    #[error("Prometheus at `{url}` refused the query ({status} {kind}): {error}")]
    Refused {
        url: String,
        status: u16,
        kind: String,
        error: String,
    },
    /// The answer is not what the API documents.
    #[error("Prometheus at `{url}` gave an answer lockstep cannot read: {reason}")]
    Unreadable { url: String, reason: String },
}

/// A Prometheus server.
#[derive(Clone)]
pub struct Prometheus {
    client: reqwest::Client,
    endpoint: Url,
    token: Option<SecretString>,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("endpoint", &self.endpoint.as_str())
            .field("token", &self.token.as_ref().map(|_| "[secret]"))
            .finish()
    }
}

impl Prometheus {
    /// A client for `[prometheus]`; the token is read from `token_env` now.
    pub fn from_config(config: &PrometheusConfig) -> anyhow::Result<Prometheus> {
        let token = match &config.token_env {
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Some(SecretString::from(v.trim().to_string())),
                _ => anyhow::bail!(
                    "`{var}` is not set; put Prometheus's token in it (`prometheus.token_env`)"
                ),
            },
            None => None,
        };
        Prometheus::new(&config.url, token, config.timeout)
    }

    pub fn new(
        url: &str,
        token: Option<SecretString>,
        timeout: Duration,
    ) -> anyhow::Result<Prometheus> {
        let mut endpoint = Url::parse(url)
            .map_err(|e| anyhow::anyhow!("`prometheus.url = \"{url}\"` is not a URL: {e}"))?;
        endpoint
            .path_segments_mut()
            .map_err(|()| anyhow::anyhow!("`prometheus.url = \"{url}\"` cannot take a path"))?
            .pop_if_empty()
            .extend(["api", "v1", "query"]);
        let client = crate::tls::http_client(timeout)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build an HTTP client for Prometheus: {e}"))?;
        Ok(Prometheus {
            client,
            endpoint,
            token,
        })
    }

    /// The query endpoint, as messages name it.
    pub fn url(&self) -> &str {
        self.endpoint.as_str()
    }

    /// Runs an instant query; every series of the vector (or the scalar) it returns.
    pub async fn query(&self, expr: &str) -> Result<Vec<Sample>, QueryError> {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut().append_pair("query", expr);
        let mut req = self.client.get(url);
        if let Some(t) = &self.token {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.expose_secret()))
                    .map_err(|_| QueryError::Unreachable {
                        url: self.url().into(),
                        reason: "the token holds characters a header cannot carry".into(),
                    })?;
            value.set_sensitive(true);
            req = req.header(reqwest::header::AUTHORIZATION, value);
        }
        let resp = req.send().await.map_err(|e| QueryError::Unreachable {
            url: self.url().into(),
            reason: if e.is_timeout() {
                "no answer in time".into()
            } else {
                chain(&e.without_url())
            },
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| QueryError::Unreachable {
            url: self.url().into(),
            reason: chain(&e.without_url()),
        })?;
        parse_answer(self.url(), status, &body)
    }
}

/// The error and its causes, in one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType", default)]
    error_type: String,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<VectorItem>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct VectorItem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// Reads an answer of `/api/v1/query` (pure, for the tests).
pub fn parse_answer(url: &str, status: u16, body: &[u8]) -> Result<Vec<Sample>, QueryError> {
    let unreadable = |reason: String| QueryError::Unreadable {
        url: url.into(),
        reason,
    };
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        unreadable(if (200..300).contains(&status) {
            format!("{e}")
        } else {
            format!("HTTP {status} without the API's JSON")
        })
    })?;
    if answer.status != "success" {
        // Prometheus's own words, shown in journals, logs and comments: escaped and bounded.
        return Err(QueryError::Refused {
            url: url.into(),
            status,
            kind: clip(&escape(&answer.error_type), 100).into_owned(),
            error: clip(&escape(&answer.error), 1000).into_owned(),
        });
    }
    let value = |text: &str| {
        // Prometheus writes `NaN`, `+Inf` and `-Inf` as Rust reads them, but for the sign.
        text.trim_start_matches('+')
            .parse::<f64>()
            .map_err(|_| unreadable(format!("`{}` is not a number", clip(&escape(text), 100))))
    };
    match answer.data {
        Some(Data::Vector(items)) => items
            .into_iter()
            .map(|i| {
                Ok(Sample {
                    value: value(&i.value.1)?,
                    labels: i.metric,
                })
            })
            .collect(),
        Some(Data::Scalar((_, v))) => Ok(vec![Sample {
            labels: BTreeMap::new(),
            value: value(&v)?,
        }]),
        Some(Data::Matrix(_)) => Err(unreadable(
            "a range vector; a gate needs an instant value: wrap the range in a function \
             like `rate(…[1m])`"
                .into(),
        )),
        Some(Data::String(_)) => Err(unreadable("a string; a gate needs a number".into())),
        None => Err(unreadable("no `data`".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:9090/api/v1/query";

    #[test]
    fn vectors_scalars_and_errors_read_as_the_api_documents_them() {
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"job":"api"},"value":[1700000000.1,"0.25"]},
            {"metric":{},"value":[1700000000.1,"NaN"]},
            {"metric":{},"value":[1700000000.1,"+Inf"]}]}}"#;
        let s = parse_answer(URL, 200, v).unwrap();
        assert_eq!(s[0].value, 0.25);
        assert_eq!(s[0].labels["job"], "api");
        assert!(s[1].value.is_nan());
        assert_eq!(s[2].value, f64::INFINITY);
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(parse_answer(URL, 200, empty).unwrap().is_empty());
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}"#;
        assert_eq!(parse_answer(URL, 200, scalar).unwrap()[0].value, 3.0);
        let bad =
            br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected"}"#;
        assert_eq!(
            parse_answer(URL, 400, bad).unwrap_err().to_string(),
            "Prometheus at `http://127.0.0.1:9090/api/v1/query` refused the query \
             (400 bad_data): 1:5: parse error: unexpected"
        );
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(
            parse_answer(URL, 200, matrix)
                .unwrap_err()
                .to_string()
                .contains("a range vector; a gate needs an instant value")
        );
        assert_eq!(
            parse_answer(URL, 502, b"<html>bad gateway</html>")
                .unwrap_err()
                .to_string(),
            "Prometheus at `http://127.0.0.1:9090/api/v1/query` gave an answer lockstep \
             cannot read: HTTP 502 without the API's JSON"
        );
    }

    #[test]
    fn the_query_is_a_parameter_and_the_base_keeps_its_path() {
        let p = Prometheus::new("http://h:9090/prom/", None, Duration::from_secs(1)).unwrap();
        assert_eq!(p.url(), "http://h:9090/prom/api/v1/query");
        let mut u = p.endpoint.clone();
        u.query_pairs_mut()
            .append_pair("query", r#"sum(x{a="b&c"}) / 2"#);
        assert_eq!(
            u.query(),
            Some("query=sum%28x%7Ba%3D%22b%26c%22%7D%29+%2F+2")
        );
        let with_token = Prometheus::new(
            "http://h:9090",
            Some(SecretString::from("hunter2".to_string())),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(!format!("{with_token:?}").contains("hunter2"));
    }
}
