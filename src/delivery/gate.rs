//! The metric gates of the verify phase: every `[[gate]]` guarding one of the delivery's
//! repositories is sampled from the end of deploy, alongside the verify steps. The first gate
//! that fails stops the line, and the delivery is rolled back as for a failed verify step.

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

use super::engine::{Checkout, Engine};
use super::stop::{Failure, Stop};
use crate::config::Gate;
use crate::domain::{Event, Phase};
use crate::monitor::Prometheus;
use crate::monitor::gate::{self, Watched};
use crate::store::DeliveryRow;

/// Why a rollback ran, as the journal and `/metrics` count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A `[[gate]]` failed in verify (or during the watch).
    Gate,
    /// Alertmanager reported a firing alert about a watched delivery.
    Alert,
    /// `lockstep rollback` or `/rollback`.
    Manual,
}

impl Trigger {
    pub const ALL: [Trigger; 3] = [Trigger::Gate, Trigger::Alert, Trigger::Manual];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Gate => "gate",
            Trigger::Alert => "alert",
            Trigger::Manual => "manual",
        }
    }
}

impl Engine {
    /// The gates guarding a delivery of these checkouts.
    fn gates_for<'a>(&'a self, checkouts: &'a [Checkout]) -> Vec<&'a Gate> {
        self.config
            .gates
            .iter()
            .filter(|g| g.guards(checkouts.iter().map(|c| c.row.repo.as_str())))
            .collect()
    }

    /// The verify phase of a stage: the verify steps, one repository at a time, and the
    /// gates, all at once. A failed step stops the gates; a failed gate lets the step under way finish (its
    /// record stays whole), then stops the line.
    pub(super) async fn verify_phase(
        &self,
        d: &DeliveryRow,
        checkouts: &[Checkout],
        stage: &str,
    ) -> Result<(), Stop> {
        let steps = self.serial_phase(d, Phase::Verify, checkouts, stage);
        let gates = self.run_gates(d, checkouts);
        tokio::pin!(steps, gates);
        tokio::select! {
            r = &mut steps => {
                r?;
                gates.await
            }
            r = &mut gates => {
                let stepped = steps.await;
                r?;
                stepped
            }
        }
    }

    /// Samples every gate of the delivery; the first failure is the line's.
    async fn run_gates(&self, d: &DeliveryRow, checkouts: &[Checkout]) -> Result<(), Stop> {
        let gates = self.gates_for(checkouts);
        let Some(config) = self
            .config
            .prometheus
            .as_ref()
            .filter(|_| !gates.is_empty())
        else {
            return Ok(());
        };
        let prometheus = Prometheus::from_config(config)
            .map_err(|e| Failure::new(Phase::Verify, None, format!("{e:#}")))?;
        let mut running = FuturesUnordered::new();
        for g in gates {
            self.store
                .journal(
                    d.id,
                    Phase::Verify,
                    "",
                    Event::GateStarted,
                    &format!(
                        "gate `{}`: `{}` every {} for {}, {}",
                        g.name,
                        g.query,
                        crate::config::humanize(g.every),
                        crate::config::humanize(g.duration),
                        g.bounds()
                    ),
                )
                .await?;
            let prometheus = &prometheus;
            running.push(async move { (g, gate::watch(prometheus, g).await) });
        }
        while let Some((g, watched)) = running.next().await {
            let line = watched.describe(g);
            match watched {
                Watched::Passed { samples, .. } => {
                    self.store
                        .journal(d.id, Phase::Verify, "", Event::GatePassed, &line)
                        .await?;
                    self.say(&format!(
                        "#{} {}: gate     {:<12} passed ({samples} sample(s))",
                        d.id, d.task, g.name
                    ));
                }
                Watched::Failed(why) => {
                    self.store
                        .journal(d.id, Phase::Verify, "", Event::GateFailed, &line)
                        .await?;
                    self.store
                        .journal(
                            d.id,
                            Phase::Rollback,
                            "",
                            Event::RollbackTriggered,
                            Trigger::Gate.as_str(),
                        )
                        .await?;
                    self.say(&format!(
                        "#{} {}: gate     {:<12} failed",
                        d.id, d.task, g.name
                    ));
                    return Err(Failure::new(Phase::Verify, None, why).into());
                }
            }
        }
        Ok(())
    }
}
