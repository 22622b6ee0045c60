//! A team's tier status from its active points: the current tier (the highest whose threshold
//! the total reaches and whose sold and managed minimums are met), the credited tier (the
//! current tier when it needs no certification or the team holds a valid one, else the highest
//! tier below it that needs none and whose requirements are met), and what is missing for the
//! next tier or a chosen target.

use super::PointsKind;
use crate::domain::calendar;
use tandem_platform::time::Micros;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierDef {
    pub id: String,
    pub name: String,
    pub rank: i32,
    pub points_threshold: i64,
    pub sold_points_minimum: i64,
    pub managed_points_minimum: i64,
    pub requires_certification: bool,
}

/// Active sold and managed points (and the expired ones, shown but never counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub sold: i64,
    pub managed: i64,
    pub expired: i64,
}

impl Totals {
    pub fn total(&self) -> i64 {
        self.sold.saturating_add(self.managed)
    }

    /// Adds one entry as it stands at `now`.
    pub fn add(&mut self, kind: PointsKind, points: i64, earned_at: Micros, now: Micros) {
        if calendar::is_expired(earned_at, now) {
            self.expired = self.expired.saturating_add(points);
        } else {
            match kind {
                PointsKind::Sold => self.sold = self.sold.saturating_add(points),
                PointsKind::Managed => self.managed = self.managed.saturating_add(points),
            }
        }
    }
}

impl TierDef {
    pub fn reached_by(&self, totals: &Totals) -> bool {
        totals.total() >= self.points_threshold
            && totals.sold >= self.sold_points_minimum
            && totals.managed >= self.managed_points_minimum
    }
}

/// What is still missing for one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub points: i64,
    pub sold: i64,
    pub managed: i64,
}

impl Gap {
    pub fn to(tier: &TierDef, totals: &Totals) -> Self {
        Self {
            points: tier.points_threshold.saturating_sub(totals.total()).max(0),
            sold: tier.sold_points_minimum.saturating_sub(totals.sold).max(0),
            managed: tier.managed_points_minimum.saturating_sub(totals.managed).max(0),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status<'a> {
    pub totals: Totals,
    pub current: Option<&'a TierDef>,
    pub credited: Option<&'a TierDef>,
    pub next: Option<&'a TierDef>,
    pub next_gap: Option<Gap>,
    pub target: Option<&'a TierDef>,
    pub target_gap: Option<Gap>,
    /// The gap to the goal tier: the target, else the next tier, else the current one.
    pub goal_gap: Option<Gap>,
    pub certified: bool,
}

/// The highest-ranked tier the totals reach.
pub fn current_tier<'a>(tiers: &'a [TierDef], totals: &Totals) -> Option<&'a TierDef> {
    tiers.iter().filter(|t| t.reached_by(totals)).max_by_key(|t| t.rank)
}

/// The tier the team is credited with, given whether it holds a valid certification.
pub fn credited_tier<'a>(tiers: &'a [TierDef], totals: &Totals, certified: bool) -> Option<&'a TierDef> {
    let current = current_tier(tiers, totals)?;
    if !current.requires_certification || certified {
        return Some(current);
    }
    tiers
        .iter()
        .filter(|t| t.rank < current.rank && !t.requires_certification && t.reached_by(totals))
        .max_by_key(|t| t.rank)
}

pub fn evaluate<'a>(
    tiers: &'a [TierDef],
    totals: Totals,
    certified: bool,
    target: Option<&'a TierDef>,
) -> Status<'a> {
    let current = current_tier(tiers, &totals);
    let credited = credited_tier(tiers, &totals, certified);
    let next = tiers.iter().filter(|t| current.is_none_or(|c| t.rank > c.rank)).min_by_key(|t| t.rank);
    let next_gap = next.map(|t| Gap::to(t, &totals));
    let target_gap = target.map(|t| Gap::to(t, &totals));
    let goal_gap = target.or(next).or(current).map(|t| Gap::to(t, &totals));
    Status { totals, current, credited, next, next_gap, target, target_gap, goal_gap, certified }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::calendar::utc;

    fn tier(id: &str, rank: i32, threshold: i64, sold: i64, managed: i64, cert: bool) -> TierDef {
        TierDef {
            id: id.into(),
            name: id.into(),
            rank,
            points_threshold: threshold,
            sold_points_minimum: sold,
            managed_points_minimum: managed,
            requires_certification: cert,
        }
    }

    /// Gold < Platinum < Diamond < Elite, as HubSpot names them (given out of order).
    fn ladder() -> Vec<TierDef> {
        vec![
            tier("diamond", 3, 2_000, 500, 500, true),
            tier("gold", 1, 100, 0, 0, false),
            tier("elite", 4, 5_000, 1_000, 1_000, true),
            tier("platinum", 2, 500, 100, 0, false),
        ]
    }

    fn totals(sold: i64, managed: i64) -> Totals {
        Totals { sold, managed, expired: 0 }
    }

    fn id(t: Option<&TierDef>) -> Option<&str> {
        t.map(|t| t.id.as_str())
    }

    #[test]
    fn current_tier_needs_threshold_and_minimums() {
        let tiers = ladder();
        for (sold, managed, expected) in [
            (0, 0, None),
            (99, 0, None),
            (100, 0, Some("gold")),
            (50, 50, Some("gold")),
            (500, 0, Some("platinum")),
            (99, 401, Some("gold")), // 500 total but sold minimum 100 missed
            (100, 400, Some("platinum")),
            (1_999, 0, Some("platinum")),
            (1_500, 499, Some("platinum")), // managed minimum of diamond missed
            (1_500, 500, Some("diamond")),
            (4_000, 999, Some("diamond")),
            (4_000, 1_000, Some("elite")),
            (100_000, 100_000, Some("elite")),
        ] {
            assert_eq!(id(current_tier(&tiers, &totals(sold, managed))), expected, "{sold}/{managed}");
        }
    }

    #[test]
    fn credited_tier_follows_the_certification_rule() {
        let tiers = ladder();
        let t = totals(4_000, 1_000);
        assert_eq!(id(credited_tier(&tiers, &t, true)), Some("elite"));
        // Elite and Diamond need certification: Platinum is the highest that does not.
        assert_eq!(id(credited_tier(&tiers, &t, false)), Some("platinum"));
        // Tiers that need no certification are credited as they are.
        assert_eq!(id(credited_tier(&tiers, &totals(600, 0), false)), Some("platinum"));
        assert_eq!(id(credited_tier(&tiers, &totals(0, 0), true)), None);
        // A lone certified tier without one below: nothing credited.
        let only = vec![tier("x", 1, 10, 0, 0, true)];
        assert_eq!(id(credited_tier(&only, &totals(10, 0), false)), None);
        assert_eq!(id(credited_tier(&only, &totals(10, 0), true)), Some("x"));
    }

    #[test]
    fn a_lower_tier_is_credited_only_when_its_own_requirements_are_met() {
        // Platinum here asks a sold minimum the team misses: no fallback to it, Gold instead.
        let tiers = vec![
            tier("gold", 1, 100, 0, 0, false),
            tier("platinum", 2, 500, 3_000, 0, false),
            tier("diamond", 3, 1_000, 0, 0, true),
        ];
        assert_eq!(id(credited_tier(&tiers, &totals(200, 900), false)), Some("gold"));
    }

    #[test]
    fn gaps_to_the_next_and_target_tier() {
        let tiers = ladder();
        let s = evaluate(&tiers, totals(300, 50), false, None);
        assert_eq!(id(s.current), Some("gold"));
        assert_eq!(id(s.next), Some("platinum"));
        assert_eq!(s.next_gap, Some(Gap { points: 150, sold: 0, managed: 0 }));
        assert_eq!(s.goal_gap, s.next_gap);
        let target = tiers.iter().find(|t| t.id == "elite");
        let s = evaluate(&tiers, totals(300, 50), false, target);
        assert_eq!(s.target_gap, Some(Gap { points: 4_650, sold: 700, managed: 950 }));
        assert_eq!(s.goal_gap, s.target_gap);
        // A target already passed needs nothing.
        let target = tiers.iter().find(|t| t.id == "gold");
        assert_eq!(
            evaluate(&tiers, totals(300, 50), false, target).target_gap,
            Some(Gap { points: 0, sold: 0, managed: 0 })
        );
    }

    #[test]
    fn at_the_top_and_at_the_bottom() {
        let tiers = ladder();
        let top = evaluate(&tiers, totals(10_000, 10_000), true, None);
        assert_eq!(id(top.current), Some("elite"));
        assert_eq!(top.next, None);
        assert_eq!(top.next_gap, None);
        assert_eq!(top.goal_gap, Some(Gap { points: 0, sold: 0, managed: 0 }));
        let bottom = evaluate(&tiers, totals(0, 0), false, None);
        assert_eq!(id(bottom.next), Some("gold"));
        assert_eq!(bottom.next_gap.unwrap().points, 100);
        let none = evaluate(&[], totals(5, 5), false, None);
        assert_eq!((none.current, none.next, none.goal_gap), (None, None, None));
    }

    #[test]
    fn negative_corrections_can_drop_a_tier() {
        let tiers = ladder();
        assert_eq!(id(current_tier(&tiers, &totals(100, 0))), Some("gold"));
        assert_eq!(id(current_tier(&tiers, &totals(100, -1))), None);
        assert_eq!(Gap::to(&tiers[1], &totals(100, -1)).points, 1);
    }

    #[test]
    fn totals_leave_expired_points_out() {
        let now = utc(2025, 6, 1, 0, 0, 0);
        let mut t = Totals::default();
        t.add(PointsKind::Sold, 10, utc(2025, 5, 1, 0, 0, 0), now);
        t.add(PointsKind::Managed, 5, utc(2024, 6, 1, 0, 0, 1), now);
        t.add(PointsKind::Sold, 7, utc(2024, 6, 1, 0, 0, 0), now); // exactly 12 months: expired
        t.add(PointsKind::Managed, 3, utc(2023, 1, 1, 0, 0, 0), now);
        assert_eq!(t, Totals { sold: 10, managed: 5, expired: 10 });
        assert_eq!(t.total(), 15);
    }
}
