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
