//! The layering of `src/` (`docs/architecture.md`): the core never imports an edge, the files
//! form no import cycle, one file builds runtimes, and the journal is written in the domain's
//! words, not free text.

use std::path::{Path, PathBuf};

/// The edges: what a person or a git server calls.
const EDGES: [&str; 9] = [
    "hook", "install", "server", "cli", "commands", "board", "demo", "exit", "doctor",
];

/// The core, the domain and the adapters: files and folders of `src/` that must not name an
/// edge.
const CORE: [&str; 18] = [
    "domain",
    "config",
    "policy",
    "push",
    "delivery",
    "store",
    "audit",
    "text",
    "verdict_counts",
    "timings",
    "runtime",
    "git",
    "github",
    "tracker",
    "monitor",
    "runner",
    "tls",
    "accounts",
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

/// Whether `b` may be part of a name (`crate::hooks_dir` is no path to `hook`).
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The paths a piece of code names from `word` (`crate`, `super`, `self`, or a child module
/// declared with `mod`), each as its names after `word::`: `crate::a::B` gives `[a, B]`, and a
/// group gives one path per item (`use crate::{a::B, c}` gives `[a, B]` and `[c]`).
fn paths_from<'c>(code: &'c str, word: &str) -> Vec<Vec<&'c str>> {
    let head = format!("{word}::");
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(&head).map(|i| from + i) {
        from = at + head.len();
        // `a::super::b`, `my_crate::x`: not a path that starts with `word`.
        let before = code[..at].bytes().next_back();
        if before.is_some_and(|b| is_name_byte(b) || b == b':') {
            continue;
        }
        found.extend(path_tails(&code[from..]));
    }
    found
}

/// The paths at the start of `text`: `a::b::C`, `a::{b, c::D}`, `a::*`, `a as b`.
fn path_tails(text: &str) -> Vec<Vec<&str>> {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 0;
        let end = group
            .find(|c| {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => return true,
                    '}' => depth -= 1,
                    _ => {}
                }
                false
            })
            .unwrap_or(group.len());
        let mut items = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in group[..end].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&group[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&group[start..end]);
        return items
            .into_iter()
            .filter(|item| !item.trim().is_empty())
            .flat_map(|item| {
                if item.trim() == "self" {
                    vec![Vec::new()]
                } else {
                    path_tails(item)
                }
            })
            .collect();
    }
    let end = text
        .bytes()
        .position(|b| !is_name_byte(b))
        .unwrap_or(text.len());
    if end == 0 {
        // `*`, or nothing a path goes on with.
        return vec![Vec::new()];
    }
    let (name, rest) = text.split_at(end);
    match rest.strip_prefix("::") {
        Some(rest) => path_tails(rest)
            .into_iter()
            .map(|mut tail| {
                tail.insert(0, name);
                tail
            })
            .collect(),
        None => vec![vec![name]],
    }
}

/// The edges a piece of code names: `crate::hook…` and `use crate::{…, hook, …}`.
fn edges_named(code: &str) -> Vec<&'static str> {
    paths_from(code, "crate")
        .iter()
        .filter_map(|path| {
            EDGES
                .iter()
                .find(|edge| path.first() == Some(*edge))
                .copied()
        })
        .collect()
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

/// The code of a file without its inline test modules (`#[cfg(test)] mod tests { … }`):
/// what a test imports is not what the module uses.
fn without_test_modules(code: &str) -> String {
    let mut kept = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        let after = rest[at + "#[cfg(test)]".len()..].trim_start();
        let inline = after.strip_prefix("mod ").and_then(|m| {
            let name = m.bytes().take_while(|b| is_name_byte(*b)).count();
            m[name..].trim_start().strip_prefix('{')
        });
        let Some(body) = inline else {
            kept.push_str(&rest[..at + 1]);
            rest = &rest[at + 1..];
            continue;
        };
        kept.push_str(&rest[..at]);
        let mut depth = 1;
        let end = body
            .find(|c| {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map_or(body.len(), |i| i + 1);
        rest = &body[end..];
    }
    kept.push_str(rest);
    kept
}

/// The module a file of `src/` is: `delivery/engine.rs` is `[delivery, engine]`,
/// `delivery/mod.rs` is `[delivery]`, `lib.rs` the crate, `[]`.
fn module_of(file: &str) -> Vec<&str> {
    let mut names: Vec<&str> = file.trim_end_matches(".rs").split('/').collect();
    if matches!(names.last(), Some(&"mod" | &"lib")) {
        names.pop();
    }
    names
}

/// A folder's `mod.rs` and a file directly in that folder: a facade and its parts, one module.
fn facade_and_part(a: &str, b: &str) -> bool {
    fn folder(f: &str) -> &str {
        f.rsplit_once('/').map_or("", |(d, _)| d)
    }
    fn facade_of(f: &str) -> Option<&str> {
        f.strip_suffix("/mod.rs")
    }
    facade_of(a) == Some(folder(b)) || facade_of(b) == Some(folder(a))
}

/// The import cycles among `files` (each a path under `src/` and its text): for each set of
/// files that reach each other through `crate::`, `super::` and `self::` paths (and paths from
/// the child modules a file declares), one cycle, each step with the path that makes it. A path
/// goes to the file of the deepest module it names; a facade and its parts may name each other.
fn import_cycles(files: &[(String, String)]) -> Vec<String> {
    let modules: Vec<Vec<&str>> = files.iter().map(|(f, _)| module_of(f)).collect();
    let file_of = |module: &[&str]| modules.iter().position(|m| m == module);
    // uses[a] = (b, the path in a that names b), each b once.
    let mut uses: Vec<Vec<(usize, String)>> = vec![Vec::new(); files.len()];
    for (a, (file, text)) in files.iter().enumerate() {
        let code = without_test_modules(&code_of(text));
        let here = &modules[a];
        let children: Vec<&str> = code
            .lines()
            .filter_map(|line| {
                let decl = line.trim().strip_suffix(';')?;
                let name = decl.rsplit_once("mod ")?.1.trim();
                name.bytes().all(is_name_byte).then_some(name)
            })
            .collect();
        let mut named: Vec<(&str, Vec<&str>, Vec<&str>)> = Vec::new();
        for word in ["crate", "super", "self"]
            .into_iter()
            .chain(children.iter().copied())
        {
            let base: Vec<&str> = match word {
                "crate" => Vec::new(),
                "super" if here.is_empty() => continue,
                "super" => here[..here.len() - 1].to_vec(),
                "self" => here.clone(),
                child => here.iter().copied().chain([child]).collect(),
            };
            for path in paths_from(&code, word) {
                named.push((word, base.clone(), path));
            }
        }
        for (word, mut target, path) in named {
            for name in &path {
                match *name {
                    "super" => {
                        target.pop();
                    }
                    "self" => {}
                    name => target.push(name),
                }
            }
            let Some(b) = (1..=target.len()).rev().find_map(|n| file_of(&target[..n])) else {
                continue;
            };
            if b != a
                && !facade_and_part(file, &files[b].0)
                && !uses[a].iter().any(|(seen, _)| *seen == b)
            {
                uses[a].push((b, format!("{word}::{}", path.join("::"))));
            }
        }
    }
    strongly_connected(&uses)
        .into_iter()
        .filter(|set| set.len() > 1)
        .map(|set| {
            let cycle = shortest_cycle(&uses, &set);
            let mut text = files[cycle[0]].0.clone();
            for pair in cycle
                .windows(2)
                .chain([[cycle[cycle.len() - 1], cycle[0]].as_slice()])
            {
                let (from, to) = (pair[0], pair[1]);
                let path = &uses[from].iter().find(|(b, _)| *b == to).unwrap().1;
                text.push_str(&format!(" -> {} (`{path}`)", files[to].0));
            }
            text
        })
        .collect()
}

/// The strongly connected sets of a graph (Tarjan's algorithm).
fn strongly_connected(uses: &[Vec<(usize, String)>]) -> Vec<Vec<usize>> {
    struct Walk<'g> {
        uses: &'g [Vec<(usize, String)>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on_stack: Vec<bool>,
        next: usize,
        sets: Vec<Vec<usize>>,
    }
    fn visit(w: &mut Walk, v: usize) {
        w.index[v] = Some(w.next);
        w.low[v] = w.next;
        w.next += 1;
        w.stack.push(v);
        w.on_stack[v] = true;
        for &(u, _) in &w.uses[v] {
            match w.index[u] {
                None => {
                    visit(w, u);
                    w.low[v] = w.low[v].min(w.low[u]);
                }
                Some(i) if w.on_stack[u] => w.low[v] = w.low[v].min(i),
                Some(_) => {}
            }
        }
        if Some(w.low[v]) == w.index[v] {
            let mut set = Vec::new();
            while let Some(u) = w.stack.pop() {
                w.on_stack[u] = false;
                set.push(u);
                if u == v {
                    break;
                }
            }
            w.sets.push(set);
        }
    }
    let n = uses.len();
    let mut w = Walk {
        uses,
        index: vec![None; n],
        low: vec![0; n],
        stack: Vec::new(),
        on_stack: vec![false; n],
        next: 0,
        sets: Vec::new(),
    };
    for v in 0..n {
        if w.index[v].is_none() {
            visit(&mut w, v);
        }
    }
    w.sets
}

/// The shortest cycle through the smallest member of a strongly connected set, in order.
fn shortest_cycle(uses: &[Vec<(usize, String)>], set: &[usize]) -> Vec<usize> {
    let start = *set.iter().min().unwrap();
    let mut came_from: Vec<Option<usize>> = vec![None; uses.len()];
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &(u, _) in &uses[v] {
            if u == start {
                let mut cycle = vec![v];
                while let Some(&prev) = cycle.last().and_then(|c| came_from[*c].as_ref()) {
                    cycle.push(prev);
                }
                cycle.reverse();
                return cycle;
            }
            if set.contains(&u) && came_from[u].is_none() {
                came_from[u] = Some(v);
                queue.push_back(u);
            }
        }
    }
    unreachable!("a strongly connected set has a cycle through each member")
}

/// `docs/architecture.md`: no import cycles between the files of `src/`.
#[test]
fn no_import_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let mut files: Vec<(String, String)> = paths
        .iter()
        // The executable is a crate of its own: its `crate::` is not the library's.
        .filter(|p| !p.ends_with("src/main.rs"))
        .map(|p| {
            let name = p.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(p).unwrap())
        })
        .collect();
    files.sort();
    assert!(
        files.len() > 80,
        "the files of `{}` were not found",
        src.display()
    );
    let cycles = import_cycles(&files);
    assert!(
        cycles.is_empty(),
        "import cycles in src/ (move the type a cycle is about, often to `domain`, not the \
         import):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_cycle_check_sees_cycles_and_lets_a_facade_and_its_parts_be() {
    let files = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect()
    };
    // a -> b -> c -> a, through each kind of path; the facade c/mod.rs and its part may name
    // each other; a visibility and a test module are no uses.
    let cyclic = files(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\npub use a::run;"),
        ("a.rs", "use crate::{b::B, text};\npub(super) fn run() {}"),
        ("b.rs", "pub fn f() { super::c::h() }"),
        (
            "c/mod.rs",
            "mod part;\npub use self::part::X;\nfn h() { crate::a::run() }",
        ),
        ("c/part.rs", "use super::h;\npub struct X;"),
        (
            "text.rs",
            "#[cfg(test)]\nmod tests {\n    use crate::a::run;\n}\n",
        ),
    ]);
    assert_eq!(
        import_cycles(&cyclic),
        [
            "a.rs -> b.rs (`crate::b::B`) -> c/mod.rs (`super::c::h`) -> a.rs \
          (`crate::a::run`)"
        ]
    );
    let mut acyclic = cyclic.clone();
    acyclic[3].1 = "mod part;\npub use self::part::X;".into();
    assert!(import_cycles(&acyclic).is_empty());
    // Comments and test modules name nothing.
    let mut commented = acyclic.clone();
    commented[5].1 = "// crate::a::run\n#[cfg(test)] mod tests { use crate::a; }".into();
    commented[1].1.push_str("\nfn g() { crate::text::x() }");
    assert!(import_cycles(&commented).is_empty());
    commented[5].1.push_str("\nfn t() { crate::a::run() }");
    assert_eq!(import_cycles(&commented).len(), 1);
}

#[test]
fn paths_are_read_to_their_end() {
    assert_eq!(
        paths_from("use super::super::a::{b::C, self, d::{e, f::*}};", "super"),
        [
            vec!["super", "a", "b", "C"],
            vec!["super", "a"],
            vec!["super", "a", "d", "e"],
            vec!["super", "a", "d", "f"],
        ]
    );
    assert_eq!(
        paths_from("x.y(crate::store::Store::open)", "crate"),
        [["store", "Store", "open"]]
    );
    assert!(paths_from("pub(super) fn f(); my_crate::x; a::super::b", "super").is_empty());
    assert!(paths_from("my_crate::x", "crate").is_empty());
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
