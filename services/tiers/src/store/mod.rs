//! Tiers' persistence: one SQL text for PostgreSQL and SQLite. Functions take a connection (a
//! transaction derefs to one) so the use case decides the transaction. Sums are cast to BIGINT
//! because PostgreSQL sums BIGINTs as NUMERIC, which the `Any` driver does not decode.

use sqlx::{AnyConnection, FromRow};
use tandem_platform::{
    db::{DbError, Flag},
    time::Micros,
};

use crate::domain::{
    PointsKind,
    progress::EntryFact,
    status::{TierDef, Totals},
};

type Conn = AnyConnection;
type R<T> = Result<T, DbError>;

#[derive(Debug, Clone, FromRow)]
pub struct TierRow {
    pub id: String,
    pub program_id: String,
    pub name: String,
    pub rank: i64,
    pub points_threshold: i64,
    pub sold_points_minimum: i64,
    pub managed_points_minimum: i64,
    #[sqlx(try_from = "Flag")]
    pub requires_certification: bool,
    pub create_time: i64,
    pub update_time: i64,
}

impl TierRow {
    pub fn def(&self) -> TierDef {
        TierDef {
            id: self.id.clone(),
            name: self.name.clone(),
            rank: i32::try_from(self.rank).unwrap_or(i32::MAX),
            points_threshold: self.points_threshold,
            sold_points_minimum: self.sold_points_minimum,
            managed_points_minimum: self.managed_points_minimum,
            requires_certification: self.requires_certification,
        }
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct CertificationRow {
    pub id: String,
    pub team_id: String,
    pub valid_until: i64,
    pub create_time: i64,
}

/// A decimal setting: an exchange rate or a market multiplier.
#[derive(Debug, Clone, FromRow)]
pub struct RateRow {
    pub code: String,
    pub value: String,
    pub update_time: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct EntryRow {
    pub id: String,
    pub program_id: String,
    pub team_id: String,
    pub client_id: String,
    pub kind: String,
    pub points: i64,
    pub earned_at: i64,
    pub deal_type: Option<String>,
    pub market_type: Option<String>,
    pub deal_id: Option<String>,
    pub reason: String,
    pub sourced_usd_cents: Option<i64>,
    pub currency_code: Option<String>,
    pub amount_minor: Option<i64>,
    pub usd_per_unit: Option<String>,
    pub multiplier: Option<String>,
    pub create_time: i64,
}

/// One client's points for a team: active and expired, sold and managed.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow)]
pub struct ClientRow {
    pub client_id: String,
    pub active_sold: i64,
    pub active_managed: i64,
    pub expired_sold: i64,
    pub expired_managed: i64,
    pub last_earned_at: i64,
}

/// One client's part of the points changes in a range.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow)]
pub struct ChangeRow {
    pub client_id: String,
    pub new_sold: i64,
    pub new_managed: i64,
    pub lost_managed: i64,
}

const TIER_COLUMNS: &str = "id, program_id, name, rank, points_threshold, sold_points_minimum, \
     managed_points_minimum, requires_certification, create_time, update_time";

const ENTRY_COLUMNS: &str = "id, program_id, team_id, client_id, kind, points, earned_at, deal_type, \
     market_type, deal_id, reason, sourced_usd_cents, currency_code, amount_minor, usd_per_unit, \
     multiplier, create_time";

// --- tiers --------------------------------------------------------------------------------

pub async fn insert_tier(c: &mut Conn, t: &TierRow) -> R<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO tiers ({TIER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    )))
    .bind(&t.id)
    .bind(&t.program_id)
    .bind(&t.name)
    .bind(t.rank)
    .bind(t.points_threshold)
    .bind(t.sold_points_minimum)
    .bind(t.managed_points_minimum)
    .bind(i64::from(t.requires_certification))
    .bind(t.create_time)
    .bind(t.update_time)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn update_tier(c: &mut Conn, t: &TierRow) -> R<()> {
    sqlx::query(
        "UPDATE tiers SET name = $2, rank = $3, points_threshold = $4, sold_points_minimum = $5, \
         managed_points_minimum = $6, requires_certification = $7, update_time = $8 WHERE id = $1",
    )
    .bind(&t.id)
    .bind(&t.name)
    .bind(t.rank)
    .bind(t.points_threshold)
    .bind(t.sold_points_minimum)
    .bind(t.managed_points_minimum)
    .bind(i64::from(t.requires_certification))
    .bind(t.update_time)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn tier(c: &mut Conn, id: &str) -> R<Option<TierRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {TIER_COLUMNS} FROM tiers WHERE id = $1")))
        .bind(id)
        .fetch_optional(c)
        .await?)
}

/// A program's tiers by rank, after `after_rank`.
pub async fn list_tiers(c: &mut Conn, program_id: &str, after_rank: i64, limit: i64) -> R<Vec<TierRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TIER_COLUMNS} FROM tiers WHERE program_id = $1 AND rank > $2 ORDER BY rank LIMIT $3"
    )))
    .bind(program_id)
    .bind(after_rank)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

// --- certifications -----------------------------------------------------------------------

pub async fn insert_certification(c: &mut Conn, row: &CertificationRow) -> R<()> {
    sqlx::query("INSERT INTO certifications (id, team_id, valid_until, create_time) VALUES ($1, $2, $3, $4)")
        .bind(&row.id)
        .bind(&row.team_id)
        .bind(row.valid_until)
        .bind(row.create_time)
        .execute(c)
        .await?;
    Ok(())
}

// --- rates and multipliers ----------------------------------------------------------------

/// The two decimal settings, each a table keyed by a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateTable {
    ExchangeRates,
    MarketMultipliers,
}

impl RateTable {
    fn sql(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::ExchangeRates => ("exchange_rates", "currency_code", "usd_per_unit"),
            Self::MarketMultipliers => ("market_multipliers", "country_code", "multiplier"),
        }
    }
}

pub async fn set_rate(c: &mut Conn, table: RateTable, row: &RateRow) -> R<()> {
    let (t, k, v) = table.sql();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {t} ({k}, {v}, update_time) VALUES ($1, $2, $3) \
         ON CONFLICT ({k}) DO UPDATE SET {v} = excluded.{v}, update_time = excluded.update_time"
    )))
    .bind(&row.code)
    .bind(&row.value)
    .bind(row.update_time)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn rate(c: &mut Conn, table: RateTable, code: &str) -> R<Option<RateRow>> {
    let (t, k, v) = table.sql();
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {k} AS code, {v} AS value, update_time FROM {t} WHERE {k} = $1"
    )))
    .bind(code)
    .fetch_optional(c)
    .await?)
}

pub async fn list_rates(c: &mut Conn, table: RateTable, after: &str, limit: i64) -> R<Vec<RateRow>> {
    let (t, k, v) = table.sql();
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {k} AS code, {v} AS value, update_time FROM {t} WHERE {k} > $1 ORDER BY {k} LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

// --- the ledger ---------------------------------------------------------------------------

pub async fn insert_entry(c: &mut Conn, e: &EntryRow) -> R<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO points_entries ({ENTRY_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    )))
    .bind(&e.id)
    .bind(&e.program_id)
    .bind(&e.team_id)
    .bind(&e.client_id)
    .bind(&e.kind)
    .bind(e.points)
    .bind(e.earned_at)
    .bind(&e.deal_type)
    .bind(&e.market_type)
    .bind(&e.deal_id)
    .bind(&e.reason)
    .bind(e.sourced_usd_cents)
    .bind(&e.currency_code)
    .bind(e.amount_minor)
    .bind(&e.usd_per_unit)
    .bind(&e.multiplier)
    .bind(e.create_time)
    .execute(c)
    .await?;
    Ok(())
}

/// A team's standing in a program at `now`, with the program's tiers by rank.
pub struct Standing {
    /// Active sold and managed points (earned at or after `active_since`, up to `now`), and
    /// expired points.
    pub totals: Totals,
    /// The sourced USD cents of the active window.
    pub sourced_usd_cents: i64,
    /// The end of the team's latest certification still valid.
    pub certified_until: Option<Micros>,
    pub tiers: Vec<TierRow>,
}

/// A row of [`team_standing`]'s statement, read by position: GetTierStatus runs it on every
/// call, and a column found by name is a hash lookup per column per row.
struct StandingRow {
    sold: i64,
    managed: i64,
    expired: i64,
    sourced: i64,
    certified_until: Option<i64>,
    id: Option<String>,
    program_id: Option<String>,
    name: Option<String>,
    rank: Option<i64>,
    points_threshold: Option<i64>,
    sold_points_minimum: Option<i64>,
    managed_points_minimum: Option<i64>,
    requires_certification: Option<i64>,
    create_time: Option<i64>,
    update_time: Option<i64>,
}

impl<'r> FromRow<'r, sqlx::any::AnyRow> for StandingRow {
    fn from_row(row: &'r sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Self {
            sold: row.try_get(0)?,
            managed: row.try_get(1)?,
            expired: row.try_get(2)?,
            sourced: row.try_get(3)?,
            certified_until: row.try_get(4)?,
            id: row.try_get(5)?,
            program_id: row.try_get(6)?,
            name: row.try_get(7)?,
            rank: row.try_get(8)?,
            points_threshold: row.try_get(9)?,
            sold_points_minimum: row.try_get(10)?,
            managed_points_minimum: row.try_get(11)?,
            requires_certification: row.try_get(12)?,
            create_time: row.try_get(13)?,
            update_time: row.try_get(14)?,
        })
    }
}

impl StandingRow {
    fn tier(self) -> Option<TierRow> {
        Some(TierRow {
            id: self.id?,
            program_id: self.program_id?,
            name: self.name?,
            rank: self.rank?,
            points_threshold: self.points_threshold?,
            sold_points_minimum: self.sold_points_minimum?,
            managed_points_minimum: self.managed_points_minimum?,
            requires_certification: self.requires_certification? != 0,
            create_time: self.create_time?,
            update_time: self.update_time?,
        })
    }
}

/// A team's [`Standing`] in one statement: its sums (a range scan of `points_by_team`) and
/// certification, joined to each tier of the program (a handful; one row without a tier when
/// the program has none).
pub async fn team_standing(
    c: &mut Conn,
    program_id: &str,
    team_id: &str,
    active_since: Micros,
    now: Micros,
) -> R<Standing> {
    let rows: Vec<StandingRow> = sqlx::query_as(
        "SELECT s.sold, s.managed, s.expired, s.sourced, s.certified_until, t.id, t.program_id, t.name, \
           t.rank, t.points_threshold, t.sold_points_minimum, t.managed_points_minimum, \
           t.requires_certification, t.create_time, t.update_time \
         FROM (SELECT \
             COALESCE(CAST(SUM(CASE WHEN earned_at >= $3 AND kind = 'SOLD' THEN points ELSE 0 END) AS BIGINT), 0) AS sold, \
             COALESCE(CAST(SUM(CASE WHEN earned_at >= $3 AND kind = 'MANAGED' THEN points ELSE 0 END) AS BIGINT), 0) AS managed, \
             COALESCE(CAST(SUM(CASE WHEN earned_at < $3 THEN points ELSE 0 END) AS BIGINT), 0) AS expired, \
             COALESCE(CAST(SUM(CASE WHEN earned_at >= $3 THEN COALESCE(sourced_usd_cents, 0) ELSE 0 END) AS BIGINT), 0) AS sourced, \
             (SELECT MAX(valid_until) FROM certifications WHERE team_id = $2 AND valid_until > $4) AS certified_until \
           FROM points_entries WHERE program_id = $1 AND team_id = $2 AND earned_at <= $4) s \
         LEFT JOIN tiers t ON t.program_id = $1 \
         ORDER BY t.rank",
    )
    .bind(program_id)
    .bind(team_id)
    .bind(active_since)
    .bind(now)
    .fetch_all(c)
    .await?;
    let Some(first) = rows.first() else {
        return Err(sqlx::Error::RowNotFound.into());
    };
    let (totals, sourced_usd_cents, certified_until) = (
        Totals { sold: first.sold, managed: first.managed, expired: first.expired },
        first.sourced,
        first.certified_until,
    );
    let tiers = rows.into_iter().filter_map(StandingRow::tier).collect();
    Ok(Standing { totals, sourced_usd_cents, certified_until, tiers })
}

/// The other teams that manage a client: those whose active managed points for it are positive.
pub async fn managing_partners(
    c: &mut Conn,
    program_id: &str,
    client_id: &str,
    active_since: Micros,
    excluding_team: &str,
) -> R<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT team_id FROM points_entries \
         WHERE program_id = $1 AND client_id = $2 AND kind = 'MANAGED' AND earned_at >= $3 AND team_id <> $4 \
         GROUP BY team_id HAVING SUM(points) > 0 ORDER BY team_id",
    )
    .bind(program_id)
    .bind(client_id)
    .bind(active_since)
    .bind(excluding_team)
    .fetch_all(c)
    .await?;
    Ok(rows.into_iter().map(|(t,)| t).collect())
}

/// A team's entries earned in `[since, until]`, for month-by-month progress.
pub async fn team_facts(
    c: &mut Conn,
    program_id: &str,
    team_id: &str,
    since: Micros,
    until: Micros,
) -> R<Vec<EntryFact>> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT kind, points, earned_at FROM points_entries \
         WHERE program_id = $1 AND team_id = $2 AND earned_at >= $3 AND earned_at <= $4 ORDER BY earned_at",
    )
    .bind(program_id)
    .bind(team_id)
    .bind(since)
    .bind(until)
    .fetch_all(c)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(kind, points, earned_at)| {
            Some(EntryFact { kind: PointsKind::parse(&kind)?, points, earned_at })
        })
        .collect())
}

/// A team's entries for one client, newest first.
pub async fn client_entries(
    c: &mut Conn,
    program_id: &str,
    team_id: &str,
    client_id: &str,
    limit: i64,
) -> R<Vec<EntryRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENTRY_COLUMNS} FROM points_entries WHERE program_id = $1 AND team_id = $2 AND client_id = $3 \
         ORDER BY earned_at DESC, id DESC LIMIT $4"
    )))
    .bind(program_id)
    .bind(team_id)
    .bind(client_id)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

const CLIENT_SUMS: &str = "client_id, \
    COALESCE(CAST(SUM(CASE WHEN kind = 'SOLD' AND earned_at >= $3 THEN points ELSE 0 END) AS BIGINT), 0) AS active_sold, \
    COALESCE(CAST(SUM(CASE WHEN kind = 'MANAGED' AND earned_at >= $3 THEN points ELSE 0 END) AS BIGINT), 0) AS active_managed, \
    COALESCE(CAST(SUM(CASE WHEN kind = 'SOLD' AND earned_at < $3 THEN points ELSE 0 END) AS BIGINT), 0) AS expired_sold, \
    COALESCE(CAST(SUM(CASE WHEN kind = 'MANAGED' AND earned_at < $3 THEN points ELSE 0 END) AS BIGINT), 0) AS expired_managed, \
    MAX(earned_at) AS last_earned_at";

/// Points per client, by client id after `after`, filtered by deal and market type (`""` for
/// any), counting entries earned up to `now`.
#[allow(clippy::too_many_arguments)]
pub async fn breakdown(
    c: &mut Conn,
    program_id: &str,
    team_id: &str,
    active_since: Micros,
    now: Micros,
    deal_type: &str,
    market_type: &str,
    after: &str,
    limit: i64,
) -> R<Vec<ClientRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CLIENT_SUMS} FROM points_entries \
         WHERE program_id = $1 AND team_id = $2 AND earned_at <= $4 \
           AND ($5 = '' OR deal_type = $5) AND ($6 = '' OR market_type = $6) AND client_id > $7 \
         GROUP BY client_id ORDER BY client_id LIMIT $8"
    )))
    .bind(program_id)
    .bind(team_id)
    .bind(active_since)
    .bind(now)
    .bind(deal_type)
    .bind(market_type)
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

/// One client's points for a team.
pub async fn client_summary(
    c: &mut Conn,
    program_id: &str,
    team_id: &str,
    client_id: &str,
    active_since: Micros,
    now: Micros,
) -> R<Option<ClientRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CLIENT_SUMS} FROM points_entries \
         WHERE program_id = $1 AND team_id = $2 AND client_id = $5 AND earned_at <= $4 GROUP BY client_id"
    )))
    .bind(program_id)
    .bind(team_id)
    .bind(active_since)
    .bind(now)
    .bind(client_id)
    .fetch_optional(c)
    .await?)
}

/// The bounds of a points-changes report: entries earned in `[start, end)` are new; managed
/// entries earned in `[lost_from, lost_to)` expired within the range.
#[derive(Debug, Clone, Copy)]
pub struct ChangeRange {
    pub start: Micros,
    pub end: Micros,
    pub lost_from: Micros,
    pub lost_to: Micros,
}

const CHANGE_SUMS: &str = "client_id, \
    COALESCE(CAST(SUM(CASE WHEN kind = 'SOLD' AND earned_at >= $3 AND earned_at < $4 THEN points ELSE 0 END) AS BIGINT), 0) AS new_sold, \
    COALESCE(CAST(SUM(CASE WHEN kind = 'MANAGED' AND earned_at >= $3 AND earned_at < $4 THEN points ELSE 0 END) AS BIGINT), 0) AS new_managed, \
    COALESCE(CAST(SUM(CASE WHEN kind = 'MANAGED' AND earned_at >= $5 AND earned_at < $6 THEN points ELSE 0 END) AS BIGINT), 0) AS lost_managed";

const CHANGE_WHERE: &str = "program_id = $1 AND team_id = $2 \
    AND ((earned_at >= $3 AND earned_at < $4) OR (kind = 'MANAGED' AND earned_at >= $5 AND earned_at < $6))";

/// Points changes per client, by client id after `after`.
pub async fn changes(
    c: &mut Conn,
    program_id: &str,
    team_id: &str,
    range: ChangeRange,
    after: &str,
    limit: i64,
) -> R<Vec<ChangeRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CHANGE_SUMS} FROM points_entries WHERE {CHANGE_WHERE} AND client_id > $7 \
         GROUP BY client_id ORDER BY client_id LIMIT $8"
    )))
    .bind(program_id)
    .bind(team_id)
    .bind(range.start)
    .bind(range.end)
    .bind(range.lost_from)
    .bind(range.lost_to)
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

/// The report's totals over every client: new sold, highest sold of one client, new managed,
/// lost managed.
pub async fn change_totals(
    c: &mut Conn,
    program_id: &str,
    team_id: &str,
    range: ChangeRange,
) -> R<(i64, i64, i64, i64)> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT COALESCE(CAST(SUM(new_sold) AS BIGINT), 0), COALESCE(CAST(MAX(new_sold) AS BIGINT), 0), \
                COALESCE(CAST(SUM(new_managed) AS BIGINT), 0), COALESCE(CAST(SUM(lost_managed) AS BIGINT), 0) \
         FROM (SELECT {CHANGE_SUMS} FROM points_entries WHERE {CHANGE_WHERE} GROUP BY client_id) per_client"
    )))
    .bind(program_id)
    .bind(team_id)
    .bind(range.start)
    .bind(range.end)
    .bind(range.lost_from)
    .bind(range.lost_to)
    .fetch_one(c)
    .await?)
}

// --- credited tiers -------------------------------------------------------------------------

pub async fn set_credited_tier(
    c: &mut Conn,
    program_id: &str,
    team_id: &str,
    tier_id: &str,
    now: Micros,
) -> R<()> {
    sqlx::query(
        "INSERT INTO credited_tiers (program_id, team_id, tier_id, update_time) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (program_id, team_id) DO UPDATE SET tier_id = excluded.tier_id, update_time = excluded.update_time",
    )
    .bind(program_id)
    .bind(team_id)
    .bind(tier_id)
    .bind(now)
    .execute(c)
    .await?;
    Ok(())
}

/// The credited tier last recorded for the team: `None` when never recorded.
/// The (program, team) pairs whose credited tier is tracked, after a key, in key order.
pub async fn standings_after(
    c: &mut Conn,
    program_id: &str,
    team_id: &str,
    limit: i64,
) -> R<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT program_id, team_id FROM credited_tiers WHERE program_id > $1 OR (program_id = $1 AND team_id > $2) \
         ORDER BY program_id, team_id LIMIT $3",
    )
    .bind(program_id)
    .bind(team_id)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

pub async fn recorded_credited_tier(c: &mut Conn, program_id: &str, team_id: &str) -> R<Option<String>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT tier_id FROM credited_tiers WHERE program_id = $1 AND team_id = $2")
            .bind(program_id)
            .bind(team_id)
            .fetch_optional(c)
            .await?;
    Ok(row.map(|(t,)| t))
}

/// The programs in which the team has points (and so a recorded credited tier).
pub async fn team_programs(c: &mut Conn, team_id: &str) -> R<Vec<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT program_id FROM credited_tiers WHERE team_id = $1 ORDER BY program_id")
            .bind(team_id)
            .fetch_all(c)
            .await?;
    Ok(rows.into_iter().map(|(p,)| p).collect())
}
