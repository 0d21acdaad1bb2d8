//! The layering of `src/` (`docs/architecture.md`): the core never imports an edge.

use std::path::{Path, PathBuf};

/// The edges: what a person or a git server calls.
const EDGES: [&str; 7] = [
    "hook", "install", "server", "cli", "commands", "board", "demo",
];

/// The core, the domain and the adapters: files and folders of `src/` that must not name an
/// edge.
const CORE: [&str; 15] = [
    "domain",
    "config",
    "policy",
    "push",
    "delivery",
    "store",
    "audit",
    "text",
    "verdict_counts",
    "runtime",
    "git",
    "github",
    "tracker",
    "monitor",
    "tls",
];

fn rust_files(at: &Path, out: &mut Vec<PathBuf>) {
    if at.is_dir() {
        for entry in std::fs::read_dir(at).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if at.is_file() && at.extension().is_some_and(|e| e == "rs") {
        out.push(at.to_path_buf());
    }
}

/// The text of a file without its comments, so that a doc comment may name an edge.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The edges a piece of code names: `crate::hook…` and `use crate::{…, hook, …}`.
fn edges_named(code: &str) -> Vec<&'static str> {
    let mut named = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end]
                .split(',')
                .map(|item| item.trim().split("::").next().unwrap_or("").trim())
                .collect()
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            vec![&rest[..end]]
        };
        named.extend(EDGES.iter().filter(|edge| names.contains(edge)));
    }
    named
}

#[test]
fn core_never_imports_an_edge() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for module in CORE {
        rust_files(&src.join(module), &mut files);
        rust_files(&src.join(format!("{module}.rs")), &mut files);
    }
    assert!(
        files.len() > 40,
        "the core's files were not found under `{}`",
        src.display()
    );
    let mut found = Vec::new();
    for file in &files {
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for edge in edges_named(&code) {
            found.push(format!(
                "{} names `crate::{edge}`",
                file.strip_prefix(&src).unwrap().display()
            ));
        }
    }
    assert!(
        found.is_empty(),
        "the core imports an edge:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_sees_paths_and_groups() {
    assert_eq!(edges_named("use crate::hook::load;"), ["hook"]);
    assert_eq!(
        edges_named("use crate::{config::Config, server, demo::run};"),
        ["server", "demo"]
    );
    assert_eq!(edges_named("crate::board::for_stdout()"), ["board"]);
    assert!(edges_named("use crate::{config, store::Store}; crate::hooks_dir").is_empty());
    assert!(edges_named(&code_of("let x = 1; // crate::server, in a comment")).is_empty());
}

/// One way to get a tokio runtime: `src/runtime.rs` (a current-thread one for hooks, a
/// multi-thread one for the rest). Another builder elsewhere would drift from it.
#[test]
fn runtimes_are_built_only_in_runtime_rs() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in &files {
        if file.ends_with("runtime.rs") {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for builder in ["runtime::Builder", "Builder::new_", "#[tokio::main"] {
            if code.contains(builder) {
                found.push(format!(
                    "{} uses `{builder}`",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "a runtime built outside src/runtime.rs (use crate::runtime):\n{}",
        found.join("\n")
    );
}
