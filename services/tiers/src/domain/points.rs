//! The default points rules, exact in decimals (never floats):
//!
//! - an amount is converted to USD with the configured `usd_per_unit` (USD is 1);
//! - **sold points = floor(USD / 10 × market multiplier)** (one point per 10 USD; growth
//!   markets have a multiplier above 1);
//! - **managed points = floor(sold-equivalent points / (1 + other managing partners))** when
//!   the partner manages the client, else 0.

use rust_decimal::{Decimal, RoundingStrategy};

use super::{MarketType, money::Amount};

/// USD per point before the market multiplier.
pub const USD_PER_POINT: Decimal = Decimal::TEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PointsError {
    #[error("must not be negative")]
    Negative,
    #[error("is too large")]
    TooLarge,
}

/// The rate and multiplier that apply to one client's currency and market.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    pub usd_per_unit: Decimal,
    pub multiplier: Decimal,
}

impl Rates {
    pub const USD_STANDARD: Rates = Rates { usd_per_unit: Decimal::ONE, multiplier: Decimal::ONE };
}

/// The amount in USD, exactly.
pub fn usd_amount(amount: &Amount, usd_per_unit: Decimal) -> Result<Decimal, PointsError> {
    if amount.minor < 0 {
        return Err(PointsError::Negative);
    }
    amount.units().checked_mul(usd_per_unit).ok_or(PointsError::TooLarge)
}

/// Sold points for a USD amount in a market.
pub fn sold_points(usd: Decimal, multiplier: Decimal) -> Result<i64, PointsError> {
    if usd.is_sign_negative() && !usd.is_zero() {
        return Err(PointsError::Negative);
    }
    let points = usd.checked_mul(multiplier).ok_or(PointsError::TooLarge)? / USD_PER_POINT;
    i64::try_from(points.floor()).map_err(|_| PointsError::TooLarge)
}

/// A managing partner's share of the sold-equivalent points, split evenly between it and the
/// other partners that manage the client.
pub fn managed_points(sold_equivalent: i64, other_managing_partners: u32) -> i64 {
    sold_equivalent.max(0) / (i64::from(other_managing_partners) + 1)
}

/// What a sale earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calculation {
    pub usd: Decimal,
    pub sold: i64,
    pub managed: i64,
}

impl Calculation {
    pub fn total(&self) -> i64 {
        self.sold.saturating_add(self.managed)
    }
}

/// The points calculator: sold, managed and total points of a sale.
pub fn calculate(
    amount: &Amount,
    rates: Rates,
    will_manage: bool,
    other_managing_partners: u32,
) -> Result<Calculation, PointsError> {
    let usd = usd_amount(amount, rates.usd_per_unit)?;
    let sold = sold_points(usd, rates.multiplier)?;
    let managed = if will_manage { managed_points(sold, other_managing_partners) } else { 0 };
    // The total must be representable too, or the calculator would show a wrong sum.
    sold.checked_add(managed).ok_or(PointsError::TooLarge)?;
    Ok(Calculation { usd, sold, managed })
}

/// Currency to points: the points an amount earns (sold and managed values convert alike).
pub fn amount_to_points(amount: &Amount, rates: Rates) -> Result<i64, PointsError> {
    sold_points(usd_amount(amount, rates.usd_per_unit)?, rates.multiplier)
}

/// Points to currency: the smallest amount in `currency` that earns at least `points`.
pub fn points_to_amount(points: i64, currency: &str, rates: Rates) -> Result<Amount, PointsError> {
    if points < 0 {
        return Err(PointsError::Negative);
    }
    if points == 0 {
        return Ok(Amount::new(0, currency));
    }
    let scale = Decimal::from(10_i64.pow(super::money::exponent(currency)));
    let per_minor = rates
        .usd_per_unit
        .checked_mul(rates.multiplier)
        .and_then(|x| x.checked_div(scale))
        .ok_or(PointsError::TooLarge)?;
    let usd_needed = Decimal::from(points).checked_mul(USD_PER_POINT).ok_or(PointsError::TooLarge)?;
    let estimate = usd_needed
        .checked_div(per_minor)
        .ok_or(PointsError::TooLarge)?
        .round_dp_with_strategy(0, RoundingStrategy::ToPositiveInfinity);
    let mut minor = i64::try_from(estimate).map_err(|_| PointsError::TooLarge)?;
    // The division may round in its last digit; settle on the exact smallest amount.
    let earns = |minor: i64| amount_to_points(&Amount::new(minor, currency), rates);
    while earns(minor)? < points {
        minor = minor.checked_add(1).ok_or(PointsError::TooLarge)?;
    }
    while minor > 0 && earns(minor - 1)? >= points {
        minor -= 1;
    }
    Ok(Amount::new(minor, currency))
}

/// Growth markets are those with a multiplier above 1.
pub fn market_type(multiplier: Decimal) -> MarketType {
    if multiplier > Decimal::ONE { MarketType::Growth } else { MarketType::Standard }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn rates(usd_per_unit: &str, multiplier: &str) -> Rates {
        Rates { usd_per_unit: d(usd_per_unit), multiplier: d(multiplier) }
    }

    #[test]
    fn a_sale_whose_total_would_not_fit_is_refused() {
        // Ten billion dollars at a multiplier of six billion: the sold points fit in an i64,
        // the sold and managed points together do not.
        let amount = Amount::new(1_000_000_000_000, "USD");
        let rates = rates("1", "6000000000");
        assert_eq!(calculate(&amount, rates, false, 0).map(|c| c.sold), Ok(6_000_000_000_000_000_000));
        assert_eq!(calculate(&amount, rates, true, 0), Err(PointsError::TooLarge));
    }

    #[test]
    fn one_point_per_ten_dollars_rounded_down() {
        for (cents, points) in [
            (0, 0),
            (1, 0),
            (999, 0),
            (1_000, 1),
            (1_999, 1),
            (2_000, 2),
            (99_999, 99),
            (100_000, 100),
            (123_456_789, 123_456),
        ] {
            let calc = calculate(&Amount::new(cents, "USD"), Rates::USD_STANDARD, false, 0).unwrap();
            assert_eq!(calc.sold, points, "{cents} cents");
            assert_eq!(calc.managed, 0);
            assert_eq!(calc.total(), points);
        }
    }

    #[test]
    fn growth_markets_multiply_before_rounding() {
        // 15 USD × 1.5 = 22.5 USD-equivalent → 2 points (floor after multiplying, not before).
        assert_eq!(sold_points(d("15"), d("1.5")).unwrap(), 2);
        assert_eq!(sold_points(d("6.67"), d("1.5")).unwrap(), 1);
        assert_eq!(sold_points(d("6.66"), d("1.5")).unwrap(), 0);
        assert_eq!(sold_points(d("1000"), d("1.25")).unwrap(), 125);
        assert_eq!(sold_points(d("1000"), d("0.8")).unwrap(), 80);
        // No float artefact: 0.1 × 3 is exactly 0.3.
        assert_eq!(sold_points(d("100"), d("0.3")).unwrap(), 3);
        assert_eq!(sold_points(d("33.33"), d("3")).unwrap(), 9);
        assert_eq!(sold_points(d("33.34"), d("3")).unwrap(), 10);
    }

    #[test]
    fn currencies_convert_with_their_exponent_and_rate() {
        // 150 000 JPY at 0.0067 USD = 1005 USD → 100 points.
        let jpy = calculate(&Amount::new(150_000, "JPY"), rates("0.0067", "1"), false, 0).unwrap();
        assert_eq!(jpy.usd, d("1005"));
        assert_eq!(jpy.sold, 100);
        // 1.234 KWD (1234 fils) at 3.25 USD = 4.0105 USD → 0 points; 12.340 KWD → 4 points.
        assert_eq!(calculate(&Amount::new(1_234, "KWD"), rates("3.25", "1"), false, 0).unwrap().sold, 0);
        assert_eq!(calculate(&Amount::new(12_340, "KWD"), rates("3.25", "1"), false, 0).unwrap().sold, 4);
        // 99.99 EUR at 1.10 = 109.989 USD → 10 points; 100 EUR → 110 USD → 11.
        assert_eq!(calculate(&Amount::new(9_999, "EUR"), rates("1.10", "1"), false, 0).unwrap().sold, 10);
        assert_eq!(calculate(&Amount::new(10_000, "EUR"), rates("1.10", "1"), false, 0).unwrap().sold, 11);
        // With a growth market: 10 000 BRL at 0.2 = 2000 USD, × 1.5 → 300 points.
        assert_eq!(
            calculate(&Amount::new(1_000_000, "BRL"), rates("0.2", "1.5"), false, 0).unwrap().sold,
            300
        );
    }

    #[test]
    fn managed_points_are_split_evenly_and_rounded_down() {
        for (sold, others, managed) in [
            (100, 0, 100),
            (100, 1, 50),
            (100, 2, 33),
            (101, 1, 50),
            (7, 3, 1),
            (3, 3, 0),
            (0, 0, 0),
            (1, 0, 1),
            (-5, 0, 0),
        ] {
            assert_eq!(managed_points(sold, others), managed, "{sold} / (1 + {others})");
        }
        let calc = calculate(&Amount::new(1_000_000, "USD"), Rates::USD_STANDARD, true, 2).unwrap();
        assert_eq!((calc.sold, calc.managed, calc.total()), (1_000, 333, 1_333));
        // Not managing: no managed points, whatever the others do.
        let calc = calculate(&Amount::new(1_000_000, "USD"), Rates::USD_STANDARD, false, 2).unwrap();
        assert_eq!((calc.sold, calc.managed), (1_000, 0));
    }

    #[test]
    fn managed_split_equals_splitting_the_exact_value() {
        // floor(floor(x) / n) = floor(x / n): splitting the rounded sold points loses nothing.
        for cents in [0_i64, 999, 12_345, 99_999, 1_000_001] {
            for others in 0..6_u32 {
                let usd = Amount::new(cents, "USD").units();
                let exact = (usd / USD_PER_POINT * d("1.5") / Decimal::from(others + 1)).floor();
                let split = managed_points(sold_points(usd, d("1.5")).unwrap(), others);
                assert_eq!(Decimal::from(split), exact, "{cents} {others}");
            }
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(usd_amount(&Amount::new(-1, "USD"), Decimal::ONE), Err(PointsError::Negative));
        assert_eq!(sold_points(d("-10"), Decimal::ONE), Err(PointsError::Negative));
        assert_eq!(
            calculate(&Amount::new(i64::MAX, "USD"), rates("999999999999", "999999999999"), false, 0),
            Err(PointsError::TooLarge)
        );
        assert_eq!(points_to_amount(-1, "USD", Rates::USD_STANDARD), Err(PointsError::Negative));
    }

    #[test]
    fn points_to_currency_is_the_smallest_amount_that_earns_them() {
        for (points, currency, r, expected_minor) in [
            (1, "USD", rates("1", "1"), 1_000),
            (100, "USD", rates("1", "1"), 100_000),
            (2, "USD", rates("1", "1.5"), 1_334), // 13.34 × 1.5 = 20.01
            (100, "JPY", rates("0.0067", "1"), 149_254),
            (11, "EUR", rates("1.10", "1"), 10_000),
            (3, "KWD", rates("3.25", "1"), 9_231),
            (0, "USD", rates("1", "1"), 0),
            (7, "USD", rates("1.1", "1.3"), 4_896),
        ] {
            let amount = points_to_amount(points, currency, r).unwrap();
            assert_eq!(amount, Amount::new(expected_minor, currency), "{points} {currency}");
            // Round trip: that amount earns the points, one minor unit less does not.
            assert!(amount_to_points(&amount, r).unwrap() >= points);
            if amount.minor > 0 {
                assert!(amount_to_points(&Amount::new(amount.minor - 1, currency), r).unwrap() < points);
            }
        }
    }

    #[test]
    fn round_trips_over_many_amounts() {
        let r = rates("0.012345", "1.7");
        for points in (0..5_000).step_by(37) {
            let amount = points_to_amount(points, "INR", r).unwrap();
            assert_eq!(amount_to_points(&amount, r).unwrap(), points, "{points}");
        }
    }

    #[test]
    fn market_types() {
        assert_eq!(market_type(d("1")), MarketType::Standard);
        assert_eq!(market_type(d("0.9")), MarketType::Standard);
        assert_eq!(market_type(d("1.0001")), MarketType::Growth);
        assert_eq!(market_type(d("1.5")), MarketType::Growth);
    }
}
