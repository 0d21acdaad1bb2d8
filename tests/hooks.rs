//! Pushes through the real hooks: what the pusher reads and where the refs end up.
//!
//! The sandbox has the shipped policies, the file tracker (TASK-1 In Progress, TASK-2 To Do),
//! `lockstep-bot` as the bot and `release-lead` as the one maintainer.

use crate::util::*;

#[test]
fn branch_that_names_no_task_is_rejected() {
    let env = Env::new(&["api"]);
    let api = env.clone_on_branch("api", "alice", "fix-login", "fix");
    let p = push_as(&api, "alice", &["fix-login"]);
    assert!(!p.accepted);
    assert_eq!(
        p.remote(),
        [
            "lockstep: push rejected",
            "  refs/heads/fix-login: [branch-names-a-task] branch `fix-login` names no task; \
             push it as `feature/TASK-123-short-name`",
        ]
    );
    assert!(
        p.stderr.contains("(pre-receive hook declined)"),
        "{}",
        p.stderr
    );
    assert_eq!(env.rev("api", "refs/heads/fix-login"), None);
}

#[test]
fn task_not_in_progress_names_its_status() {
    let env = Env::new(&["api"]);
    let api = env.clone_on_branch("api", "alice", "feature/TASK-2-search", "TASK-2 search");
    let p = push_as(&api, "alice", &["feature/TASK-2-search"]);
    assert!(!p.accepted);
    assert!(
        p.remote_text().contains(
            "[task-in-progress] task `TASK-2` is To Do, not In Progress; move it to In Progress \
             in the tasks file, then push again"
        ),
        "{}",
        p.stderr
    );
    assert_eq!(env.rev("api", "refs/heads/feature/TASK-2-search"), None);

    // Once the task moves, the same push goes through.
    env.set_tasks("[TASK-2]\nstatus = \"In Progress\"\n");
    let p = push_as(&api, "alice", &["feature/TASK-2-search"]);
    assert!(p.accepted, "{}", p.stderr);
    assert_eq!(
        env.rev("api", "refs/heads/feature/TASK-2-search"),
        Some(head(&api, "HEAD"))
    );
}

#[test]
fn unknown_task_does_not_exist() {
    let env = Env::new(&["api"]);
    let api = env.clone_on_branch("api", "alice", "feature/TASK-99-typo", "TASK-99 typo");
    let p = push_as(&api, "alice", &["feature/TASK-99-typo"]);
    assert!(!p.accepted);
    assert!(
        p.remote_text().contains(
            "[task-in-progress] task `TASK-99` does not exist in the tasks file; check the branch name"
        ),
        "{}",
        p.stderr
    );
    assert_eq!(env.rev("api", "refs/heads/feature/TASK-99-typo"), None);
}

#[test]
fn task_branch_in_progress_is_accepted_quietly() {
    let env = Env::new(&["api"]);
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    let p = push_as(&api, "alice", &["feature/TASK-1-login"]);
    assert!(p.accepted, "{}", p.stderr);
    assert_eq!(p.remote(), Vec::<String>::new());
    assert_eq!(
        env.rev("api", "refs/heads/feature/TASK-1-login"),
        Some(head(&api, "HEAD"))
    );

    // A second, fast-forward push of the same branch.
    commit(&api, "alice", "more.txt", "more\n", "TASK-1 more").unwrap();
    let p = push_as(&api, "alice", &["feature/TASK-1-login"]);
    assert!(p.accepted, "{}", p.stderr);
    assert_eq!(
        env.rev("api", "refs/heads/feature/TASK-1-login"),
        Some(head(&api, "HEAD"))
    );
}

/// `LOCKSTEP_HOOK_TIMINGS=1` on the server makes each hook say where its time went, in one
/// line of phases the pusher sees; `0` (or unset, above) says nothing.
#[test]
fn hook_timings_are_printed_only_when_asked() {
    let env = Env::new(&["api"]);
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    let p = push_env(
        &api,
        &[("GL_USER", "alice"), ("LOCKSTEP_HOOK_TIMINGS", "1")],
        &["feature/TASK-1-login"],
    );
    assert!(p.accepted, "{}", p.stderr);
    // post-receive, with nothing asked of it, only starts and stops.
    let lines = p.remote();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let post = lines[1]
        .strip_prefix("lockstep timings: (post-receive) init=")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(!post.contains("config="), "{post}");
    let phases = lines[0]
        .strip_prefix("lockstep timings: (pre-receive) ")
        .unwrap_or_else(|| panic!("{lines:?}"));
    let names: Vec<&str> = phases
        .split(' ')
        .map(|kv| {
            let (name, ms) = kv.split_once('=').unwrap();
            assert!(ms.parse::<f64>().is_ok_and(|ms| ms >= 0.0), "{kv}");
            name
        })
        .collect();
    for phase in [
        "init",
        "read-push",
        "git-spawn",
        "config",
        "policies",
        "tracker",
        "git-walk",
        "rules",
        "decision-log",
        "total",
    ] {
        assert!(names.contains(&phase), "{phase} missing from {names:?}");
    }
    assert_eq!(names.last(), Some(&"total"));

    commit(&api, "alice", "more.txt", "more\n", "TASK-1 more").unwrap();
    let p = push_env(
        &api,
        &[("GL_USER", "alice"), ("LOCKSTEP_HOOK_TIMINGS", "0")],
        &["feature/TASK-1-login"],
    );
    assert!(p.accepted, "{}", p.stderr);
    assert_eq!(p.remote(), Vec::<String>::new());
}

#[test]
fn commit_that_forgets_its_task_is_accepted_with_a_warning() {
    let env = Env::new(&["api"]);
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    commit(&api, "alice", "form.html", "<form>\n", "login form").unwrap();
    let p = push_as(&api, "alice", &["feature/TASK-1-login"]);
    assert!(p.accepted, "{}", p.stderr);
    let short = &head(&api, "HEAD")[..10];
    assert_eq!(
        p.remote(),
        [format!(
            "lockstep: warning: refs/heads/feature/TASK-1-login: [commit-mentions-task] \
             commit {short} `login form` does not mention `TASK-1`"
        )]
    );
    assert_eq!(
        env.rev("api", "refs/heads/feature/TASK-1-login"),
        Some(head(&api, "HEAD"))
    );
}

#[test]
fn developer_push_to_master_is_rejected() {
    let env = Env::new(&["api"]);
    let before = env.rev("api", "master");
    let api = env.sb.clone_for("api", "alice").unwrap();
    commit(&api, "alice", "hotfix.txt", "quick\n", "TASK-1 quick fix").unwrap();
    let p = push_as(&api, "alice", &["master"]);
    assert!(!p.accepted);
    assert!(
        p.remote_text().contains(
            "refs/heads/master: [protected-branch-writers] only `lockstep-bot` and the \
             maintainers may update `master`; push your work to a task branch and ask for a \
             delivery with `git push -o deliver`"
        ),
        "{}",
        p.stderr
    );
    assert_eq!(env.rev("api", "master"), before);
}

#[test]
fn bot_push_to_master_is_accepted() {
    let env = Env::new(&["api"]);
    let bot = env.sb.clone_for("api", "lockstep-bot").unwrap();
    commit(
        &bot,
        "lockstep-bot",
        "CHANGELOG",
        "TASK-1\n",
        "TASK-1 changelog",
    )
    .unwrap();
    let p = push_as(&bot, "lockstep-bot", &["master"]);
    assert!(p.accepted, "{}", p.stderr);
    assert_eq!(env.rev("api", "master"), Some(head(&bot, "HEAD")));
}

#[test]
fn maintainer_push_to_master_is_accepted() {
    let env = Env::new(&["api"]);
    let lead = env.sb.clone_for("api", "release-lead").unwrap();
    commit(&lead, "release-lead", "VERSION", "1.0.1\n", "release 1.0.1").unwrap();
    let p = push_as(&lead, "release-lead", &["master"]);
    assert!(p.accepted, "{}", p.stderr);
    assert_eq!(env.rev("api", "master"), Some(head(&lead, "HEAD")));
}

#[test]
fn force_push_to_master_is_rejected_even_for_the_bot() {
    let env = Env::new(&["api"]);
    let bot = env.sb.clone_for("api", "lockstep-bot").unwrap();
    let before = env.rev("api", "master");
    // A rewrite: a new root-level history that does not contain master.
    git(&bot, "lockstep-bot")
        .run(&["commit", "-q", "--amend", "-m", "rewritten"])
        .unwrap();
    let p = push_as(&bot, "lockstep-bot", &["--force", "master"]);
    assert!(!p.accepted);
    assert!(
        p.remote_text().contains(
            "refs/heads/master: [protected-branch-history] nobody force-pushes `master`; fetch \
             it, rebase your work onto it, and deliver"
        ),
        "{}",
        p.stderr
    );
    assert_eq!(env.rev("api", "master"), before);
}

#[test]
fn bot_may_rewind_master_only_with_the_undo_option() {
    let env = Env::new(&["api"]);
    let bot = env.sb.clone_for("api", "lockstep-bot").unwrap();
    let start = env.rev("api", "master").unwrap();
    commit(&bot, "lockstep-bot", "a.txt", "a\n", "TASK-1 a").unwrap();
    assert!(push_as(&bot, "lockstep-bot", &["master"]).accepted);
    let back = format!("{start}:refs/heads/master");

    let p = push_as(&bot, "lockstep-bot", &["--force", &back]);
    assert!(!p.accepted);
    assert!(
        p.remote_text().contains("nobody force-pushes `master`"),
        "{}",
        p.stderr
    );
    assert_ne!(env.rev("api", "master").as_deref(), Some(start.as_str()));

    let p = push_as(
        &bot,
        "lockstep-bot",
        &["--force", "-o", "lockstep-undo", &back],
    );
    assert!(p.accepted, "{}", p.stderr);
    assert_eq!(env.rev("api", "master"), Some(start.clone()));

    // The option is the bot's alone.
    let lead = env.sb.clone_for("api", "release-lead").unwrap();
    commit(&lead, "release-lead", "b.txt", "b\n", "b").unwrap();
    assert!(push_as(&lead, "release-lead", &["master"]).accepted);
    let p = push_as(
        &lead,
        "release-lead",
        &["--force", "-o", "lockstep-undo", &back],
    );
    assert!(!p.accepted, "{}", p.stderr);
    assert_eq!(env.rev("api", "master"), Some(head(&lead, "HEAD")));
}

#[test]
fn deleting_master_is_rejected_even_for_the_bot() {
    let env = Env::new(&["api"]);
    let bot = env.sb.clone_for("api", "lockstep-bot").unwrap();
    let before = env.rev("api", "master");
    for user in ["lockstep-bot", "release-lead", "alice"] {
        let p = push_as(&bot, user, &[":master"]);
        assert!(!p.accepted, "{user}: {}", p.stderr);
        assert!(
            p.remote_text()
                .contains("refs/heads/master: [protected-branch-history] nobody deletes `master`"),
            "{user}: {}",
            p.stderr
        );
        assert_eq!(env.rev("api", "master"), before, "{user}");
    }
}

#[test]
fn one_bad_ref_rejects_the_whole_push() {
    let env = Env::new(&["api"]);
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    git(&api, "alice")
        .run(&["branch", "fix-login", "HEAD"])
        .unwrap();
    git(&api, "alice").run(&["tag", "v1.0", "HEAD"]).unwrap();
    let p = push_as(
        &api,
        "alice",
        &["feature/TASK-1-login", "fix-login", "v1.0"],
    );
    assert!(!p.accepted);
    // Only the bad ref is named as the reason; git reports every ref as declined.
    assert_eq!(
        p.remote(),
        [
            "lockstep: push rejected",
            "  refs/heads/fix-login: [branch-names-a-task] branch `fix-login` names no task; \
             push it as `feature/TASK-123-short-name`",
        ]
    );
    assert_eq!(p.stderr.matches("(pre-receive hook declined)").count(), 3);
    assert_eq!(env.rev("api", "refs/heads/feature/TASK-1-login"), None);
    assert_eq!(env.rev("api", "refs/heads/fix-login"), None);
    assert_eq!(env.rev("api", "refs/tags/v1.0"), None);
}

#[test]
fn several_bad_refs_are_all_reported() {
    let env = Env::new(&["api"]);
    let api = env.clone_on_branch("api", "alice", "fix-login", "fix");
    git(&api, "alice")
        .run(&["branch", "feature/TASK-2-search", "HEAD"])
        .unwrap();
    let p = push_as(
        &api,
        "alice",
        &["fix-login", "feature/TASK-2-search", "HEAD:master"],
    );
    assert!(!p.accepted);
    let text = p.remote_text();
    for want in [
        "refs/heads/fix-login: [branch-names-a-task]",
        "refs/heads/feature/TASK-2-search: [task-in-progress] task `TASK-2` is To Do",
        "refs/heads/master: [protected-branch-writers]",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    assert_eq!(text.matches("lockstep: push rejected").count(), 1, "{text}");
}

#[test]
fn tags_are_created_by_anyone_never_moved_and_deleted_by_maintainers() {
    let env = Env::new(&["api"]);
    let api = env.sb.clone_for("api", "alice").unwrap();
    let g = git(&api, "alice");
    g.run(&["tag", "v1.0"]).unwrap();
    g.run(&["tag", "-a", "-m", "release 1.1", "v1.1"]).unwrap();
    let p = push_as(&api, "alice", &["v1.0", "v1.1"]);
    assert!(p.accepted, "{}", p.stderr);
    assert_eq!(p.remote(), Vec::<String>::new());
    let master = env.rev("api", "master");
    assert_eq!(env.rev("api", "refs/tags/v1.0"), master);
    assert_eq!(
        env.rev("api", "refs/tags/v1.1"),
        master,
        "peeled to the commit"
    );

    // Moving a tag, even by force, is refused; so is deleting one, except by a maintainer.
    commit(&api, "alice", "later.txt", "later\n", "later").unwrap();
    g.run(&["tag", "-f", "v1.0"]).unwrap();
    let p = push_as(&api, "alice", &["--force", "v1.0"]);
    assert!(!p.accepted);
    assert_eq!(
        p.remote(),
        [
            "lockstep: push rejected",
            "  refs/tags/v1.0: [tags-stay-put] tag `v1.0` already exists and tags do not move; \
             push a new tag instead",
        ]
    );
    assert_eq!(env.rev("api", "refs/tags/v1.0"), master);
    let p = push_as(&api, "alice", &[":refs/tags/v1.0"]);
    assert!(!p.accepted);
    assert!(
        p.remote_text()
            .contains("[tags-stay-put] only the maintainers delete tag `v1.0`; ask one of them"),
        "{}",
        p.stderr
    );
    let p = push_as(
        &api,
        "release-lead",
        &[":refs/tags/v1.0", ":refs/tags/v1.1"],
    );
    assert!(p.accepted, "{}", p.stderr);
    assert_eq!(env.rev("api", "refs/tags/v1.0"), None);
    assert_eq!(env.rev("api", "refs/tags/v1.1"), None);
}

#[test]
fn task_branches_can_be_deleted_whatever_the_task_status() {
    let env = Env::new(&["api"]);
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    assert!(push_as(&api, "alice", &["feature/TASK-1-login"]).accepted);
    assert!(env.rev("api", "refs/heads/feature/TASK-1-login").is_some());

    // The task is done (or gone): cleaning up its branch is still allowed.
    env.set_tasks("[TASK-1]\nstatus = \"Closed\"\n");
    let p = push_as(&api, "alice", &[":feature/TASK-1-login"]);
    assert!(p.accepted, "{}", p.stderr);
    assert_eq!(p.remote(), Vec::<String>::new());
    assert_eq!(env.rev("api", "refs/heads/feature/TASK-1-login"), None);
}

#[test]
fn push_options_reach_the_policies() {
    let env = Env::new(&["api"]);
    // A custom policy folder next to the shipped one.
    let extra = env.dir.path().join("extra-policies");
    std::fs::create_dir(&extra).unwrap();
    std::fs::write(
        extra.join("60-options.toml"),
        r#"
[[rule]]
name = "no-wip"
on = ["push"]
require = '!("wip" in push_options)'
message = "push options {push_options}: `wip` work stays on your machine"
"#,
    )
    .unwrap();
    env.edit_config(|config| {
        format!(
            "[policies]\ndirs = [\"policies\", \"{}\"]\n\n{config}",
            extra.display()
        )
    });
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");

    let p = push_as(
        &api,
        "alice",
        &["-o", "ci.skip", "-o", "wip", "feature/TASK-1-login"],
    );
    assert!(!p.accepted);
    assert!(
        p.remote_text().contains(
            "refs/heads/feature/TASK-1-login: [no-wip] push options ci.skip, wip: `wip` work \
             stays on your machine"
        ),
        "{}",
        p.stderr
    );
    assert_eq!(env.rev("api", "refs/heads/feature/TASK-1-login"), None);

    let p = push_as(&api, "alice", &["-o", "ci.skip", "feature/TASK-1-login"]);
    assert!(p.accepted, "{}", p.stderr);
    assert_eq!(
        env.rev("api", "refs/heads/feature/TASK-1-login"),
        Some(head(&api, "HEAD"))
    );
}

/// A master push is the bot's (accepted) or a developer's (rejected) depending only on the
/// one identity variable set.
fn identity_from(var: &str) {
    let env = Env::new(&["api"]);
    let bot = env.sb.clone_for("api", "lockstep-bot").unwrap();
    commit(&bot, "lockstep-bot", "a.txt", "a\n", "TASK-1 a").unwrap();

    let p = push_env(&bot, &[(var, "alice")], &["master"]);
    assert!(!p.accepted, "{var}=alice: {}", p.stderr);
    assert!(
        p.remote_text().contains("[protected-branch-writers]"),
        "{var}: {}",
        p.stderr
    );

    let p = push_env(&bot, &[(var, "lockstep-bot")], &["master"]);
    assert!(p.accepted, "{var}=lockstep-bot: {}", p.stderr);
    assert_eq!(env.rev("api", "master"), Some(head(&bot, "HEAD")), "{var}");
}

#[test]
fn identity_from_gitolite_gl_user() {
    identity_from("GL_USER");
}

#[test]
fn identity_from_gitlab_gl_username() {
    identity_from("GL_USERNAME");
}

#[test]
fn identity_from_github_user_login() {
    identity_from("GITHUB_USER_LOGIN");
}

#[test]
fn identity_from_gitea_pusher_name() {
    identity_from("GITEA_PUSHER_NAME");
}

#[test]
fn identity_from_http_remote_user() {
    identity_from("REMOTE_USER");
}

#[test]
fn first_identity_variable_wins() {
    let env = Env::new(&["api"]);
    let bot = env.sb.clone_for("api", "lockstep-bot").unwrap();
    commit(&bot, "lockstep-bot", "a.txt", "a\n", "TASK-1 a").unwrap();
    // `GL_USER` comes before `REMOTE_USER` in the default `[identity] env`.
    let p = push_env(
        &bot,
        &[("GL_USER", "alice"), ("REMOTE_USER", "lockstep-bot")],
        &["master"],
    );
    assert!(!p.accepted, "{}", p.stderr);
    // An empty variable counts as unset.
    let p = push_env(
        &bot,
        &[("GL_USER", ""), ("REMOTE_USER", "lockstep-bot")],
        &["master"],
    );
    assert!(p.accepted, "{}", p.stderr);
}

#[test]
fn unknown_pusher_is_nobody_in_particular() {
    let env = Env::new(&["api"]);
    let bot = env.sb.clone_for("api", "lockstep-bot").unwrap();
    commit(&bot, "lockstep-bot", "a.txt", "a\n", "TASK-1 a").unwrap();
    let before = env.rev("api", "master");
    let none: &[(&str, &str)] = &[];
    let p = push_env(&bot, none, &["master"]);
    assert!(!p.accepted);
    // The refusal says why: the pusher is unknown, not someone who may not push here.
    assert!(
        p.remote_text().contains(
            "[protected-branch-writers] no pusher identity: lockstep cannot tell who pushes, so \
             nobody may update `master` with this push; have the git server authenticate \
             pushers and name them (see docs/install.md#who-is-pushing)"
        ),
        "{}",
        p.stderr
    );
    assert_eq!(env.rev("api", "master"), before);

    // Task branches do not depend on who pushes.
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    let p = push_env(&api, none, &["feature/TASK-1-login"]);
    assert!(p.accepted, "{}", p.stderr);
}

#[test]
fn custom_identity_variable_is_honoured() {
    let env = Env::new(&["api"]);
    env.edit_config(|config| format!("[identity]\nenv = [\"SSO_LOGIN\"]\n\n{config}"));
    let bot = env.sb.clone_for("api", "lockstep-bot").unwrap();
    commit(&bot, "lockstep-bot", "a.txt", "a\n", "TASK-1 a").unwrap();
    // `GL_USER` is no longer read at all.
    let p = push_env(&bot, &[("GL_USER", "lockstep-bot")], &["master"]);
    assert!(!p.accepted, "{}", p.stderr);
    let p = push_env(&bot, &[("SSO_LOGIN", "lockstep-bot")], &["master"]);
    assert!(p.accepted, "{}", p.stderr);
}

#[test]
fn gitlab_sees_every_rejection_line_prefixed() {
    let env = Env::new(&["api"]);
    let api = env.clone_on_branch("api", "alice", "fix-login", "fix");
    let gitlab = [("GL_ID", "user-7"), ("GL_USERNAME", "alice")];
    let p = push_env(&api, &gitlab, &["fix-login", "HEAD:master"]);
    assert!(!p.accepted);
    let mut lines = p.remote();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        assert!(l.starts_with("GL-HOOK-ERR: "), "{l}");
    }
    assert_eq!(lines[0], "GL-HOOK-ERR: lockstep: push rejected");
    // git sends the refs in its own order.
    lines[1..].sort();
    assert!(
        lines[1].starts_with("GL-HOOK-ERR:   refs/heads/fix-login: [branch-names-a-task]"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("GL-HOOK-ERR:   refs/heads/master: [protected-branch-writers]"),
        "{lines:?}"
    );

    // Without `GL_ID`, no prefix.
    let p = push_env(&api, &[("GL_USERNAME", "alice")], &["fix-login"]);
    assert!(!p.accepted);
    assert!(!p.stderr.contains("GL-HOOK-ERR"), "{}", p.stderr);
}

#[test]
fn gitlab_sees_a_broken_config_prefixed_too() {
    let env = Env::new(&["api"]);
    env.set_config("[bot]\nusr = \"x\"\n");
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    let p = push_env(
        &api,
        &[("GL_ID", "user-7"), ("GL_USERNAME", "alice")],
        &["feature/TASK-1-login"],
    );
    assert!(!p.accepted);
    let lines = p.remote();
    assert!(lines.len() > 1, "{lines:?}");
    for l in &lines {
        assert!(l.starts_with("GL-HOOK-ERR: "), "{l}");
    }
    assert!(
        p.remote_text().contains("unknown field `usr`"),
        "{}",
        p.stderr
    );
}

#[test]
fn warnings_alone_do_not_reject_and_rejections_keep_them() {
    let env = Env::new(&["api"]);
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "no key");
    git(&api, "alice")
        .run(&["branch", "fix-login", "HEAD"])
        .unwrap();
    let p = push_as(&api, "alice", &["feature/TASK-1-login", "fix-login"]);
    assert!(!p.accepted);
    let lines = p.remote();
    assert!(
        lines[0].starts_with(
            "lockstep: warning: refs/heads/feature/TASK-1-login: [commit-mentions-task]"
        ),
        "{lines:?}"
    );
    assert_eq!(lines[1], "lockstep: push rejected");
}

#[test]
fn rejection_text_snapshot() {
    let env = Env::new(&["api"]);
    let api = env.clone_on_branch("api", "alice", "fix-login", "fix the login form");
    let g = git(&api, "alice");
    g.run(&["branch", "feature/TASK-2-search", "HEAD"]).unwrap();
    g.run(&["branch", "feature/TASK-99-typo", "HEAD"]).unwrap();
    let p = push_as(
        &api,
        "alice",
        &[
            "fix-login",
            "feature/TASK-2-search",
            "feature/TASK-99-typo",
            "HEAD:master",
        ],
    );
    assert!(!p.accepted);
    insta::assert_snapshot!("rejection", env.redact(&p.remote_text()));
}

/// Issue 9: a push with `-o deliver` that brings two branches of one task, with another task's
/// branch between them, asks the tracker and the queue about each task once: one delivery
/// per task, one line per task for the pusher.
#[test]
fn issue9_two_branches_of_one_task_in_one_push_queue_one_delivery() {
    let env = Env::new(&["api"]);
    env.set_status(&[("TASK-1", "In Progress"), ("TASK-3", "In Progress")]);
    let api = env.sb.clone_for("api", "alice").unwrap();
    let g = git(&api, "alice");
    // git hands the hooks the refs in this order: the TASK-1 branches are not neighbours.
    let branches = [
        ("bugfix/TASK-1-login", "TASK-1"),
        ("feature/TASK-3-search", "TASK-3"),
        ("hotfix/TASK-1-typo", "TASK-1"),
    ];
    for (i, (branch, task)) in branches.iter().enumerate() {
        g.run(&["switch", "--quiet", "-c", branch, "origin/master"])
            .unwrap();
        commit(
            &api,
            "alice",
            &format!("{i}.txt"),
            "work\n",
            &format!("{task} work"),
        )
        .unwrap();
    }
    let mut args = vec!["-o", "deliver"];
    args.extend(branches.iter().map(|(b, _)| *b));
    let p = push_as(&api, "alice", &args);
    assert!(p.accepted, "{}", p.stderr);
    for (task, id) in [("TASK-1", 1), ("TASK-3", 2)] {
        let about: Vec<String> = p
            .remote()
            .into_iter()
            .filter(|l| l.contains(&format!("`{task}`")))
            .collect();
        assert_eq!(about.len(), 1, "{task}: {about:?}");
        assert!(
            about[0].starts_with(&format!("lockstep: delivery #{id} of `{task}` queued")),
            "{about:?}"
        );
    }

    // The background worker works off the queue: two deliveries, none more. (TASK-1's, with two
    // branches in one repository, stops at the rebase; that is the delivery line's business.)
    let finished = wait_for("the background worker to empty the queue", || {
        let q = env.queue();
        let idle = q["running"].as_array()?.is_empty() && q["queued"].as_array()?.is_empty();
        idle.then(|| q["recent"].as_array().cloned()).flatten()
    });
    let mut ran: Vec<(i64, String)> = finished
        .iter()
        .map(|d| {
            (
                d["id"].as_i64().unwrap(),
                d["task"].as_str().unwrap().into(),
            )
        })
        .collect();
    ran.sort();
    assert_eq!(ran, [(1, "TASK-1".to_string()), (2, "TASK-3".to_string())]);
}
