//! What deploy/ ships besides the image: the Kubernetes manifests, compose and the systemd
//! unit, checked offline with the real tools, and the configs they carry loaded by lockstep.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::container::{checkers, root, yaml_documents};
use crate::util::{bin, stderr, stdout};

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Runs a checker from the venv; panics with its output unless it succeeds.
fn check(tools: &Path, tool: &str, args: &[&str]) -> String {
    let out = Command::new(tools.join(tool))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// The resource of `kind` among the manifests' documents.
fn resource<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} `{name}` in deploy/kubernetes"))
}

/// An entry of the ConfigMap `lockstep-config` (`lockstep.toml`, `gitconfig`).
fn config_entry(tools: &Path, key: &str) -> String {
    let docs = yaml_documents(tools, &manifests());
    let entry = &resource(&docs, "ConfigMap", "lockstep-config")["data"][key];
    entry.as_str().unwrap().to_string()
}

fn duration(text: &str) -> Duration {
    lockstep::parse_duration(text).unwrap()
}

#[test]
fn kubernetes_manifests_pass_the_schemas_and_yamllint() {
    let Some(tools) = checkers("kubernetes_manifests_pass_the_schemas_and_yamllint") else {
        return;
    };
    let files: Vec<String> = manifests()
        .iter()
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    // Today's Kubernetes and one a year older, strict: an unknown field is an error.
    for version in ["1.37.0", "1.33.0"] {
        let mut args = vec!["--strict", "--kubernetes-version", version];
        args.extend(files.iter().map(String::as_str));
        let said = check(&tools, "kubernetes-validate", &args);
        assert_eq!(said.matches(" passed for resource ").count(), 5, "{said}");
    }
    check(
        &tools,
        "yamllint",
        &["--strict", "-c", "deploy/.yamllint.yaml", "deploy/"],
    );

    // The kustomization lists every manifest, and nothing else.
    let docs = yaml_documents(
        &tools,
        &[root().join("deploy/kubernetes/kustomization.yaml")],
    );
    let mut listed: Vec<&str> = docs[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    listed.sort();
    let mut present: Vec<String> = files
        .iter()
        .map(|f| {
            Path::new(f)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    present.sort();
    assert_eq!(listed, present);
}

#[test]
fn the_deployment_is_restricted_probed_and_keeps_secrets_in_the_secret() {
    let Some(tools) =
        checkers("the_deployment_is_restricted_probed_and_keeps_secrets_in_the_secret")
    else {
        return;
    };
    let docs = yaml_documents(&tools, &manifests());
    let deployment = resource(&docs, "Deployment", "lockstep");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "http", "{probe}");
    }
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    for kind in ["requests", "limits"] {
        assert!(c["resources"][kind]["cpu"].is_string(), "{kind}");
        assert!(c["resources"][kind]["memory"].is_string(), "{kind}");
    }

    // Every variable comes from the Secret; none is written in the manifest.
    let vars: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert!(v.get("value").is_none(), "{v} is inlined");
            assert_eq!(v["valueFrom"]["secretKeyRef"]["name"], "lockstep", "{v}");
            v["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        vars,
        [
            "LOCKSTEP_WEBHOOK_SECRET",
            "GITHUB_TOKEN",
            "LOCKSTEP_DATABASE_URL",
            "LOCKSTEP_READ_TOKEN"
        ]
    );
    assert!(
        !docs.iter().any(|d| d["kind"] == "Secret"),
        "a Secret is shipped"
    );

    // The config names those variables, and the pod outlives the drain of a delivery.
    let config = config_entry(&tools, "lockstep.toml");
    let parsed = lockstep::Config::parse_str(&config).unwrap();
    let github = parsed.github.as_ref().unwrap();
    assert_eq!(github.webhook_secret_env, "LOCKSTEP_WEBHOOK_SECRET");
    assert_eq!(github.token_env.as_deref(), Some("GITHUB_TOKEN"));
    // The replicas share the PostgreSQL store the Secret's URL names.
    assert_eq!(
        parsed.store.url_env.as_deref(),
        Some("LOCKSTEP_DATABASE_URL")
    );
    // The page, logs, /api and /metrics ask for the Secret's read token.
    assert_eq!(
        parsed.server.read_token_env.as_deref(),
        Some("LOCKSTEP_READ_TOKEN")
    );
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(Duration::from_secs(grace) >= parsed.server.shutdown_grace + Duration::from_secs(5));
    assert_eq!(parsed.server.listen, "0.0.0.0:8080");

    let service = resource(&docs, "Service", "lockstep");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    let pdb = resource(&docs, "PodDisruptionBudget", "lockstep");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    for selector in [
        &service["spec"]["selector"],
        &pdb["spec"]["selector"]["matchLabels"],
    ] {
        assert_eq!(
            selector,
            &deployment["spec"]["template"]["metadata"]["labels"]
        );
    }
}

/// Writes a config and the shipped policies into a folder and runs `lockstep policy check`.
fn policy_check(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lockstep.toml"), config).unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for e in std::fs::read_dir(root().join("policies")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), policies.join(e.file_name())).unwrap();
    }
    let out = Command::new(bin())
        .arg("--config")
        .arg(dir.path().join("lockstep.toml"))
        .args(["policy", "check"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

#[test]
fn every_shipped_config_loads_with_the_shipped_policies() {
    let image = std::fs::read_to_string(root().join("deploy/lockstep.toml")).unwrap();
    assert!(policy_check(&image).contains("ok: "));

    // The image's config is the one docs/serve.md shows.
    let docs = std::fs::read_to_string(root().join("docs/serve.md")).unwrap();
    assert!(
        docs.contains(&format!("```toml\n{image}```\n")),
        "docs/serve.md no longer shows deploy/lockstep.toml as it is"
    );

    let Some(tools) = checkers("every_shipped_config_loads_with_the_shipped_policies") else {
        return;
    };
    assert!(policy_check(&config_entry(&tools, "lockstep.toml")).contains("ok: "));
    // The policies ConfigMap holds the shipped policies, as they are.
    let docs = yaml_documents(&tools, &manifests());
    let policies = resource(&docs, "ConfigMap", "lockstep-policies")["data"]
        .as_object()
        .unwrap();
    let mut shipped = 0;
    for e in std::fs::read_dir(root().join("policies")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let text = std::fs::read_to_string(e.path()).unwrap();
        assert_eq!(
            policies.get(&name).and_then(Value::as_str),
            Some(text.as_str()),
            "{name}"
        );
        shipped += 1;
    }
    assert_eq!(policies.len(), shipped);
}

/// The git config the pods get hands git the token from the environment for GitHub, and
/// nothing for other hosts.
#[test]
fn the_pods_gitconfig_answers_github_with_the_token() {
    let Some(tools) = checkers("the_pods_gitconfig_answers_github_with_the_token") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gitconfig");
    std::fs::write(&file, config_entry(&tools, "gitconfig")).unwrap();
    let fill = |host: &str| {
        let mut child = Command::new("git")
            .args(["credential", "fill"])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", &file)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GITHUB_TOKEN", "ghp_test-token")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        let request = format!("protocol=https\nhost={host}\npath=acme/api.git\n\n");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(request.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let github = fill("github.com");
    assert!(github.status.success(), "{}", stderr(&github));
    let said = stdout(&github);
    assert!(said.contains("username=x-access-token\n"), "{said}");
    assert!(said.contains("password=ghp_test-token\n"), "{said}");
    // Elsewhere git gets nothing, and (without a terminal) fails rather than ask.
    assert!(!fill("git.example.com").status.success());
}

#[test]
fn compose_parses_with_and_without_the_redmine_profile() {
    let Some(tools) = checkers("compose_parses_with_and_without_the_redmine_profile") else {
        return;
    };
    let compose = |extra: &[&str]| {
        let mut args = vec!["-f", "deploy/compose.yaml"];
        args.extend_from_slice(extra);
        args.push("config");
        let text = check(&tools, "podman-compose", &args);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.json.yaml");
        std::fs::write(&file, text).unwrap();
        yaml_documents(&tools, &[file]).remove(0)
    };
    let plain = compose(&[]);
    let services = plain["services"].as_object().unwrap();
    assert_eq!(
        services.keys().collect::<Vec<_>>(),
        ["lockstep", "postgres"]
    );
    let lockstep = &services["lockstep"];
    assert_eq!(lockstep["build"]["dockerfile"], "Containerfile");
    assert_eq!(lockstep["ports"][0], "127.0.0.1:8080:8080");
    assert!(
        lockstep["environment"]["LOCKSTEP_DATABASE_URL"]
            .as_str()
            .unwrap()
            .starts_with("postgres://lockstep:")
    );
    assert_eq!(
        lockstep["depends_on"]["postgres"]["condition"],
        "service_healthy"
    );
    // Its config keeps the queue in that PostgreSQL.
    let command: Vec<&str> = lockstep["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(command, ["--config", "/etc/lockstep/compose.toml", "serve"]);
    let mounted = std::fs::read_to_string(root().join("deploy/compose-lockstep.toml")).unwrap();
    let mounted = lockstep::Config::parse_str(&mounted).unwrap();
    assert_eq!(
        mounted.store.url_env.as_deref(),
        Some("LOCKSTEP_DATABASE_URL")
    );
    // It stops after the image config's grace, not before.
    let image = std::fs::read_to_string(root().join("deploy/lockstep.toml")).unwrap();
    let grace = lockstep::Config::parse_str(&image)
        .unwrap()
        .server
        .shutdown_grace;
    assert!(duration(lockstep["stop_grace_period"].as_str().unwrap()) > grace);

    let with_redmine = compose(&["--profile", "redmine"]);
    assert!(
        with_redmine["services"]["redmine"]["image"].is_string(),
        "{with_redmine}"
    );
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        crate::util::say_skipped(
            "the_systemd_unit_verifies_and_is_hardened",
            "`systemd-analyze` on PATH",
            "install systemd",
        );
        return;
    };
    assert!(out.status.success());
    let unit = std::fs::read_to_string(root().join("deploy/systemd/lockstep.service")).unwrap();
    // `verify` wants the ExecStart binary to exist: the one under test stands in for it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lockstep.service");
    let here = unit.replace(
        "=/usr/local/bin/lockstep ",
        &format!("={} ", bin().display()),
    );
    assert_ne!(here, unit);
    std::fs::write(&file, &here).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .unwrap();
    // An unknown key is only a warning to `verify`: any output is a finding.
    assert!(
        verify.status.success() && verify.stdout.is_empty() && verify.stderr.is_empty(),
        "{}{}",
        stdout(&verify),
        stderr(&verify)
    );
    // systemd's own exposure score, in tenths (0 = fully locked down, 100 = not at all).
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=30"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(security.status.success(), "{}", stdout(&security));

    // The stop timeout leaves room for the default grace.
    let timeout = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap();
    let grace = lockstep::Config::parse_str("")
        .unwrap()
        .server
        .shutdown_grace;
    assert!(duration(timeout) >= grace + Duration::from_secs(5));
    for key in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=lockstep",
        "PrivateTmp=yes",
        "Restart=on-failure",
        "KillMode=mixed",
    ] {
        assert!(unit.lines().any(|l| l == key), "{key}");
    }
}
