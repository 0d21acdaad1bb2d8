//! Monitoring: what Prometheus and Alertmanager say about a release.
//!
//! - [`prometheus`]: the client of Prometheus's query API.
//! - [`gate`]: `[[gate]]`s, sampled after deploy and held to their bounds.
//! - [`alert`]: Alertmanager's webhook notifications, read and quoted.
//!
//! The delivery line runs the gates in its verify phase; the server turns firing alerts into
//! rollbacks of watched deliveries.

pub mod alert;
pub mod gate;
pub mod prometheus;

pub use prometheus::Prometheus;
