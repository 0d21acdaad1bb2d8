//! The build's dependency graph (`docs/development.md`): one crypto provider, and no second
//! major version of a crate that is not known and explained.
//!
//! Read with `cargo tree` on the lock file, offline: what the crate is built from, not what
//! is on the machine.

use std::collections::BTreeSet;
use std::process::Command;

fn cargo_tree(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--offline", "--prefix", "none"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("cargo tree prints UTF-8")
}

/// The packages of what lockstep is built from (its normal and build dependencies).
fn packages() -> BTreeSet<String> {
    cargo_tree(&["-e", "normal,build"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// rustls, the GitHub App's JWT and every HTTPS client run on ring; a second provider (another
/// two minutes of C to build, and a second set of primitives to keep patched) must not come
/// back with a feature default.
#[test]
fn one_crypto_provider_is_built() {
    let packages = packages();
    assert!(
        packages.contains("ring"),
        "ring is the provider: {packages:?}"
    );
    for other in [
        "aws-lc-rs",
        "aws-lc-sys",
        "openssl-sys",
        "rsa",
        "jsonwebtoken",
    ] {
        assert!(
            !packages.contains(other),
            "`{other}` is built: a second crypto provider came back \
             (`cargo tree -e normal -i {other}` shows which dependency brought it)"
        );
    }
}

/// Crates built in two major versions, each with what pulls in the second: none of them is
/// ours to remove (lockstep already uses the version its neighbours do, or uses neither).
const KNOWN_DUPLICATES: [(&str, &str); 10] = [
    (
        "base64",
        "hyper-util and reqwest use 0.23; sqlx and octocrab 0.22",
    ),
    ("block-buffer", "digest 0.10 and 0.11"),
    ("cpufeatures", "sha2 0.10 and 0.11"),
    ("crypto-common", "digest 0.10 and 0.11"),
    (
        "digest",
        "octocrab and sqlx-core use 0.10; sqlx-postgres 0.11",
    ),
    (
        "getrandom",
        "ring and octocrab use 0.2; tempfile and sqlx-postgres's rand 0.4",
    ),
    ("hashbrown", "sqlx-core's hashlink uses 0.16; indexmap 0.17"),
    ("hmac", "octocrab uses 0.12; sqlx-postgres's SCRAM 0.13"),
    (
        "sha2",
        "octocrab and sqlx-core use 0.10; sqlx-postgres 0.11",
    ),
    ("syn", "proc macros on syn 2 and on syn 3"),
];

#[test]
fn duplicate_major_versions_are_the_known_ones() {
    let mut versions = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    for line in cargo_tree(&["-d", "-e", "normal,build", "--depth", "0"]).lines() {
        let mut words = line.split_whitespace();
        if let (Some(name), Some(version)) = (words.next(), words.next()) {
            versions
                .entry(name.to_string())
                .or_default()
                .insert(version.to_string());
        }
    }
    // The same version twice is one crate built for the host (a proc macro's dependency) and
    // for the target: not a second version.
    let found: BTreeSet<&str> = versions
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(name, _)| name.as_str())
        .collect();
    let known: BTreeSet<&str> = KNOWN_DUPLICATES.iter().map(|(name, _)| *name).collect();
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        new.is_empty(),
        "new duplicate major versions {new:?}: align the dependency that brings the second \
         (`cargo tree -d`), or list it in KNOWN_DUPLICATES with what pulls it in"
    );
    assert!(
        gone.is_empty(),
        "{gone:?} no longer built twice: take them out of KNOWN_DUPLICATES"
    );
}
