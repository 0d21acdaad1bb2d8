//! HTTP requests of tests and benches, through reqwest's blocking client.
//!
//! Every request goes on a connection of its own (no pool), the way GitHub delivers
//! webhooks: what a test or the webhooks bench sees of a server is one whole exchange, and
//! no idle connection of an earlier request outlives it.

use std::sync::LazyLock;
use std::time::Duration;

/// A response: status, headers and body.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

static CLIENT: LazyLock<reqwest::blocking::Client> = LazyLock::new(|| {
    // reqwest is built without a crypto provider of its own: lockstep installs the one.
    lockstep::install_tls();
    reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
});

/// Sends one request to `base` (`http://HOST:PORT`) and reads the whole response.
pub fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> reqwest::Result<Resp> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut req = CLIENT
        .request(method, format!("{base}{path}"))
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send()?;
    Ok(Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text()?,
    })
}

pub fn get(base: &str, path: &str) -> Resp {
    request(base, "GET", path, &[], b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
}
