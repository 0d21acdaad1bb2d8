//! The queue page and the delivery page: plain HTML, no JavaScript, refreshed by a `<meta>`.
//!
//! The data is gathered by the server; everything here is pure rendering. Every value that
//! reaches the page goes through [`esc`]: task keys, branch names, requesters and logs come
//! from people and build tools, not from us.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::Config;
use crate::delivery::line::Phase;
use crate::store::{DeliveryRow, JournalRow, RepoRow, State, StepRow};

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One cell of the repo × phase grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cell {
    Pending,
    Running,
    Passed,
    Failed,
    /// The repository has no step for this phase.
    Skipped,
    /// The delivery ended before this phase.
    NotRun,
}

impl Cell {
    fn label(self) -> &'static str {
        match self {
            Cell::Pending => "pending",
            Cell::Running => "running",
            Cell::Passed => "passed",
            Cell::Failed => "failed",
            Cell::Skipped => "no step",
            Cell::NotRun => "not run",
        }
    }
    fn class(self) -> &'static str {
        match self {
            Cell::Pending => "pending",
            Cell::Running => "running",
            Cell::Passed => "passed",
            Cell::Failed => "failed",
            Cell::Skipped | Cell::NotRun => "skipped",
        }
    }
}

/// A repository's row of the grid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GridRow {
    pub repo: String,
    pub branch: String,
    pub cells: Vec<(String, Cell)>,
}

/// The phases of the grid: the line itself (a rollback shows in the repository's flags).
const LINE: [Phase; 6] = [
    Phase::Rebase,
    Phase::Build,
    Phase::Test,
    Phase::Deploy,
    Phase::Verify,
    Phase::Merge,
];

fn has_step(config: &Config, repo: &str, phase: Phase) -> bool {
    let Some(r) = config.repo(repo) else {
        return true;
    };
    match phase {
        Phase::Build => r.steps.build.is_some(),
        Phase::Test => r.steps.test.is_some(),
        Phase::Deploy => r.steps.deploy.is_some(),
        Phase::Verify => r.steps.verify.is_some(),
        Phase::Rollback => r.steps.rollback.is_some(),
        Phase::Rebase | Phase::Merge => true,
    }
}

/// The repo × phase grid of a delivery, from what the store recorded.
pub fn grid(
    config: &Config,
    d: &DeliveryRow,
    repos: &[RepoRow],
    steps: &[StepRow],
    journal: &[JournalRow],
) -> Vec<GridRow> {
    let current = Phase::parse(&d.phase);
    let running = d.state == State::Running;
    let names: Vec<(String, String)> = if repos.is_empty() {
        config
            .repos
            .iter()
            .map(|r| (r.name.clone(), String::new()))
            .collect()
    } else {
        repos
            .iter()
            .map(|r| (r.repo.clone(), r.branch.clone()))
            .collect()
    };
    let failed = |phase: Phase, repo: &str| {
        journal
            .iter()
            .any(|j| j.event == "failed" && j.phase == phase.as_str() && j.repo == repo)
    };
    let failed_all = |phase: Phase| {
        journal
            .iter()
            .any(|j| j.event == "failed" && j.phase == phase.as_str() && j.repo.is_empty())
    };
    let mut rows = Vec::new();
    for (repo, branch) in names {
        let row = repos.iter().find(|r| r.repo == repo);
        let mut cells = Vec::new();
        for phase in LINE {
            let here = current == Some(phase) && running;
            let past = current.is_some_and(|c| c > phase) || d.state == State::Delivered;
            let step = steps
                .iter()
                .rev()
                .find(|s| s.repo == repo && s.step == phase.as_str());
            let mut cell = match phase {
                Phase::Rebase => {
                    if row.is_some_and(|r| !r.rebased_sha.is_empty()) {
                        Cell::Passed
                    } else if here {
                        Cell::Running
                    } else {
                        Cell::Pending
                    }
                }
                Phase::Merge => {
                    if row.is_some_and(|r| r.merged) || d.state == State::Delivered {
                        Cell::Passed
                    } else if here {
                        Cell::Running
                    } else {
                        Cell::Pending
                    }
                }
                _ => match step.map(|s| s.outcome.as_str()) {
                    Some("running") if running => Cell::Running,
                    Some("running") => Cell::Failed,
                    Some("passed") => Cell::Passed,
                    Some(_) => Cell::Failed,
                    None if !has_step(config, &repo, phase) => Cell::Skipped,
                    None if past => Cell::Passed,
                    None if here => Cell::Running,
                    None => Cell::Pending,
                },
            };
            if failed(phase, &repo) || (failed_all(phase) && cell != Cell::Passed) {
                cell = Cell::Failed;
            }
            if d.state.is_final() && cell == Cell::Running {
                cell = Cell::Failed;
            }
            if d.state.is_final() && cell == Cell::Pending {
                cell = Cell::NotRun;
            }
            cells.push((phase.as_str().to_string(), cell));
        }
        rows.push(GridRow {
            repo,
            branch,
            cells,
        });
    }
    rows
}

/// The delivery in flight, ready to show.
#[derive(Debug, Clone, Serialize)]
pub struct InFlight {
    pub delivery: DeliveryRow,
    pub grid: Vec<GridRow>,
    /// The steps running now.
    pub current: Vec<StepRow>,
}

/// Everything the queue page shows.
#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    pub repos: Vec<String>,
    pub running: Vec<InFlight>,
    pub queued: Vec<DeliveryRow>,
    pub recent: Vec<DeliveryRow>,
    pub now_ms: i64,
    #[serde(skip)]
    pub refresh_secs: u64,
}

/// `1m 05s`, `42s`, `2h 03m`.
pub fn duration(ms: i64) -> String {
    let s = (ms.max(0) + 500) / 1000;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    }
}

fn clock(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

fn time_of_day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%H:%M:%S").to_string())
        .unwrap_or_default()
}

fn ago(now: i64, then: i64) -> String {
    format!(
        "<span title=\"{}\">{} ago</span>",
        esc(&clock(then)),
        duration(now - then)
    )
}

const CSS: &str = r#"
:root{--bg:#f6f7f9;--card:#fff;--ink:#1d2330;--muted:#667085;--line:#e4e7ec;
--ok:#12805c;--ok-bg:#e3f6ee;--bad:#c4320a;--bad-bg:#fdeceb;--run:#1c64f2;--run-bg:#e6efff;
--wait:#98a2b3;--wait-bg:#f2f4f7;--skip-bg:#fafafa}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:#111827;color:#fff;padding:14px 28px;display:flex;align-items:center;gap:18px}
header h1{font-size:18px;margin:0;letter-spacing:.3px}
header h1 a{color:#fff;text-decoration:none}
header .eco{color:#9ca3af;font-size:13px}
header .stats{margin-left:auto;display:flex;gap:14px;font-size:13px;color:#d1d5db}
header .stats b{color:#fff}
main{max-width:1180px;margin:0 auto;padding:22px 28px 40px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;margin-bottom:20px;
box-shadow:0 1px 2px rgba(16,24,40,.04)}
section>h2{font-size:13px;text-transform:uppercase;letter-spacing:.6px;color:var(--muted);
margin:0;padding:12px 18px;border-bottom:1px solid var(--line)}
.body{padding:16px 18px}
.empty{color:var(--muted);padding:16px 18px;margin:0}
.task{font-size:20px;font-weight:650}
.meta{color:var(--muted);margin-top:2px}
.meta code,td code{background:#f2f4f7;border-radius:4px;padding:1px 5px;font-size:12.5px}
table{border-collapse:collapse;width:100%}
th{font-size:12px;text-align:left;color:var(--muted);font-weight:600;padding:8px 12px;
border-bottom:1px solid var(--line);white-space:nowrap}
td{padding:9px 12px;border-bottom:1px solid var(--line);vertical-align:middle}
tr:last-child td{border-bottom:0}
table.grid{margin-top:14px;table-layout:fixed}
table.grid th:first-child{width:24%}
table.grid td.cell{text-align:center;padding:6px}
.pill{display:inline-block;min-width:78px;padding:4px 10px;border-radius:999px;font-size:12px;
font-weight:600;text-align:center}
.passed{background:var(--ok-bg);color:var(--ok)}
.failed{background:var(--bad-bg);color:var(--bad)}
.running{background:var(--run-bg);color:var(--run);animation:pulse 1.6s ease-in-out infinite}
.pending{background:var(--wait-bg);color:var(--wait)}
.skipped{background:var(--skip-bg);color:#b0b7c3;border:1px dashed #d0d5dd}
.delivered{background:var(--ok-bg);color:var(--ok)}
.cancelled{background:var(--wait-bg);color:var(--muted)}
.queued{background:var(--wait-bg);color:var(--muted)}
@keyframes pulse{50%{opacity:.55}}
.now{margin-top:14px;padding:10px 12px;background:var(--run-bg);border-radius:8px;color:#1e3a8a}
.why{color:var(--bad);font-size:13px;max-width:520px;overflow-wrap:anywhere}
a{color:#1c64f2;text-decoration:none}a:hover{text-decoration:underline}
.num{color:var(--muted);font-variant-numeric:tabular-nums;white-space:nowrap}
pre.log{background:#0f172a;color:#e2e8f0;padding:12px 14px;border-radius:8px;overflow:auto;
max-height:420px;font:12px/1.5 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;margin:8px 0 0;
white-space:pre-wrap;overflow-wrap:anywhere}
details{border-top:1px solid var(--line);padding:10px 0}
details:first-of-type{border-top:0}
summary{cursor:pointer;font-weight:600}
footer{color:var(--muted);font-size:12px;text-align:center;padding-bottom:24px}
"#;

fn head(title: &str, refresh: Option<u64>) -> String {
    let mut s = String::from("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    s.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    if let Some(r) = refresh {
        let _ = write!(s, "<meta http-equiv=\"refresh\" content=\"{r}\">");
    }
    let _ = write!(
        s,
        "<title>{}</title><style>{CSS}</style></head><body>",
        esc(title)
    );
    s
}

fn header(repos: &[String], stats: &str) -> String {
    format!(
        "<header><h1><a href=\"/\">lockstep</a></h1><span class=\"eco\">{}</span>\
         <div class=\"stats\">{stats}</div></header>",
        esc(&repos.join(" · "))
    )
}

fn pill(class: &str, label: &str) -> String {
    format!("<span class=\"pill {}\">{}</span>", esc(class), esc(label))
}

fn requested(d: &DeliveryRow) -> String {
    let who = if d.requester.is_empty() {
        "someone".to_string()
    } else {
        d.requester.clone()
    };
    let mut s = format!("by <b>{}</b> via {}", esc(&who), esc(&d.source));
    if !d.origin.is_empty() {
        let _ = write!(s, " (<code>{}</code>)", esc(&d.origin));
    }
    s
}

fn grid_table(grid: &[GridRow]) -> String {
    let mut s = String::from("<table class=\"grid\"><thead><tr><th>repository</th>");
    for p in LINE {
        let _ = write!(s, "<th style=\"text-align:center\">{}</th>", p.as_str());
    }
    s.push_str("</tr></thead><tbody>");
    for row in grid {
        let _ = write!(s, "<tr><td><b>{}</b>", esc(&row.repo));
        if !row.branch.is_empty() {
            let _ = write!(
                s,
                "<div class=\"meta\"><code>{}</code></div>",
                esc(&row.branch)
            );
        }
        s.push_str("</td>");
        for (phase, cell) in &row.cells {
            let _ = write!(
                s,
                "<td class=\"cell\" data-phase=\"{}\" data-state=\"{}\">{}</td>",
                esc(phase),
                cell.class(),
                pill(cell.class(), cell.label())
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

/// The queue page.
pub fn queue_page(v: &QueueView) -> String {
    let mut s = head(
        &match v.running.first() {
            Some(f) => format!("lockstep · delivering {}", f.delivery.task),
            None => "lockstep · queue".to_string(),
        },
        Some(v.refresh_secs.max(1)),
    );
    let stats = format!(
        "<span><b>{}</b> running</span><span><b>{}</b> queued</span>",
        v.running.len(),
        v.queued.len()
    );
    s.push_str(&header(&v.repos, &stats));
    s.push_str("<main>");

    s.push_str("<section id=\"in-flight\"><h2>In flight</h2>");
    if v.running.is_empty() {
        s.push_str("<p class=\"empty\">Nothing is being delivered right now.</p>");
    }
    for f in &v.running {
        let d = &f.delivery;
        let _ = write!(
            s,
            "<div class=\"body\"><div class=\"task\"><a href=\"/deliveries/{id}\">#{id}</a> {task} {pill}</div>\
             <div class=\"meta\">{req} · phase <b>{phase}</b> · started {started}</div>",
            id = d.id,
            task = esc(&d.task),
            pill = pill("running", "running"),
            req = requested(d),
            phase = esc(if d.phase.is_empty() { "-" } else { &d.phase }),
            started = d.started_at.map_or("-".into(), |t| ago(v.now_ms, t)),
        );
        s.push_str(&grid_table(&f.grid));
        for step in &f.current {
            let _ = write!(
                s,
                "<div class=\"now\">now: <b>{}</b> of <b>{}</b>, running for {} · \
                 <a href=\"/deliveries/{}/steps/{}/log\">live log</a></div>",
                esc(&step.step),
                esc(&step.repo),
                duration(v.now_ms - step.started_at),
                d.id,
                step.id
            );
        }
        s.push_str("</div>");
    }
    s.push_str("</section>");

    s.push_str("<section id=\"queue\"><h2>Queue</h2>");
    if v.queued.is_empty() {
        s.push_str("<p class=\"empty\">The queue is empty.</p>");
    } else {
        s.push_str(
            "<table><thead><tr><th>#</th><th>delivery</th><th>task</th><th>priority</th>\
             <th>requested</th><th>waiting</th></tr></thead><tbody>",
        );
        for (i, d) in v.queued.iter().enumerate() {
            let _ = write!(
                s,
                "<tr><td class=\"num\">{}</td><td><a href=\"/deliveries/{id}\">#{id}</a></td>\
                 <td><b>{}</b></td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                i + 1,
                esc(&d.task),
                d.priority,
                requested(d),
                duration(v.now_ms - d.created_at),
                id = d.id,
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</section>");

    s.push_str("<section id=\"recent\"><h2>Recent</h2>");
    if v.recent.is_empty() {
        s.push_str("<p class=\"empty\">No delivery has finished yet.</p>");
    } else {
        s.push_str(
            "<table><thead><tr><th>delivery</th><th>task</th><th>outcome</th><th>duration</th>\
             <th>finished</th><th>requested</th><th></th></tr></thead><tbody>",
        );
        for d in &v.recent {
            let took = match (d.started_at, d.finished_at) {
                (Some(a), Some(b)) => duration(b - a),
                _ => "-".into(),
            };
            let _ = write!(
                s,
                "<tr><td><a href=\"/deliveries/{id}\">#{id}</a></td><td><b>{}</b>",
                esc(&d.task),
                id = d.id
            );
            if !d.error.is_empty() {
                let _ = write!(s, "<div class=\"why\">{}</div>", esc(&d.error));
            }
            let _ = write!(
                s,
                "</td><td>{}</td><td class=\"num\">{took}</td><td>{}</td><td>{}</td>\
                 <td><a href=\"/deliveries/{}#steps\">logs</a></td></tr>",
                pill(d.state.as_str(), d.state.as_str()),
                d.finished_at.map_or("-".into(), |t| ago(v.now_ms, t)),
                requested(d),
                d.id
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</section></main>");
    let _ = write!(
        s,
        "<footer>refreshes every {}s · <a href=\"/api/queue\">json</a> · <a href=\"/metrics\">metrics</a></footer></body></html>",
        v.refresh_secs.max(1)
    );
    s
}

/// One step with its log, for the delivery page.
#[derive(Debug, Clone)]
pub struct StepLog {
    pub step: StepRow,
    pub log: String,
}

/// Everything the delivery page shows.
#[derive(Debug, Clone)]
pub struct DeliveryView {
    pub repos_all: Vec<String>,
    pub delivery: DeliveryRow,
    pub repos: Vec<RepoRow>,
    pub grid: Vec<GridRow>,
    pub steps: Vec<StepLog>,
    pub journal: Vec<JournalRow>,
    pub now_ms: i64,
    pub refresh_secs: u64,
}

/// The page of one delivery: its grid, repositories, step logs and journal.
pub fn delivery_page(v: &DeliveryView) -> String {
    let d = &v.delivery;
    let refresh = (!d.state.is_final()).then_some(v.refresh_secs.max(1));
    let mut s = head(&format!("lockstep · #{} {}", d.id, d.task), refresh);
    s.push_str(&header(
        &v.repos_all,
        "<a href=\"/\" style=\"color:#fff\">← queue</a>",
    ));
    s.push_str("<main><section><h2>Delivery</h2><div class=\"body\">");
    let _ = write!(
        s,
        "<div class=\"task\">#{} {} {}</div><div class=\"meta\">{} · queued {}",
        d.id,
        esc(&d.task),
        pill(d.state.as_str(), d.state.as_str()),
        requested(d),
        ago(v.now_ms, d.created_at)
    );
    if let (Some(a), Some(b)) = (d.started_at, d.finished_at) {
        let _ = write!(s, " · took {}", duration(b - a));
    }
    s.push_str("</div>");
    if !d.error.is_empty() {
        let _ = write!(
            s,
            "<div class=\"why\" style=\"margin-top:8px\">{}</div>",
            esc(&d.error)
        );
    }
    s.push_str(&grid_table(&v.grid));
    s.push_str("</div></section>");

    if !v.repos.is_empty() {
        s.push_str(
            "<section><h2>Repositories</h2><table><thead><tr><th>repository</th><th>branch</th>\
             <th>branch at</th><th>onto</th><th>rebased</th><th>state</th></tr></thead><tbody>",
        );
        for r in &v.repos {
            let mut flags = Vec::new();
            if r.deployed {
                flags.push("deployed");
            }
            if r.merged {
                flags.push("merged");
            }
            if r.rolled_back {
                flags.push("rolled back");
            }
            let _ = write!(
                s,
                "<tr><td><b>{}</b></td><td><code>{}</code></td><td><code>{}</code></td>\
                 <td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
                esc(&r.repo),
                esc(&r.branch),
                esc(crate::push::short(&r.branch_sha)),
                esc(crate::push::short(&r.base_sha)),
                esc(crate::push::short(&r.rebased_sha)),
                esc(&flags.join(", "))
            );
        }
        s.push_str("</tbody></table></section>");
    }

    s.push_str("<section id=\"steps\"><h2>Steps</h2>");
    if v.steps.is_empty() {
        s.push_str("<p class=\"empty\">No step has run yet.</p>");
    } else {
        s.push_str("<div class=\"body\">");
        for st in &v.steps {
            let step = &st.step;
            let took = step
                .finished_at
                .map_or(duration(v.now_ms - step.started_at), |f| {
                    duration(f - step.started_at)
                });
            let class = match step.outcome.as_str() {
                "passed" => "passed",
                "running" => "running",
                _ => "failed",
            };
            let open = if class == "passed" { "" } else { " open" };
            let _ = write!(
                s,
                "<details id=\"step-{id}\"{open}><summary>{} {} · {} {} · <span class=\"num\">{took}</span> · \
                 <a href=\"/deliveries/{did}/steps/{id}/log\">raw</a></summary><pre class=\"log\">{}</pre></details>",
                esc(&step.step),
                esc(&step.repo),
                pill(class, &step.outcome),
                step.exit_code
                    .map_or(String::new(), |c| format!("exit {c}")),
                esc(&st.log),
                id = step.id,
                did = d.id,
            );
        }
        s.push_str("</div>");
    }
    s.push_str("</section>");

    s.push_str(
        "<section><h2>Journal</h2><table><thead><tr><th>when</th><th>phase</th><th>repository</th>\
         <th>event</th><th>detail</th></tr></thead><tbody>",
    );
    for j in &v.journal {
        let _ = write!(
            s,
            "<tr><td class=\"num\" title=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&clock(j.at)),
            esc(&time_of_day(j.at)),
            esc(&j.phase),
            esc(&j.repo),
            esc(&j.event),
            esc(&j.detail)
        );
    }
    s.push_str("</tbody></table></section></main></body></html>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(state: State, phase: &str) -> DeliveryRow {
        DeliveryRow {
            id: 7,
            task: "TASK-1".into(),
            state,
            phase: phase.into(),
            priority: 0,
            source: "github".into(),
            requester: "alice".into(),
            origin: "acme/api#3".into(),
            created_at: 0,
            started_at: Some(1_000),
            finished_at: None,
            error: String::new(),
            cancel: false,
        }
    }

    fn repo(name: &str) -> RepoRow {
        RepoRow {
            repo: name.into(),
            position: 0,
            branch: "feature/TASK-1-login".into(),
            branch_sha: "a".repeat(40),
            base_sha: "b".repeat(40),
            rebased_sha: "c".repeat(40),
            deployed: false,
            merged: false,
            rolled_back: false,
        }
    }

    fn step(id: i64, repo: &str, step: &str, outcome: &str) -> StepRow {
        StepRow {
            id,
            repo: repo.into(),
            step: step.into(),
            started_at: 2_000,
            finished_at: None,
            exit_code: None,
            outcome: outcome.into(),
            log_path: String::new(),
            pid: None,
        }
    }

    fn config() -> Config {
        Config::parse_str(
            "[[repo]]\nname='api'\nurl='/a'\n[repo.steps]\nbuild='b'\ntest='t'\n\
             [[repo]]\nname='web'\nurl='/w'\n[repo.steps]\nbuild='b'\ntest='t'\ndeploy='d'\n",
        )
        .unwrap()
    }

    fn states(row: &GridRow) -> Vec<Cell> {
        row.cells.iter().map(|(_, c)| *c).collect()
    }

    #[test]
    fn grid_while_testing() {
        use Cell::*;
        let c = config();
        let d = delivery(State::Running, "test");
        let repos = [repo("api"), repo("web")];
        let steps = [
            step(1, "api", "build", "passed"),
            step(2, "web", "build", "passed"),
            step(3, "api", "test", "running"),
            step(4, "web", "test", "passed"),
        ];
        let g = grid(&c, &d, &repos, &steps, &[]);
        assert_eq!(
            states(&g[0]),
            [Passed, Passed, Running, Skipped, Skipped, Pending]
        );
        assert_eq!(
            states(&g[1]),
            [Passed, Passed, Passed, Pending, Skipped, Pending]
        );
    }

    #[test]
    fn grid_before_and_after() {
        use Cell::*;
        let c = config();
        let g = grid(&c, &delivery(State::Running, "rebase"), &[], &[], &[]);
        assert_eq!(g.len(), 2);
        assert_eq!(states(&g[0])[0], Running);
        let mut d = delivery(State::Failed, "test");
        d.error = "delivery failed in test (api)".into();
        let steps = [
            step(1, "api", "build", "passed"),
            step(3, "api", "test", "failed"),
        ];
        let journal = [JournalRow {
            at: 0,
            phase: "test".into(),
            repo: "api".into(),
            event: "failed".into(),
            detail: String::new(),
        }];
        let g = grid(&c, &d, &[repo("api")], &steps, &journal);
        assert_eq!(
            states(&g[0]),
            [Passed, Passed, Failed, Skipped, Skipped, NotRun]
        );
        let g = grid(
            &c,
            &delivery(State::Delivered, "merge"),
            &[repo("web")],
            &[],
            &[],
        );
        assert_eq!(
            states(&g[0]),
            [Passed, Passed, Passed, Passed, Skipped, Passed]
        );
    }

    #[test]
    fn untrusted_text_is_escaped() {
        let mut d = delivery(State::Running, "build");
        d.task = "<script>alert(1)</script>".into();
        d.requester = "\"><img src=x onerror=alert(1)>".into();
        let mut r = repo("api");
        r.branch = "feature/<b>x</b>&'\"".into();
        let v = QueueView {
            repos: vec!["api".into()],
            running: vec![InFlight {
                grid: grid(&config(), &d, std::slice::from_ref(&r), &[], &[]),
                delivery: d.clone(),
                current: vec![step(1, "api", "build", "running")],
            }],
            queued: vec![d.clone()],
            recent: vec![],
            now_ms: 10_000,
            refresh_secs: 5,
        };
        let html = queue_page(&v);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"));
        assert!(!html.contains("<b>x</b>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("feature/&lt;b&gt;x&lt;/b&gt;&amp;&#39;&quot;"));
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        let dv = DeliveryView {
            repos_all: vec![],
            delivery: d,
            repos: vec![r],
            grid: vec![],
            steps: vec![StepLog {
                step: step(1, "api", "build", "failed"),
                log: "</pre><script>x</script>".into(),
            }],
            journal: vec![],
            now_ms: 0,
            refresh_secs: 5,
        };
        let html = delivery_page(&dv);
        assert!(!html.contains("<script>x"));
        assert!(html.contains("&lt;/pre&gt;&lt;script&gt;x&lt;/script&gt;"));
    }

    /// One tag a line, so that a snapshot's diff shows which element changed.
    fn tags_per_line(html: &str) -> String {
        html.replace("><", ">\n<")
    }

    /// A queue with a delivery in flight, two waiting (one from the tracker) and two done.
    fn busy_queue() -> QueueView {
        let c = config();
        let running = delivery(State::Running, "test");
        let repos = [repo("api"), repo("web")];
        let steps = [
            step(1, "api", "build", "passed"),
            step(2, "web", "build", "passed"),
            step(3, "api", "test", "running"),
            step(4, "web", "test", "passed"),
        ];
        let mut from_tracker = delivery(State::Queued, "");
        (from_tracker.id, from_tracker.task, from_tracker.source) =
            (9, "TASK-3".into(), "tracker".into());
        (from_tracker.requester, from_tracker.origin) = (String::new(), String::new());
        (from_tracker.started_at, from_tracker.created_at) = (None, 30_000);
        let mut urgent = delivery(State::Queued, "");
        (urgent.id, urgent.task, urgent.priority) = (8, "TASK-2".into(), 5);
        (urgent.started_at, urgent.created_at) = (None, 20_000);
        let mut delivered = delivery(State::Delivered, "merge");
        (delivered.id, delivered.task) = (6, "TASK-4".into());
        delivered.finished_at = Some(65_000);
        let mut failed = delivery(State::Failed, "deploy");
        (failed.id, failed.task) = (5, "TASK-5".into());
        failed.finished_at = Some(4_000_000);
        failed.error = "delivery failed in deploy (web): `deploy` exited with 2".into();
        QueueView {
            repos: vec!["api".into(), "web".into()],
            running: vec![InFlight {
                grid: grid(&c, &running, &repos, &steps, &[]),
                delivery: running,
                current: vec![step(3, "api", "test", "running")],
            }],
            queued: vec![urgent, from_tracker],
            recent: vec![delivered, failed],
            now_ms: 7_500_000,
            refresh_secs: 3,
        }
    }

    #[test]
    fn queue_page_layout() {
        insta::assert_snapshot!(tags_per_line(&queue_page(&busy_queue())));
    }

    #[test]
    fn empty_queue_page_layout() {
        let v = QueueView {
            repos: vec!["api".into()],
            running: vec![],
            queued: vec![],
            recent: vec![],
            now_ms: 0,
            refresh_secs: 0,
        };
        insta::assert_snapshot!(tags_per_line(&queue_page(&v)));
    }

    #[test]
    fn delivery_page_layout() {
        let c = config();
        let mut d = delivery(State::Failed, "deploy");
        d.finished_at = Some(95_000);
        d.error = "delivery failed in deploy (web): `deploy` exited with 2".into();
        let mut api = repo("api");
        (api.deployed, api.rolled_back) = (true, true);
        let web = repo("web");
        let mut build = step(1, "api", "build", "passed");
        (build.finished_at, build.exit_code) = (Some(12_000), Some(0));
        let mut deploy = step(2, "web", "deploy", "failed");
        (deploy.finished_at, deploy.exit_code) = (Some(93_000), Some(2));
        let journal = [
            JournalRow {
                at: 1_000,
                phase: "rebase".into(),
                repo: String::new(),
                event: "phase".into(),
                detail: String::new(),
            },
            JournalRow {
                at: 93_000,
                phase: "deploy".into(),
                repo: "web".into(),
                event: "failed".into(),
                detail: "`deploy` exited with 2".into(),
            },
        ];
        let steps = [build.clone(), deploy.clone()];
        let repos = [api, web];
        let v = DeliveryView {
            repos_all: vec!["api".into(), "web".into()],
            grid: grid(&c, &d, &repos, &steps, &journal),
            delivery: d,
            repos: repos.to_vec(),
            steps: vec![
                StepLog {
                    step: build,
                    log: "building api\nok\n".into(),
                },
                StepLog {
                    step: deploy,
                    log: "deploying web\nerror: no route to host\n".into(),
                },
            ],
            journal: journal.to_vec(),
            now_ms: 100_000,
            refresh_secs: 3,
        };
        insta::assert_snapshot!(tags_per_line(&delivery_page(&v)));
    }

    #[test]
    fn durations() {
        assert_eq!(duration(42_000), "42s");
        assert_eq!(duration(65_000), "1m 05s");
        assert_eq!(duration(7_380_000), "2h 03m");
        assert_eq!(duration(-5), "0s");
    }
}
