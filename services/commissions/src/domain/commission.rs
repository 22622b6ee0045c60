//! Commission arithmetic, exact in integer minor units.
//!
//! **Rounding rule**: a commission is `base × rate_bps × multiplier_bps / 10⁸` minor units,
//! computed exactly in 128-bit integers and rounded half up to a whole minor unit (the amounts
//! are positive, so half up is half away from zero): 1 234 cents at 15 % (1 500 bps) × 1.25
//! (12 500 bps) is 231.375 → 231 cents; 1 cent at 50 % is 0.5 → 1 cent.
//!
//! **Clawback rule**: after refunds totalling `refunded` of a payment of `paid`, the commission
//! clawed back in total is `commission × refunded / paid`, rounded the same way; each refund
//! claws back the growth of that total. Refunds therefore never claw back more than the
//! commission, and a full refund claws back exactly all of it.

use tandem_platform::time::Micros;

use super::calendar;

/// 1x in basis points.
pub const ONE_BPS: i64 = 10_000;
/// Rates up to 100 % of the amount.
pub const MAX_RATE_BPS: i64 = 10_000;
/// Multipliers up to 10x.
pub const MAX_MULTIPLIER_BPS: i64 = 100_000;

fn round_half_up(numerator: i128, denominator: i128) -> i64 {
    debug_assert!(numerator >= 0 && denominator > 0);
    let q = (numerator + denominator / 2) / denominator;
    i64::try_from(q).unwrap_or(i64::MAX)
}

/// The commission on `base_minor` at `rate_bps` and `multiplier_bps`.
pub fn commission_minor(base_minor: i64, rate_bps: i64, multiplier_bps: i64) -> i64 {
    if base_minor <= 0 || rate_bps <= 0 || multiplier_bps <= 0 {
        return 0;
    }
    round_half_up(
        i128::from(base_minor) * i128::from(rate_bps) * i128::from(multiplier_bps),
        i128::from(ONE_BPS) * i128::from(ONE_BPS),
    )
}

/// The commission clawed back in total once `refunded_minor` of a `paid_minor` payment is
/// refunded.
pub fn clawed_total(commission_minor: i64, paid_minor: i64, refunded_minor: i64) -> i64 {
    if commission_minor <= 0 || paid_minor <= 0 || refunded_minor <= 0 {
        return 0;
    }
    let refunded = refunded_minor.min(paid_minor);
    round_half_up(i128::from(commission_minor) * i128::from(refunded), i128::from(paid_minor))
}

/// What a refund claws back of a commission: the growth of the clawed total.
pub fn clawback_for_refund(commission_minor: i64, paid_minor: i64, refunded_before: i64, refund: i64) -> i64 {
    clawed_total(commission_minor, paid_minor, refunded_before.saturating_add(refund))
        - clawed_total(commission_minor, paid_minor, refunded_before)
}

/// The multiplier for a team holding `tiers`: the highest the plan grants any of them, 1x when
/// it grants none.
pub fn multiplier_bps(plan_multipliers: &[(String, i64)], tiers: &[String]) -> i64 {
    plan_multipliers
        .iter()
        .filter(|(tier, _)| tiers.contains(tier))
        .map(|(_, bps)| *bps)
        .max()
        .unwrap_or(ONE_BPS)
}

/// Whether a payment at `now` earns commission under a plan recurring for `recurring_months`
/// (0: one-off), given when the customer's first commissioned payment happened.
pub fn payment_earns(recurring_months: i64, first_commission: Option<Micros>, now: Micros) -> bool {
    match first_commission {
        None => true,
        Some(_) if recurring_months == 0 => false,
        Some(first) => now < calendar::add_months(first, recurring_months),
    }
}

/// When a commission accrued at `now` under a `hold_days` hold becomes available.
pub fn available_time(now: Micros, hold_days: i64) -> Micros {
    calendar::add_days(now, hold_days)
}

/// Tier multipliers as stored: `tier_id=bps` lines.
pub fn format_multipliers(multipliers: &[(String, i64)]) -> String {
    multipliers.iter().map(|(tier, bps)| format!("{tier}={bps}\n")).collect()
}

pub fn parse_multipliers(stored: &str) -> Vec<(String, i64)> {
    stored
        .lines()
        .filter_map(|line| {
            let (tier, bps) = line.split_once('=')?;
            Some((tier.to_owned(), bps.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_platform::time::MICROS_PER_DAY;

    #[test]
    fn commission_rounds_half_up_on_minor_units() {
        assert_eq!(commission_minor(10_000, 1_500, ONE_BPS), 1_500);
        assert_eq!(commission_minor(1_234, 1_500, 12_500), 231); // 231.375
        assert_eq!(commission_minor(1, 5_000, ONE_BPS), 1); // 0.5 → 1
        assert_eq!(commission_minor(1, 4_999, ONE_BPS), 0); // 0.4999 → 0
        assert_eq!(commission_minor(3, 5_000, ONE_BPS), 2); // 1.5 → 2
        assert_eq!(commission_minor(0, 1_500, ONE_BPS), 0);
        assert_eq!(commission_minor(i64::MAX, MAX_RATE_BPS, ONE_BPS), i64::MAX);
    }

    #[test]
    fn clawbacks_add_up_to_the_commission() {
        // 1 000 paid, 333 commission, refunded in three thirds.
        let (c, p) = (333, 1_000);
        let a = clawback_for_refund(c, p, 0, 333);
        let b = clawback_for_refund(c, p, 333, 333);
        let d = clawback_for_refund(c, p, 666, 334);
        assert_eq!((a, b, d), (111, 111, 111));
        assert_eq!(a + b + d, c);
        assert_eq!(clawed_total(c, p, 5_000), c);
        assert_eq!(clawback_for_refund(0, p, 0, 10), 0);
    }

    #[test]
    fn the_best_tier_multiplier_applies() {
        let plan = vec![("gold".to_owned(), 12_500), ("platinum".to_owned(), 15_000)];
        assert_eq!(multiplier_bps(&plan, &[]), ONE_BPS);
        assert_eq!(multiplier_bps(&plan, &["gold".into()]), 12_500);
        assert_eq!(multiplier_bps(&plan, &["gold".into(), "platinum".into()]), 15_000);
        assert_eq!(parse_multipliers(&format_multipliers(&plan)), plan);
    }

    #[test]
    fn recurring_plans_count_months_from_the_first_payment() {
        let first = 1_700_000_000_000_000;
        assert!(payment_earns(0, None, first));
        assert!(!payment_earns(0, Some(first), first + 1));
        assert!(payment_earns(12, Some(first), first + 300 * MICROS_PER_DAY));
        assert!(!payment_earns(12, Some(first), first + 400 * MICROS_PER_DAY));
        assert_eq!(available_time(first, 30), first + 30 * MICROS_PER_DAY);
    }
}
