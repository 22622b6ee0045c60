//! The use cases the API, the event handlers and the release task share: accruing a
//! commission, clawing one back, releasing commissions after their hold, and reading balances.

use sqlx::AnyConnection;
use tandem_platform::{db::Db, ids::new_id, time::Micros};

use crate::{
    domain::{
        commission,
        ledger::{Posting, TeamAccount},
        money::Money,
    },
    error::{CommissionsError, Result},
    store::{self, CommissionRow, PlanRow},
};

/// Where a commission comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    Payment { payment_id: &'a str, customer_id: &'a str },
    Deal { deal_id: &'a str, customer_id: Option<&'a str> },
}

fn posting_error(err: crate::domain::ledger::PostingError) -> CommissionsError {
    CommissionsError::Internal(anyhow::anyhow!("refused posting: {err}"))
}

/// Accrues the commission the plan gives on `base` for the team, pending until the hold ends:
/// the commission row and its accrual posting. `None` when it rounds to nothing.
pub async fn accrue(
    c: &mut AnyConnection,
    team_id: &str,
    source: Source<'_>,
    base: &Money,
    plan: &PlanRow,
    now: Micros,
) -> Result<Option<CommissionRow>> {
    let tiers = store::team_tiers(c, team_id).await?;
    let multiplier =
        commission::multiplier_bps(&commission::parse_multipliers(&plan.tier_multipliers), &tiers);
    let amount = commission::commission_minor(base.minor, plan.rate_bps, multiplier);
    if amount == 0 {
        return Ok(None);
    }
    let (customer_id, payment_id, deal_id, reason) = match source {
        Source::Payment { payment_id, customer_id } => {
            (Some(customer_id), Some(payment_id), None, format!("commission on payment {payment_id}"))
        }
        Source::Deal { deal_id, customer_id } => {
            (customer_id, None, Some(deal_id), format!("commission on won deal {deal_id}"))
        }
    };
    let row = CommissionRow {
        id: new_id("com"),
        team_id: team_id.to_owned(),
        customer_id: customer_id.map(str::to_owned),
        payment_id: payment_id.map(str::to_owned),
        deal_id: deal_id.map(str::to_owned),
        plan_id: plan.id.clone(),
        currency_code: base.currency.clone(),
        base_minor: base.minor,
        amount_minor: amount,
        clawed_minor: 0,
        multiplier_bps: multiplier,
        status: store::PENDING.to_owned(),
        available_time: commission::available_time(now, plan.hold_days),
        create_time: now,
    };
    store::insert_commission(c, &row).await?;
    let posting =
        Posting::accrual(team_id, &Money::new(&base.currency, amount), &reason).map_err(posting_error)?;
    store::insert_posting(c, &posting, Some(&row.id), None, now).await?;
    Ok(Some(row))
}

/// Claws `amount` back from a commission, with its reason: cancelled from pending while the
/// commission is held, debited from available once released (which may leave the available
/// balance negative when the commission was already withdrawn or paid).
pub async fn claw_back(
    c: &mut AnyConnection,
    commission: &CommissionRow,
    amount: i64,
    reason: &str,
    now: Micros,
) -> Result<()> {
    if amount <= 0 {
        return Ok(());
    }
    // The update locks the commission: a concurrent release has committed or waits for us.
    let (status, whole) = store::add_clawed(c, &commission.id, amount).await?;
    let from = if status == store::PENDING { TeamAccount::Pending } else { TeamAccount::Available };
    let posting =
        Posting::clawback(&commission.team_id, from, &Money::new(&commission.currency_code, amount), reason)
            .map_err(posting_error)?;
    store::insert_posting(c, &posting, Some(&commission.id), None, now).await?;
    if whole && status == store::PENDING {
        store::set_commission_status(c, &commission.id, store::PENDING, store::CANCELLED).await?;
    }
    Ok(())
}

/// Releases every commission whose hold ended at `now`, one transaction each.
pub async fn release_due(db: &Db, now: Micros) -> Result<usize> {
    let mut released = 0;
    loop {
        let due = {
            let mut conn = db.acquire().await?;
            store::due_commissions(&mut conn, now, 200).await?
        };
        if due.is_empty() {
            return Ok(released);
        }
        for id in &due {
            let mut tx = db.begin().await?;
            if let Some((team_id, currency, remaining)) = store::release_commission(&mut tx, id).await? {
                if remaining > 0 {
                    let posting = Posting::release(&team_id, &Money::new(&currency, remaining))
                        .map_err(posting_error)?;
                    store::insert_posting(&mut tx, &posting, Some(id), None, now).await?;
                }
                released += 1;
            }
            tx.commit().await?;
        }
    }
}

/// Whether the team holds rewards in any currency.
pub async fn team_holds_rewards(db: &Db, team_id: &str) -> Result<bool> {
    let mut conn = db.acquire().await?;
    Ok(store::team_balances(&mut conn, team_id).await?.iter().any(|(_, b)| b.holds_rewards()))
}
