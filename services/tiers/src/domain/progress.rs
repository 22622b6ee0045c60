//! Progress over time: per calendar month, the points earned in it and the active totals at
//! its end (or now, for the month in progress).

use tandem_platform::time::Micros;

use super::{PointsKind, calendar, status::Totals};

/// One ledger entry as the reports need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryFact {
    pub kind: PointsKind,
    pub points: i64,
    pub earned_at: Micros,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonthProgress {
    pub start: Micros,
    pub sold_earned: i64,
    pub managed_earned: i64,
    pub active: Totals,
}

/// The earliest `earned_at` the last `months` months (the current one included) need: entries
/// still active at the start of the first month.
pub fn window_start(now: Micros, months: i32) -> Micros {
    calendar::active_since(calendar::month_start_shifted(now, 1 - months))
}

/// `months` months ending with the current one, oldest first. `entries` must include every
/// entry earned since [`window_start`].
pub fn by_month(entries: &[EntryFact], now: Micros, months: i32) -> Vec<MonthProgress> {
    (1 - months..=0)
        .map(|delta| {
            let start = calendar::month_start_shifted(now, delta);
            let end = calendar::month_start_shifted(now, delta + 1).min(now.saturating_add(1));
            // Active at the month's last instant.
            let at = end - 1;
            let mut month =
                MonthProgress { start, sold_earned: 0, managed_earned: 0, active: Totals::default() };
            for e in entries.iter().filter(|e| e.earned_at <= at) {
                if e.earned_at >= start {
                    match e.kind {
                        PointsKind::Sold => month.sold_earned += e.points,
                        PointsKind::Managed => month.managed_earned += e.points,
                    }
                }
                month.active.add(e.kind, e.points, e.earned_at, at);
            }
            month.active.expired = 0;
            month
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::calendar::utc;

    fn e(kind: PointsKind, points: i64, earned_at: Micros) -> EntryFact {
        EntryFact { kind, points, earned_at }
    }

    #[test]
    fn months_show_earned_and_active_points() {
        let now = utc(2025, 3, 15, 12, 0, 0);
        let entries = [
            e(PointsKind::Sold, 100, utc(2024, 2, 20, 0, 0, 0)), // expires 2025-02-20
            e(PointsKind::Sold, 10, utc(2025, 1, 5, 0, 0, 0)),
            e(PointsKind::Managed, 4, utc(2025, 1, 31, 23, 59, 59)),
            e(PointsKind::Sold, 1, utc(2025, 3, 15, 11, 0, 0)),
            e(PointsKind::Sold, 1_000, utc(2025, 3, 16, 0, 0, 0)), // after now: not shown yet
        ];
        let months = by_month(&entries, now, 3);
        assert_eq!(months.len(), 3);
        assert_eq!(months[0].start, utc(2025, 1, 1, 0, 0, 0));
        assert_eq!((months[0].sold_earned, months[0].managed_earned), (10, 4));
        assert_eq!((months[0].active.sold, months[0].active.managed), (110, 4));
        // February: the 100 expired on the 20th.
        assert_eq!(months[1].start, utc(2025, 2, 1, 0, 0, 0));
        assert_eq!((months[1].sold_earned, months[1].active.sold, months[1].active.managed), (0, 10, 4));
        assert_eq!((months[2].sold_earned, months[2].active.total()), (1, 15));
    }

    #[test]
    fn the_window_covers_what_was_active_when_the_first_month_began() {
        let now = utc(2025, 3, 15, 12, 0, 0);
        assert_eq!(window_start(now, 3), utc(2024, 1, 1, 0, 0, 0) + 1);
        assert_eq!(window_start(now, 1), utc(2024, 3, 1, 0, 0, 0) + 1);
    }
}
