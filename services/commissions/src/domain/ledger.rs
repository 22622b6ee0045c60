//! The double-entry rewards ledger, from the vendor's side.
//!
//! Every movement of money is a [`Posting`]: entries on accounts, each in integer minor units
//! of one currency, a credit positive and a debit negative, summing to zero per currency
//! (debits equal credits). Postings are appended, never changed; an account's balance is the
//! sum of its entries.
//!
//! Accounts, all but the expense one owed to a team (credit balances):
//! - `vendor/commission_expense`: debited when commission accrues, credited on clawbacks;
//! - `team/{id}/pending`: accrued commission still in its hold period;
//! - `team/{id}/available`: commission the team may withdraw; a clawback of commission that was
//!   already withdrawn or paid leaves it negative;
//! - `team/{id}/payable`: withdrawn, awaiting the vendor's payment;
//! - `team/{id}/paid`: what the vendor paid the team (its cash paid out to that team).
//!
//! The movements: accrual (expense → pending), release at the end of the hold (pending →
//! available), clawback (pending or available → expense), withdrawal (available → payable),
//! payout paid (payable → paid).

use std::collections::BTreeMap;

use super::money::{Money, is_currency_code};

pub const COMMISSION_EXPENSE: &str = "vendor/commission_expense";

/// A team's account of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TeamAccount {
    Pending,
    Available,
    Payable,
    Paid,
}

impl TeamAccount {
    pub const ALL: [TeamAccount; 4] = [Self::Pending, Self::Available, Self::Payable, Self::Paid];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Available => "available",
            Self::Payable => "payable",
            Self::Paid => "paid",
        }
    }

    /// The account's name for `team_id`.
    pub fn of(self, team_id: &str) -> String {
        format!("team/{team_id}/{}", self.as_str())
    }
}

/// What a posting records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PostingKind {
    Accrual,
    Release,
    Clawback,
    Withdrawal,
    PayoutPaid,
}

impl PostingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accrual => "accrual",
            Self::Release => "release",
            Self::Clawback => "clawback",
            Self::Withdrawal => "withdrawal",
            Self::PayoutPaid => "payout_paid",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "accrual" => Self::Accrual,
            "release" => Self::Release,
            "clawback" => Self::Clawback,
            "withdrawal" => Self::Withdrawal,
            "payout_paid" => Self::PayoutPaid,
            _ => return None,
        })
    }
}

/// One line of a posting: `amount_minor` credited (positive) or debited (negative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub account: String,
    pub currency: String,
    pub amount_minor: i64,
}

/// A balanced set of entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub kind: PostingKind,
    pub team_id: String,
    pub reason: String,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostingError {
    #[error("a posting moves a positive amount")]
    NotPositive,
    #[error("unknown currency {0:?}")]
    Currency(String),
    #[error("debits and credits differ in {0}")]
    Unbalanced(String),
    #[error("a clawback needs a reason")]
    NoReason,
}

impl Posting {
    /// Moves `amount` from `from` (debited) to `to` (credited).
    pub fn transfer(
        kind: PostingKind,
        team_id: &str,
        from: &str,
        to: &str,
        amount: &Money,
        reason: &str,
    ) -> Result<Self, PostingError> {
        if amount.minor <= 0 {
            return Err(PostingError::NotPositive);
        }
        let entry = |account: &str, amount_minor: i64| Entry {
            account: account.to_owned(),
            currency: amount.currency.clone(),
            amount_minor,
        };
        let posting = Self {
            kind,
            team_id: team_id.to_owned(),
            reason: reason.to_owned(),
            entries: vec![entry(from, -amount.minor), entry(to, amount.minor)],
        };
        posting.check()?;
        Ok(posting)
    }

    /// Accrued commission: expense → the team's pending.
    pub fn accrual(team_id: &str, amount: &Money, reason: &str) -> Result<Self, PostingError> {
        Self::transfer(
            PostingKind::Accrual,
            team_id,
            COMMISSION_EXPENSE,
            &TeamAccount::Pending.of(team_id),
            amount,
            reason,
        )
    }

    /// The hold ended: pending → available.
    pub fn release(team_id: &str, amount: &Money) -> Result<Self, PostingError> {
        Self::transfer(
            PostingKind::Release,
            team_id,
            &TeamAccount::Pending.of(team_id),
            &TeamAccount::Available.of(team_id),
            amount,
            "hold period ended",
        )
    }

    /// Commission taken back from `from` (pending or available) to the expense account.
    pub fn clawback(
        team_id: &str,
        from: TeamAccount,
        amount: &Money,
        reason: &str,
    ) -> Result<Self, PostingError> {
        if reason.trim().is_empty() {
            return Err(PostingError::NoReason);
        }
        Self::transfer(PostingKind::Clawback, team_id, &from.of(team_id), COMMISSION_EXPENSE, amount, reason)
    }

    /// The whole available balance to payable.
    pub fn withdrawal(team_id: &str, amount: &Money) -> Result<Self, PostingError> {
        Self::transfer(
            PostingKind::Withdrawal,
            team_id,
            &TeamAccount::Available.of(team_id),
            &TeamAccount::Payable.of(team_id),
            amount,
            "withdrawal requested",
        )
    }

    /// The vendor paid: payable → paid.
    pub fn payout_paid(team_id: &str, amount: &Money) -> Result<Self, PostingError> {
        Self::transfer(
            PostingKind::PayoutPaid,
            team_id,
            &TeamAccount::Payable.of(team_id),
            &TeamAccount::Paid.of(team_id),
            amount,
            "payout paid",
        )
    }

    /// Every currency well formed, every entry non-zero, the entries of each currency summing
    /// to zero.
    pub fn check(&self) -> Result<(), PostingError> {
        let mut sums: BTreeMap<&str, i128> = BTreeMap::new();
        for e in &self.entries {
            if !is_currency_code(&e.currency) {
                return Err(PostingError::Currency(e.currency.clone()));
            }
            if e.amount_minor == 0 {
                return Err(PostingError::NotPositive);
            }
            *sums.entry(e.currency.as_str()).or_default() += i128::from(e.amount_minor);
        }
        match sums.into_iter().find(|(_, sum)| *sum != 0) {
            Some((currency, _)) => Err(PostingError::Unbalanced(currency.to_owned())),
            None => Ok(()),
        }
    }
}

/// A team's balances in one currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TeamBalance {
    pub pending: i64,
    pub available: i64,
    pub payable: i64,
    pub paid: i64,
}

impl TeamBalance {
    /// Whether anything is left to settle: commission held or available, a payout to pay, or
    /// a negative balance to cover.
    pub fn holds_rewards(&self) -> bool {
        self.pending != 0 || self.available != 0 || self.payable != 0
    }

    pub fn set(&mut self, account: TeamAccount, value: i64) {
        match account {
            TeamAccount::Pending => self.pending = value,
            TeamAccount::Available => self.available = value,
            TeamAccount::Payable => self.payable = value,
            TeamAccount::Paid => self.paid = value,
        }
    }
}

/// Which account of a team an account name is, if any.
pub fn parse_team_account(account: &str) -> Option<(&str, TeamAccount)> {
    let rest = account.strip_prefix("team/")?;
    let (team, kind) = rest.rsplit_once('/')?;
    let kind = TeamAccount::ALL.into_iter().find(|k| k.as_str() == kind)?;
    Some((team, kind))
}

/// Why a withdrawal is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WithdrawalRefusal {
    /// A clawback left the balance negative.
    Negative(i64),
    /// Nothing, or less than the minimum payout, is available.
    BelowMinimum { available: i64, minimum: i64 },
}

/// The amount a withdrawal takes: the whole available balance, when it is at least the minimum
/// payout (and positive).
pub fn withdrawable(available: i64, minimum: i64) -> Result<i64, WithdrawalRefusal> {
    if available < 0 {
        Err(WithdrawalRefusal::Negative(available))
    } else if available == 0 || available < minimum {
        Err(WithdrawalRefusal::BelowMinimum { available, minimum })
    } else {
        Ok(available)
    }
}

/// An in-memory ledger with the same rules as the stored one: the model the property tests
/// check the invariants on.
#[derive(Debug, Default, Clone)]
pub struct Books {
    pub postings: Vec<Posting>,
}

impl Books {
    pub fn post(&mut self, posting: Posting) -> Result<(), PostingError> {
        posting.check()?;
        self.postings.push(posting);
        Ok(())
    }

    /// The sum of an account's entries in a currency.
    pub fn balance(&self, account: &str, currency: &str) -> i64 {
        self.postings
            .iter()
            .flat_map(|p| &p.entries)
            .filter(|e| e.account == account && e.currency == currency)
            .map(|e| e.amount_minor)
            .sum()
    }

    pub fn team(&self, team_id: &str, currency: &str) -> TeamBalance {
        let mut b = TeamBalance::default();
        for account in TeamAccount::ALL {
            b.set(account, self.balance(&account.of(team_id), currency));
        }
        b
    }

    /// Total debits and total credits per currency, over every entry.
    pub fn trial_balance(&self) -> BTreeMap<String, (i128, i128)> {
        let mut totals: BTreeMap<String, (i128, i128)> = BTreeMap::new();
        for e in self.postings.iter().flat_map(|p| &p.entries) {
            let t = totals.entry(e.currency.clone()).or_default();
            if e.amount_minor < 0 {
                t.0 -= i128::from(e.amount_minor);
            } else {
                t.1 += i128::from(e.amount_minor);
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(minor: i64) -> Money {
        Money::new("USD", minor)
    }

    #[test]
    fn postings_balance_and_refuse_nonsense() {
        let p = Posting::accrual("t1", &usd(150), "payment pay_1").unwrap();
        assert_eq!(p.entries.iter().map(|e| e.amount_minor).sum::<i64>(), 0);
        assert_eq!(p.entries[0].account, COMMISSION_EXPENSE);
        assert_eq!(p.entries[1].account, "team/t1/pending");
        assert_eq!(Posting::accrual("t1", &usd(0), "x"), Err(PostingError::NotPositive));
        assert_eq!(Posting::accrual("t1", &usd(-3), "x"), Err(PostingError::NotPositive));
        assert_eq!(
            Posting::accrual("t1", &Money::new("usd", 3), "x"),
            Err(PostingError::Currency("usd".into()))
        );
        assert_eq!(Posting::clawback("t1", TeamAccount::Pending, &usd(3), "  "), Err(PostingError::NoReason));
        let mut bad = p.clone();
        bad.entries[1].amount_minor = 149;
        assert_eq!(bad.check(), Err(PostingError::Unbalanced("USD".into())));
        let mut mixed = p;
        mixed.entries[1].currency = "EUR".into();
        assert_eq!(mixed.check(), Err(PostingError::Unbalanced("EUR".into())));
    }

    #[test]
    fn a_paid_commission_clawed_back_leaves_a_negative_balance() {
        let mut books = Books::default();
        books.post(Posting::accrual("t", &usd(1_000), "payment").unwrap()).unwrap();
        books.post(Posting::release("t", &usd(1_000)).unwrap()).unwrap();
        books.post(Posting::withdrawal("t", &usd(1_000)).unwrap()).unwrap();
        books.post(Posting::payout_paid("t", &usd(1_000)).unwrap()).unwrap();
        books
            .post(Posting::clawback("t", TeamAccount::Available, &usd(400), "refund of payment").unwrap())
            .unwrap();
        let b = books.team("t", "USD");
        assert_eq!(b, TeamBalance { pending: 0, available: -400, payable: 0, paid: 1_000 });
        assert!(b.holds_rewards());
        assert_eq!(withdrawable(b.available, 0), Err(WithdrawalRefusal::Negative(-400)));
        books.post(Posting::accrual("t", &usd(500), "payment").unwrap()).unwrap();
        books.post(Posting::release("t", &usd(500)).unwrap()).unwrap();
        assert_eq!(withdrawable(books.team("t", "USD").available, 0), Ok(100));
        let (debits, credits) = books.trial_balance()["USD"];
        assert_eq!(debits, credits);
    }

    #[test]
    fn withdrawals_take_everything_above_the_minimum() {
        assert_eq!(withdrawable(5_000, 5_000), Ok(5_000));
        assert_eq!(
            withdrawable(4_999, 5_000),
            Err(WithdrawalRefusal::BelowMinimum { available: 4_999, minimum: 5_000 })
        );
        assert_eq!(withdrawable(0, 0), Err(WithdrawalRefusal::BelowMinimum { available: 0, minimum: 0 }));
        assert_eq!(withdrawable(-1, 0), Err(WithdrawalRefusal::Negative(-1)));
    }

    #[test]
    fn team_accounts_parse() {
        assert_eq!(parse_team_account("team/team_1/available"), Some(("team_1", TeamAccount::Available)));
        assert_eq!(parse_team_account(COMMISSION_EXPENSE), None);
        assert_eq!(parse_team_account("team/x/other"), None);
    }
}
