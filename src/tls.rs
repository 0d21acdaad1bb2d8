//! The one TLS crypto provider: rustls on ring.
//!
//! The build carries one set of crypto primitives (ring), for every HTTPS client (GitHub,
//! Redmine, Jira, Prometheus) and the GitHub App's JWT (`github/jwt.rs`). reqwest is built
//! without a provider of its own, so the provider is installed before the first client is
//! made; [`http_client`] does it for the clients lockstep builds.

use std::sync::Once;
use std::time::Duration;

/// Makes ring the process's rustls provider; idempotent.
pub fn install() {
    static ONCE: Once = Once::new();
    // Err means a provider is in place already, which is all that is needed.
    ONCE.call_once(|| drop(rustls::crypto::ring::default_provider().install_default()));
}

/// An HTTP client builder with lockstep's user agent and one timeout for connecting and for
/// the whole request, the TLS provider installed.
pub fn http_client(timeout: Duration) -> reqwest::ClientBuilder {
    install();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("lockstep/", env!("CARGO_PKG_VERSION")))
}
