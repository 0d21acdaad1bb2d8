//! The watch after merge: for `[delivery] watch` after it lands, a delivery is watched, and a
//! firing alert about one of its repositories rolls it back (`Engine::roll_back` with revert).
//! Which delivery an alert names is decided here; the server takes the alerts in. An alert
//! that started before the delivery landed (less `[alertmanager] slack`) was not its doing
//! and rolls nothing back ([`started_after_landing`]). With `[delivery] watch_gates`, the
//! delivery's gates are sampled for the watch too.

use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;

use super::engine::Engine;
use crate::config::{DEFAULT_ALERT_SLACK, Gate, humanize};
use crate::domain::{DeliveryId, Event, Phase, RepoName, Stage};
use crate::monitor::Prometheus;
use crate::monitor::gate::{self, Watched};
use crate::store::{DeliveryRow, now_ms};

impl Engine {
    /// The latest watched delivery that spans one of `repos`, for an alert that started at
    /// `started_ms` (ms since the epoch, when known); else why there is none (`Err`, a
    /// sentence for the answer to Alertmanager and the alert's record).
    pub async fn watched_delivery(
        &self,
        repos: &[RepoName],
        started_ms: Option<i64>,
    ) -> anyhow::Result<Result<DeliveryRow, String>> {
        let watch = self.config.delivery.watch;
        let names: Vec<String> = repos.iter().map(|r| format!("`{r}`")).collect();
        if watch.is_zero() {
            return Ok(Err(
                "`[delivery] watch` is not set, so no delivery is watched".into(),
            ));
        }
        let since = now_ms() - i64::try_from(watch.as_millis()).unwrap_or(i64::MAX);
        for d in self.store.delivered_since(since).await? {
            let spans = self
                .store
                .repos(d.id)
                .await?
                .iter()
                .any(|r| r.merged && repos.contains(&r.repo));
            if !spans {
                continue;
            }
            // Rolled back already when every repository it merged was reverted (a rollback
            // without revert leaves the code merged: an alert still reverts it).
            let journal = self.store.journal_of(d.id).await?;
            let rolled_back = self
                .store
                .repos(d.id)
                .await?
                .iter()
                .filter(|r| r.merged)
                .all(|r| {
                    journal.iter().any(|j| {
                        j.stage == Stage::Phase(Phase::Rollback)
                            && j.event == Event::Reverted
                            && r.repo == j.repo
                    })
                });
            if rolled_back {
                return Ok(Err(format!(
                    "#{} of `{}`, the latest watched delivery of {}, was already rolled back",
                    d.id,
                    d.task,
                    names.join(", ")
                )));
            }
            let slack = self
                .config
                .alertmanager
                .as_ref()
                .map_or(DEFAULT_ALERT_SLACK, |a| a.slack);
            let landed = journal
                .iter()
                .filter(|j| j.stage == Stage::Phase(Phase::Merge) && j.event == Event::Pushed)
                .map(|j| j.at)
                .min()
                .or(d.finished_at);
            if let (Some(started), Some(landed)) = (started_ms, landed)
                && let Err(why) = started_after_landing(started, landed, slack)
            {
                return Ok(Err(format!(
                    "#{} of `{}`, the latest watched delivery of {}, {why}",
                    d.id,
                    d.task,
                    names.join(", ")
                )));
            }
            return Ok(Ok(d));
        }
        Ok(Err(format!(
            "no delivery of {} landed in the last {}, the watch",
            names.join(", "),
            watch_words(watch)
        )))
    }
}

impl Engine {
    /// `[delivery] watch_gates`: samples the gates guarding a landed delivery, every `every`,
    /// for the watch. Returns the first failure, if one comes; `None` when every gate held
    /// (or none is to be watched).
    pub async fn watch_gates(&self, id: DeliveryId) -> anyhow::Result<Option<String>> {
        let watch = self.config.delivery.watch;
        let Some(config) = &self.config.prometheus else {
            return Ok(None);
        };
        if !self.config.delivery.watch_gates || watch.is_zero() {
            return Ok(None);
        }
        let repos: Vec<RepoName> = self
            .store
            .repos(id)
            .await?
            .into_iter()
            .map(|r| r.repo)
            .collect();
        let gates: Vec<Gate> = self
            .config
            .gates
            .iter()
            .filter(|g| g.guards(repos.iter().map(RepoName::as_str)))
            .map(|g| Gate {
                duration: watch,
                ..g.clone()
            })
            .collect();
        if gates.is_empty() {
            return Ok(None);
        }
        let prometheus = Prometheus::from_config(config)?;
        self.store
            .journal(
                id,
                Stage::Watch,
                "",
                Event::GatesWatched,
                &format!("for {}", watch_words(watch)),
            )
            .await?;
        let mut running: FuturesUnordered<_> =
            gates.iter().map(|g| gate::watch(&prometheus, g)).collect();
        while let Some(watched) = running.next().await {
            if let Watched::Failed(why) = watched {
                self.store
                    .journal(id, Stage::Watch, "", Event::GateFailed, &why)
                    .await?;
                return Ok(Some(why));
            }
        }
        self.store
            .journal(id, Stage::Watch, "", Event::GatesHeld, "")
            .await?;
        Ok(None)
    }
}

/// Whether an alert that started at `started_ms` may be the doing of a delivery that landed
/// (its first push upstream) at `landed_ms`: only if it started after that, less `slack`.
/// `Err` says why not, in words that follow the delivery's name.
pub fn started_after_landing(
    started_ms: i64,
    landed_ms: i64,
    slack: Duration,
) -> Result<(), String> {
    let slack_ms = i64::try_from(slack.as_millis()).unwrap_or(i64::MAX);
    if started_ms >= landed_ms.saturating_sub(slack_ms) {
        return Ok(());
    }
    let at = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).map_or_else(
            || format!("{ms} ms"),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
    };
    let before = Duration::from_secs(
        u64::try_from(landed_ms.saturating_sub(started_ms) / 1000).unwrap_or(0),
    );
    Err(format!(
        "landed at {}, {} after the alert started ({}): more than `[alertmanager] slack` ({}), \
         so it is not the delivery's doing",
        at(landed_ms),
        watch_words(before),
        at(started_ms),
        humanize(slack)
    ))
}

/// `15m`, `90s`: the watch as the config would write it.
fn watch_words(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() == 0 && s >= 60 && s.is_multiple_of(60) {
        if s.is_multiple_of(3600) {
            format!("{}h", s / 3600)
        } else {
            format!("{}m", s / 60)
        }
    } else {
        humanize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 22: an alert counts against a delivery only if it started after the delivery
    /// landed, less the slack.
    #[test]
    fn issue22_an_alert_from_before_the_landing_is_not_the_deliverys() {
        let landed = 1_796_028_600_000; // 2026-11-30T08:50:00Z
        let slack = Duration::from_secs(30);
        assert_eq!(started_after_landing(landed + 1, landed, slack), Ok(()));
        assert_eq!(
            started_after_landing(landed - 30_000, landed, slack),
            Ok(())
        );
        assert!(started_after_landing(landed - 30_001, landed, slack).is_err());
        assert_eq!(
            started_after_landing(landed - 31_000, landed, slack),
            Err(
                "landed at 2026-11-30T08:50:00Z, 31s after the alert started \
                 (2026-11-30T08:49:29Z): more than `[alertmanager] slack` (30s), so it is not \
                 the delivery's doing"
                    .into()
            )
        );
        assert!(
            started_after_landing(landed - 3_600_000, landed, Duration::ZERO)
                .unwrap_err()
                .starts_with("landed at 2026-11-30T08:50:00Z, 1h after the alert started")
        );
        assert!(started_after_landing(i64::MIN, i64::MAX, slack).is_err());
    }

    #[test]
    fn watches_read_as_written() {
        assert_eq!(watch_words(Duration::from_secs(900)), "15m");
        assert_eq!(watch_words(Duration::from_secs(7200)), "2h");
        assert_eq!(watch_words(Duration::from_secs(90)), "90s");
    }
}
