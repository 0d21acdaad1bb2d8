//! Where a hook's time goes, phase by phase, printed on stderr when `LOCKSTEP_HOOK_TIMINGS`
//! is set (to anything but empty or `0`): what `cargo bench --bench hook` reads to print its
//! breakdown, and what an admin can ask of a slow server.
//!
//! Off, a [`mark`] costs one read of an initialised `OnceLock`; the variable is read once, on
//! the first call ([`begin`], first thing in `main`). Each mark closes the phase that began at
//! the mark before it (or at `begin`), so a phase's time is everything the process did between
//! two marks, on whichever thread. Phases marked more than once (one per ref, say) are added
//! up under their name. The line names only phases and durations: nothing of the push.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The variable that turns the timings on.
pub const VAR: &str = "LOCKSTEP_HOOK_TIMINGS";

/// The start of the line [`report`] prints; the bench finds it by this.
pub const PREFIX: &str = "lockstep timings:";

struct Clock {
    start: Instant,
    last: Instant,
    phases: Vec<(&'static str, Duration)>,
}

static CLOCK: OnceLock<Option<Mutex<Clock>>> = OnceLock::new();

fn clock() -> Option<&'static Mutex<Clock>> {
    CLOCK
        .get_or_init(|| {
            let on = std::env::var_os(VAR).is_some_and(|v| !v.is_empty() && v != "0");
            on.then(|| {
                let now = Instant::now();
                Mutex::new(Clock {
                    start: now,
                    last: now,
                    phases: Vec::new(),
                })
            })
        })
        .as_ref()
}

/// Starts the clock (when the timings are on): the origin of the first phase.
pub fn begin() {
    let _ = clock();
}

/// Closes the phase under way, naming it `phase`.
pub fn mark(phase: &'static str) {
    let Some(clock) = clock() else {
        return;
    };
    let mut c = clock.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let took = now - c.last;
    c.last = now;
    match c.phases.iter_mut().find(|(name, _)| *name == phase) {
        Some((_, total)) => *total += took,
        None => c.phases.push((phase, took)),
    }
}

/// The line of timings: `lockstep timings: (pre-receive) config=0.210 … total=2.907` (ms).
fn line(c: &Clock, what: &str, now: Instant) -> String {
    let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
    let mut out = format!("{PREFIX} ({what})");
    for (name, took) in &c.phases {
        out.push_str(&format!(" {name}={}", ms(*took)));
    }
    if now > c.last {
        out.push_str(&format!(" rest={}", ms(now - c.last)));
    }
    out.push_str(&format!(" total={}", ms(now - c.start)));
    out
}

/// Prints the phases timed so far on stderr, in the order they first ended, naming what was
/// timed: the hook of `lockstep hook FILE`, by the file's name (or its `<hook>.d` folder's),
/// else the command. Nothing when the timings are off.
pub fn report(args: &[std::ffi::OsString]) {
    if let Some(clock) = clock() {
        let c = clock.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!("{}", line(&c, &what(args), Instant::now()));
    }
}

/// What a command line runs, for the timings: `pre-receive` for `lockstep hook
/// /srv/repo.git/hooks/pre-receive` (or `…/pre-receive.d/lockstep`), else its first word.
fn what(args: &[std::ffi::OsString]) -> String {
    let word = |i: usize| args.get(i).map(|a| a.to_string_lossy().into_owned());
    match (word(1).as_deref(), args.get(2)) {
        (Some("hook"), Some(file)) => {
            let path = std::path::Path::new(file);
            let name = |p: Option<&std::ffi::OsStr>| p.map(|n| n.to_string_lossy().into_owned());
            let file_name = name(path.file_name()).unwrap_or_default();
            match name(path.parent().and_then(|p| p.file_name())) {
                Some(dir) if dir.ends_with(".d") => dir.trim_end_matches(".d").to_string(),
                _ => file_name,
            }
        }
        (Some(command), _) => command.to_string(),
        (None, _) => "lockstep".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_under_their_name_in_the_order_they_ended() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let c = Clock {
            start: t0,
            last: t0 + ms(6),
            phases: vec![("config", ms(2)), ("decide", ms(4))],
        };
        assert_eq!(
            line(&c, "pre-receive", t0 + ms(7)),
            "lockstep timings: (pre-receive) config=2.000 decide=4.000 rest=1.000 total=7.000"
        );
        assert_eq!(
            line(&c, "update", t0 + ms(6)),
            "lockstep timings: (update) config=2.000 decide=4.000 total=6.000"
        );
    }

    #[test]
    fn the_line_names_the_hook_by_its_file_or_folder() {
        let what = |args: &[&str]| what(&args.iter().map(Into::into).collect::<Vec<_>>());
        assert_eq!(
            what(&["lockstep", "hook", "/srv/a.git/hooks/pre-receive"]),
            "pre-receive"
        );
        assert_eq!(
            what(&[
                "lockstep",
                "hook",
                "/srv/a.git/custom_hooks/post-receive.d/lockstep"
            ]),
            "post-receive"
        );
        assert_eq!(
            what(&["lockstep", "hook", "update", "r", "o", "n"]),
            "update"
        );
        assert_eq!(what(&["lockstep", "policy", "check"]), "policy");
        assert_eq!(what(&["lockstep"]), "lockstep");
    }
}
