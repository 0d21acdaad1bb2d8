//! What keeps a rule within bounds without running it: the variables an expression names,
//! read off its syntax tree, and the checks of time and memory that every loop of the
//! expression, and every call that builds a larger value, makes.
//!
//! CEL has no type checker and no cost limit. A misspelt variable is found by walking the
//! parsed expression (never by evaluating it: a rule of nested comprehensions could run for
//! minutes), and each comprehension is rewritten at load so that every iteration first asks
//! [`DEADLINE_FN`] whether the rule is still within bounds; so is every `+`, `replace`,
//! `join`, `split` and `format`. Past the deadline, or once the process has grown by more than
//! `[policies] max_memory_mib` since the rule's first measurement, it fails, and the rule
//! counts as its `on_error` says.
//!
//! Memory is measured, not estimated: the process's resident size (`VmRSS` of
//! `/proc/self/status`), read at most once every [`MEMORY_EVERY`] of evaluation so that the
//! checks stay cheap; a rule's first measurement, a millisecond at most into it, is its
//! baseline (what it built before that is not counted). What grows step by step (a loop
//! building lists or strings) is stopped within a millisecond of crossing the limit. One call
//! between two checks is not cut in the middle: it can still allocate its own result (at most
//! the sum of its operands for `+`; for `replace` or `join`, up to the product of theirs)
//! before the next check stops the rule.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cel::common::ast::operators::{ADD, CONDITIONAL};
use cel::common::ast::{CallExpr, EntryExpr, Expr as Node, IdedExpr, LiteralValue};
use cel::parser::Expression;
use cel::{Context, Env, ExecutionError};

/// The function every loop (and every call that builds a larger value) calls: true, or an
/// error once the deadline has passed or the rule has used more than its memory. Its `@`
/// cannot be written in CEL, so no rule can call it or shadow it.
pub const DEADLINE_FN: &str = "@lockstep_deadline";

/// Function namespaces of the policies' environment (`strings.quote(…)`): a name used only as
/// such a call's target is no variable.
const NAMESPACES: &[&str] = &["strings"];

/// The variables an expression reads from its context: every identifier that is neither
/// bound by a comprehension around it, nor a type name, nor a function namespace.
pub fn free_variables(expr: &Expression, env: &Env) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    walk(expr, &mut Vec::new(), env, &mut found);
    found
}

fn walk<'e>(e: &'e IdedExpr, bound: &mut Vec<&'e str>, env: &Env, found: &mut BTreeSet<String>) {
    match &e.expr {
        Node::Ident(name) => {
            if !name.starts_with('@')
                && !bound.contains(&name.as_str())
                && env.types().find_type(name).is_none()
            {
                found.insert(name.clone());
            }
        }
        Node::Call(call) => {
            match call.target.as_deref() {
                Some(IdedExpr {
                    expr: Node::Ident(ns),
                    ..
                }) if NAMESPACES.contains(&ns.as_str()) && !bound.contains(&ns.as_str()) => {}
                Some(target) => walk(target, bound, env, found),
                None => {}
            }
            for a in &call.args {
                walk(a, bound, env, found);
            }
        }
        Node::Comprehension(c) => {
            walk(&c.iter_range, bound, env, found);
            walk(&c.accu_init, bound, env, found);
            let depth = bound.len();
            bound.push(&c.iter_var);
            if let Some(v) = &c.iter_var2 {
                bound.push(v);
            }
            bound.push(&c.accu_var);
            walk(&c.loop_cond, bound, env, found);
            walk(&c.loop_step, bound, env, found);
            walk(&c.result, bound, env, found);
            bound.truncate(depth);
        }
        Node::List(l) => {
            for x in &l.elements {
                walk(x, bound, env, found);
            }
        }
        Node::Map(m) => {
            for entry in &m.entries {
                walk_entry(&entry.expr, bound, env, found);
            }
        }
        Node::Struct(s) => {
            for entry in &s.entries {
                walk_entry(&entry.expr, bound, env, found);
            }
        }
        Node::Select(s) => walk(&s.operand, bound, env, found),
        Node::Literal(_) | Node::Unspecified => {}
    }
}

fn walk_entry<'e>(
    entry: &'e EntryExpr,
    bound: &mut Vec<&'e str>,
    env: &Env,
    found: &mut BTreeSet<String>,
) {
    match entry {
        EntryExpr::StructField(f) => walk(&f.value, bound, env, found),
        EntryExpr::MapEntry(m) => {
            walk(&m.key, bound, env, found);
            walk(&m.value, bound, env, found);
        }
    }
}

/// Member functions whose result can be larger than their operands together: each call is
/// made to check the bounds first, as `+` is.
const GROWING: &[&str] = &["replace", "join", "split", "format"];

/// Rewrites every comprehension so that each iteration checks the bounds first, and every
/// call that builds a larger value (`+` and [`GROWING`]) so that it checks them before it runs.
///
/// A loop condition `c` becomes `@deadline() ? c : false`; an error there ends the loop at
/// once (`cel` does not absorb it). Loops whose condition is a literal (`map`, `filter`,
/// `exists_one`) get the check in their step instead, in a place that keeps the shape `cel`
/// runs `map` and `filter` fast in: the guard of a guarded step (`g ? … : accu` becomes
/// `(@deadline() ? g : false) ? … : accu`), else the whole step (`@deadline() ? step : accu`).
/// For the same reason the step's own `accu + [x]` is left as it is: the loop checks already.
pub fn guard_loops(e: &mut IdedExpr, next_id: &mut u64) {
    let mut wrap = false;
    match &mut e.expr {
        Node::Comprehension(c) => {
            guard_loops(&mut c.iter_range, next_id);
            guard_loops(&mut c.accu_init, next_id);
            guard_loops(&mut c.loop_cond, next_id);
            guard_step(&mut c.loop_step, next_id);
            guard_loops(&mut c.result, next_id);
            if !matches!(c.loop_cond.expr, Node::Literal(_)) {
                let cond = std::mem::take(&mut c.loop_cond);
                c.loop_cond = checked(cond, literal_false(next_id), next_id);
            } else {
                let guarded = matches!(&c.loop_step.expr, Node::Call(call)
                    if call.func_name == CONDITIONAL
                        && call.target.is_none()
                        && call.args.len() == 3);
                if guarded && let Node::Call(call) = &mut c.loop_step.expr {
                    let guard = std::mem::take(&mut call.args[0]);
                    call.args[0] = checked(guard, literal_false(next_id), next_id);
                } else {
                    let step = std::mem::take(&mut c.loop_step);
                    let otherwise = node(Node::Ident(c.accu_var.clone()), next_id);
                    c.loop_step = checked(step, otherwise, next_id);
                }
            }
        }
        Node::Call(call) => {
            guard_args(call, next_id);
            wrap = grows(call);
        }
        Node::List(l) => {
            for x in &mut l.elements {
                guard_loops(x, next_id);
            }
        }
        Node::Map(m) => {
            for entry in &mut m.entries {
                guard_entry(&mut entry.expr, next_id);
            }
        }
        Node::Struct(s) => {
            for entry in &mut s.entries {
                guard_entry(&mut entry.expr, next_id);
            }
        }
        Node::Select(s) => guard_loops(&mut s.operand, next_id),
        Node::Ident(_) | Node::Literal(_) | Node::Unspecified => {}
    }
    if wrap {
        let call = std::mem::take(e);
        *e = checked(call, literal_false(next_id), next_id);
    }
}

/// Whether a call can build a value larger than its operands: `a + b`, `s.replace(…)`, ….
fn grows(call: &CallExpr) -> bool {
    (call.func_name == ADD && call.target.is_none() && call.args.len() == 2)
        || (call.target.is_some() && GROWING.contains(&call.func_name.as_str()))
}

fn guard_args(call: &mut CallExpr, next_id: &mut u64) {
    if let Some(t) = call.target.as_deref_mut() {
        guard_loops(t, next_id);
    }
    for a in &mut call.args {
        guard_loops(a, next_id);
    }
}

/// A loop's step: as any expression, but its own `accu + …` (in a conditional's branch or
/// alone) is not wrapped, which would cost `map` and `filter` their fast path.
fn guard_step(e: &mut IdedExpr, next_id: &mut u64) {
    match &mut e.expr {
        Node::Call(call) if call.func_name == ADD && call.target.is_none() => {
            guard_args(call, next_id);
        }
        Node::Call(call)
            if call.func_name == CONDITIONAL && call.target.is_none() && call.args.len() == 3 =>
        {
            guard_loops(&mut call.args[0], next_id);
            guard_step(&mut call.args[1], next_id);
            guard_step(&mut call.args[2], next_id);
        }
        _ => guard_loops(e, next_id),
    }
}

fn guard_entry(entry: &mut EntryExpr, next_id: &mut u64) {
    match entry {
        EntryExpr::StructField(f) => guard_loops(&mut f.value, next_id),
        EntryExpr::MapEntry(m) => {
            guard_loops(&mut m.key, next_id);
            guard_loops(&mut m.value, next_id);
        }
    }
}

fn node(expr: Node, next_id: &mut u64) -> IdedExpr {
    *next_id += 1;
    IdedExpr { id: *next_id, expr }
}

fn literal_false(next_id: &mut u64) -> IdedExpr {
    node(Node::Literal(LiteralValue::Boolean(false.into())), next_id)
}

/// `@deadline() ? then : otherwise`.
fn checked(then: IdedExpr, otherwise: IdedExpr, next_id: &mut u64) -> IdedExpr {
    let tick = node(
        Node::Call(CallExpr {
            func_name: DEADLINE_FN.into(),
            target: None,
            args: Vec::new(),
        }),
        next_id,
    );
    node(
        Node::Call(CallExpr {
            func_name: CONDITIONAL.into(),
            target: None,
            args: vec![tick, then, otherwise],
        }),
        next_id,
    )
}

/// The largest node id of an expression, so that added nodes get fresh ones.
pub fn max_id(e: &IdedExpr) -> u64 {
    let mut max = e.id;
    let mut see = |x: &IdedExpr| max = max.max(max_id(x));
    match &e.expr {
        Node::Comprehension(c) => {
            for x in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                see(x);
            }
        }
        Node::Call(call) => {
            call.target
                .as_deref()
                .into_iter()
                .chain(&call.args)
                .for_each(see);
        }
        Node::List(l) => l.elements.iter().for_each(see),
        Node::Map(m) => m
            .entries
            .iter()
            .for_each(|en| entry_ids(&en.expr, &mut see)),
        Node::Struct(s) => s
            .entries
            .iter()
            .for_each(|en| entry_ids(&en.expr, &mut see)),
        Node::Select(s) => see(s.operand.as_ref()),
        Node::Ident(_) | Node::Literal(_) | Node::Unspecified => {}
    }
    max
}

fn entry_ids(entry: &EntryExpr, see: &mut impl FnMut(&IdedExpr)) {
    match entry {
        EntryExpr::StructField(f) => see(&f.value),
        EntryExpr::MapEntry(m) => {
            see(&m.key);
            see(&m.value);
        }
    }
}

/// How often, at most, a rule's memory is measured: reading it costs a few microseconds, the
/// other checks tens of nanoseconds.
pub const MEMORY_EVERY: Duration = Duration::from_millis(1);

/// The process's resident size in bytes (`VmRSS`), if this system tells it.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// What a rule's memory is measured against: the resident size at its first measurement,
/// and when the last measurement was. Shared by the evaluation and its [`DEADLINE_FN`].
#[derive(Debug)]
pub struct Meter {
    /// [`UNMEASURED`] until the rule's first measurement.
    baseline: AtomicU64,
    /// Nanoseconds since `start` of the last measurement.
    last: AtomicU64,
}

/// The baseline of a rule not measured yet.
const UNMEASURED: u64 = u64::MAX;

impl Meter {
    /// A rule starts: its memory counts from its first measurement, a millisecond at most into
    /// it. Not measured here: most rules end sooner, and a read of the process's size costs
    /// more than many a rule.
    pub fn rebase(&self) {
        self.baseline.store(UNMEASURED, Ordering::Relaxed);
    }

    /// Whether a rule now at `rss` bytes has grown by more than `max` since its baseline
    /// (which the first measurement sets).
    fn grown_past(&self, rss: u64, max: u64) -> bool {
        match self.baseline.load(Ordering::Relaxed) {
            UNMEASURED => {
                self.baseline.store(rss, Ordering::Relaxed);
                false
            }
            base => rss.saturating_sub(base) > max,
        }
    }
}

/// Adds [`DEADLINE_FN`] to an evaluation's context: it fails once `deadline` has passed,
/// saying that the rule ran past `timeout`, or once the process has grown by more than
/// `max_memory` bytes since the rule's first measurement (no limit when the system does not
/// tell the process's size).
pub fn add_deadline(
    ctx: &mut Context,
    deadline: Instant,
    timeout: Duration,
    max_memory: u64,
) -> Arc<Meter> {
    let said = format!(
        "ran past `policies.timeout` ({}) and was stopped",
        crate::config::humanize(timeout)
    );
    let too_big = format!(
        "used more than `policies.max_memory_mib` ({} MiB) and was stopped; simplify the rule \
         or raise `[policies] max_memory_mib`",
        max_memory / (1024 * 1024)
    );
    let meter = Arc::new(Meter {
        baseline: AtomicU64::new(UNMEASURED),
        last: AtomicU64::new(0),
    });
    let start = Instant::now();
    let every = MEMORY_EVERY.as_nanos() as u64;
    let m = Arc::clone(&meter);
    // The name is not one of cel's own: adding it cannot conflict.
    let _ = ctx.add_function(DEADLINE_FN, move || -> Result<bool, ExecutionError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(ExecutionError::function_error(DEADLINE_FN, &said));
        }
        let at = u64::try_from(now.duration_since(start).as_nanos()).unwrap_or(u64::MAX);
        if at.saturating_sub(m.last.load(Ordering::Relaxed)) >= every {
            m.last.store(at, Ordering::Relaxed);
            if resident_bytes().is_some_and(|rss| m.grown_past(rss, max_memory)) {
                return Err(ExecutionError::function_error(DEADLINE_FN, &too_big));
            }
        }
        Ok(true)
    });
    meter
}

/// The message of an error raised by [`DEADLINE_FN`], if that is what `e` is.
pub fn past_deadline(e: &ExecutionError) -> Option<&str> {
    match e {
        ExecutionError::FunctionError { function, message } if function == DEADLINE_FN => {
            Some(message)
        }
        _ => None,
    }
}
