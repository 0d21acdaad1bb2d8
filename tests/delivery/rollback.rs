//! Rolling back a delivery, with or without revert commits, and the board `deliver` draws.

use super::*;

#[test]
fn rollback_runs_the_rollback_steps_and_moves_the_task_back() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1", &REPOS, &[]);
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let delivered = env.masters();

    let o = env.lockstep(&["rollback", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(env.rollbacks(), ["db 1", "web 1", "api 1"]);
    for repo in REPOS {
        assert_eq!(env.deployed(repo), None, "{repo} is still deployed");
    }
    // Without `--revert` the code stays merged.
    assert_eq!(env.masters(), delivered);
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    assert!(
        notes
            .last()
            .unwrap()
            .contains("rolled back by lockstep (#1)")
    );
}

#[test]
fn rollback_with_revert_pushes_a_revert_commit_on_every_upstream() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1", &REPOS, &[]);
    let before = env.masters();
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let delivered = env.masters();

    let o = env.lockstep(&["rollback", "1", "--revert"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(env.rollbacks(), ["db 1", "web 1", "api 1"]);
    let after = env.masters();
    for (i, repo) in REPOS.iter().enumerate() {
        assert_eq!(
            parents(&env, repo, &after[i]),
            [delivered[i].clone()],
            "{repo}"
        );
        assert_eq!(
            tree(&env, repo, &after[i]),
            tree(&env, repo, &before[i]),
            "{repo}"
        );
        let msg = env.git_in(repo, &["log", "-1", "--format=%s", &after[i]]);
        assert_eq!(msg.trim(), "Revert the delivery of TASK-1 (lockstep #1)");
    }
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    let note = notes.last().unwrap();
    for (i, repo) in REPOS.iter().enumerate() {
        assert!(
            note.contains(&format!("{repo} {}", short(&after[i]))),
            "{note}"
        );
    }
}

#[test]
fn rollback_then_revert_runs_each_rollback_once() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1", &REPOS, &[]);
    let before = env.masters();
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = env.lockstep(&["rollback", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    // Then the release manager decides the code goes too.
    let o = env.lockstep(&["rollback", "1", "--revert"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        env.rollbacks(),
        ["db 1", "web 1", "api 1"],
        "a rollback step ran twice"
    );
    let reverted = env.masters();
    for (i, repo) in REPOS.iter().enumerate() {
        assert_eq!(tree(&env, repo, &reverted[i]), tree(&env, repo, &before[i]));
    }
    // Once more changes nothing.
    let o = env.lockstep(&["rollback", "1", "--revert"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("already"), "{}", stdout(&o));
    assert_eq!(env.masters(), reverted);
    assert_eq!(env.rollbacks().len(), 3);
}

#[test]
fn merge_commit_mode_lands_a_merge_commit_and_reverts_it() {
    let env = Env::new(&REPOS);
    env.set_delivery("merge", "\"merge-commit\"");
    let heads = ready(&env, "TASK-1", &REPOS, &[]);
    env.advance_master("db", "seed.sql", "insert\n");
    let before = env.masters();

    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let after = env.masters();
    for (i, repo) in REPOS.iter().enumerate() {
        let p = parents(&env, repo, &after[i]);
        assert_eq!(p.len(), 2, "{repo}: not a merge commit");
        assert_eq!(
            p[0], before[i],
            "{repo}: the first parent is the old master"
        );
        let msg = env.git_in(repo, &["log", "-1", "--format=%B", &after[i]]);
        assert!(
            msg.starts_with("Deliver TASK-1 (feature/TASK-1-work)"),
            "{msg}"
        );
        assert!(on_master(&env, repo, "TASK-1.txt"));
        assert_eq!(env.deployed(repo).as_deref(), Some(after[i].as_str()));
    }
    // Up to date branches are merged as they are; the one behind was rebased first.
    assert_eq!(parents(&env, "api", &after[0])[1], heads[0]);
    assert_ne!(parents(&env, "db", &after[2])[1], heads[2]);

    let o = env.lockstep(&["rollback", "1", "--revert"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    for (i, repo) in REPOS.iter().enumerate() {
        let now = env.master(repo);
        assert_eq!(
            tree(&env, repo, &now),
            tree(&env, repo, &before[i]),
            "{repo}"
        );
    }
}

/// Quotes a word for `sh` (the test's own paths and arguments).
fn sh_word(s: &std::ffi::OsStr) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"))
}

#[test]
fn deliver_draws_a_board_on_a_terminal_and_prints_lines_into_a_pipe() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1", &REPOS, &[]);
    ready(&env, "TASK-2", &["api", "db"], &[]);

    // Into a pipe: the story, one line at a time, nothing for a terminal.
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(!stdout(&o).contains('\x1b'), "{:?}", stdout(&o));
    assert!(
        stdout(&o).contains("#1 TASK-1: build    api"),
        "{}",
        stdout(&o)
    );

    // On a terminal (`script` gives lockstep a pseudo-terminal): the board under the story.
    let like = env.command(&["deliver", "TASK-2"]);
    let line: Vec<String> = std::iter::once(like.get_program())
        .chain(like.get_args())
        .map(sh_word)
        .collect();
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        .env("TERM", "xterm-256color")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    copy_env(&like, &mut cmd);
    let o = cmd
        .output()
        .expect("`script` (util-linux) runs the command on a pseudo-terminal");
    let text = stdout(&o).replace('\r', "");
    assert_eq!(o.status.code(), Some(0), "{text}{}", stderr(&o));
    assert!(
        text.contains("\x1b[J"),
        "the board was never redrawn: {text:?}"
    );
    // The last board drawn: every phase done for both repositories, web not in it.
    let last = text.rsplit("\x1b[J").next().unwrap();
    assert!(
        last.contains("rebase   build    test     deploy   verify   merge\n"),
        "{last}"
    );
    for repo in ["api", "db"] {
        assert!(
            last.contains(&format!(
                "  {repo:<12}  ok       ok       ok       ok       ok       ok\n"
            )),
            "{last}"
        );
    }
    assert!(!last.contains("  web "), "{last}");
    assert!(last.contains("#2 TASK-2: delivered"), "{last}");
}

/// A revert is all or nothing, as a merge is: when one upstream refuses its revert, the
/// reverts already pushed are put back, and every upstream keeps the delivery.
#[test]
fn a_refused_revert_puts_back_the_reverts_already_pushed() {
    let env = Env::new(&REPOS);
    ready(&env, "TASK-1", &REPOS, &[]);
    let o = env.lockstep(&["deliver", "TASK-1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let delivered = env.masters();
    env.add_policy("90-freeze.toml", DB_FROZEN);

    let o = env.lockstep(&["rollback", "1", "--revert"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(
            "lockstep: #1 TASK-1: cannot push the revert of `TASK-1` to `master` of `db`: "
        ) && err.contains("[db-frozen] `db` is frozen for the release")
            && err.contains("; nothing was reverted (put back `web`, `api`)"),
        "{err}"
    );
    assert_eq!(env.masters(), delivered, "a revert was left pushed");
    let (status, notes) = env.task("TASK-1");
    assert_eq!(status, "In Progress");
    assert!(
        notes.last().unwrap().contains("nothing was reverted"),
        "{notes:?}"
    );
}
