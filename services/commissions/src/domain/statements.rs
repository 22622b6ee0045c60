//! Monthly statements: for each month and currency, the commission accrued, clawed back and
//! paid out, and the commission whose hold ends in that month (upcoming while it has not).

use std::collections::BTreeMap;

use tandem_platform::time::Micros;

use super::calendar::month_start;

/// One fact a statement adds up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Accrued {
        at: Micros,
        currency: String,
        minor: i64,
    },
    ClawedBack {
        at: Micros,
        currency: String,
        minor: i64,
    },
    Paid {
        at: Micros,
        currency: String,
        minor: i64,
    },
    /// Commission (net of clawbacks) that becomes available at `at`.
    Release {
        at: Micros,
        currency: String,
        minor: i64,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statement {
    pub month_start: Micros,
    pub currency: String,
    pub accrued: i64,
    pub clawed_back: i64,
    pub paid: i64,
    pub released: i64,
    pub upcoming: bool,
}

/// Statements by month, newest first; a month is `upcoming` when it ends after `now`.
pub fn monthly(facts: &[Fact], now: Micros) -> Vec<Statement> {
    let mut months: BTreeMap<(Micros, String), Statement> = BTreeMap::new();
    for fact in facts {
        let (at, currency, minor) = match fact {
            Fact::Accrued { at, currency, minor }
            | Fact::ClawedBack { at, currency, minor }
            | Fact::Paid { at, currency, minor }
            | Fact::Release { at, currency, minor } => (*at, currency, *minor),
        };
        let start = month_start(at);
        let s = months.entry((start, currency.clone())).or_insert_with(|| Statement {
            month_start: start,
            currency: currency.clone(),
            upcoming: super::calendar::add_months(start, 1) > now,
            ..Statement::default()
        });
        match fact {
            Fact::Accrued { .. } => s.accrued += minor,
            Fact::ClawedBack { .. } => s.clawed_back += minor,
            Fact::Paid { .. } => s.paid += minor,
            Fact::Release { .. } => s.released += minor,
        }
    }
    months.into_values().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_platform::time::MICROS_PER_DAY;

    #[test]
    fn months_add_up_newest_first() {
        let jan = 20_089 * MICROS_PER_DAY; // 2025-01-01
        let feb = 20_120 * MICROS_PER_DAY; // 2025-02-01
        let facts = vec![
            Fact::Accrued { at: jan + 5, currency: "USD".into(), minor: 100 },
            Fact::Accrued { at: jan + 9 * MICROS_PER_DAY, currency: "USD".into(), minor: 50 },
            Fact::ClawedBack { at: jan + 10 * MICROS_PER_DAY, currency: "USD".into(), minor: 20 },
            Fact::Release { at: feb + 3 * MICROS_PER_DAY, currency: "USD".into(), minor: 130 },
            Fact::Paid { at: feb + 4 * MICROS_PER_DAY, currency: "EUR".into(), minor: 7 },
        ];
        let s = monthly(&facts, feb + MICROS_PER_DAY);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].month_start, s[0].upcoming), (feb, true));
        assert_eq!(
            s[2],
            Statement {
                month_start: jan,
                currency: "USD".into(),
                accrued: 150,
                clawed_back: 20,
                paid: 0,
                released: 0,
                upcoming: false
            }
        );
        let feb_usd = s.iter().find(|x| x.month_start == feb && x.currency == "USD").unwrap();
        assert_eq!(feb_usd.released, 130);
    }
}
