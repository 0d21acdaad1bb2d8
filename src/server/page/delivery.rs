//! A delivery's page (`GET /deliveries/{id}`): its grid, its repositories and where each
//! branch stood, every step with its log, and the journal.

use maud::{Markup, html};

use super::{
    ago, clock, document, duration, grid_table, header, pill, requested, stages_line, time_of_day,
};
use crate::domain::DeliveryId;
use crate::git::short;
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
    let back = html! { a href="/" style="color:#fff" { "← queue" } };
    document(
        &format!("lockstep · #{} {}", d.id, d.task),
        refresh,
        html! {
            (header(&v.repos_all, back))
            main {
                section {
                    h2 { "Delivery" }
                    div class="body" {
                        div class="task" {
                            "#" (d.id) " " (d.task) " " (pill(d.state.as_str(), d.state.as_str()))
                        }
                        div class="meta" {
                            (requested(d)) " · queued " (ago(v.now_ms, d.created_at))
                            @if let (Some(a), Some(b)) = (d.started_at, d.finished_at) {
                                " · took " (duration(b - a))
                            }
                        }
                        @if !d.error.is_empty() {
                            div class="why" style="margin-top:8px" { (d.error) }
                        }
                        (stages_line(&crate::delivery::stages_of(&v.journal)))
                        (grid_table(&v.grid))
                    }
                }
                @if !v.repos.is_empty() {
                    (repositories(&v.repos))
                }
                section id="steps" {
                    h2 { "Steps" }
                    @if v.steps.is_empty() {
                        p class="empty" { "No step has run yet." }
                    } @else {
                        div class="body" {
                            @for st in &v.steps {
                                (step(d.id, st, v.now_ms))
                            }
                        }
                    }
                }
                (journal(&v.journal))
            }
        },
    )
}

fn repositories(repos: &[RepoRow]) -> Markup {
    html! {
        section {
            h2 { "Repositories" }
            table {
                thead {
                    tr {
                        th { "repository" } th { "branch" } th { "branch at" } th { "onto" }
                        th { "rebased" } th { "state" }
                    }
                }
                tbody {
                    @for r in repos {
                        tr {
                            td { b { (r.repo) } }
                            td { code { (r.branch) } }
                            td { code { (short(&r.branch_sha)) } }
                            td { code { (short(&r.base_sha)) } }
                            td { code { (short(&r.rebased_sha)) } }
                            td { (r.flags()) }
                        }
                    }
                }
            }
        }
    }
}

fn step(delivery: DeliveryId, st: &StepLog, now_ms: i64) -> Markup {
    let step = &st.step;
    let took = duration(step.finished_at.unwrap_or(now_ms) - step.started_at);
    let class = match step.outcome.as_str() {
        "passed" => "passed",
        "running" => "running",
        _ => "failed",
    };
    html! {
        details id={ "step-" (step.id) } open[class != "passed"] {
            summary {
                (step.step) " " (step.repo) " · " (pill(class, step.outcome.as_str())) " "
                @if let Some(c) = step.exit_code {
                    "exit " (c)
                }
                " · " span class="num" { (took) } " · "
                a href={ "/deliveries/" (delivery) "/steps/" (step.id) "/log" } { "raw" }
            }
            pre class="log" { (st.log) }
        }
    }
}

fn journal(journal: &[JournalRow]) -> Markup {
    html! {
        section {
            h2 { "Journal" }
            table {
                thead {
                    tr {
                        th { "when" } th { "phase" } th { "repository" } th { "event" }
                        th { "detail" }
                    }
                }
                tbody {
                    @for j in journal {
                        tr {
                            td class="num" title=(clock(j.at)) { (time_of_day(j.at)) }
                            td { (j.stage) }
                            td { (j.repo) }
                            td { (j.event) }
                            td { (j.detail) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Event, Phase, State};
    use crate::server::fixtures::{config, delivery, repo, step, tags_per_line};
    use crate::server::grid::grid;

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
                stage: Phase::Rebase.into(),
                repo: String::new(),
                event: Event::Phase,
                detail: String::new(),
            },
            JournalRow {
                at: 93_000,
                stage: Phase::Deploy.into(),
                repo: "web".into(),
                event: Event::Failed,
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
