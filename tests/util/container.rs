//! What the image and manifest tests run: podman (with the private `containers.conf`) and a
//! local base image, and the offline checkers (kubernetes-validate, yamllint,
//! podman-compose) in a venv. `scripts/container.sh base` installs them and writes an env
//! file naming them; `.ci/run` loads it. Without them a test says it is skipped, or fails
//! when `CI` is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository's top folder.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Says why a test cannot run: a failure under `CI`, a skip elsewhere.
fn missing(test: &str, what: &str) {
    super::skip(
        test,
        &format!("the container tools of scripts/container.sh ({what})"),
        "run `scripts/container.sh base`, then \
         `set -a; . \"$(scripts/container.sh env)\"; set +a`",
    );
}

/// The venv's bin folder, holding kubernetes-validate, yamllint and podman-compose.
pub fn checkers(test: &str) -> Option<PathBuf> {
    match std::env::var_os("LOCKSTEP_CONTAINER_TOOLS") {
        Some(dir) if Path::new(&dir).join("kubernetes-validate").exists() => Some(dir.into()),
        _ => {
            missing(
                test,
                "LOCKSTEP_CONTAINER_TOOLS names no folder with the checkers",
            );
            None
        }
    }
}

/// The image built around the `lockstep` under test, once per test run; `None` (after
/// saying why) when podman or the base image is missing.
pub fn image(test: &str) -> Option<&'static str> {
    const TAG: &str = "localhost/lockstep:test";
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if std::env::var_os("CONTAINERS_CONF").is_none()
        || std::env::var_os("LOCKSTEP_BASE_IMAGE").is_none()
    {
        missing(test, "CONTAINERS_CONF or LOCKSTEP_BASE_IMAGE is not set");
        return None;
    }
    let built = BUILT.get_or_init(|| {
        let out = Command::new(root().join("scripts/container.sh"))
            .args(["image".as_ref(), super::bin().as_os_str(), TAG.as_ref()])
            .output()
            .map_err(|e| format!("cannot run scripts/container.sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/container.sh image failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    match built {
        Ok(()) => Some(TAG),
        Err(e) => panic!("{e}"),
    }
}

/// Runs podman; panics with its output if it fails.
pub fn podman(args: &[&str]) -> String {
    let out = podman_output(args);
    assert!(
        out.status.success(),
        "podman {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs podman and returns what it did, failed or not.
pub fn podman_output(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .expect("cannot run podman")
}

/// A container started by a test, removed (with its anonymous volumes) when dropped.
pub struct Container(pub String);

impl Container {
    /// `podman run -d ARGS`.
    pub fn start(args: &[&str]) -> Container {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(args);
        Container(podman(&all).trim().to_string())
    }

    /// `http://127.0.0.1:PORT`: where the container's port 8080 was published.
    pub fn url(&self) -> String {
        let port = podman(&["port", &self.0, "8080/tcp"]);
        format!("http://{}", port.trim())
    }

    pub fn logs(&self) -> String {
        let out = podman_output(&["logs", &self.0]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// A field of `podman inspect`, e.g. `{{.State.ExitCode}}`.
    pub fn inspect(&self, format: &str) -> String {
        podman(&["inspect", "--format", format, &self.0])
            .trim()
            .to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman_output(&["rm", "-f", "-v", &self.0]);
    }
}

/// The documents of YAML files as JSON, read by the venv's Python (PyYAML comes with the
/// checkers), so that the tests need no YAML crate.
pub fn yaml_documents(tools: &Path, files: &[PathBuf]) -> Vec<serde_json::Value> {
    let out = Command::new(tools.join("python"))
        .arg("-c")
        .arg(
            "import json, sys, yaml\n\
             docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]\n\
             json.dump(docs, sys.stdout)",
        )
        .args(files)
        .output()
        .expect("cannot run the venv's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
