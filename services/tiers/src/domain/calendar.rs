//! UTC calendar arithmetic on instants in microseconds: months, and the 12-month life of points.
//!
//! Points expire 12 calendar months after they are earned, at the same time of day on the same
//! day of the month ([`expire_time`]); from that instant on they are expired. A day that does
//! not exist in the target month (29 February in a common year) rolls forward to the first
//! instant of the next month, so points earned on 29 February 2024 count until 1 March 2025.
//! [`active_since`] is the inverse the ledger queries with: an entry earned at `e` is active at
//! `now` exactly when `e >= active_since(now)`, which is an index range on `earned_at`.

use tandem_platform::time::{MICROS_PER_DAY, Micros};

/// Months points stay active.
pub const ACTIVE_MONTHS: i32 = 12;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `(year, month)` moved by `delta` months.
fn shift_month(year: i64, month: u32, delta: i32) -> (i64, u32) {
    let index = year * 12 + i64::from(month) - 1 + i64::from(delta);
    (index.div_euclid(12), u32::try_from(index.rem_euclid(12)).unwrap_or(0) + 1)
}

/// The instant `delta` calendar months from `t`, same day and time of day; a day the target
/// month lacks rolls forward to the first instant of the following month. Returns whether it
/// rolled.
pub fn add_months(t: Micros, delta: i32) -> (Micros, bool) {
    let days = t.div_euclid(MICROS_PER_DAY);
    let time_of_day = t.rem_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (y, m) = shift_month(year, month, delta);
    if day > days_in_month(y, m) {
        let (ny, nm) = shift_month(y, m, 1);
        (days_from_civil(ny, nm, 1) * MICROS_PER_DAY, true)
    } else {
        (days_from_civil(y, m, day) * MICROS_PER_DAY + time_of_day, false)
    }
}

/// When points earned at `earned_at` stop counting.
pub fn expire_time(earned_at: Micros) -> Micros {
    add_months(earned_at, ACTIVE_MONTHS).0
}

/// Whether points earned at `earned_at` are expired at `now`.
pub fn is_expired(earned_at: Micros, now: Micros) -> bool {
    now >= expire_time(earned_at)
}

/// The earliest `earned_at` whose points are still active at `now`: 12 months before `now`,
/// one microsecond later (points exactly 12 months old are expired), or the first instant of
/// the month after when that day does not exist (every earlier instant of the month expired
/// by then).
pub fn active_since(now: Micros) -> Micros {
    let (back, rolled) = add_months(now, -ACTIVE_MONTHS);
    if rolled { back } else { back + 1 }
}

/// The first instant of the month `t` falls in.
pub fn month_start(t: Micros) -> Micros {
    let (year, month, _) = civil_from_days(t.div_euclid(MICROS_PER_DAY));
    days_from_civil(year, month, 1) * MICROS_PER_DAY
}

/// The first instant of the month `delta` months from the one `t` falls in.
pub fn month_start_shifted(t: Micros, delta: i32) -> Micros {
    let (year, month, _) = civil_from_days(t.div_euclid(MICROS_PER_DAY));
    let (y, m) = shift_month(year, month, delta);
    days_from_civil(y, m, 1) * MICROS_PER_DAY
}

/// An instant from a UTC date and time (tests and fixtures).
pub fn utc(year: i64, month: u32, day: u32, hour: i64, minute: i64, second: i64) -> Micros {
    (days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second) * 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!(d >= 1 && d <= days_in_month(y, m));
        }
    }

    #[test]
    fn leap_years() {
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2025, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2025, 4), 30);
        assert_eq!(days_in_month(2025, 12), 31);
    }

    #[test]
    fn months_are_added_on_the_calendar() {
        let t = utc(2024, 5, 10, 13, 45, 7) + 123;
        assert_eq!(add_months(t, 12), (utc(2025, 5, 10, 13, 45, 7) + 123, false));
        assert_eq!(add_months(t, -12), (utc(2023, 5, 10, 13, 45, 7) + 123, false));
        assert_eq!(add_months(t, 8), (utc(2025, 1, 10, 13, 45, 7) + 123, false));
        assert_eq!(add_months(t, -5), (utc(2023, 12, 10, 13, 45, 7) + 123, false));
        assert_eq!(add_months(utc(2024, 1, 31, 9, 0, 0), 1), (utc(2024, 3, 1, 0, 0, 0), true));
        assert_eq!(add_months(utc(2024, 2, 29, 9, 0, 0), 12), (utc(2025, 3, 1, 0, 0, 0), true));
        assert_eq!(add_months(utc(2024, 2, 29, 9, 0, 0), 48), (utc(2028, 2, 29, 9, 0, 0), false));
        assert_eq!(add_months(utc(1969, 12, 31, 23, 0, 0), 1), (utc(1970, 1, 31, 23, 0, 0), false));
    }

    #[test]
    fn points_expire_exactly_twelve_months_after_they_are_earned() {
        let earned = utc(2024, 5, 10, 12, 0, 0);
        assert_eq!(expire_time(earned), utc(2025, 5, 10, 12, 0, 0));
        assert!(!is_expired(earned, utc(2025, 5, 10, 12, 0, 0) - 1));
        assert!(is_expired(earned, utc(2025, 5, 10, 12, 0, 0)));
        assert!(!is_expired(earned, earned));
        // The ledger's range bound agrees at the boundary.
        let now = utc(2025, 5, 10, 12, 0, 0);
        assert_eq!(active_since(now), earned + 1);
        assert_eq!(active_since(now - 1), earned);
    }

    #[test]
    fn leap_day_points_count_until_the_first_of_march() {
        let earned = utc(2024, 2, 29, 18, 30, 0);
        assert_eq!(expire_time(earned), utc(2025, 3, 1, 0, 0, 0));
        assert!(!is_expired(earned, utc(2025, 2, 28, 23, 59, 59)));
        assert!(is_expired(earned, utc(2025, 3, 1, 0, 0, 0)));
        // On 29 February of a leap year, everything earned in February a year before has expired.
        assert_eq!(active_since(utc(2028, 2, 29, 10, 0, 0)), utc(2027, 3, 1, 0, 0, 0));
    }

    #[test]
    fn active_since_is_the_exact_inverse_of_expiry() {
        // Around month ends, leap days and the instant boundary, for many pairs.
        let mut instants = Vec::new();
        for (y, m, d) in [
            (2023, 2, 28),
            (2024, 2, 28),
            (2024, 2, 29),
            (2024, 3, 1),
            (2025, 2, 28),
            (2025, 3, 1),
            (2027, 2, 28),
            (2027, 3, 1),
            (2028, 2, 29),
            (2024, 12, 31),
            (2025, 1, 1),
            (2024, 7, 31),
        ] {
            let base = utc(y, m, d, 0, 0, 0);
            for offset in [0, 1, -1, MICROS_PER_DAY / 2, MICROS_PER_DAY - 1] {
                instants.push(base + offset);
            }
        }
        for &earned in &instants {
            for &now0 in &instants {
                for shift in [0, 12, 13, 11] {
                    let now = add_months(now0, shift).0;
                    assert_eq!(
                        earned >= active_since(now),
                        !is_expired(earned, now),
                        "earned {earned} now {now}"
                    );
                }
            }
            // At the expiry instant and just before it.
            let exp = expire_time(earned);
            assert!(earned < active_since(exp), "{earned}");
            assert!(earned >= active_since(exp - 1), "{earned}");
        }
    }

    #[test]
    fn month_starts() {
        assert_eq!(month_start(utc(2025, 3, 17, 8, 0, 0)), utc(2025, 3, 1, 0, 0, 0));
        assert_eq!(month_start(utc(2025, 3, 1, 0, 0, 0)), utc(2025, 3, 1, 0, 0, 0));
        assert_eq!(month_start_shifted(utc(2025, 3, 17, 8, 0, 0), -3), utc(2024, 12, 1, 0, 0, 0));
        assert_eq!(month_start_shifted(utc(2025, 12, 17, 8, 0, 0), 1), utc(2026, 1, 1, 0, 0, 0));
    }
}
