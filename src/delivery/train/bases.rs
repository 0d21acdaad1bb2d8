//! Whether a delivery's preparation still holds: the pure judgement of the pipeline.
//!
//! In every repository it touches, a delivery is rebased onto the rebased result of the
//! nearest delivery ahead of it that touches the same repository, or onto the upstream's tip
//! when none does. Its preparation holds while, for every such repository, the base it used
//! is still the base it would get now, from the deliveries ahead as they are now and the
//! upstreams' current tips.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::{DeliveryId, RepoName};
use crate::store::DiscardReason;

/// What a delivery ahead contributes to the bases of those behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ahead {
    /// Rebased: its id and its rebased commit per repository it touches.
    Rebased {
        id: DeliveryId,
        repos: BTreeMap<RepoName, String>,
    },
    /// Not rebased yet: which repositories it touches, and so what it gives, is unknown.
    Unknown,
    /// Its preparation failed: those behind are built without it (Zuul's "nearest
    /// non-failing item").
    Skipped,
}

/// Where a base comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Base {
    /// The rebased commit of the delivery ahead with this id.
    Ahead(DeliveryId, String),
    /// The upstream's tip.
    Upstream(String),
}

impl Base {
    pub(super) fn sha(&self) -> &str {
        match self {
            Base::Ahead(_, sha) | Base::Upstream(sha) => sha,
        }
    }
}

/// The base a delivery behind `ahead` (in train order, nearest last) gets in `repo`; `None`
/// while it cannot be known (a delivery ahead is not rebased yet, or the tip is unknown).
pub(super) fn base_of(
    ahead: &[Ahead],
    tips: &BTreeMap<RepoName, String>,
    repo: &RepoName,
) -> Option<Base> {
    for a in ahead.iter().rev() {
        match a {
            Ahead::Rebased { id, repos } => {
                if let Some(sha) = repos.get(repo) {
                    return Some(Base::Ahead(*id, sha.clone()));
                }
            }
            Ahead::Unknown => return None,
            Ahead::Skipped => {}
        }
    }
    tips.get(repo).map(|sha| Base::Upstream(sha.clone()))
}

/// The verdict on a prepared (or preparing) delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Every base it used is still the one it would get.
    Holds,
    /// Cannot tell yet: a delivery ahead is being prepared again.
    Pending,
    /// A base changed: why, for the journal and the metric.
    Changed(DiscardReason, String),
}

/// The bases a delivery used, per repository: the commit and where it came from.
pub(super) type Used = BTreeMap<RepoName, Base>;

/// Judges a delivery's bases (`used`) against the deliveries ahead of it as they are now.
/// `landed` are the deliveries that landed since (the upstream now holds what it was built
/// on), `overtakers` those that went ahead of waiting ones by priority.
pub(super) fn judge(
    used: &Used,
    ahead: &[Ahead],
    tips: &BTreeMap<RepoName, String>,
    landed: &BTreeSet<DeliveryId>,
    overtakers: &BTreeSet<DeliveryId>,
) -> Verdict {
    let mut pending = false;
    for (repo, was) in used {
        let Some(now) = base_of(ahead, tips, repo) else {
            pending = true;
            continue;
        };
        if now.sha() == was.sha() {
            continue;
        }
        let in_train = |id: DeliveryId| {
            ahead
                .iter()
                .any(|a| matches!(a, Ahead::Rebased { id: x, .. } if *x == id))
        };
        let (reason, why) = match (was, &now) {
            (Base::Ahead(gone, _), _) if !in_train(*gone) && !landed.contains(gone) => (
                DiscardReason::AheadChanged,
                format!("#{gone}, which it was built on in `{repo}`, left the line"),
            ),
            (_, Base::Ahead(id, _)) if overtakers.contains(id) => (
                DiscardReason::Overtaken,
                format!("#{id} went ahead of it by priority in `{repo}`"),
            ),
            (_, Base::Ahead(id, _)) => (
                DiscardReason::AheadChanged,
                format!("#{id}, ahead of it in `{repo}`, was prepared again"),
            ),
            (_, Base::Upstream(sha)) => (
                DiscardReason::UpstreamMoved,
                format!(
                    "the upstream of `{repo}` moved to {}",
                    crate::git::short(sha)
                ),
            ),
        };
        return Verdict::Changed(reason, format!("base changed ({why})"));
    }
    if pending {
        Verdict::Pending
    } else {
        Verdict::Holds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rebased(id: i64, repos: &[(&str, &str)]) -> Ahead {
        Ahead::Rebased {
            id: DeliveryId(id),
            repos: repos
                .iter()
                .map(|(r, s)| (RepoName::from(*r), s.to_string()))
                .collect(),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<RepoName, String> {
        pairs
            .iter()
            .map(|(r, s)| (RepoName::from(*r), s.to_string()))
            .collect()
    }

    fn used(pairs: &[(&str, Base)]) -> Used {
        pairs
            .iter()
            .map(|(r, b)| (RepoName::from(*r), b.clone()))
            .collect()
    }

    #[test]
    fn the_base_is_the_nearest_delivery_ahead_in_the_same_repository() {
        let tips = map(&[("api", "t-api"), ("web", "t-web")]);
        let ahead = [
            rebased(1, &[("api", "a1"), ("web", "w1")]),
            rebased(2, &[("api", "a2")]),
            Ahead::Skipped,
        ];
        assert_eq!(
            base_of(&ahead, &tips, &"api".into()),
            Some(Base::Ahead(DeliveryId(2), "a2".into()))
        );
        assert_eq!(
            base_of(&ahead, &tips, &"web".into()),
            Some(Base::Ahead(DeliveryId(1), "w1".into()))
        );
        assert_eq!(
            base_of(&[], &tips, &"web".into()),
            Some(Base::Upstream("t-web".into()))
        );
        assert_eq!(base_of(&[Ahead::Unknown], &tips, &"api".into()), None);
        assert_eq!(base_of(&[], &tips, &"db".into()), None);
    }

    #[test]
    fn a_preparation_holds_until_a_base_it_used_changes() {
        let tips = map(&[("api", "t-api"), ("web", "t-web")]);
        let none = BTreeSet::new();
        let on_1 = used(&[("api", Base::Ahead(DeliveryId(1), "a1".into()))]);
        let ahead = [rebased(1, &[("api", "a1")])];
        assert_eq!(judge(&on_1, &ahead, &tips, &none, &none), Verdict::Holds);
        // #1 landed: the upstream is now its commit, the same base.
        let landed_tips = map(&[("api", "a1")]);
        let landed = BTreeSet::from([DeliveryId(1)]);
        assert_eq!(
            judge(&on_1, &[], &landed_tips, &landed, &none),
            Verdict::Holds
        );
        // #1 failed and left: built on the upstream now.
        let Verdict::Changed(reason, why) = judge(&on_1, &[], &tips, &none, &none) else {
            panic!("a base built on a failed delivery holds");
        };
        assert_eq!(reason, DiscardReason::AheadChanged);
        assert_eq!(
            why,
            "base changed (#1, which it was built on in `api`, left the line)"
        );
        // #1 is being prepared again: wait.
        assert_eq!(
            judge(&on_1, &[Ahead::Unknown], &tips, &none, &none),
            Verdict::Pending
        );
        // A failed delivery ahead in another repository changes nothing.
        let on_web = used(&[("web", Base::Upstream("t-web".into()))]);
        assert_eq!(
            judge(&on_web, &[Ahead::Skipped], &tips, &none, &none),
            Verdict::Holds
        );
        // A maintainer moved the upstream.
        let moved = map(&[("web", "t-web2")]);
        let Verdict::Changed(reason, _) = judge(&on_web, &[], &moved, &none, &none) else {
            panic!("a moved upstream goes unnoticed");
        };
        assert_eq!(reason, DiscardReason::UpstreamMoved);
        // A delivery of higher priority went ahead of it.
        let overtakers = BTreeSet::from([DeliveryId(5)]);
        let ahead = [rebased(5, &[("web", "w5")])];
        let Verdict::Changed(reason, _) = judge(&on_web, &ahead, &tips, &none, &overtakers) else {
            panic!("an overtaker goes unnoticed");
        };
        assert_eq!(reason, DiscardReason::Overtaken);
    }
}
