//! `cargo bench --bench hook`: the `pre-receive` hook as a whole process, exactly as git runs
//! it, against a hand-written shell hook doing the same checks.
//!
//! Each run starts the installed hook `hooks/pre-receive` (`#!/path/to/lockstep hook`: the
//! kernel starts the release `lockstep` itself) or the shell hook `benches/shell/pre-receive` (bash + git + grep), with:
//! the bare repository as working folder, `GIT_DIR=.`, the pushed objects in a quarantine
//! folder named by `GIT_OBJECT_DIRECTORY` / `GIT_QUARANTINE_PATH` with the repository's own
//! objects as `GIT_ALTERNATE_OBJECT_DIRECTORIES` (what `git receive-pack` sets), the pusher in
//! `GL_USER`, and the `<old> <new> <ref>` line on stdin. The sandbox is the demo's: the
//! shipped policies and the file tracker.
//!
//! Scenarios:
//! - a one-ref push of a new task branch with one new commit;
//! - a push of 100,000 new commits (made with `git fast-import`), every one checked by the
//!   per-commit rule `commit-mentions-task` (`each = "commit"`).
//!
//! - the bare start: `lockstep --version` against `/bin/true`, what every hook pays before it
//!   reads a line; and `lockstep hook post-receive` on a push that asks nothing of it, what
//!   every accepted push pays after: with no ref to act on, and with a task branch's line
//!   (for which it reads the config: autotests and showrooms may follow the branch).
//!
//! With `LOCKSTEP_BENCH_BASELINE=/path/to/an/older/lockstep`, that binary runs too, as a third
//! hook (`#!/path/to/an/older/lockstep hook`) and a third bare start, in the same rounds: two
//! builds compared on the same machine at the same moment.
//!
//! The breakdown: more runs of each scenario with `LOCKSTEP_HOOK_TIMINGS=1`, which makes the
//! hook print the time of each phase (`src/timings.rs`) on stderr; the median of each phase,
//! and what the process costs around `main` (exec, loading, exit: the wall time less the
//! phases).
//!
//! Targets (issue 23): the one-ref push in at most 0.75× the shell hook's median, the
//! 100,000-commit push in at most 1.1×. Runs in well under three minutes; prints tables and
//! whether the targets are met.

#[path = "../tests/util/mod.rs"]
mod util;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{Env, ZERO, scrub};

const SHELL_HOOK: &str = include_str!("shell/pre-receive");

/// Runs of the one-ref push, per hook.
const ONE_REF_RUNS: usize = 200;
/// Timed runs of the one-ref push, for its breakdown.
const BREAKDOWN_RUNS: usize = 60;
/// Runs of the 100,000-commit push, per hook.
const BIG_RUNS: usize = 5;
const BIG_COMMITS: usize = 100_000;

/// A push waiting in quarantine: its objects are in `incoming`, no ref points at them.
struct Pending {
    incoming: PathBuf,
    line: String,
}

/// A clean environment for git, with a pinned identity and no user or system config.
fn git(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    scrub(&mut cmd);
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_COMMITTER_NAME", "alice")
        .env("GIT_COMMITTER_EMAIL", "alice@example.invalid");
    cmd
}

fn check(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Writes `count` new commits on top of master into a quarantine folder of `bare`, as
/// `git receive-pack` would have received them, and returns the update line for `branch`.
fn quarantine(bare: &Path, name: &str, branch: &str, count: usize) -> Pending {
    let master = check(
        {
            let mut c = git(bare);
            c.args(["rev-parse", "refs/heads/master"]);
            c
        },
        "rev-parse master",
    );
    let objects = bare.join("objects");
    let incoming = objects.join(format!("tmp_objdir-incoming-{name}"));
    std::fs::create_dir_all(incoming.join("pack")).unwrap();
    let mut stream = String::with_capacity(count * 120);
    let scratch = format!("refs/bench/{name}");
    for i in 1..=count {
        let message = format!("TASK-1 step {i}\n");
        stream.push_str(&format!(
            "commit {scratch}\ncommitter alice <alice@example.invalid> {} +0000\ndata {}\n{message}",
            1_700_000_000 + i,
            message.len()
        ));
        if i == 1 {
            stream.push_str(&format!("from {master}\n"));
        }
        stream.push('\n');
    }
    let mut cmd = git(bare);
    cmd.args(["fast-import", "--quiet"])
        .env("GIT_DIR", bare)
        .env("GIT_OBJECT_DIRECTORY", &incoming)
        .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", &objects)
        .stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stream.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "fast-import failed");
    // fast-import leaves a ref behind; the push must find its commits on no ref.
    let tip = check(
        {
            let mut c = git(bare);
            c.args(["rev-parse", &scratch])
                .env("GIT_OBJECT_DIRECTORY", &incoming)
                .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", &objects);
            c
        },
        "rev-parse tip",
    );
    check(
        {
            let mut c = git(bare);
            c.args(["update-ref", "-d", &scratch]);
            c
        },
        "update-ref -d",
    );
    Pending {
        incoming,
        line: format!("{ZERO} {tip} refs/heads/{branch}\n"),
    }
}

/// Runs one hook on one pending push (with `LOCKSTEP_HOOK_TIMINGS` set if `timed`); returns
/// the wall time, the exit code and stderr.
fn run_hook(
    hook: &Path,
    bare: &Path,
    tasks: &Path,
    p: &Pending,
    timed: bool,
) -> (Duration, i32, String) {
    let objects = bare.join("objects");
    let mut cmd = Command::new(hook);
    scrub(&mut cmd);
    cmd.current_dir(bare)
        .env("GIT_DIR", ".")
        .env("GIT_OBJECT_DIRECTORY", &p.incoming)
        .env("GIT_QUARANTINE_PATH", &p.incoming)
        .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", &objects)
        .env("GL_USER", "alice")
        .env("TASKS_FILE", tasks)
        .env(lockstep::TIMINGS_VAR, if timed { "1" } else { "" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(p.line.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    (
        took,
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Stats {
    median: Duration,
    p90: Duration,
    runs: usize,
    /// Mean CPU time (user + system, every process of the hook) per run.
    cpu: Duration,
}

/// CPU time (user + system) of this process's waited-for children so far, from
/// `/proc/self/stat` (in clock ticks of 10 ms): the hooks' own cost, whatever else the machine
/// is doing.
fn children_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command name, fields count from 3 (the state): cutime is 16, cstime 17.
    let ticks = |field: usize| {
        fields
            .get(field - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(16) + ticks(17)) * 10)
}

/// Runs both hooks `runs` times each, alternating, and checks every run accepted the push.
fn measure(
    hooks: &[(String, PathBuf)],
    bare: &Path,
    tasks: &Path,
    p: &Pending,
    runs: usize,
) -> Vec<Stats> {
    let mut times = vec![Vec::with_capacity(runs); hooks.len()];
    let mut cpu = vec![Duration::ZERO; hooks.len()];
    for _ in 0..runs {
        for (i, (name, hook)) in hooks.iter().enumerate() {
            let before = children_cpu();
            let (took, code, stderr) = run_hook(hook, bare, tasks, p, false);
            cpu[i] += children_cpu().saturating_sub(before);
            assert_eq!(code, 0, "{name} rejected the push: {stderr}");
            times[i].push(took);
        }
    }
    times
        .into_iter()
        .zip(cpu)
        .map(|(mut t, cpu)| {
            t.sort();
            Stats {
                median: percentile(&t, 0.5),
                p90: percentile(&t, 0.9),
                runs: t.len(),
                cpu: cpu / t.len() as u32,
            }
        })
        .collect()
}

/// The phases of one hook run, from its `lockstep timings:` line: (name, milliseconds).
fn phases(stderr: &str) -> Vec<(String, f64)> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(lockstep::TIMINGS_PREFIX))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The median time of each phase of `runs` timed runs of a hook, in the order the hook
/// reports them, with the process around `main` (the wall time less `total`) first.
fn breakdown(
    hook: &Path,
    bare: &Path,
    tasks: &Path,
    p: &Pending,
    runs: usize,
) -> Vec<(String, f64)> {
    let mut names: Vec<String> = Vec::new();
    let mut samples: Vec<Vec<f64>> = Vec::new();
    let mut walls = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (took, code, stderr) = run_hook(hook, bare, tasks, p, true);
        assert_eq!(code, 0, "the timed hook rejected the push: {stderr}");
        walls.push(took.as_secs_f64() * 1000.0);
        for (name, ms) in phases(&stderr) {
            let i = names.iter().position(|n| *n == name).unwrap_or_else(|| {
                names.push(name);
                samples.push(Vec::new());
                names.len() - 1
            });
            samples[i].push(ms);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let wall = median(&mut walls);
    let mut out: Vec<(String, f64)> = names
        .into_iter()
        .zip(samples)
        .map(|(n, mut s)| {
            let m = median(&mut s);
            (n, m)
        })
        .collect();
    let total = out
        .iter()
        .find(|(n, _)| n == "total")
        .map_or(0.0, |(_, t)| *t);
    out.insert(0, ("exec+exit".to_string(), (wall - total).max(0.0)));
    out.push(("wall".to_string(), wall));
    out
}

/// Prints the breakdowns of each hook side by side, one row per phase.
fn print_breakdown(title: &str, columns: &[(String, Vec<(String, f64)>)]) {
    println!();
    println!(
        "{title}: median ms per phase (timed runs, with {}=1)",
        lockstep::TIMINGS_VAR
    );
    let mut rows: Vec<String> = Vec::new();
    for (_, phases) in columns {
        for (n, _) in phases {
            if !rows.contains(n) {
                rows.push(n.clone());
            }
        }
    }
    print!("{:<16}", "phase");
    for (name, _) in columns {
        print!(" {name:>12}");
    }
    println!();
    for row in &rows {
        print!("{row:<16}");
        for (_, phases) in columns {
            match phases.iter().find(|(n, _)| n == row) {
                Some((_, ms)) => print!(" {ms:>12.3}"),
                None => print!(" {:>12}", "—"),
            }
        }
        println!();
    }
}

/// The 1-minute load average and the number of CPUs: wall times mean little without them.
fn load() -> (f64, usize) {
    let avg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (avg, cpus)
}

fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    }
}

/// Runs of the bare start, per program.
const START_RUNS: usize = 300;

/// The wall time of starting each program and waiting for it to exit, `START_RUNS` times each,
/// alternating; the median and the minimum (the least disturbed run) of each.
/// One program of the bare-start table: what it is, and for a hook run in the repository,
/// the folder it runs in and the line it reads.
struct Start {
    program: String,
    args: Vec<String>,
    input: Option<(PathBuf, String)>,
}

fn bare_starts(programs: &[Start]) -> Vec<(Duration, Duration)> {
    let mut times = vec![Vec::with_capacity(START_RUNS); programs.len()];
    for round in 0..START_RUNS + 20 {
        for (i, p) in programs.iter().enumerate() {
            let mut cmd = Command::new(&p.program);
            cmd.args(&p.args)
                .env_remove("GIT_PUSH_OPTION_COUNT")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some((dir, _)) = &p.input {
                cmd.current_dir(dir)
                    .env("GIT_DIR", ".")
                    .stdin(Stdio::piped());
            } else {
                cmd.stdin(Stdio::null());
            }
            let t = Instant::now();
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{}: {e}", p.program));
            if let Some((_, line)) = &p.input {
                let mut stdin = child.stdin.take().expect("piped");
                stdin.write_all(line.as_bytes()).unwrap();
            }
            let status = child.wait().unwrap();
            let took = t.elapsed();
            assert!(status.success(), "{} {:?}: {status}", p.program, p.args);
            // The first rounds warm the page cache.
            if round >= 20 {
                times[i].push(took);
            }
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort();
            (percentile(&t, 0.5), t[0])
        })
        .collect()
}

fn main() {
    let started = Instant::now();
    let load_before = load();
    let env = Env::new(&["api"]);
    let bare = env.bare("api");
    let tasks = env.sb.meta.join("tasks.toml");
    let lockstep_hook = bare.join("hooks/pre-receive");
    let shell_hook = env.dir.path().join("shell-pre-receive");
    std::fs::write(&shell_hook, SHELL_HOOK).unwrap();
    std::fs::set_permissions(
        &shell_hook,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut hooks: Vec<(String, PathBuf)> = vec![
        ("lockstep".into(), lockstep_hook.clone()),
        ("shell".into(), shell_hook.clone()),
    ];
    let baseline = std::env::var("LOCKSTEP_BENCH_BASELINE")
        .ok()
        .filter(|b| !b.is_empty());
    if let Some(b) = &baseline {
        // A hook file of its own, named as git names it, that the kernel starts the older
        // binary for.
        let dir = env.dir.path().join("baseline");
        std::fs::create_dir_all(&dir).unwrap();
        let hook = dir.join("pre-receive");
        std::fs::write(&hook, format!("#!{b} hook\n")).unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        hooks.push(("baseline".into(), hook));
    }

    // Both hooks agree on what they accept and refuse.
    let verdicts = [
        ("feature/TASK-1-bench", 0),
        ("feature/TASK-2-search", 1),
        ("feature/TASK-99-typo", 1),
        ("fix-login", 1),
        ("master", 1),
    ];
    for (branch, want) in verdicts {
        let p = quarantine(
            &bare,
            &format!("check-{}", branch.replace('/', "-")),
            branch,
            1,
        );
        for (name, hook) in &hooks {
            let (_, code, stderr) = run_hook(hook, &bare, &tasks, &p, false);
            assert_eq!(code, want, "{name} on {branch}: {stderr}");
        }
    }

    let one = quarantine(&bare, "one", "feature/TASK-1-bench", 1);
    // Warm the page cache and the binaries before timing.
    measure(&hooks, &bare, &tasks, &one, 10);
    let one_ref = measure(&hooks, &bare, &tasks, &one, ONE_REF_RUNS);

    let t = Instant::now();
    let big = quarantine(&bare, "big", "feature/TASK-1-big", BIG_COMMITS);
    let import = t.elapsed();
    let big_stats = measure(&hooks, &bare, &tasks, &big, BIG_RUNS);

    // The breakdowns, after the timed comparison so as not to disturb it.
    let timed: Vec<(String, PathBuf)> = hooks
        .iter()
        .filter(|(name, _)| name != "shell")
        .cloned()
        .collect();
    let one_phases: Vec<(String, Vec<(String, f64)>)> = timed
        .iter()
        .map(|(n, h)| (n.clone(), breakdown(h, &bare, &tasks, &one, BREAKDOWN_RUNS)))
        .collect();
    let big_phases: Vec<(String, Vec<(String, f64)>)> = timed
        .iter()
        .map(|(n, h)| (n.clone(), breakdown(h, &bare, &tasks, &big, BIG_RUNS)))
        .collect();

    println!();
    println!("pre-receive, run as git runs it (release build; `hooks/pre-receive` → lockstep,");
    println!(
        "vs. bash + git + grep); {BIG_COMMITS} commits made by git fast-import in {}",
        ms(import)
    );
    println!();
    println!(
        "{:<34} {:<10} {:>5} {:>11} {:>11} {:>11}",
        "scenario", "hook", "runs", "median", "p90", "cpu/run"
    );
    for (title, stats) in [
        ("one-ref push, new task branch", &one_ref),
        ("100,000 new commits, per-commit", &big_stats),
    ] {
        for ((name, _), s) in hooks.iter().zip(stats.iter()) {
            println!(
                "{:<34} {:<10} {:>5} {:>11} {:>11} {:>11}",
                title,
                name,
                s.runs,
                ms(s.median),
                ms(s.p90),
                ms(s.cpu)
            );
        }
    }
    println!("median, p90: wall time of a run; cpu/run: user + system time of all its processes");
    print_breakdown("one-ref push", &one_phases);
    print_breakdown("100,000 new commits", &big_phases);
    println!(
        "exec+exit: the wall time around `main` (exec, loading, exit, wait); a baseline without \
         timings shows only that"
    );
    let (after, cpus) = load();
    println!(
        "load average {:.2} before, {after:.2} after, on {cpus} CPU(s){}",
        load_before.0,
        if after.max(load_before.0) > cpus as f64 * 0.75 {
            ": a busy machine, so wall times include waiting for a CPU; cpu/run is steadier"
        } else {
            ""
        }
    );
    println!();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let ratio = |s: &[Stats], i: usize| s[i].median.as_secs_f64() / s[1].median.as_secs_f64();
    let cpu_ratio =
        |s: &[Stats], i: usize| s[i].cpu.as_secs_f64() / s[1].cpu.as_secs_f64().max(1e-9);
    for (title, stats, goal) in [
        ("one-ref push", &one_ref, 0.75),
        ("100,000 commits", &big_stats, 1.1),
    ] {
        println!(
            "target: {title:<16} ≤ {goal:.2}× the shell hook ... {} ({:.2}× median, {:.2}× cpu)",
            verdict(ratio(stats, 0) <= goal),
            ratio(stats, 0),
            cpu_ratio(stats, 0)
        );
        if hooks.len() > 2 {
            println!(
                "        {title:<16} the baseline: {:.2}× the shell hook ({:.2}× cpu); this \
                 build / the baseline: {:.2}×",
                ratio(stats, 2),
                cpu_ratio(stats, 2),
                stats[0].median.as_secs_f64() / stats[2].median.as_secs_f64()
            );
        }
    }

    let bin = util::bin().to_string_lossy().into_owned();
    let builds: Vec<String> = std::iter::once(bin).chain(baseline.clone()).collect();
    let start = |program: &str, args: &[&str], input: Option<(PathBuf, String)>| Start {
        program: program.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        input,
    };
    let mut programs = vec![start("/bin/true", &[], None)];
    for b in &builds {
        programs.push(start(b, &["--version"], None));
    }
    // post-receive on a push that asks nothing of it (no `-o deliver`): what every push pays
    // after it is accepted; first with no ref to act on, then for a task branch, which has it
    // read the config (autotests and showrooms may follow a branch).
    for b in &builds {
        programs.push(start(b, &["hook", "post-receive"], None));
    }
    let branch_line = format!("{}\n", one.line.trim_end());
    for b in &builds {
        programs.push(start(
            b,
            &["hook", "post-receive"],
            Some((bare.clone(), branch_line.clone())),
        ));
    }
    let starts = bare_starts(&programs);
    println!();
    println!("bare start, {START_RUNS} runs each, alternating (fork, exec, exit, wait)");
    println!(
        "{:<48} {:>11} {:>11} {:>8}",
        "program", "median", "min", "× true"
    );
    for (p, (median, min)) in programs.iter().zip(&starts) {
        let ratio = median.as_secs_f64() / starts[0].0.as_secs_f64();
        let what = if p.input.is_some() {
            " < a task branch's line"
        } else {
            ""
        };
        println!(
            "{:<48} {:>11} {:>11} {:>7.2}×",
            format!("{} {}{what}", p.program, p.args.join(" ")),
            ms(*median),
            ms(*min),
            ratio
        );
    }
    let start_ratio = starts[1].0.as_secs_f64() / starts[0].0.as_secs_f64();
    println!(
        "target: bare start ≤ 2.5× /bin/true ........ {} ({start_ratio:.2}×)",
        verdict(start_ratio <= 2.5)
    );
    if baseline.is_some() {
        println!(
            "this build's start / the baseline's: {:.2}× (median)",
            starts[1].0.as_secs_f64() / starts[2].0.as_secs_f64()
        );
    }
    println!("total benchmark time: {}", ms(started.elapsed()));
}
