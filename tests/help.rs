//! The help text, as the real executable prints it, for every command of the command enum:
//! a new command cannot ship without its help being looked at.

use clap::CommandFactory as _;

use crate::util::*;

/// Every command path: `[]`, `["demo"]`, `["hook", "pre-receive"]`, …
fn command_paths(cmd: &clap::Command, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let mut path = prefix.clone();
        path.push(sub.get_name().to_string());
        command_paths(sub, path, out);
    }
}

#[test]
fn help_of_every_command() {
    let mut paths = Vec::new();
    command_paths(&lockstep::Cli::command(), Vec::new(), &mut paths);
    assert!(paths.len() >= 9, "{paths:?}");
    let mut all = String::new();
    for path in paths {
        let mut cmd = lockstep_cmd();
        cmd.args(&path).arg("--help").env("COLUMNS", "100");
        let out = run(cmd);
        assert_eq!(code(&out), 0, "{path:?}: {}", stderr(&out));
        all.push_str(&format!("$ lockstep {} --help\n", path.join(" ")).replace("  ", " "));
        all.push_str(&stdout(&out));
        all.push('\n');
    }
    insta::assert_snapshot!("help", all);
}

#[test]
fn version_and_usage_errors() {
    let mut cmd = lockstep_cmd();
    cmd.arg("--version");
    let out = run(cmd);
    assert_eq!(code(&out), 0);
    assert_eq!(
        stdout(&out),
        format!("lockstep {}\n", env!("CARGO_PKG_VERSION"))
    );

    let mut cmd = lockstep_cmd();
    cmd.arg("deliver-everything");
    let out = run(cmd);
    assert_eq!(code(&out), 2, "usage errors exit 2");
    assert!(
        stderr(&out).contains("unrecognized subcommand 'deliver-everything'"),
        "{}",
        stderr(&out)
    );
}

/// The numbers of the rows of the first Markdown table after `heading` in `text`.
fn table_codes(text: &str, heading: &str) -> Vec<u8> {
    let after = text
        .split_once(heading)
        .unwrap_or_else(|| panic!("`{heading}` not found"))
        .1;
    after
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|row| {
            row.trim_start_matches('|')
                .split('|')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

/// Every exit code the executable can end with is a row of the README's table, and every row
/// is one; the hooks' table in docs/install.md names only codes that exist.
#[test]
fn the_exit_code_tables_are_the_exit_enum() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let codes: Vec<u8> = lockstep::Exit::ALL.iter().map(|e| e.code()).collect();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert_eq!(
        table_codes(&readme, "Exit codes, the same for every command"),
        codes,
        "README.md's table of exit codes"
    );
    let install = std::fs::read_to_string(root.join("docs/install.md")).unwrap();
    let hook = table_codes(&install, "## What the hook does");
    assert_eq!(
        hook,
        [0, 1, 2],
        "docs/install.md's table of the hook's exit codes"
    );
    assert!(hook.iter().all(|c| codes.contains(c)), "{hook:?}");
}
