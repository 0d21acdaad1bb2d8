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
//!   reads a line (and, with `LOCKSTEP_BENCH_BASELINE=/path/to/an/older/lockstep`, that
//!   binary's start in the same run, to compare two builds).
//!
//! Runs in well under three minutes; prints a table and whether the targets are met.

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

/// Runs one hook on one pending push; returns the wall time, the exit code and stderr.
fn run_hook(hook: &Path, bare: &Path, tasks: &Path, p: &Pending) -> (Duration, i32, String) {
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
    hooks: &[(&str, &Path)],
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
            let (took, code, stderr) = run_hook(hook, bare, tasks, p);
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
fn bare_starts(programs: &[(String, Vec<String>)]) -> Vec<(Duration, Duration)> {
    let mut times = vec![Vec::with_capacity(START_RUNS); programs.len()];
    for round in 0..START_RUNS + 20 {
        for (i, (program, args)) in programs.iter().enumerate() {
            let t = Instant::now();
            let status = Command::new(program)
                .args(args)
                .stdout(Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("{program}: {e}"));
            let took = t.elapsed();
            assert!(status.success(), "{program} {args:?}: {status}");
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
    let hooks = [
        ("lockstep", lockstep_hook.as_path()),
        ("shell", shell_hook.as_path()),
    ];

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
        for (name, hook) in hooks {
            let (_, code, stderr) = run_hook(hook, &bare, &tasks, &p);
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
    let one_ok = one_ref[0].median <= Duration::from_millis(5);
    let faster = one_ref[0].median < one_ref[1].median;
    let big_ok = big_stats[0].median <= Duration::from_secs(2);
    println!(
        "target: one-ref median ≤ 5 ms ............ {} ({})",
        verdict(one_ok),
        ms(one_ref[0].median)
    );
    println!(
        "target: one-ref faster than the shell hook  {} ({} vs {})",
        verdict(faster),
        ms(one_ref[0].median),
        ms(one_ref[1].median)
    );
    println!(
        "target: 100,000 commits ≤ 2 s ............. {} ({})",
        verdict(big_ok),
        ms(big_stats[0].median)
    );

    let version = vec!["--version".to_string()];
    let mut programs = vec![
        ("/bin/true".to_string(), Vec::new()),
        (util::bin().to_string_lossy().into_owned(), version.clone()),
    ];
    let baseline = std::env::var("LOCKSTEP_BENCH_BASELINE").ok();
    if let Some(b) = &baseline {
        programs.push((b.clone(), version));
    }
    let starts = bare_starts(&programs);
    println!();
    println!("bare start, {START_RUNS} runs each, alternating (fork, exec, exit, wait)");
    println!(
        "{:<48} {:>11} {:>11} {:>8}",
        "program", "median", "min", "× true"
    );
    for ((program, args), (median, min)) in programs.iter().zip(&starts) {
        let ratio = median.as_secs_f64() / starts[0].0.as_secs_f64();
        println!(
            "{:<48} {:>11} {:>11} {:>7.2}×",
            format!("{program} {}", args.join(" ")),
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
