//! Calendar arithmetic on UTC instants (microseconds since the epoch): hold periods in days,
//! recurring plans in calendar months, statements by month.

use tandem_platform::time::{MICROS_PER_DAY, Micros};

/// Days since the epoch of a civil date (proleptic Gregorian), after Howard Hinnant.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day since the epoch.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)
}

/// `t` plus `days` whole days.
pub fn add_days(t: Micros, days: i64) -> Micros {
    t.saturating_add(days.saturating_mul(MICROS_PER_DAY))
}

/// `t` plus `months` calendar months, the day clamped to the target month's length
/// (31 January + 1 month = 28 or 29 February), the time of day kept.
pub fn add_months(t: Micros, months: i64) -> Micros {
    let day = t.div_euclid(MICROS_PER_DAY);
    let time_of_day = t.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(day);
    let index = y * 12 + (m - 1) + months;
    let (ny, nm) = (index.div_euclid(12), index.rem_euclid(12) + 1);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * MICROS_PER_DAY + time_of_day
}

/// The first instant of the UTC month holding `t`.
pub fn month_start(t: Micros) -> Micros {
    let (y, m, _) = civil_from_days(t.div_euclid(MICROS_PER_DAY));
    days_from_civil(y, m, 1) * MICROS_PER_DAY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i64, m: i64, d: i64) -> Micros {
        days_from_civil(y, m, d) * MICROS_PER_DAY
    }

    #[test]
    fn civil_round_trip() {
        for day in [-800_000, -1, 0, 1, 19_000, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(date(2024, 3, 1) - date(2024, 2, 1), 29 * MICROS_PER_DAY);
    }

    #[test]
    fn months_clamp_to_the_month_length() {
        assert_eq!(add_months(date(2025, 1, 31), 1), date(2025, 2, 28));
        assert_eq!(add_months(date(2024, 1, 31), 1), date(2024, 2, 29));
        assert_eq!(add_months(date(2025, 11, 15) + 5, 3), date(2026, 2, 15) + 5);
        assert_eq!(add_months(date(2025, 3, 31), -1), date(2025, 2, 28));
        assert_eq!(add_months(date(2025, 5, 1), 12), date(2026, 5, 1));
    }

    #[test]
    fn month_starts() {
        assert_eq!(month_start(date(2025, 7, 19) + 12_345), date(2025, 7, 1));
        assert_eq!(month_start(date(2025, 7, 1)), date(2025, 7, 1));
        assert_eq!(add_days(date(2025, 12, 30), 3), date(2026, 1, 2));
    }
}
