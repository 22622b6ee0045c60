//! Property tests of the ledger rules: any sequence of accruals, releases, refunds (clawbacks),
//! withdrawals and payouts keeps every posting balanced, debits equal to credits per currency,
//! balances equal to the sum of entries, and never claws back more than was earned.

use proptest::prelude::*;
use tandem_commissions::domain::{
    commission::{clawback_for_refund, clawed_total, commission_minor},
    ledger::{Books, COMMISSION_EXPENSE, Posting, TeamAccount, withdrawable},
    money::Money,
};

#[derive(Debug, Clone)]
enum Op {
    /// A payment of `amount` in currency `cur` for team `team`.
    Pay {
        team: usize,
        cur: usize,
        amount: i64,
        rate_bps: i64,
        multiplier_bps: i64,
    },
    /// Release the commission `n` (modulo how many there are).
    Release {
        n: usize,
    },
    /// Refund `part` per mille of what remains refundable of payment `n`.
    Refund {
        n: usize,
        per_mille: i64,
    },
    Withdraw {
        team: usize,
        cur: usize,
        minimum: i64,
    },
    PayOut {
        n: usize,
    },
}

const TEAMS: [&str; 2] = ["team_a", "team_b"];
const CURRENCIES: [&str; 2] = ["USD", "JPY"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2usize, 0..2usize, 1..10_000_000i64, 1..=10_000i64, 1..=30_000i64).prop_map(
            |(team, cur, amount, rate_bps, multiplier_bps)| Op::Pay {
                team,
                cur,
                amount,
                rate_bps,
                multiplier_bps
            }
        ),
        any::<usize>().prop_map(|n| Op::Release { n }),
        (any::<usize>(), 1..=1_000i64).prop_map(|(n, per_mille)| Op::Refund { n, per_mille }),
        (0..2usize, 0..2usize, 0..100_000i64).prop_map(|(team, cur, minimum)| Op::Withdraw {
            team,
            cur,
            minimum
        }),
        any::<usize>().prop_map(|n| Op::PayOut { n }),
    ]
}

struct Commission {
    team: &'static str,
    cur: &'static str,
    paid: i64,
    refunded: i64,
    amount: i64,
    clawed: i64,
    released: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_books_always_balance(ops in proptest::collection::vec(op(), 1..80)) {
        let mut books = Books::default();
        let mut commissions: Vec<Commission> = Vec::new();
        let mut payouts: Vec<(&str, Money, bool)> = Vec::new();
        // What each team earned net of clawbacks, per currency.
        let mut earned = std::collections::HashMap::<(&str, &str), i64>::new();
        for op in ops {
            match op {
                Op::Pay { team, cur, amount, rate_bps, multiplier_bps } => {
                    let (team, cur) = (TEAMS[team], CURRENCIES[cur]);
                    let c = commission_minor(amount, rate_bps, multiplier_bps);
                    prop_assert!(i128::from(c) * 100_000_000 <= i128::from(amount) * i128::from(rate_bps) * i128::from(multiplier_bps) + 50_000_000);
                    if c > 0 {
                        books.post(Posting::accrual(team, &Money::new(cur, c), "payment").unwrap()).unwrap();
                        *earned.entry((team, cur)).or_default() += c;
                    }
                    commissions.push(Commission { team, cur, paid: amount, refunded: 0, amount: c, clawed: 0, released: false });
                }
                Op::Release { n } if !commissions.is_empty() => {
                    let k = n % commissions.len();
                    let c = &mut commissions[k];
                    if !c.released {
                        c.released = true;
                        let remaining = c.amount - c.clawed;
                        if remaining > 0 {
                            books.post(Posting::release(c.team, &Money::new(c.cur, remaining)).unwrap()).unwrap();
                        }
                    }
                }
                Op::Refund { n, per_mille } if !commissions.is_empty() => {
                    let k = n % commissions.len();
                    let c = &mut commissions[k];
                    let refund = (c.paid - c.refunded) * per_mille / 1_000;
                    if refund > 0 {
                        let back = clawback_for_refund(c.amount, c.paid, c.refunded, refund);
                        c.refunded += refund;
                        prop_assert!(c.refunded <= c.paid, "a refund never exceeds its payment");
                        if back > 0 {
                            let from = if c.released { TeamAccount::Available } else { TeamAccount::Pending };
                            books.post(Posting::clawback(c.team, from, &Money::new(c.cur, back), "refund").unwrap()).unwrap();
                            *earned.entry((c.team, c.cur)).or_default() -= back;
                        }
                        c.clawed += back;
                        prop_assert_eq!(c.clawed, clawed_total(c.amount, c.paid, c.refunded));
                        prop_assert!(c.clawed <= c.amount, "never more than was earned");
                    }
                }
                Op::Withdraw { team, cur, minimum } => {
                    let (team, cur) = (TEAMS[team], CURRENCIES[cur]);
                    let available = books.team(team, cur).available;
                    match withdrawable(available, minimum) {
                        Ok(amount) => {
                            prop_assert_eq!(amount, available, "a withdrawal takes the whole balance");
                            books.post(Posting::withdrawal(team, &Money::new(cur, amount)).unwrap()).unwrap();
                            payouts.push((team, Money::new(cur, amount), false));
                            prop_assert_eq!(books.team(team, cur).available, 0);
                        }
                        Err(_) => prop_assert!(available <= 0 || available < minimum),
                    }
                }
                Op::PayOut { n } if !payouts.is_empty() => {
                    let k = n % payouts.len();
                    let (team, amount, paid) = &mut payouts[k];
                    if !*paid {
                        *paid = true;
                        books.post(Posting::payout_paid(team, amount).unwrap()).unwrap();
                    }
                }
                _ => {}
            }
            // Every posting balanced; debits equal credits per currency.
            for p in &books.postings {
                prop_assert!(p.check().is_ok());
            }
            for (cur, (debits, credits)) in books.trial_balance() {
                prop_assert_eq!(debits, credits, "{}", cur);
            }
            // The team's accounts hold exactly what it earned net of clawbacks, and the
            // expense account mirrors all of it.
            let mut total_owed = std::collections::HashMap::<&str, i64>::new();
            for team in TEAMS {
                for cur in CURRENCIES {
                    let b = books.team(team, cur);
                    prop_assert!(b.pending >= 0 && b.payable >= 0 && b.paid >= 0);
                    prop_assert_eq!(b.pending + b.available + b.payable + b.paid, earned.get(&(team, cur)).copied().unwrap_or(0));
                    *total_owed.entry(cur).or_default() += b.pending + b.available + b.payable + b.paid;
                }
            }
            for cur in CURRENCIES {
                prop_assert_eq!(books.balance(COMMISSION_EXPENSE, cur), -total_owed.get(cur).copied().unwrap_or(0));
            }
        }
    }

    #[test]
    fn refunds_in_any_split_claw_back_exactly_the_commission(
        paid in 1..1_000_000_000i64,
        rate in 1..=10_000i64,
        cuts in proptest::collection::vec(1..1_000i64, 1..20),
    ) {
        let commission = commission_minor(paid, rate, 10_000);
        let mut refunded = 0;
        let mut clawed = 0;
        for cut in cuts {
            let refund = ((paid - refunded) * cut / 1_000).max(1).min(paid - refunded);
            if refund == 0 { break; }
            clawed += clawback_for_refund(commission, paid, refunded, refund);
            refunded += refund;
            prop_assert!(clawed <= commission);
        }
        clawed += clawback_for_refund(commission, paid, refunded, paid - refunded);
        prop_assert_eq!(clawed, commission, "a full refund claws back all of it, however it was split");
    }
}
