//! `lockstep demo`: a narrated tour on a sandbox with no external service.
//!
//! Two bare repositories guarded by the real hooks, the file tracker, the shipped policies,
//! and a series of real `git push`es whose outcomes are checked as they are told: the demo
//! exits 1 if anything behaves otherwise than narrated, so it doubles as a smoke test.
//!
//! - `sandbox`: the sandbox the tour runs in, and the git helpers the tests reuse.

mod sandbox;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

pub use sandbox::{POLICIES, Pushed, Sandbox, commit, push, sandbox_git};
use sandbox::{approve, approve_everywhere};

use crate::config::Config;
use crate::delivery::{self, Request, Requested, worker};
use crate::domain::{Source, State};
use crate::exit::Exit;
use crate::tracker::file::FileTracker;

/// One act of the tour: what it shows, and the command it runs.
pub struct Act {
    pub title: &'static str,
    pub command: &'static str,
}

/// The tour's acts, in the order they run. The narrator numbers them as they run, and the
/// tour does not go as told unless every one of them ran.
pub const ACTS: &[Act] = &[
    Act {
        title: "alice pushes a branch that names no task",
        command: "git push origin fix-login",
    },
    Act {
        title: "alice pushes TASK-2's branch, but TASK-2 is still To Do",
        command: "git push origin feature/TASK-2-search",
    },
    Act {
        title: "alice pushes TASK-1's branch to api; TASK-1 is In Progress",
        command: "git push origin feature/TASK-1-login",
    },
    Act {
        title: "alice pushes TASK-1's branch to web (a commit that forgets the task: a warning)",
        command: "git push origin feature/TASK-1-login",
    },
    Act {
        title: "alice pushes straight to master",
        command: "git push origin master",
    },
    Act {
        title: "lockstep-bot pushes master",
        command: "git push origin master",
    },
    Act {
        title: "even the bot cannot force-push master",
        command: "git push --force origin master",
    },
    Act {
        title: "alice approves her own TASK-1 branch: authors do not review their own work",
        command: "git push origin origin/feature/TASK-1-login:refs/approvals/TASK-1/alice",
    },
    Act {
        title: "bob and carol review TASK-1 and approve its head in api and web",
        command: "git push origin origin/feature/TASK-1-login:refs/approvals/TASK-1/bob",
    },
    Act {
        title: "TASK-1 is moved to For Delivery; the bot delivers it across api and web",
        command: "lockstep deliver TASK-1",
    },
    Act {
        title: "TASK-3 changes api and web; web's smoke test fails once deployed",
        command: "lockstep deliver TASK-3",
    },
];

struct Narrator {
    acts: &'static [Act],
    /// How many acts have begun.
    ran: usize,
    failures: Vec<String>,
}

impl Narrator {
    fn new(acts: &'static [Act]) -> Narrator {
        Narrator {
            acts,
            ran: 0,
            failures: Vec::new(),
        }
    }

    /// Announces the next act.
    fn begin(&mut self) {
        self.ran += 1;
        match self.acts.get(self.ran - 1) {
            Some(act) => {
                println!("\n{}. {}", self.ran, act.title);
                println!("   $ {}", act.command);
            }
            None => {
                println!("\n{}. (an act missing from the list of acts)", self.ran);
                self.failures
                    .push(format!("act {} is missing from the list of acts", self.ran));
            }
        }
    }

    /// Tells how the act under way ended.
    fn check(&mut self, ok: bool, good: &str, bad: &str) {
        if ok {
            println!("   → {good}");
        } else {
            println!("   → NOT as told: {bad}");
            self.failures.push(format!("act {}: {bad}", self.ran));
        }
    }

    /// An act that is one push: begins it and tells whether the push went as the policies say.
    fn push_act(&mut self, pushed: &Pushed, expect_accept: bool) {
        self.begin();
        for line in &pushed.remote {
            println!("   remote: {line}");
        }
        let verdict = if pushed.accepted {
            "accepted"
        } else {
            "rejected"
        };
        if pushed.accepted == expect_accept {
            println!("   → {verdict}, as it should be");
        } else {
            println!("   → {verdict}: NOT what the policies say should happen");
            let title = self.acts.get(self.ran - 1).map_or("", |a| a.title);
            self.failures.push(format!("act {}: {title}", self.ran));
        }
    }

    /// The tour's last line and its exit code: how many acts ran, or what went otherwise
    /// than told, an act of the list that never began included.
    fn closing(&self) -> (String, Exit) {
        let mut failures = self.failures.clone();
        for (i, act) in self.acts.iter().enumerate().skip(self.ran) {
            failures.push(format!("act {} did not run: {}", i + 1, act.title));
        }
        if failures.is_empty() {
            (format!("all {} acts went as told", self.ran), Exit::Success)
        } else {
            (
                format!(
                    "{} act(s) did not go as told: {}",
                    failures.len(),
                    failures.join("; ")
                ),
                Exit::Failed,
            )
        }
    }
}

/// Moves a task in the sandbox's file tracker.
fn set_status(sb: &Sandbox, key: &str, status: &str) -> anyhow::Result<()> {
    let tracker = FileTracker::new(sb.meta.join("tasks.toml"));
    tracker.update(|tasks| {
        if let Some(t) = tasks.get_mut(key) {
            t.status = status.to_string();
        }
        Ok(())
    })?;
    Ok(())
}

/// Delivers a task in this process, narrating each step; returns how it ended and why.
fn deliver(sb: &Sandbox, task: &str) -> anyhow::Result<(State, String)> {
    let config = Config::load(&sb.meta.join("lockstep.toml"))?;
    let rt = crate::runtime::multi_thread(Some(2))?;
    rt.block_on(async {
        let engine = worker::engine(config, Arc::new(|line: &str| println!("   {line}"))).await?;
        let req = Request {
            task: task.into(),
            source: Source::Cli,
            requester: "alice".into(),
            ..Default::default()
        };
        let id = match engine.request(&req).await? {
            Requested::Queued { id, .. } | Requested::AlreadyQueued { id } => id,
            Requested::Refused(d) => anyhow::bail!(
                "the demo's delivery was refused: {}",
                delivery::refusal_lines(&d).join("; ")
            ),
        };
        let lease = worker::try_lead(&engine)
            .await?
            .context("the demo's queue is busy")?;
        worker::work(&engine, &lease, |done, _| done == id, None).await?;
        let d = engine
            .store
            .delivery(id)
            .await?
            .context("the delivery vanished")?;
        Ok((d.state, d.error))
    })
}

/// Where the sandbox lives: the folder `--keep` names, or a temporary one removed on drop.
struct Root {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Root {
    /// The folder `--keep` names (new or empty), or a new temporary folder.
    fn new(keep: Option<&Path>) -> anyhow::Result<Root> {
        match keep {
            Some(dir) => {
                if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
                    anyhow::bail!(
                        "`{}` is not empty; name a new folder for `--keep`",
                        dir.display()
                    );
                }
                std::fs::create_dir_all(dir)?;
                Ok(Root {
                    path: std::path::absolute(dir)?,
                    _temp: None,
                })
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("lockstep-demo-")
                    .tempdir()?;
                Ok(Root {
                    path: temp.path().to_path_buf(),
                    _temp: Some(temp),
                })
            }
        }
    }
}

/// Alice's clones of the two repositories.
struct Clones {
    api: PathBuf,
    web: PathBuf,
}

/// Runs the tour; returns how it ended (success when every act went as told).
pub fn run(keep: Option<&Path>) -> anyhow::Result<Exit> {
    let binary = std::env::current_exe().context("cannot find the lockstep executable")?;
    let dir = Root::new(keep)?;
    let root = dir.path.as_path();
    let sb = Sandbox::create(root, &binary, &["api", "web"])?;
    introduce();
    let mut n = Narrator::new(ACTS);
    let clones = alice_pushes(&sb, &mut n)?;
    bot_pushes(&sb, &mut n)?;
    approval_acts(&sb, &mut n)?;
    println!("\n— second act: delivery, all or nothing —");
    delivery_act(&sb, &mut n)?;
    prepare_task_3(&sb, &clones)?;
    failed_delivery_act(&sb, root, &mut n)?;
    println!();
    if keep.is_some() {
        println!("the sandbox stays in {}", root.display());
        let config = sb.meta.join("lockstep.toml");
        println!("try: lockstep --config {} queue", config.display());
        println!("     lockstep --config {} show 2", config.display());
    }
    let (closing, code) = n.closing();
    println!("{closing}");
    Ok(code)
}

/// The tour's opening lines: what the sandbox holds and who pushes.
fn introduce() {
    println!("lockstep demo: two services, one task tracker, policies in force on every push");
    println!("  repositories  api.git, web.git (hooks installed by `lockstep install-hooks`)");
    println!("  tracker       tasks.toml: TASK-1 In Progress, TASK-2 To Do");
    println!(
        "  policies      {}",
        POLICIES
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  pushing as    alice (a developer); bob and carol (reviewers); lockstep-bot (the bot)"
    );
}

/// Alice's pushes: a branch with no task, a task not started, TASK-1 to both repositories,
/// and straight to master. Returns her clones.
fn alice_pushes(sb: &Sandbox, n: &mut Narrator) -> anyhow::Result<Clones> {
    let api = sb.clone_for("api", "alice")?;
    let web = sb.clone_for("web", "alice")?;

    let git = sandbox_git(&api, "alice");
    git.run(&["switch", "--quiet", "-c", "fix-login"])?;
    commit(&api, "alice", "login.txt", "sso\n", "fix login")?;
    let p = push(&api, "alice", &["fix-login"])?;
    n.push_act(&p, false);

    git.run(&["switch", "--quiet", "-c", "feature/TASK-2-search", "master"])?;
    commit(
        &api,
        "alice",
        "search.txt",
        "search\n",
        "TASK-2 search endpoint",
    )?;
    let p = push(&api, "alice", &["feature/TASK-2-search"])?;
    n.push_act(&p, false);

    git.run(&["switch", "--quiet", "-c", "feature/TASK-1-login", "master"])?;
    commit(
        &api,
        "alice",
        "login.txt",
        "sso\n",
        "TASK-1 log in with SSO",
    )?;
    let p = push(&api, "alice", &["feature/TASK-1-login"])?;
    n.push_act(&p, true);
    let wgit = sandbox_git(&web, "alice");
    wgit.run(&["switch", "--quiet", "-c", "feature/TASK-1-login"])?;
    commit(&web, "alice", "login.html", "<form>\n", "login form")?;
    let p = push(&web, "alice", &["feature/TASK-1-login"])?;
    n.push_act(&p, true);

    git.run(&["switch", "--quiet", "master"])?;
    commit(&api, "alice", "hotfix.txt", "quick\n", "quick fix")?;
    let p = push(&api, "alice", &["master"])?;
    n.push_act(&p, false);
    Ok(Clones { api, web })
}

/// The bot's pushes to master: a commit, accepted; a force-push, rejected.
fn bot_pushes(sb: &Sandbox, n: &mut Narrator) -> anyhow::Result<()> {
    let bot = sb.clone_for("api", "lockstep-bot")?;
    commit(
        &bot,
        "lockstep-bot",
        "CHANGELOG",
        "TASK-1\n",
        "TASK-1 changelog",
    )?;
    let p = push(&bot, "lockstep-bot", &["master"])?;
    n.push_act(&p, true);

    let bgit = sandbox_git(&bot, "lockstep-bot");
    bgit.run(&["reset", "--quiet", "--hard", "HEAD~1"])?;
    let p = push(&bot, "lockstep-bot", &["--force", "master"])?;
    n.push_act(&p, false);
    Ok(())
}

/// The approvals of TASK-1: the author's own, rejected; the reviewers', accepted.
fn approval_acts(sb: &Sandbox, n: &mut Narrator) -> anyhow::Result<()> {
    let p = approve(sb, "api", "alice", "TASK-1", "feature/TASK-1-login")?;
    n.push_act(&p, false);

    n.begin();
    let approved = approve_everywhere(sb, "TASK-1", "feature/TASK-1-login");
    n.check(
        approved.is_ok(),
        "approved: two reviews of each branch's head, as `two-approvals` asks",
        &format!("{approved:?}"),
    );
    Ok(())
}

/// TASK-1 moved to For Delivery and delivered across both repositories.
fn delivery_act(sb: &Sandbox, n: &mut Narrator) -> anyhow::Result<()> {
    set_status(sb, "TASK-1", "For Delivery")?;
    n.begin();
    let (state, _) = deliver(sb, "TASK-1")?;
    let api_master = sandbox_git(&sb.repos[0].1, "admin")
        .resolve("refs/heads/master")?
        .unwrap_or_default();
    let api_has =
        sandbox_git(&sb.repos[0].1, "admin").run(&["log", "--format=%s", "-1", &api_master])?;
    n.check(
        state == State::Delivered,
        "delivered: both masters advanced, TASK-1 is Closed",
        "TASK-1 was not delivered",
    );
    println!("   api master is now: {}", api_has.trim());
    Ok(())
}

/// TASK-3's branches pushed, approved and moved to For Delivery; web's breaks its smoke test
/// once deployed.
fn prepare_task_3(sb: &Sandbox, clones: &Clones) -> anyhow::Result<()> {
    let (api, web) = (&clones.api, &clones.web);
    for (dir, file) in [(api, "theme.txt"), (web, "theme.css")] {
        let g = sandbox_git(dir, "alice");
        g.run(&["fetch", "--quiet", "origin"])?;
        g.run(&[
            "switch",
            "--quiet",
            "-c",
            "feature/TASK-3-dark-mode",
            "origin/master",
        ])?;
        commit(dir, "alice", file, "dark\n", "TASK-3 dark mode")?;
    }
    // web's change breaks its smoke test once deployed.
    commit(
        web,
        "alice",
        "FAIL-VERIFY",
        "the login page renders blank\n",
        "TASK-3 new layout",
    )?;
    for dir in [api, web] {
        let p = push(dir, "alice", &["feature/TASK-3-dark-mode"])?;
        if !p.accepted {
            anyhow::bail!(
                "the demo could not push TASK-3's branch: {}",
                p.remote.join(" / ")
            );
        }
    }
    approve_everywhere(sb, "TASK-3", "feature/TASK-3-dark-mode")?;
    set_status(sb, "TASK-3", "For Delivery")
}

/// TASK-3's delivery fails: nothing merged, both deploys rolled back, the task back.
fn failed_delivery_act(sb: &Sandbox, root: &Path, n: &mut Narrator) -> anyhow::Result<()> {
    let before = masters(sb)?;
    n.begin();
    let (state, error) = deliver(sb, "TASK-3")?;
    let after = masters(sb)?;
    let rollbacks = std::fs::read_to_string(root.join("rollbacks.log")).unwrap_or_default();
    let task3 = FileTracker::new(sb.meta.join("tasks.toml"))
        .read_all()?
        .get("TASK-3")
        .map(|t| t.status.clone());
    n.check(
        state == State::Failed
            && before == after
            && rollbacks.lines().count() == 2
            && task3.as_deref() == Some("In Progress"),
        "failed: nothing merged anywhere, both deploys rolled back, TASK-3 back In Progress",
        "the failed delivery did not leave everything as it was",
    );
    println!("   why: {error}");
    Ok(())
}

/// Where each repository's master is.
fn masters(sb: &Sandbox) -> anyhow::Result<Vec<Option<String>>> {
    sb.repos
        .iter()
        .map(|(_, bare)| sandbox_git(bare, "admin").resolve("refs/heads/master"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &[Act] = &[
        Act {
            title: "the first act",
            command: "true",
        },
        Act {
            title: "the second act",
            command: "true",
        },
    ];

    fn play(n: &mut Narrator) {
        n.begin();
        n.check(true, "as told", "not as told");
    }

    #[test]
    fn issue_9_the_closing_line_counts_the_acts_that_ran() {
        let mut n = Narrator::new(TWO);
        play(&mut n);
        play(&mut n);
        assert_eq!(
            n.closing(),
            ("all 2 acts went as told".to_string(), Exit::Success)
        );
    }

    #[test]
    fn issue_9_an_act_that_did_not_run_fails_the_tour() {
        let mut n = Narrator::new(TWO);
        play(&mut n);
        assert_eq!(
            n.closing(),
            (
                "1 act(s) did not go as told: act 2 did not run: the second act".to_string(),
                Exit::Failed
            )
        );
    }

    #[test]
    fn an_act_missing_from_the_list_fails_the_tour() {
        let mut n = Narrator::new(&TWO[..1]);
        play(&mut n);
        play(&mut n);
        assert_eq!(
            n.closing(),
            (
                "1 act(s) did not go as told: act 2 is missing from the list of acts".to_string(),
                Exit::Failed
            )
        );
    }

    #[test]
    fn a_failed_check_names_the_act_under_way() {
        let mut n = Narrator::new(TWO);
        play(&mut n);
        n.begin();
        n.check(false, "as told", "TASK-1 was not delivered");
        assert_eq!(
            n.closing(),
            (
                "1 act(s) did not go as told: act 2: TASK-1 was not delivered".to_string(),
                Exit::Failed
            )
        );
    }
}
