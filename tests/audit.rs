//! The decision log, `lockstep audit` and `lockstep policy replay`, on real pushes through the
//! real hooks.

use crate::util::*;

fn audit_json(env: &Env, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["audit", "--json"];
    all.extend_from_slice(args);
    let o = env.lockstep(&all);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn accepted_and_refused_pushes_are_logged_with_every_verdict() {
    let env = Env::new(&["api"]);
    let good = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    assert!(push_as(&good, "alice", &["feature/TASK-1-login"]).accepted);
    let bad = env.clone_on_branch("api", "bob", "fix-login", "fix");
    assert!(!push_as(&bad, "bob", &["fix-login"]).accepted);

    let lines = audit_json(&env, &[]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (accepted, refused) = (&lines[0], &lines[1]);
    assert_eq!(accepted["stage"], "push");
    assert_eq!(accepted["repo"], "api");
    assert_eq!(accepted["pusher"], "alice");
    assert_eq!(accepted["accepted"], true);
    assert_eq!(accepted["tasks"]["TASK-1"]["status"], "In Progress");
    let r = &accepted["refs"][0];
    assert_eq!(r["ref"], "refs/heads/feature/TASK-1-login");
    assert_eq!(r["old"], ZERO);
    assert_eq!(r["new"], head(&good, "HEAD"));
    let verdict = |rule: &str| {
        r["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["rule"] == rule)
            .cloned()
            .unwrap()
    };
    assert_eq!(verdict("task-in-progress")["verdict"], "pass");
    assert_eq!(verdict("protected-branch-writers")["verdict"], "skip");
    let revision = accepted["revision"].as_str().unwrap();
    assert_eq!(revision.len(), 12, "{revision}");
    assert!(revision.bytes().all(|b| b.is_ascii_hexdigit()));

    assert_eq!(refused["pusher"], "bob");
    assert_eq!(refused["accepted"], false);
    assert_eq!(refused["revision"], revision);
    let denied: Vec<&serde_json::Value> = refused["refs"][0]["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["verdict"] == "deny")
        .collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["rule"], "branch-names-a-task");
    assert_eq!(
        denied[0]["messages"][0],
        "branch `fix-login` names no task; push it as `feature/TASK-123-short-name`"
    );

    // The filters.
    assert_eq!(
        audit_json(&env, &["--rule", "branch-names-a-task"]).len(),
        1
    );
    assert_eq!(audit_json(&env, &["--repo", "web"]).len(), 0);
    assert_eq!(audit_json(&env, &["--since", "1h"]).len(), 2);

    // For people: one line per push, per ref, per rule that refused or warned.
    let o = env.lockstep(&["audit", "--rule", "branch-names-a-task"]);
    let text = redact_ids(&stdout(&o));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].ends_with(&format!(
            "  push     api  bob  rejected  (policies {revision})"
        )),
        "{text}"
    );
    assert_eq!(
        lines[1],
        "  refs/heads/fix-login 0000000000 → [sha]  rejected"
    );
    assert_eq!(
        lines[2],
        "    deny  [branch-names-a-task]  branch `fix-login` names no task; push it as \
         `feature/TASK-123-short-name`"
    );
}

#[test]
fn delivery_decisions_are_logged() {
    let env = Env::new(&["api"]);
    env.set_status(&[("TASK-2", "In Progress")]);
    env.task_branch("api", "feature/TASK-2-x", "x.txt", "x\n");
    // TASK-2 is not For Delivery: refused.
    let o = env.lockstep(&["deliver", "TASK-2"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let lines = audit_json(&env, &["--rule", "task-for-delivery"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["stage"], "deliver");
    assert_eq!(lines[0]["task"], "TASK-2");
    assert_eq!(lines[0]["pusher"], "release-lead");
    assert_eq!(lines[0]["accepted"], false);
    assert_eq!(
        lines[0]["verdicts"][0]["messages"][0],
        "task `TASK-2` is In Progress; move it to For Delivery first"
    );
}

#[test]
fn audit_output_escapes_what_the_pusher_wrote() {
    let env = Env::new(&["api"]);
    let api = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    commit(
        &api,
        "alice",
        "x.txt",
        "x\n",
        "paint \u{1b}[31mred\u{1b}[0m",
    )
    .unwrap();
    assert!(push_as(&api, "alice", &["feature/TASK-1-login"]).accepted);
    let o = env.lockstep(&["audit"]);
    let text = stdout(&o);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(
        text.contains("`paint \\x1b[31mred\\x1b[0m` does not mention `TASK-1`"),
        "{text}"
    );
}

/// Five pushes recorded, one more whose objects are gone since; a stricter candidate rule
/// (no `WIP` commits) would have refused two of the five, and the replay says which.
#[test]
fn replay_names_the_pushes_a_stricter_rule_would_refuse() {
    let env = Env::new(&["api"]);
    let api = env.sb.clone_for("api", "alice").unwrap();
    let g = git(&api, "alice");
    for (i, summary) in [
        "TASK-1 a",
        "WIP TASK-1 b",
        "TASK-1 c",
        "WIP TASK-1 d",
        "TASK-1 e",
        "TASK-1 gone",
    ]
    .iter()
    .enumerate()
    {
        let branch = format!("feature/TASK-1-{i}");
        g.run(&["switch", "-q", "-c", &branch, "origin/master"])
            .unwrap();
        commit(&api, "alice", &format!("{i}.txt"), "x\n", summary).unwrap();
        assert!(push_as(&api, "alice", &[&branch]).accepted);
    }
    // The last branch is deleted and its objects pruned.
    env.git_in("api", &["update-ref", "-d", "refs/heads/feature/TASK-1-5"]);
    env.git_in("api", &["reflog", "expire", "--expire=now", "--all"]);
    env.git_in("api", &["gc", "--quiet", "--prune=now"]);

    // Against the policies as they are, nothing changes.
    let o = env.lockstep(&["policy", "replay"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(
            "replayed 6 push(es): 0 accepted then would be refused now, 0 refused then would be \
             accepted now, 1 not replayable"
        ),
        "{}",
        stdout(&o)
    );

    let candidate = env.dir.path().join("candidate");
    std::fs::create_dir_all(&candidate).unwrap();
    for f in std::fs::read_dir(env.sb.meta.join("policies")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, candidate.join(f.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        candidate.join("45-no-wip.toml"),
        "[[rule]]\nname = \"no-wip\"\non = [\"push\"]\neach = \"commit\"\n\
         require = '!commit.summary.startsWith(\"WIP\")'\n\
         message = \"commit {commit.short_id} is a work in progress\"\n",
    )
    .unwrap();
    let o = env
        .command(&["policy", "replay", "--policies"])
        .arg(&candidate)
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let text = redact_ids(&stdout(&o));
    let body: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| {
            // The times differ from run to run.
            regex::Regex::new(r"^  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
                .unwrap()
                .replace(l, "  [time]")
                .into_owned()
        })
        .collect();
    assert_eq!(
        body,
        [
            "replayed 6 push(es): 2 accepted then would be refused now, 0 refused then would be \
             accepted now, 1 not replayable",
            "",
            "accepted then, refused now:",
            "  [time]  api  alice",
            "    refs/heads/feature/TASK-1-1 0000000000 → [sha]",
            "      deny [no-wip] commit [sha] is a work in progress",
            "  [time]  api  alice",
            "    refs/heads/feature/TASK-1-3 0000000000 → [sha]",
            "      deny [no-wip] commit [sha] is a work in progress",
            "",
            "not replayable:",
            "  [time]  api  alice",
            "    refs/heads/feature/TASK-1-5 [sha]",
            "    objects gone: [sha]",
        ]
    );
}

/// A candidate with no push rule would make every hook refuse to decide, so replaying it as if
/// it accepted everything would mislead: it is refused as the hook refuses it.
#[test]
fn replay_refuses_a_candidate_without_push_rules() {
    let env = Env::new(&["api"]);
    let empty = env.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = env
        .command(&["policy", "replay", "--policies"])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("the candidate policies: no rule applies to pushes"),
        "{}",
        stderr(&o)
    );
}

/// The SHA-256 (hex) of a line, as the next line's `prev` names it.
fn line_hash(line: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(line.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn verify(env: &Env) -> (i32, String) {
    let o = env.lockstep(&["audit", "--verify"]);
    (code(&o), format!("{}{}", stdout(&o), stderr(&o)))
}

/// Three pushes logged: the log verifies, and a line edited, deleted, or forged and inserted
/// (well-formed and chained to the line before it) each fails `--verify`, naming the line.
#[test]
fn verify_names_the_line_edited_deleted_or_inserted() {
    let env = Env::new(&["api"]);
    let good = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    assert!(push_as(&good, "alice", &["feature/TASK-1-login"]).accepted);
    let bad = env.clone_on_branch("api", "bob", "fix-login", "fix");
    assert!(!push_as(&bad, "bob", &["fix-login"]).accepted);
    assert!(!push_as(&bad, "bob", &["fix-login"]).accepted);

    let log = env.state_dir().join("decisions.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    let (c, out) = verify(&env);
    assert_eq!(c, 0, "{out}");
    assert!(
        out.starts_with("verified 3 entries of the decision log\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("head {}: keep it elsewhere", line_hash(lines[2]))),
        "{out}"
    );
    for l in audit_json(&env, &[]) {
        assert_eq!(l["verified"], true, "{l}");
        assert_eq!(l["prev"].as_str().unwrap().len(), 64, "{l}");
    }

    let tampered = |lines: &[String], want: &str| {
        std::fs::write(&log, lines.join("\n") + "\n").unwrap();
        let (c, out) = verify(&env);
        assert_eq!(c, 1, "{out}");
        assert!(
            out.starts_with(&format!("the decision log's chain is broken: {want}")),
            "{out}"
        );
    };
    let owned: Vec<String> = lines.iter().map(|l| l.to_string()).collect();

    // Line 1 says bob was alice.
    let mut edited = owned.clone();
    edited[0] = edited[0].replace("\"pusher\":\"alice\"", "\"pusher\":\"bob\"");
    assert_ne!(edited[0], owned[0]);
    tampered(
        &edited,
        "`decisions.jsonl` line 2 does not chain to `decisions.jsonl` line 1: that line was \
         edited, or a line after it deleted",
    );
    // Plain `audit` still shows the log, the edited line marked.
    let o = env.lockstep(&["audit"]);
    assert_eq!(code(&o), 0);
    let shown = stdout(&o);
    let firsts: Vec<&str> = shown.lines().filter(|l| !l.starts_with(' ')).collect();
    assert!(
        firsts.iter().all(|l| l.ends_with("  unverified")),
        "{shown}"
    );
    assert!(
        stderr(&o)
            .contains("lockstep: the decision log's chain is broken: `decisions.jsonl` line 2"),
        "{}",
        stderr(&o)
    );

    // The second push's line is gone.
    let mut deleted = owned.clone();
    deleted.remove(1);
    tampered(
        &deleted,
        "`decisions.jsonl` line 2 does not chain to `decisions.jsonl` line 1",
    );

    // A forged line, well-formed and chained to line 1, says alice pushed again.
    let mut forged: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    forged["prev"] = line_hash(lines[0]).into();
    forged["refs"][0]["ref"] = "refs/heads/master".into();
    let mut inserted = owned.clone();
    inserted.insert(1, forged.to_string());
    tampered(
        &inserted,
        "`decisions.jsonl` line 3 chains to `decisions.jsonl` line 1, not to `decisions.jsonl` \
         line 2: `decisions.jsonl` line 2 was inserted",
    );

    // Put back, it verifies again.
    std::fs::write(&log, &text).unwrap();
    assert_eq!(verify(&env).0, 0);
}

/// A log written before the chain (lines without `prev`) followed by chained lines verifies,
/// the old lines counted apart and marked.
#[test]
fn a_log_from_before_the_chain_verifies_with_a_note() {
    let env = Env::new(&["api"]);
    let good = env.clone_on_branch("api", "alice", "feature/TASK-1-login", "TASK-1 log in");
    assert!(push_as(&good, "alice", &["feature/TASK-1-login"]).accepted);
    // The line as this version of lockstep wrote it, less its link.
    let log = env.state_dir().join("decisions.jsonl");
    let mut old: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim_end()).unwrap();
    old.as_object_mut().unwrap().remove("prev");
    std::fs::write(&log, format!("{old}\n{old}\n")).unwrap();
    let bad = env.clone_on_branch("api", "bob", "fix-login", "fix");
    assert!(!push_as(&bad, "bob", &["fix-login"]).accepted);

    let (c, out) = verify(&env);
    assert_eq!(c, 0, "{out}");
    assert!(
        out.starts_with("verified 1 entry of the decision log\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "note: cannot be verified: the first 2 entries, logged before the decision log was \
             chained"
        ),
        "{out}"
    );
    let verified: Vec<bool> = audit_json(&env, &[])
        .iter()
        .map(|l| l["verified"].as_bool().unwrap())
        .collect();
    assert_eq!(verified, [false, false, true]);
    let o = env.lockstep(&["audit"]);
    let err = stderr(&o);
    assert_eq!(
        err.matches("before the decision log was chained").count(),
        1,
        "{err}"
    );
}

/// 50 hooks deciding at once: every decision is logged, in one chain.
#[test]
fn concurrent_pushes_are_all_logged_in_one_chain() {
    let env = Env::new(&["api"]);
    let (bare, cfg, master) = (env.bare("api"), env.config(), env.master("api"));
    std::thread::scope(|s| {
        for i in 0..50 {
            let (bare, cfg, master) = (&bare, &cfg, &master);
            s.spawn(move || {
                let input = format!("{ZERO} {master} refs/tags/v{i}\n");
                let o = run_hook(
                    bare,
                    Some(cfg),
                    &["pre-receive"],
                    &[("GL_USER", "alice")],
                    input.as_bytes(),
                );
                assert_eq!(code(&o), 0, "{}", stderr(&o));
            });
        }
    });
    let (c, out) = verify(&env);
    assert_eq!(c, 0, "{out}");
    assert!(
        out.starts_with("verified 50 entries of the decision log\n"),
        "{out}"
    );
}
