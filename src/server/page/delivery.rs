//! A delivery's page (`GET /deliveries/{id}`): its grid, its repositories and where each
//! branch stood, every step with its log, and the journal.

use std::fmt::Write as _;

use super::{ago, clock, duration, esc, grid_table, head, header, pill, requested, time_of_day};
use crate::server::grid::GridRow;
use crate::store::{DeliveryRow, JournalRow, RepoRow, StepRow};

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
    use crate::server::fixtures::{config, delivery, repo, step, tags_per_line};
    use crate::server::grid::grid;
    use crate::store::State;

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
}
