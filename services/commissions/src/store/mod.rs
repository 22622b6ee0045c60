//! Commissions' persistence: one SQL text for PostgreSQL and SQLite. Functions take a
//! connection (a transaction derefs to one) so the use case decides the transaction. Sums are
//! cast to BIGINT because PostgreSQL sums BIGINTs as NUMERIC, which the `Any` driver does not
//! decode.

use sqlx::{AnyConnection, FromRow};
use tandem_platform::{
    db::{DbError, Flag},
    ids::new_id,
    time::Micros,
};

use crate::domain::ledger::{Posting, TeamAccount, TeamBalance, parse_team_account};

type Conn = AnyConnection;
type R<T> = Result<T, DbError>;

#[derive(Debug, Clone, FromRow)]
pub struct CustomerRow {
    pub id: String,
    pub team_id: String,
    pub org_name: String,
    pub domain: String,
    pub super_admin_email: String,
    pub plan: String,
    pub licences: i64,
    pub renewal_date: Option<i64>,
    pub currency_code: String,
    pub monthly_price_minor: i64,
    pub previous_price_minor: i64,
    pub renewal_term_months: i64,
    pub txt_token: String,
    #[sqlx(try_from = "Flag")]
    pub domain_verified: bool,
    pub owner_user_id: String,
    pub first_commission_time: Option<i64>,
    pub create_time: i64,
    pub update_time: i64,
}

const CUSTOMER_COLUMNS: &str = "id, team_id, org_name, domain, super_admin_email, plan, licences, \
     renewal_date, currency_code, monthly_price_minor, previous_price_minor, renewal_term_months, \
     txt_token, domain_verified, owner_user_id, first_commission_time, create_time, update_time";

#[derive(Debug, Clone, FromRow)]
pub struct PlanRow {
    pub id: String,
    pub name: String,
    pub rate_bps: i64,
    pub recurring_months: i64,
    pub hold_days: i64,
    pub minimum_currency: String,
    pub minimum_minor: i64,
    pub tier_multipliers: String,
    pub create_time: i64,
}

const PLAN_COLUMNS: &str = "id, name, rate_bps, recurring_months, hold_days, minimum_currency, \
     minimum_minor, tier_multipliers, create_time";

#[derive(Debug, Clone, FromRow)]
pub struct PaymentRow {
    pub id: String,
    pub customer_id: String,
    pub team_id: String,
    pub currency_code: String,
    pub amount_minor: i64,
    pub refunded_minor: i64,
    pub create_time: i64,
}

const PAYMENT_COLUMNS: &str =
    "id, customer_id, team_id, currency_code, amount_minor, refunded_minor, create_time";

#[derive(Debug, Clone, FromRow)]
pub struct RefundRow {
    pub id: String,
    pub payment_id: String,
    pub amount_minor: i64,
    pub clawback_minor: i64,
    pub reason: String,
    pub create_time: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct CommissionRow {
    pub id: String,
    pub team_id: String,
    pub customer_id: Option<String>,
    pub payment_id: Option<String>,
    pub deal_id: Option<String>,
    pub plan_id: String,
    pub currency_code: String,
    pub base_minor: i64,
    pub amount_minor: i64,
    pub clawed_minor: i64,
    pub multiplier_bps: i64,
    pub status: String,
    pub available_time: i64,
    pub create_time: i64,
}

const COMMISSION_COLUMNS: &str = "id, team_id, customer_id, payment_id, deal_id, plan_id, currency_code, \
     base_minor, amount_minor, clawed_minor, multiplier_bps, status, available_time, create_time";

pub const PENDING: &str = "pending";
pub const AVAILABLE: &str = "available";
pub const CANCELLED: &str = "cancelled";

pub const REQUESTED: &str = "requested";
pub const BATCHED: &str = "batched";
pub const PAID: &str = "paid";

#[derive(Debug, Clone, FromRow)]
pub struct PayoutRow {
    pub id: String,
    pub team_id: String,
    pub currency_code: String,
    pub amount_minor: i64,
    pub status: String,
    pub batch_id: Option<String>,
    pub requested_by: String,
    pub create_time: i64,
    pub paid_time: Option<i64>,
}

const PAYOUT_COLUMNS: &str =
    "id, team_id, currency_code, amount_minor, status, batch_id, requested_by, create_time, paid_time";

/// A posting as the team sees it: its movement on the team's accounts.
#[derive(Debug, Clone, FromRow)]
pub struct RewardRow {
    pub id: String,
    pub team_id: String,
    pub kind: String,
    pub reason: String,
    pub commission_id: Option<String>,
    pub payout_id: Option<String>,
    pub create_time: i64,
    pub currency_code: String,
    pub amount_minor: i64,
}

// --- customers ----------------------------------------------------------------------------

pub async fn insert_customer(c: &mut Conn, r: &CustomerRow) -> R<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO customers ({CUSTOMER_COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
    )))
    .bind(&r.id)
    .bind(&r.team_id)
    .bind(&r.org_name)
    .bind(&r.domain)
    .bind(&r.super_admin_email)
    .bind(&r.plan)
    .bind(r.licences)
    .bind(r.renewal_date)
    .bind(&r.currency_code)
    .bind(r.monthly_price_minor)
    .bind(r.previous_price_minor)
    .bind(r.renewal_term_months)
    .bind(&r.txt_token)
    .bind(i64::from(r.domain_verified))
    .bind(&r.owner_user_id)
    .bind(r.first_commission_time)
    .bind(r.create_time)
    .bind(r.update_time)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn customer(c: &mut Conn, id: &str) -> R<Option<CustomerRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = $1")))
        .bind(id)
        .fetch_optional(c)
        .await?)
}

pub async fn customer_by_domain(c: &mut Conn, domain: &str) -> R<Option<CustomerRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE domain = $1"
    )))
    .bind(domain)
    .fetch_optional(c)
    .await?)
}

pub async fn list_customers(c: &mut Conn, team_id: &str, after: &str, limit: i64) -> R<Vec<CustomerRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE team_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    )))
    .bind(team_id)
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

/// Customers with a renewal date, soonest first, after `(renewal_date, id)`.
pub async fn list_renewals(
    c: &mut Conn,
    team_id: &str,
    after: (i64, &str),
    limit: i64,
) -> R<Vec<CustomerRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE team_id = $1 AND renewal_date IS NOT NULL \
         AND (renewal_date > $2 OR (renewal_date = $2 AND id > $3)) ORDER BY renewal_date, id LIMIT $4"
    )))
    .bind(team_id)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

pub async fn set_verified(c: &mut Conn, id: &str, now: Micros) -> R<()> {
    sqlx::query("UPDATE customers SET domain_verified = 1, update_time = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn update_plan(c: &mut Conn, r: &CustomerRow) -> R<()> {
    sqlx::query(
        "UPDATE customers SET plan = $2, licences = $3, currency_code = $4, monthly_price_minor = $5, \
         previous_price_minor = $6, update_time = $7 WHERE id = $1",
    )
    .bind(&r.id)
    .bind(&r.plan)
    .bind(r.licences)
    .bind(&r.currency_code)
    .bind(r.monthly_price_minor)
    .bind(r.previous_price_minor)
    .bind(r.update_time)
    .execute(c)
    .await?;
    Ok(())
}

/// Records the customer's first commissioned payment; later calls keep the first.
pub async fn set_first_commission(c: &mut Conn, id: &str, at: Micros) -> R<()> {
    sqlx::query(
        "UPDATE customers SET first_commission_time = $2 WHERE id = $1 AND first_commission_time IS NULL",
    )
    .bind(id)
    .bind(at)
    .execute(c)
    .await?;
    Ok(())
}

// --- plans --------------------------------------------------------------------------------

pub async fn insert_plan(c: &mut Conn, p: &PlanRow) -> R<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO commission_plans ({PLAN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    )))
    .bind(&p.id)
    .bind(&p.name)
    .bind(p.rate_bps)
    .bind(p.recurring_months)
    .bind(p.hold_days)
    .bind(&p.minimum_currency)
    .bind(p.minimum_minor)
    .bind(&p.tier_multipliers)
    .bind(p.create_time)
    .execute(c)
    .await?;
    Ok(())
}

/// The newest plan.
pub async fn current_plan(c: &mut Conn) -> R<Option<PlanRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PLAN_COLUMNS} FROM commission_plans ORDER BY create_time DESC, id DESC LIMIT 1"
    )))
    .fetch_optional(c)
    .await?)
}

// --- payments and refunds -----------------------------------------------------------------

pub async fn insert_payment(c: &mut Conn, p: &PaymentRow) -> R<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    )))
    .bind(&p.id)
    .bind(&p.customer_id)
    .bind(&p.team_id)
    .bind(&p.currency_code)
    .bind(p.amount_minor)
    .bind(p.refunded_minor)
    .bind(p.create_time)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn payment(c: &mut Conn, id: &str) -> R<Option<PaymentRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1")))
        .bind(id)
        .fetch_optional(c)
        .await?)
}

/// Adds `amount` to what is refunded of the payment when it stays within the payment, and
/// returns what was refunded before; `None` when it would exceed it. The update locks the
/// payment's row, so concurrent refunds of one payment queue.
pub async fn add_refunded(c: &mut Conn, payment_id: &str, amount: i64) -> R<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as(
        "UPDATE payments SET refunded_minor = refunded_minor + $2 \
         WHERE id = $1 AND refunded_minor + $2 <= amount_minor RETURNING refunded_minor - $2",
    )
    .bind(payment_id)
    .bind(amount)
    .fetch_optional(c)
    .await?;
    Ok(row.map(|(before,)| before))
}

pub async fn insert_refund(c: &mut Conn, r: &RefundRow) -> R<()> {
    sqlx::query(
        "INSERT INTO refunds (id, payment_id, amount_minor, clawback_minor, reason, create_time) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&r.id)
    .bind(&r.payment_id)
    .bind(r.amount_minor)
    .bind(r.clawback_minor)
    .bind(&r.reason)
    .bind(r.create_time)
    .execute(c)
    .await?;
    Ok(())
}

// --- commissions --------------------------------------------------------------------------

pub async fn insert_commission(c: &mut Conn, r: &CommissionRow) -> R<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO commissions ({COMMISSION_COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    )))
    .bind(&r.id)
    .bind(&r.team_id)
    .bind(&r.customer_id)
    .bind(&r.payment_id)
    .bind(&r.deal_id)
    .bind(&r.plan_id)
    .bind(&r.currency_code)
    .bind(r.base_minor)
    .bind(r.amount_minor)
    .bind(r.clawed_minor)
    .bind(r.multiplier_bps)
    .bind(&r.status)
    .bind(r.available_time)
    .bind(r.create_time)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn commission_of_payment(c: &mut Conn, payment_id: &str) -> R<Option<CommissionRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COMMISSION_COLUMNS} FROM commissions WHERE payment_id = $1"
    )))
    .bind(payment_id)
    .fetch_optional(c)
    .await?)
}

/// Adds a clawback to a commission and returns its status as it is when the row is locked
/// (after a concurrent release commits), and whether it is now entirely clawed back.
pub async fn add_clawed(c: &mut Conn, id: &str, amount: i64) -> R<(String, bool)> {
    let (status, whole): (String, Flag) = sqlx::query_as(
        "UPDATE commissions SET clawed_minor = clawed_minor + $2 WHERE id = $1 \
         RETURNING status, CAST(CASE WHEN clawed_minor >= amount_minor THEN 1 ELSE 0 END AS BIGINT)",
    )
    .bind(id)
    .bind(amount)
    .fetch_one(c)
    .await?;
    Ok((status, whole.0))
}

pub async fn set_commission_status(c: &mut Conn, id: &str, from: &str, to: &str) -> R<bool> {
    Ok(sqlx::query("UPDATE commissions SET status = $3 WHERE id = $1 AND status = $2")
        .bind(id)
        .bind(from)
        .bind(to)
        .execute(c)
        .await?
        .rows_affected()
        == 1)
}

/// Releases a pending commission: marks it available and returns what remains of it after
/// clawbacks; `None` when it was no longer pending.
pub async fn release_commission(c: &mut Conn, id: &str) -> R<Option<(String, String, i64)>> {
    Ok(sqlx::query_as(
        "UPDATE commissions SET status = 'available' WHERE id = $1 AND status = 'pending' \
         RETURNING team_id, currency_code, amount_minor - clawed_minor",
    )
    .bind(id)
    .fetch_optional(c)
    .await?)
}

/// Ids of pending commissions whose hold has ended at `now`.
pub async fn due_commissions(c: &mut Conn, now: Micros, limit: i64) -> R<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM commissions WHERE status = 'pending' AND available_time <= $1 \
         ORDER BY available_time, id LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(c)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

pub async fn list_commissions(c: &mut Conn, team_id: &str, after: &str, limit: i64) -> R<Vec<CommissionRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COMMISSION_COLUMNS} FROM commissions WHERE team_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    )))
    .bind(team_id)
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

pub async fn team_commissions(c: &mut Conn, team_id: &str) -> R<Vec<CommissionRow>> {
    list_commissions(c, team_id, "", i64::MAX).await
}

/// Sales (payments less refunds) per customer and currency of a team.
pub async fn sales_by_customer(c: &mut Conn, team_id: &str) -> R<Vec<(String, String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT customer_id, currency_code, CAST(SUM(amount_minor - refunded_minor) AS BIGINT) \
         FROM payments WHERE team_id = $1 GROUP BY customer_id, currency_code",
    )
    .bind(team_id)
    .fetch_all(c)
    .await?)
}

pub async fn team_tiers(c: &mut Conn, team_id: &str) -> R<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT tier_id FROM team_tiers WHERE team_id = $1")
        .bind(team_id)
        .fetch_all(c)
        .await?;
    Ok(rows.into_iter().map(|(t,)| t).collect())
}

pub async fn set_team_tier(
    c: &mut Conn,
    team_id: &str,
    program_id: &str,
    tier_id: &str,
    now: Micros,
) -> R<()> {
    if tier_id.is_empty() {
        sqlx::query("DELETE FROM team_tiers WHERE team_id = $1 AND program_id = $2")
            .bind(team_id)
            .bind(program_id)
            .execute(c)
            .await?;
    } else {
        sqlx::query(
            "INSERT INTO team_tiers (team_id, program_id, tier_id, update_time) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (team_id, program_id) DO UPDATE SET tier_id = excluded.tier_id, \
             update_time = excluded.update_time",
        )
        .bind(team_id)
        .bind(program_id)
        .bind(tier_id)
        .bind(now)
        .execute(c)
        .await?;
    }
    Ok(())
}

// --- the ledger ---------------------------------------------------------------------------

/// Appends a checked posting and its entries; returns the posting's id.
pub async fn insert_posting(
    c: &mut Conn,
    posting: &Posting,
    commission_id: Option<&str>,
    payout_id: Option<&str>,
    now: Micros,
) -> R<String> {
    posting.check().map_err(|e| DbError::Other(format!("refused posting: {e}")))?;
    let id = new_id("post");
    sqlx::query(
        "INSERT INTO postings (id, team_id, kind, reason, commission_id, payout_id, create_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(&posting.team_id)
    .bind(posting.kind.as_str())
    .bind(&posting.reason)
    .bind(commission_id)
    .bind(payout_id)
    .bind(now)
    .execute(&mut *c)
    .await?;
    // Every entry in one statement: one round trip per posting, not one per entry.
    let rows: Vec<String> = (0..posting.entries.len())
        .map(|i| {
            let b = i * 5;
            format!("(${}, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4, b + 5)
        })
        .collect();
    let sql = format!(
        "INSERT INTO ledger_entries (posting_id, account, currency_code, amount_minor, create_time) VALUES {}",
        rows.join(", ")
    );
    let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
    for e in &posting.entries {
        insert = insert.bind(&id).bind(&e.account).bind(&e.currency).bind(e.amount_minor).bind(now);
    }
    if !posting.entries.is_empty() {
        insert.execute(&mut *c).await?;
    }
    Ok(id)
}

/// A team's balances per currency: the sums of its accounts' entries.
pub async fn team_balances(c: &mut Conn, team_id: &str) -> R<Vec<(String, TeamBalance)>> {
    let accounts: Vec<String> = TeamAccount::ALL.iter().map(|a| a.of(team_id)).collect();
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT account, currency_code, CAST(SUM(amount_minor) AS BIGINT) FROM ledger_entries \
         WHERE account IN ($1, $2, $3, $4) GROUP BY account, currency_code ORDER BY currency_code",
    )
    .bind(&accounts[0])
    .bind(&accounts[1])
    .bind(&accounts[2])
    .bind(&accounts[3])
    .fetch_all(c)
    .await?;
    let mut out: Vec<(String, TeamBalance)> = Vec::new();
    for (account, currency, sum) in rows {
        let Some((_, kind)) = parse_team_account(&account) else { continue };
        if out.last().is_none_or(|(c, _)| *c != currency) {
            out.push((currency.clone(), TeamBalance::default()));
        }
        if let Some((_, b)) = out.last_mut() {
            b.set(kind, sum);
        }
    }
    Ok(out)
}

/// Total debits and credits per currency over the whole ledger, and the number of postings
/// whose entries do not sum to zero.
pub async fn trial_balance(c: &mut Conn) -> R<(Vec<(String, i64, i64)>, i64)> {
    let totals: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT currency_code, \
         CAST(COALESCE(SUM(CASE WHEN amount_minor < 0 THEN -amount_minor ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN amount_minor > 0 THEN amount_minor ELSE 0 END), 0) AS BIGINT) \
         FROM ledger_entries GROUP BY currency_code ORDER BY currency_code",
    )
    .fetch_all(&mut *c)
    .await?;
    let (unbalanced,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM (SELECT posting_id FROM ledger_entries GROUP BY posting_id, currency_code \
         HAVING SUM(amount_minor) <> 0) AS u",
    )
    .fetch_one(c)
    .await?;
    Ok((totals, unbalanced))
}

/// The team's movements, oldest first, after posting id `after`: one row per posting and
/// currency, with the net change of the team's pending + available + payable + paid (what
/// the team earned or lost; moves between its own accounts show their amount).
pub async fn list_rewards(c: &mut Conn, team_id: &str, after: &str, limit: i64) -> R<Vec<RewardRow>> {
    let accounts: Vec<String> = TeamAccount::ALL.iter().map(|a| a.of(team_id)).collect();
    Ok(sqlx::query_as(
        "SELECT p.id, p.team_id, p.kind, p.reason, p.commission_id, p.payout_id, p.create_time, \
         e.currency_code, CAST(SUM(CASE WHEN e.amount_minor > 0 THEN e.amount_minor ELSE 0 END) AS BIGINT) AS amount_minor \
         FROM postings p JOIN ledger_entries e ON e.posting_id = p.id \
         WHERE p.team_id = $1 AND p.id > $2 AND e.account IN ($3, $4, $5, $6, 'vendor/commission_expense') \
         GROUP BY p.id, p.team_id, p.kind, p.reason, p.commission_id, p.payout_id, p.create_time, e.currency_code \
         ORDER BY p.id LIMIT $7",
    )
    .bind(team_id)
    .bind(after)
    .bind(&accounts[0])
    .bind(&accounts[1])
    .bind(&accounts[2])
    .bind(&accounts[3])
    .bind(limit)
    .fetch_all(c)
    .await?)
}

/// Serialises writers of one team's withdrawals until the transaction ends.
pub async fn lock_team(c: &mut Conn, team_id: &str) -> R<()> {
    sqlx::query(
        "INSERT INTO team_locks (team_id, touches) VALUES ($1, 1) \
         ON CONFLICT (team_id) DO UPDATE SET touches = team_locks.touches + 1",
    )
    .bind(team_id)
    .execute(c)
    .await?;
    Ok(())
}

// --- payouts ------------------------------------------------------------------------------

pub async fn insert_payout(c: &mut Conn, p: &PayoutRow) -> R<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO payouts ({PAYOUT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    )))
    .bind(&p.id)
    .bind(&p.team_id)
    .bind(&p.currency_code)
    .bind(p.amount_minor)
    .bind(&p.status)
    .bind(&p.batch_id)
    .bind(&p.requested_by)
    .bind(p.create_time)
    .bind(p.paid_time)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn payout(c: &mut Conn, id: &str) -> R<Option<PayoutRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {PAYOUT_COLUMNS} FROM payouts WHERE id = $1")))
        .bind(id)
        .fetch_optional(c)
        .await?)
}

/// Payouts after `after`, of one team and one status when given.
pub async fn list_payouts(
    c: &mut Conn,
    team_id: Option<&str>,
    status: Option<&str>,
    after: &str,
    limit: i64,
) -> R<Vec<PayoutRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PAYOUT_COLUMNS} FROM payouts WHERE ($1 = '' OR team_id = $1) AND ($2 = '' OR status = $2) \
         AND id > $3 ORDER BY id LIMIT $4"
    )))
    .bind(team_id.unwrap_or(""))
    .bind(status.unwrap_or(""))
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

/// Marks a payout paid when it is not yet; returns whether it changed.
pub async fn mark_paid(c: &mut Conn, id: &str, now: Micros) -> R<bool> {
    Ok(sqlx::query("UPDATE payouts SET status = 'paid', paid_time = $2 WHERE id = $1 AND status <> 'paid'")
        .bind(id)
        .bind(now)
        .execute(c)
        .await?
        .rows_affected()
        == 1)
}

/// Puts every requested payout (of `currency` when not empty) into the batch; returns them.
pub async fn batch_requested(c: &mut Conn, batch_id: &str, currency: &str, now: Micros) -> R<Vec<PayoutRow>> {
    sqlx::query("INSERT INTO payout_batches (id, create_time) VALUES ($1, $2)")
        .bind(batch_id)
        .bind(now)
        .execute(&mut *c)
        .await?;
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE payouts SET status = 'batched', batch_id = $1 \
         WHERE status = 'requested' AND ($2 = '' OR currency_code = $2) RETURNING {PAYOUT_COLUMNS}"
    )))
    .bind(batch_id)
    .bind(currency)
    .fetch_all(c)
    .await?)
}

/// Facts for statements: accruals, clawbacks and payouts paid, from the team's postings.
pub async fn statement_postings(c: &mut Conn, team_id: &str) -> R<Vec<(String, i64, String, i64)>> {
    let pending = TeamAccount::Pending.of(team_id);
    let paid = TeamAccount::Paid.of(team_id);
    Ok(sqlx::query_as(
        "SELECT p.kind, p.create_time, e.currency_code, e.amount_minor FROM postings p \
         JOIN ledger_entries e ON e.posting_id = p.id \
         WHERE p.team_id = $1 AND ((p.kind = 'accrual' AND e.account = $2) \
           OR (p.kind = 'clawback' AND e.account = 'vendor/commission_expense') \
           OR (p.kind = 'payout_paid' AND e.account = $3))",
    )
    .bind(team_id)
    .bind(&pending)
    .bind(&paid)
    .fetch_all(c)
    .await?)
}

/// Locks the customer's row until the transaction ends and returns when its first
/// commissioned payment happened.
pub async fn lock_first_commission(c: &mut Conn, id: &str) -> R<Option<i64>> {
    let (first,): (Option<i64>,) = sqlx::query_as(
        "UPDATE customers SET first_commission_time = first_commission_time WHERE id = $1 \
         RETURNING first_commission_time",
    )
    .bind(id)
    .fetch_one(c)
    .await?;
    Ok(first)
}
