//! The layering of `src/` (`docs/architecture.md`): the core never imports an edge, and the
//! journal is written in the domain's words, not free text.

use std::path::{Path, PathBuf};

/// The edges: what a person or a git server calls.
const EDGES: [&str; 7] = [
    "hook", "install", "server", "cli", "commands", "board", "demo",
];

/// The core, the domain and the adapters: files and folders of `src/` that must not name an
/// edge.
const CORE: [&str; 14] = [
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

/// The arguments of a call whose opening parenthesis ends just before `code`, split at the
/// top-level commas (string literals and nested brackets kept whole, line breaks ignored);
/// `None` when the call does not close.
fn call_arguments(code: &str) -> Option<Vec<&str>> {
    let mut args = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    let mut chars = code.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                // A string literal: skip to its end, escapes included.
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => {
                args.push(code[start..i].trim());
                return Some(args);
            }
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                args.push(code[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    None
}

/// The stages and events a piece of code writes to the journal as text: each argument in the
/// stage or event position of `Store::journal` (`.journal(id, stage, repo, event, detail)`)
/// or of the store's `append!` (`append!(tx, id, stage, repo, event, detail)`) that holds a
/// string literal.
fn journal_text(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (call, stage, event) in [(".journal(", 1, 3), ("append!(", 2, 4)] {
        for (at, _) in code.match_indices(call) {
            let Some(args) = call_arguments(&code[at + call.len()..]) else {
                continue;
            };
            let line = code[..at].matches('\n').count() + 1;
            for (what, index) in [("stage", stage), ("event", event)] {
                if let Some(arg) = args.get(index).filter(|a| a.contains('"')) {
                    found.push(format!("line {line}: {what} {arg}"));
                }
            }
        }
    }
    found
}

/// Strings only at the edges: the journal's stages and events are `domain::Stage` and
/// `domain::Event`, stored as the text they always were; a literal in their place would
/// write text no reader matches.
#[test]
fn the_journal_is_written_in_the_domains_words() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut calls = 0;
    let mut found = Vec::new();
    for file in &files {
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        calls += code.matches(".journal(").count() + code.matches("append!(").count();
        for text in journal_text(&code) {
            found.push(format!(
                "{} {text}",
                file.strip_prefix(&src).unwrap().display()
            ));
        }
    }
    assert!(
        calls > 40,
        "the journal's writers were not found under `{}`",
        src.display()
    );
    assert!(
        found.is_empty(),
        "text passed as a journal stage or event (use domain::Stage and domain::Event):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_journal_scan_sees_literals_across_lines() {
    assert_eq!(
        journal_text(r#"store.journal(id, "queue", "", Event::Queued, "x")"#),
        [r#"line 1: stage "queue""#]
    );
    let broken = "s\n    .journal(\n        d.id,\n        Phase::Merge,\n        &c.row.repo,\n        \"pushed\",\n        &format!(\"{}, {}\", a, b),\n    )";
    assert_eq!(journal_text(broken), [r#"line 2: event "pushed""#]);
    assert_eq!(
        journal_text(r#"append!(&mut *tx, id, Stage::Other("plan".into()), "", e, "a, b")"#),
        [r#"line 1: stage Stage::Other("plan".into())"#]
    );
    assert!(
        journal_text(r#"append!(&mut *tx, id, Stage::Queue, "", Event::Queued, "a, \"b\")")"#)
            .is_empty()
    );
    assert!(journal_text(r#"s.journal(d.id, phase, "api", Event::Failed, &why)"#).is_empty());
    assert!(journal_text("fn journal(journal: &[JournalRow])").is_empty());
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
