//! A real Prometheus and a real Alertmanager (Debian's, from `scripts/monitoring.sh`), each
//! started by the test that needs it on a free 127.0.0.1 port with its own config and data
//! folder, and a tiny service whose `/metrics` error counter the test (or a step) controls.
//!
//! Without `PROMETHEUS_BIN` and `ALERTMANAGER_BIN` these tests say they are skipped, or fail
//! when `CI` is set.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use super::serve::wait_until;
use super::{Served, serve};

/// The binaries, or `None` (after saying the test is skipped) when they are not installed.
pub fn binaries(test: &str) -> Option<(PathBuf, PathBuf)> {
    let prometheus = std::env::var_os("PROMETHEUS_BIN").map(PathBuf::from);
    let alertmanager = std::env::var_os("ALERTMANAGER_BIN").map(PathBuf::from);
    match (prometheus, alertmanager) {
        (Some(p), Some(a)) if p.exists() && a.exists() => Some((p, a)),
        _ => {
            super::skip(
                test,
                "Prometheus and Alertmanager (PROMETHEUS_BIN, ALERTMANAGER_BIN)",
                "run scripts/monitoring.sh start, then \
                 `set -a; . \"$(scripts/monitoring.sh env)\"; set +a`",
            );
            None
        }
    }
}

/// A service whose `/metrics` counts `app_requests_total` by `code`: every scrape adds 100
/// requests, of which the percentage written in its errors file (none when the file is
/// missing) are 500s. A step flips it by writing that file; the test by [`Service::set_errors`].
pub struct Service {
    _served: Served,
    /// `127.0.0.1:PORT`, for a scrape config.
    pub target: String,
    pub errors_file: PathBuf,
}

#[derive(Default)]
struct Counts {
    ok: u64,
    errors: u64,
}

impl Service {
    pub fn start(errors_file: &Path) -> Service {
        let counts = Arc::new((Mutex::new(Counts::default()), errors_file.to_path_buf()));
        let router = Router::new()
            .route("/metrics", get(metrics))
            .with_state(counts);
        let served = serve(router);
        let target = served.url.trim_start_matches("http://").to_string();
        Service {
            _served: served,
            target,
            errors_file: errors_file.to_path_buf(),
        }
    }

    /// Makes `percent` of the requests fail from the next scrape on.
    pub fn set_errors(&self, percent: u64) {
        std::fs::write(&self.errors_file, format!("{percent}\n")).unwrap();
    }
}

async fn metrics(State(state): State<Arc<(Mutex<Counts>, PathBuf)>>) -> String {
    let (counts, file) = &*state;
    let percent: u64 = std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
        .min(100);
    let mut c = counts.lock().unwrap();
    c.errors += percent;
    c.ok += 100 - percent;
    format!(
        "# HELP app_requests_total Requests served.\n# TYPE app_requests_total counter\n\
         app_requests_total{{code=\"200\"}} {}\napp_requests_total{{code=\"500\"}} {}\n",
        c.ok, c.errors
    )
}

/// The error ratio of the service over the last 5 seconds (one scrape a second).
pub const ERROR_RATIO: &str = r#"sum(rate(app_requests_total{job="app",code="500"}[5s])) / sum(rate(app_requests_total{job="app"}[5s]))"#;

/// A server process the test started; killed when dropped.
pub struct Proc {
    child: Child,
    pub url: String,
    log: PathBuf,
}

impl Proc {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it now (SIGKILL) and waits for it: the server is down.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn launch(bin: &Path, dir: &Path, name: &str, args: &[String], port: u16) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(
            std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
        ))
        .spawn()
        .unwrap();
    let proc = Proc {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    wait_until(
        &format!("{name} to be ready"),
        Duration::from_secs(60),
        Some(&proc.log),
        || {
            super::http::request(&proc.url, "GET", "/-/ready", &[], b"")
                .is_ok_and(|r| r.status == 200)
        },
    );
    proc
}

/// Starts Prometheus scraping `target` (job `app`) every second, evaluating `rules` (a rule
/// file's text, if any) every second and sending alerts to `alertmanager` (a URL, if any).
pub fn prometheus(
    bin: &Path,
    dir: &Path,
    target: &str,
    rules: Option<&str>,
    alertmanager: Option<&str>,
) -> Proc {
    let dir = dir.join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut config = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
    if let Some(rules) = rules {
        std::fs::write(dir.join("rules.yml"), rules).unwrap();
        config.push_str("rule_files: [rules.yml]\n");
    }
    if let Some(am) = alertmanager {
        let host = am.trim_start_matches("http://");
        config.push_str(&format!(
            "alerting:\n  alertmanagers:\n    - static_configs: [{{targets: [\"{host}\"]}}]\n"
        ));
    }
    config.push_str(&format!(
        "scrape_configs:\n  - job_name: app\n    static_configs: [{{targets: [\"{target}\"]}}]\n"
    ));
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    // `--rules.alert.resend-delay=1s`: an alert that fires before Prometheus has set up its
    // Alertmanager (about 5 s after start) would otherwise wait a minute to be sent again.
    let args = vec![
        format!("--config.file={}", dir.join("prometheus.yml").display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--rules.alert.resend-delay=1s".to_string(),
    ];
    launch(bin, &dir, "prometheus", &args, port)
}

/// Waits until Prometheus has scraped the service enough for [`ERROR_RATIO`] to be a number.
pub fn wait_for_data(prometheus: &Proc) {
    let url = format!(
        "/api/v1/query?query={}",
        percent_encoding::utf8_percent_encode(ERROR_RATIO, percent_encoding::NON_ALPHANUMERIC)
    );
    wait_until(
        "Prometheus's first samples of the service",
        Duration::from_secs(60),
        None,
        || {
            super::http::request(&prometheus.url, "GET", &url, &[], b"")
                .is_ok_and(|r| r.body.contains("\"value\"") && !r.body.contains("NaN"))
        },
    );
}

/// Starts Alertmanager routing every alert to `webhook` with the bearer `token`, fast:
/// `group_wait` and `group_interval` 1s.
pub fn alertmanager(bin: &Path, dir: &Path, webhook: &str, token: &str) -> Proc {
    let dir = dir.join("alertmanager");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = format!(
        "route:\n  receiver: lockstep\n  group_by: [alertname]\n  group_wait: 1s\n  \
         group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: lockstep\n    \
         webhook_configs:\n      - url: \"{webhook}\"\n        send_resolved: true\n        \
         http_config:\n          authorization:\n            type: Bearer\n            \
         credentials: \"{token}\"\n"
    );
    std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
    // An empty `--cluster.listen-address` turns gossip off: no port of its own.
    let args = vec![
        format!("--config.file={}", dir.join("alertmanager.yml").display()),
        format!("--storage.path={}", dir.join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".to_string(),
    ];
    launch(bin, &dir, "alertmanager", &args, port)
}
