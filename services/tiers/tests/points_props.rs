//! Property tests of the points rules, on the plain functions: points are never negative, the
//! managed split never hands out more than the sold-equivalent points, points grow with the
//! amount and the multiplier, the calculator and the currency conversion agree, and points
//! count for exactly 12 calendar months.

use proptest::prelude::*;
use rust_decimal::Decimal;
use tandem_platform::time::{MICROS_PER_DAY, Micros};
use tandem_tiers::domain::{
    PointsKind,
    calendar::{active_since, expire_time, is_expired, utc},
    money::Amount,
    points::{
        PointsError, Rates, USD_PER_POINT, amount_to_points, calculate, managed_points, points_to_amount,
        sold_points, usd_amount,
    },
    status::Totals,
};

const CURRENCIES: [&str; 6] = ["USD", "EUR", "JPY", "KWD", "CLF", "BRL"];

/// A configured decimal as staff set them: positive, up to 6 integer and 6 fraction digits.
fn decimal() -> impl Strategy<Value = Decimal> {
    (1_i64..=999_999_999_999, 0_u32..=6).prop_map(|(mantissa, scale)| Decimal::new(mantissa, scale))
}

fn rates() -> impl Strategy<Value = Rates> {
    (decimal(), decimal()).prop_map(|(usd_per_unit, multiplier)| Rates { usd_per_unit, multiplier })
}

/// Amounts up to ten billion units of the currency.
fn minor() -> impl Strategy<Value = i64> {
    0_i64..=1_000_000_000_000
}

fn currency() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&CURRENCIES[..])
}

/// Instants from 1971 to 2100, so every shift by 12 months stays in range.
fn instant() -> impl Strategy<Value = Micros> {
    utc(1971, 1, 1, 0, 0, 0)..utc(2100, 1, 1, 0, 0, 0)
}

/// Instants close to a month's end or a leap day, where the 12-month rule rolls.
fn month_edge() -> impl Strategy<Value = Micros> {
    (1971_i64..2100, 1_u32..=12, 0_u32..3, 0_i64..MICROS_PER_DAY).prop_map(|(year, month, back, time)| {
        let next = if month == 12 { utc(year + 1, 1, 1, 0, 0, 0) } else { utc(year, month + 1, 1, 0, 0, 0) };
        next - i64::from(back + 1) * MICROS_PER_DAY + time
    })
}

fn any_instant() -> impl Strategy<Value = Micros> {
    prop_oneof![instant(), month_edge()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn points_are_never_negative_and_add_up_to_the_total(
        minor in minor(),
        currency in currency(),
        rates in rates(),
        will_manage in any::<bool>(),
        others in 0_u32..50,
    ) {
        let amount = Amount::new(minor, currency);
        let Ok(calc) = calculate(&amount, rates, will_manage, others) else {
            // Only an amount too large for the rates may be refused.
            prop_assert_eq!(calculate(&amount, rates, will_manage, others), Err(PointsError::TooLarge));
            return Ok(());
        };
        prop_assert!(calc.sold >= 0 && calc.managed >= 0, "{calc:?}");
        prop_assert_eq!(calc.total(), calc.sold + calc.managed);
        prop_assert_eq!(calc.usd, usd_amount(&amount, rates.usd_per_unit).unwrap());
        // floor(USD × multiplier / 10), exactly.
        let exact = (calc.usd * rates.multiplier / USD_PER_POINT).floor();
        prop_assert_eq!(Decimal::from(calc.sold), exact);
        if will_manage {
            prop_assert_eq!(calc.managed, managed_points(calc.sold, others));
        } else {
            prop_assert_eq!(calc.managed, 0);
        }
        // Converting the amount gives the sold points.
        prop_assert_eq!(amount_to_points(&amount, rates), Ok(calc.sold));
    }

    #[test]
    fn the_managed_split_shares_the_sold_points_evenly(sold in 0_i64..=i64::MAX / 2, others in 0_u32..1_000) {
        let partners = i64::from(others) + 1;
        let share = managed_points(sold, others);
        prop_assert!(share >= 0);
        // Every managing partner gets the same share; together they get the sold-equivalent
        // points, less what the rounding down keeps (under one point per partner).
        prop_assert!(share * partners <= sold);
        prop_assert!(sold - share * partners < partners);
        prop_assert!(share <= sold);
    }

    #[test]
    fn negative_inputs_earn_no_points(sold in i64::MIN..0, others in 0_u32..10, minor in i64::MIN..0, rates in rates()) {
        prop_assert_eq!(managed_points(sold, others), 0);
        prop_assert_eq!(usd_amount(&Amount::new(minor, "USD"), rates.usd_per_unit), Err(PointsError::Negative));
        prop_assert_eq!(calculate(&Amount::new(minor, "USD"), rates, true, others), Err(PointsError::Negative));
    }

    #[test]
    fn points_grow_with_the_amount_and_the_multiplier(
        a in minor(),
        b in minor(),
        currency in currency(),
        rates in rates(),
        bump in decimal(),
        others in 0_u32..10,
    ) {
        let (low, high) = (a.min(b), a.max(b));
        let at = |minor: i64, rates: Rates| calculate(&Amount::new(minor, currency), rates, true, others);
        if let (Ok(l), Ok(h)) = (at(low, rates), at(high, rates)) {
            prop_assert!(l.sold <= h.sold && l.managed <= h.managed && l.total() <= h.total(), "{l:?} {h:?}");
        }
        let richer = Rates { multiplier: rates.multiplier + bump, ..rates };
        if let (Ok(l), Ok(h)) = (at(low, rates), at(low, richer)) {
            prop_assert!(l.sold <= h.sold && l.managed <= h.managed, "{l:?} {h:?}");
        }
    }

    #[test]
    fn more_managing_partners_never_raise_a_share(sold in 0_i64..=1_000_000_000, others in 0_u32..100) {
        prop_assert!(managed_points(sold, others + 1) <= managed_points(sold, others));
    }

    #[test]
    fn points_to_currency_is_the_smallest_amount_earning_them(
        points in 0_i64..=1_000_000,
        currency in currency(),
        rates in rates(),
    ) {
        let Ok(amount) = points_to_amount(points, currency, rates) else { return Ok(()) };
        prop_assert_eq!(amount.currency.as_str(), currency);
        prop_assert!(amount.minor >= 0);
        prop_assert!(amount_to_points(&amount, rates).unwrap() >= points, "{amount:?}");
        if amount.minor > 0 {
            let less = Amount::new(amount.minor - 1, currency);
            prop_assert!(amount_to_points(&less, rates).unwrap() < points, "{amount:?}");
        }
    }

    #[test]
    fn sold_points_refuse_negative_usd(usd in 1_i64..=i64::MAX, multiplier in decimal()) {
        prop_assert_eq!(sold_points(-Decimal::from(usd), multiplier), Err(PointsError::Negative));
    }

    #[test]
    fn points_count_for_twelve_calendar_months(earned in any_instant()) {
        let expires = expire_time(earned);
        // Between 365 and 366 days: a year, less the part of a leap day that does not recur.
        prop_assert!(expires - earned >= 365 * MICROS_PER_DAY, "{earned} → {expires}");
        prop_assert!(expires - earned <= 366 * MICROS_PER_DAY, "{earned} → {expires}");
        prop_assert!(!is_expired(earned, earned));
        prop_assert!(!is_expired(earned, expires - 1));
        prop_assert!(is_expired(earned, expires));
    }

    #[test]
    fn expiry_keeps_the_order_of_earning(a in any_instant(), b in any_instant()) {
        let (first, later) = (a.min(b), a.max(b));
        prop_assert!(expire_time(first) <= expire_time(later));
    }

    #[test]
    fn the_ledger_window_is_exactly_the_active_entries(now in any_instant(), offset in -3 * MICROS_PER_DAY..3 * MICROS_PER_DAY) {
        // Entries near the window's start, where an off-by-one would show.
        let since = active_since(now);
        for earned in [since + offset, since - 1, since, since + 1] {
            prop_assert_eq!(
                is_expired(earned, now),
                earned < since,
                "earned {} now {} since {}", earned, now, since
            );
        }
    }

    #[test]
    fn totals_count_active_points_only(
        now in instant(),
        entries in prop::collection::vec((any::<bool>(), 0_i64..1_000_000, 0_i64..800 * MICROS_PER_DAY), 0..40),
    ) {
        let mut totals = Totals::default();
        let (mut sold, mut managed, mut expired) = (0, 0, 0);
        for (is_sold, points, age) in entries {
            let earned = now - age;
            let kind = if is_sold { PointsKind::Sold } else { PointsKind::Managed };
            totals.add(kind, points, earned, now);
            match (is_expired(earned, now), kind) {
                (true, _) => expired += points,
                (false, PointsKind::Sold) => sold += points,
                (false, PointsKind::Managed) => managed += points,
            }
            // Older than 366 days is always expired; younger than 365 days never is.
            if age > 366 * MICROS_PER_DAY {
                prop_assert!(is_expired(earned, now));
            }
            if age < 365 * MICROS_PER_DAY {
                prop_assert!(!is_expired(earned, now));
            }
        }
        prop_assert_eq!(totals, Totals { sold, managed, expired });
        prop_assert!(totals.sold >= 0 && totals.managed >= 0 && totals.total() == sold + managed);
    }
}
