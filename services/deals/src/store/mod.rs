//! Deals' persistence: one SQL text for PostgreSQL and SQLite. Functions take a connection (a
//! transaction derefs to one) so the use case decides the transaction. Empty text stands for
//! "none" in optional columns.

use sqlx::{AnyConnection, AssertSqlSafe, FromRow};

use crate::domain::registration::ActiveRegistration;
use tandem_platform::{
    db::{DbError, Flag},
    time::Micros,
};

type Conn = AnyConnection;
type R<T> = Result<T, DbError>;

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LeadRow {
    pub id: String,
    pub company_name: String,
    pub contact_email: String,
    pub country: String,
    pub industry: String,
    pub employee_count: i64,
    pub owner_user_id: String,
    pub team_id: String,
    pub queue_id: String,
    pub status: String,
    pub create_time: i64,
    pub update_time: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct QueueRow {
    pub id: String,
    pub name: String,
    pub create_time: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct MemberRow {
    pub user_id: String,
    pub team_id: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct RuleRow {
    pub id: String,
    pub priority: i64,
    pub target_kind: String,
    pub target_id: String,
    pub team_id: String,
    pub create_time: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct CriterionRow {
    pub rule_id: String,
    pub field: String,
    pub operator: String,
    pub value: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct PipelineRow {
    pub id: String,
    pub name: String,
    pub create_time: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct DealRow {
    pub id: String,
    pub team_id: String,
    pub program_id: String,
    pub customer_name: String,
    pub customer_domain: String,
    pub currency_code: String,
    pub amount_minor: i64,
    pub products: String,
    pub expected_close_time: Option<i64>,
    pub client_market: String,
    pub deal_type: String,
    pub pipeline_id: String,
    pub stage: String,
    pub registration_status: String,
    pub conflicting_deal_id: String,
    #[sqlx(try_from = "Flag")]
    pub will_manage: bool,
    pub outcome: String,
    pub close_time: Option<i64>,
    pub registration_expire_time: i64,
    pub rejection_reason: String,
    pub create_time: i64,
    pub update_time: i64,
}

impl DealRow {
    pub fn product_list(&self) -> Vec<String> {
        self.products.lines().filter(|p| !p.is_empty()).map(str::to_owned).collect()
    }
}

/// A deal as reads show it: the row, the count of active registrations of its domain.
#[derive(Debug, Clone, FromRow)]
pub struct DealView {
    #[sqlx(flatten)]
    pub deal: DealRow,
    pub active_registrations: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct DealTeamRow {
    pub user_id: String,
    pub side: String,
}

const LEAD_COLUMNS: &str = "id, company_name, contact_email, country, industry, employee_count, \
     owner_user_id, team_id, queue_id, status, create_time, update_time";

const DEAL_COLUMNS: &str = "id, team_id, program_id, customer_name, customer_domain, currency_code, \
     amount_minor, products, expected_close_time, client_market, deal_type, pipeline_id, stage, \
     registration_status, conflicting_deal_id, will_manage, outcome, close_time, \
     registration_expire_time, rejection_reason, create_time, update_time";

/// The active registrations of the deal's domain, every team's.
const ACTIVE_COUNT: &str = "(SELECT COUNT(*) FROM deals o WHERE o.customer_domain = d.customer_domain \
     AND o.registration_status IN ('PENDING', 'APPROVED')) AS active_registrations";

// --- leads ----------------------------------------------------------------------------------

pub async fn insert_lead(c: &mut Conn, l: &LeadRow) -> R<()> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO leads ({LEAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    )))
    .bind(&l.id)
    .bind(&l.company_name)
    .bind(&l.contact_email)
    .bind(&l.country)
    .bind(&l.industry)
    .bind(l.employee_count)
    .bind(&l.owner_user_id)
    .bind(&l.team_id)
    .bind(&l.queue_id)
    .bind(&l.status)
    .bind(l.create_time)
    .bind(l.update_time)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn lead(c: &mut Conn, id: &str) -> R<Option<LeadRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!("SELECT {LEAD_COLUMNS} FROM leads WHERE id = $1")))
        .bind(id)
        .fetch_optional(c)
        .await?)
}

/// Writes the lead back when it has not changed since `seen_update_time` (optimistic
/// concurrency); `false` when another writer got there first.
pub async fn update_lead(c: &mut Conn, l: &LeadRow, seen_update_time: i64) -> R<bool> {
    Ok(sqlx::query(
        "UPDATE leads SET company_name = $2, contact_email = $3, country = $4, industry = $5, \
         employee_count = $6, owner_user_id = $7, team_id = $8, queue_id = $9, status = $10, \
         update_time = $11 WHERE id = $1 AND update_time = $12",
    )
    .bind(&l.id)
    .bind(&l.company_name)
    .bind(&l.contact_email)
    .bind(&l.country)
    .bind(&l.industry)
    .bind(l.employee_count)
    .bind(&l.owner_user_id)
    .bind(&l.team_id)
    .bind(&l.queue_id)
    .bind(&l.status)
    .bind(l.update_time)
    .bind(seen_update_time)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

/// Gives an unowned lead waiting in `queue_id` to the claimer. One conditional UPDATE: of two
/// members claiming at once, exactly one changes the row.
pub async fn claim_lead(
    c: &mut Conn,
    lead_id: &str,
    queue_id: &str,
    user_id: &str,
    team_id: &str,
    now: Micros,
) -> R<bool> {
    Ok(sqlx::query(
        "UPDATE leads SET owner_user_id = $1, team_id = $2, status = 'ASSIGNED', update_time = $3 \
         WHERE id = $4 AND queue_id = $5 AND owner_user_id = '' AND status = 'NEW'",
    )
    .bind(user_id)
    .bind(team_id)
    .bind(now)
    .bind(lead_id)
    .bind(queue_id)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

/// Filters of a lead list; empty means any.
#[derive(Debug, Default, Clone)]
pub struct LeadFilter {
    pub team_id: String,
    pub queue_id: String,
    pub owner_user_id: String,
    pub status: String,
}

/// Leads newest first (ids sort by creation), before `before` (empty: from the newest).
pub async fn list_leads(c: &mut Conn, f: &LeadFilter, before: &str, limit: i64) -> R<Vec<LeadRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {LEAD_COLUMNS} FROM leads WHERE ($1 = '' OR team_id = $1) AND ($2 = '' OR queue_id = $2) \
         AND ($3 = '' OR owner_user_id = $3) AND ($4 = '' OR status = $4) AND ($5 = '' OR id < $5) \
         ORDER BY id DESC LIMIT $6"
    )))
    .bind(&f.team_id)
    .bind(&f.queue_id)
    .bind(&f.owner_user_id)
    .bind(&f.status)
    .bind(before)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

pub async fn declined_teams(c: &mut Conn, lead_id: &str) -> R<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT team_id FROM lead_declines WHERE lead_id = $1 ORDER BY create_time, team_id",
    )
    .bind(lead_id)
    .fetch_all(c)
    .await?)
}

pub async fn insert_decline(
    c: &mut Conn,
    lead_id: &str,
    team_id: &str,
    user_id: &str,
    reason: &str,
    now: Micros,
) -> R<()> {
    sqlx::query(
        "INSERT INTO lead_declines (lead_id, team_id, user_id, reason, create_time) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (lead_id, team_id) DO NOTHING",
    )
    .bind(lead_id)
    .bind(team_id)
    .bind(user_id)
    .bind(reason)
    .bind(now)
    .execute(c)
    .await?;
    Ok(())
}

// --- queues ---------------------------------------------------------------------------------

pub async fn insert_queue(c: &mut Conn, q: &QueueRow) -> R<()> {
    sqlx::query("INSERT INTO queues (id, name, rr_next, create_time) VALUES ($1, $2, 0, $3)")
        .bind(&q.id)
        .bind(&q.name)
        .bind(q.create_time)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn queue(c: &mut Conn, id: &str) -> R<Option<QueueRow>> {
    Ok(sqlx::query_as("SELECT id, name, create_time FROM queues WHERE id = $1")
        .bind(id)
        .fetch_optional(c)
        .await?)
}

pub async fn list_queues(c: &mut Conn, member: Option<&str>, after: &str, limit: i64) -> R<Vec<QueueRow>> {
    Ok(sqlx::query_as(
        "SELECT id, name, create_time FROM queues q WHERE id > $1 AND ($2 = '' OR EXISTS \
         (SELECT 1 FROM queue_members m WHERE m.queue_id = q.id AND m.user_id = $2)) ORDER BY id LIMIT $3",
    )
    .bind(after)
    .bind(member.unwrap_or(""))
    .bind(limit)
    .fetch_all(c)
    .await?)
}

/// The members in round-robin order: by the time they joined.
pub async fn queue_members(c: &mut Conn, queue_id: &str) -> R<Vec<MemberRow>> {
    Ok(sqlx::query_as(
        "SELECT user_id, team_id FROM queue_members WHERE queue_id = $1 ORDER BY join_time, user_id",
    )
    .bind(queue_id)
    .fetch_all(c)
    .await?)
}

pub async fn queue_member(c: &mut Conn, queue_id: &str, user_id: &str) -> R<Option<MemberRow>> {
    Ok(sqlx::query_as("SELECT user_id, team_id FROM queue_members WHERE queue_id = $1 AND user_id = $2")
        .bind(queue_id)
        .bind(user_id)
        .fetch_optional(c)
        .await?)
}

/// `false` when the user was already a member.
pub async fn insert_queue_member(c: &mut Conn, queue_id: &str, m: &MemberRow, now: Micros) -> R<bool> {
    Ok(sqlx::query(
        "INSERT INTO queue_members (queue_id, user_id, team_id, join_time) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (queue_id, user_id) DO NOTHING",
    )
    .bind(queue_id)
    .bind(&m.user_id)
    .bind(&m.team_id)
    .bind(now)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

pub async fn delete_queue_member(c: &mut Conn, queue_id: &str, user_id: &str) -> R<bool> {
    Ok(sqlx::query("DELETE FROM queue_members WHERE queue_id = $1 AND user_id = $2")
        .bind(queue_id)
        .bind(user_id)
        .execute(c)
        .await?
        .rows_affected()
        == 1)
}

/// Takes the queue's round-robin turn: returns the cursor before the increment. The row lock
/// the UPDATE takes serialises concurrent transactions on PostgreSQL (SQLite has one writer),
/// so each lead gets its own turn.
pub async fn take_turn(c: &mut Conn, queue_id: &str) -> R<Option<i64>> {
    let next: Option<i64> =
        sqlx::query_scalar("UPDATE queues SET rr_next = rr_next + 1 WHERE id = $1 RETURNING rr_next")
            .bind(queue_id)
            .fetch_optional(c)
            .await?;
    Ok(next.map(|n| n - 1))
}

// --- assignment rules -----------------------------------------------------------------------

pub async fn insert_rule(c: &mut Conn, r: &RuleRow, criteria: &[(String, String, String)]) -> R<()> {
    sqlx::query(
        "INSERT INTO assignment_rules (id, priority, target_kind, target_id, team_id, create_time) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&r.id)
    .bind(r.priority)
    .bind(&r.target_kind)
    .bind(&r.target_id)
    .bind(&r.team_id)
    .bind(r.create_time)
    .execute(&mut *c)
    .await?;
    for (position, (field, operator, value)) in criteria.iter().enumerate() {
        sqlx::query(
            "INSERT INTO rule_criteria (rule_id, position, field, operator, value) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&r.id)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(field)
        .bind(operator)
        .bind(value)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// Rules in the order they run, after `(priority, id)`.
pub async fn list_rules(c: &mut Conn, after: (i64, &str), limit: i64) -> R<Vec<RuleRow>> {
    Ok(sqlx::query_as(
        "SELECT id, priority, target_kind, target_id, team_id, create_time FROM assignment_rules \
         WHERE priority > $1 OR (priority = $1 AND id > $2) ORDER BY priority, id LIMIT $3",
    )
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

pub async fn all_rules(c: &mut Conn) -> R<Vec<RuleRow>> {
    list_rules(c, (i64::MIN, ""), i64::MAX).await
}

pub async fn criteria(c: &mut Conn, rule_ids: &[String]) -> R<Vec<CriterionRow>> {
    let mut out = Vec::new();
    for id in rule_ids {
        let rows: Vec<CriterionRow> = sqlx::query_as(
            "SELECT rule_id, field, operator, value FROM rule_criteria WHERE rule_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&mut *c)
        .await?;
        out.extend(rows);
    }
    Ok(out)
}

pub async fn delete_rule(c: &mut Conn, id: &str) -> R<bool> {
    sqlx::query("DELETE FROM rule_criteria WHERE rule_id = $1").bind(id).execute(&mut *c).await?;
    Ok(sqlx::query("DELETE FROM assignment_rules WHERE id = $1").bind(id).execute(c).await?.rows_affected()
        == 1)
}

// --- pipelines ------------------------------------------------------------------------------

pub async fn insert_pipeline(c: &mut Conn, p: &PipelineRow, stages: &[String]) -> R<()> {
    sqlx::query("INSERT INTO pipelines (id, name, create_time) VALUES ($1, $2, $3)")
        .bind(&p.id)
        .bind(&p.name)
        .bind(p.create_time)
        .execute(&mut *c)
        .await?;
    for (position, name) in stages.iter().enumerate() {
        sqlx::query("INSERT INTO pipeline_stages (pipeline_id, position, name) VALUES ($1, $2, $3)")
            .bind(&p.id)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(name)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

pub async fn pipeline(c: &mut Conn, id: &str) -> R<Option<PipelineRow>> {
    Ok(sqlx::query_as("SELECT id, name, create_time FROM pipelines WHERE id = $1")
        .bind(id)
        .fetch_optional(c)
        .await?)
}

pub async fn stages(c: &mut Conn, pipeline_id: &str) -> R<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT name FROM pipeline_stages WHERE pipeline_id = $1 ORDER BY position")
        .bind(pipeline_id)
        .fetch_all(c)
        .await?)
}

pub async fn list_pipelines(c: &mut Conn, after: &str, limit: i64) -> R<Vec<PipelineRow>> {
    Ok(sqlx::query_as("SELECT id, name, create_time FROM pipelines WHERE id > $1 ORDER BY id LIMIT $2")
        .bind(after)
        .bind(limit)
        .fetch_all(c)
        .await?)
}

pub async fn set_default_pipeline(c: &mut Conn, team_id: &str, pipeline_id: &str, now: Micros) -> R<()> {
    sqlx::query(
        "INSERT INTO team_settings (team_id, default_pipeline_id, update_time) VALUES ($1, $2, $3) \
         ON CONFLICT (team_id) DO UPDATE SET default_pipeline_id = $2, update_time = $3",
    )
    .bind(team_id)
    .bind(pipeline_id)
    .bind(now)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn default_pipeline(c: &mut Conn, team_id: &str) -> R<Option<String>> {
    Ok(sqlx::query_scalar("SELECT default_pipeline_id FROM team_settings WHERE team_id = $1")
        .bind(team_id)
        .fetch_optional(c)
        .await?)
}

// --- deals ----------------------------------------------------------------------------------

pub async fn insert_deal(c: &mut Conn, d: &DealRow) -> R<()> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO deals ({DEAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
         $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)"
    )))
    .bind(&d.id)
    .bind(&d.team_id)
    .bind(&d.program_id)
    .bind(&d.customer_name)
    .bind(&d.customer_domain)
    .bind(&d.currency_code)
    .bind(d.amount_minor)
    .bind(&d.products)
    .bind(d.expected_close_time)
    .bind(&d.client_market)
    .bind(&d.deal_type)
    .bind(&d.pipeline_id)
    .bind(&d.stage)
    .bind(&d.registration_status)
    .bind(&d.conflicting_deal_id)
    .bind(i64::from(d.will_manage))
    .bind(&d.outcome)
    .bind(d.close_time)
    .bind(d.registration_expire_time)
    .bind(&d.rejection_reason)
    .bind(d.create_time)
    .bind(d.update_time)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn deal(c: &mut Conn, id: &str) -> R<Option<DealRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!("SELECT {DEAL_COLUMNS} FROM deals WHERE id = $1")))
        .bind(id)
        .fetch_optional(c)
        .await?)
}

pub async fn deal_view(c: &mut Conn, id: &str) -> R<Option<DealView>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {DEAL_COLUMNS}, {ACTIVE_COUNT} FROM deals d WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(c)
    .await?)
}

/// How many registrations of the deal's customer domain are active (its own included).
pub async fn active_registration_count(c: &mut Conn, id: &str) -> R<i64> {
    let (active,): (i64,) =
        sqlx::query_as(AssertSqlSafe(format!("SELECT {ACTIVE_COUNT} FROM deals d WHERE id = $1")))
            .bind(id)
            .fetch_one(c)
            .await?;
    Ok(active)
}

/// Writes the deal back when it has not changed since `seen_update_time`; `false` otherwise.
pub async fn update_deal(c: &mut Conn, d: &DealRow, seen_update_time: i64) -> R<bool> {
    Ok(sqlx::query(
        "UPDATE deals SET customer_name = $2, amount_minor = $3, currency_code = $4, products = $5, \
         expected_close_time = $6, client_market = $7, deal_type = $8, pipeline_id = $9, stage = $10, \
         registration_status = $11, will_manage = $12, outcome = $13, close_time = $14, \
         registration_expire_time = $15, rejection_reason = $16, update_time = $17 \
         WHERE id = $1 AND update_time = $18",
    )
    .bind(&d.id)
    .bind(&d.customer_name)
    .bind(d.amount_minor)
    .bind(&d.currency_code)
    .bind(&d.products)
    .bind(d.expected_close_time)
    .bind(&d.client_market)
    .bind(&d.deal_type)
    .bind(&d.pipeline_id)
    .bind(&d.stage)
    .bind(&d.registration_status)
    .bind(i64::from(d.will_manage))
    .bind(&d.outcome)
    .bind(d.close_time)
    .bind(d.registration_expire_time)
    .bind(&d.rejection_reason)
    .bind(d.update_time)
    .bind(seen_update_time)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

#[derive(Debug, Default, Clone)]
pub struct DealFilter {
    pub team_id: String,
    pub registration_status: String,
    pub min_active_registrations: i64,
}

/// Deals newest first, before `before` (empty: from the newest).
pub async fn list_deals(c: &mut Conn, f: &DealFilter, before: &str, limit: i64) -> R<Vec<DealView>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT * FROM (SELECT {DEAL_COLUMNS}, {ACTIVE_COUNT} FROM deals d \
         WHERE ($1 = '' OR team_id = $1) AND ($2 = '' OR registration_status = $2) AND ($3 = '' OR id < $3)) v \
         WHERE active_registrations >= $4 ORDER BY id DESC LIMIT $5"
    )))
    .bind(&f.team_id)
    .bind(&f.registration_status)
    .bind(before)
    .bind(f.min_active_registrations)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

/// Takes the domain's registration lock until the transaction ends (PostgreSQL's row lock;
/// SQLite has one writer), so concurrent registrations of one domain see each other.
pub async fn lock_domain(c: &mut Conn, domain: &str) -> R<()> {
    sqlx::query(
        "INSERT INTO customer_domains (domain, registrations) VALUES ($1, 1) \
         ON CONFLICT (domain) DO UPDATE SET registrations = customer_domains.registrations + 1",
    )
    .bind(domain)
    .execute(c)
    .await?;
    Ok(())
}

/// The active registrations of a domain.
pub async fn active_registrations(c: &mut Conn, domain: &str) -> R<Vec<ActiveRegistration>> {
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT id, team_id, create_time, conflicting_deal_id FROM deals WHERE customer_domain = $1 \
         AND registration_status IN ('PENDING', 'APPROVED')",
    )
    .bind(domain)
    .fetch_all(c)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(deal_id, team_id, create_time, conflicting_deal_id)| ActiveRegistration {
            deal_id,
            team_id,
            create_time,
            conflicting_deal_id,
        })
        .collect())
}

/// Marks every open, active registration past its time as expired; returns them.
pub async fn expire_due(c: &mut Conn, now: Micros, limit: i64) -> R<Vec<DealRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE deals SET registration_status = 'EXPIRED', update_time = $1 WHERE id IN ( \
           SELECT id FROM deals WHERE outcome = '' AND registration_status IN ('PENDING', 'APPROVED') \
           AND registration_expire_time <= $1 ORDER BY registration_expire_time LIMIT $2) \
         AND registration_status IN ('PENDING', 'APPROVED') RETURNING {DEAL_COLUMNS}"
    )))
    .bind(now)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

pub async fn deal_team(c: &mut Conn, deal_id: &str) -> R<Vec<DealTeamRow>> {
    Ok(sqlx::query_as("SELECT user_id, side FROM deal_team WHERE deal_id = $1 ORDER BY add_time, user_id")
        .bind(deal_id)
        .fetch_all(c)
        .await?)
}

pub async fn insert_deal_team_member(c: &mut Conn, deal_id: &str, m: &DealTeamRow, now: Micros) -> R<bool> {
    Ok(sqlx::query(
        "INSERT INTO deal_team (deal_id, user_id, side, add_time) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (deal_id, user_id) DO NOTHING",
    )
    .bind(deal_id)
    .bind(&m.user_id)
    .bind(&m.side)
    .bind(now)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

pub async fn delete_deal_team_member(c: &mut Conn, deal_id: &str, user_id: &str) -> R<bool> {
    Ok(sqlx::query("DELETE FROM deal_team WHERE deal_id = $1 AND user_id = $2")
        .bind(deal_id)
        .bind(user_id)
        .execute(c)
        .await?
        .rows_affected()
        == 1)
}
pub mod directory;
