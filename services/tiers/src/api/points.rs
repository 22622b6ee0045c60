//! `PointsService`: tier status, staff adjustments, the dashboard reads and the calculator.

use tandem_platform::{
    idempotency::{self, Claim},
    ids::new_id,
    paging::Page,
    time::{Micros, from_timestamp, now_micros, to_timestamp},
    validate::{ID_MAX, TEXT_MAX, Validator},
};
use tandem_proto::{
    common::v1::{ErrorReason, Money},
    tiers::v1::{self as pb, points_service_server::PointsService},
};
use tonic::Request;

use super::{CLIENT_ID_MAX, TiersApi, caller, convert, grpc, require_staff, team_and_program};
use crate::{
    domain::{
        DealType, MarketType, PointsKind, calendar,
        money::{self, Amount, format_decimal},
        points::{self, PointsError},
        progress,
    },
    error::{Result, TiersError},
    ledger,
    store::{self, ChangeRange, EntryRow},
};

grpc! {
    PointsService {
        get_tier_status => get_tier_status_(GetTierStatusRequest) -> GetTierStatusResponse;
        adjust_points => adjust_points_(AdjustPointsRequest) -> AdjustPointsResponse;
        list_points_changes => list_points_changes_(ListPointsChangesRequest) -> ListPointsChangesResponse;
        list_points_breakdown => list_points_breakdown_(ListPointsBreakdownRequest) -> ListPointsBreakdownResponse;
        get_client_points => get_client_points_(GetClientPointsRequest) -> GetClientPointsResponse;
        get_progress_over_time => get_progress_over_time_(GetProgressOverTimeRequest) -> GetProgressOverTimeResponse;
        calculate_points => calculate_points_(CalculatePointsRequest) -> CalculatePointsResponse;
        convert_points => convert_points_(ConvertPointsRequest) -> ConvertPointsResponse;
    }
}

const ADJUST_SCOPE: &str = "tiers.AdjustPoints";
/// Most entries `GetClientPoints` returns.
const CLIENT_ENTRIES_MAX: i64 = 1000;
/// Most other managing partners the calculator accepts.
const OTHER_PARTNERS_MAX: i32 = 1000;
const MONTHS_MAX: i32 = 36;

/// An optional enum filter or attribute: unspecified, or a known value.
fn optional_enum<E: TryFrom<i32>>(v: &mut Validator, field: &str, value: i32) {
    v.check(value == 0 || E::try_from(value).is_ok(), field, "must be a known value");
}

fn deal_type(value: i32) -> Option<DealType> {
    pb::DealType::try_from(value).ok().and_then(|d| DealType::try_from(d).ok())
}

fn market_type(value: i32) -> Option<MarketType> {
    pb::MarketType::try_from(value).ok().and_then(|m| MarketType::try_from(m).ok())
}

/// A client market: empty (multiplier 1) or an ISO 3166-1 alpha-2 code.
fn market(v: &mut Validator, field: &str, value: &str) {
    v.check(
        value.is_empty() || money::is_country_code(value),
        field,
        "must be an ISO 3166-1 alpha-2 code such as \"BR\"",
    );
}

/// Money from outside: a currency code and a non-negative amount.
fn money_in(v: &mut Validator, field: &str, value: Option<&Money>) -> Option<Amount> {
    let Some(m) = value else {
        v.violation(field, "must be set");
        return None;
    };
    let code_ok = money::is_currency_code(&m.currency_code);
    v.check(code_ok, &format!("{field}.currency_code"), "must be an ISO 4217 code such as \"EUR\"");
    v.check(m.amount_minor >= 0, &format!("{field}.amount_minor"), "must not be negative");
    (code_ok && m.amount_minor >= 0).then(|| Amount::new(m.amount_minor, &m.currency_code))
}

fn points_error(field: &str, err: PointsError) -> TiersError {
    TiersError::invalid(field, err.to_string())
}

fn money_out(a: &Amount) -> Money {
    Money { currency_code: a.currency.clone(), amount_minor: a.minor }
}

impl TiersApi {
    async fn get_tier_status_(
        &self,
        request: Request<pb::GetTierStatusRequest>,
    ) -> Result<pb::GetTierStatusResponse> {
        let caller = caller(&request)?;
        let pb::GetTierStatusRequest { team_id, program_id, target_tier_id } = request.into_inner();
        let mut v = Validator::new();
        team_and_program(&mut v, &team_id, &program_id);
        if !target_tier_id.is_empty() {
            v.id("target_tier_id", "tier", &target_tier_id);
        }
        v.finish()?;
        self.authorize_read(&caller, &team_id).await?;
        let now = now_micros();
        let mut conn = self.db.acquire().await?;
        let inputs = ledger::status_inputs(&mut conn, &program_id, &team_id, now).await?;
        drop(conn);
        let target = match target_tier_id.as_str() {
            "" => None,
            id => Some(inputs.tiers.iter().find(|t| t.id == id).ok_or(TiersError::NotFound("tier"))?),
        };
        let status = inputs.evaluate(target);
        let tier =
            |t: Option<&crate::domain::status::TierDef>| t.and_then(|t| convert::tier_def(t, &inputs.rows));
        let goal = status.goal_gap;
        Ok(pb::GetTierStatusResponse {
            current_tier: tier(status.current),
            credited_tier: tier(status.credited),
            total_points: status.totals.total(),
            sold_points: status.totals.sold,
            managed_points: status.totals.managed,
            next_tier: tier(status.next),
            points_to_next_tier: status.next_gap.map_or(0, |g| g.points),
            target_tier: tier(status.target),
            points_to_target_tier: status.target_gap.map_or(0, |g| g.points),
            sold_minimum_met: goal.is_none_or(|g| g.sold == 0),
            managed_minimum_met: goal.is_none_or(|g| g.managed == 0),
            sold_points_to_minimum: goal.map_or(0, |g| g.sold),
            managed_points_to_minimum: goal.map_or(0, |g| g.managed),
            certified: status.certified,
            certification_valid_until: inputs.certified_until.map(to_timestamp),
            expired_points: status.totals.expired,
            sourced_amount_12m: Some(convert::usd_cents(inputs.sourced_usd_cents)),
            sourced_mrr_12m: None,
            average_customer_dollar_retention_12m: String::new(),
            as_of_time: Some(to_timestamp(now)),
        })
    }

    async fn adjust_points_(
        &self,
        request: Request<pb::AdjustPointsRequest>,
    ) -> Result<pb::AdjustPointsResponse> {
        require_staff(caller(&request)?.as_ref(), "only vendor staff adjust points")?;
        let fingerprint = idempotency::fingerprint(request.get_ref());
        let pb::AdjustPointsRequest {
            team_id,
            program_id,
            client_id,
            kind,
            points,
            reason,
            earned_at,
            deal_type: deal,
            market_type: market,
            request_id,
        } = request.into_inner();
        let now = now_micros();
        let earned = match &earned_at {
            None => Some(now),
            Some(ts) => from_timestamp(ts),
        };
        let mut v = Validator::new();
        team_and_program(&mut v, &team_id, &program_id);
        v.text("client_id", &client_id, CLIENT_ID_MAX)
            .known_enum::<pb::PointsKind>("kind", kind)
            .check(points != 0, "points", "must not be zero")
            .text("reason", &reason, TEXT_MAX)
            .text("request_id", &request_id, ID_MAX);
        match earned {
            None => v.violation("earned_at", "must be a valid timestamp"),
            Some(t) => v.check(t <= now, "earned_at", "must not be in the future"),
        };
        optional_enum::<pb::DealType>(&mut v, "deal_type", deal);
        optional_enum::<pb::MarketType>(&mut v, "market_type", market);
        v.finish()?;
        let kind = pb::PointsKind::try_from(kind)
            .ok()
            .and_then(|k| PointsKind::try_from(k).ok())
            .ok_or_else(|| TiersError::invalid("kind", "must be a known value"))?;

        let mut tx = self.db.begin().await?;
        match idempotency::claim::<pb::AdjustPointsResponse>(&mut tx, ADJUST_SCOPE, &request_id, &fingerprint)
            .await?
        {
            Claim::Replay(response) => return Ok(response),
            Claim::Mismatch => {
                return Err(TiersError::Duplicate(
                    ErrorReason::RequestIdReused,
                    "request_id was already used for a different adjustment".into(),
                ));
            }
            Claim::New => {}
        }
        let entry = EntryRow {
            id: new_id("pts"),
            program_id,
            team_id,
            client_id: client_id.trim().to_owned(),
            kind: kind.as_str().to_owned(),
            points,
            earned_at: earned.unwrap_or(now),
            deal_type: deal_type(deal).map(|d| d.as_str().to_owned()),
            market_type: market_type(market).map(|m| m.as_str().to_owned()),
            deal_id: None,
            reason,
            sourced_usd_cents: None,
            currency_code: None,
            amount_minor: None,
            usd_per_unit: None,
            multiplier: None,
            create_time: now,
        };
        store::insert_entry(&mut tx, &entry).await?;
        ledger::refresh_credited_tier(&mut tx, &entry.program_id, &entry.team_id, now).await?;
        let response = pb::AdjustPointsResponse { entry: Some(convert::entry(&entry, now)) };
        idempotency::record(&mut tx, ADJUST_SCOPE, &request_id, &response).await?;
        self.commit(tx).await?;
        Ok(response)
    }

    async fn list_points_changes_(
        &self,
        request: Request<pb::ListPointsChangesRequest>,
    ) -> Result<pb::ListPointsChangesResponse> {
        let caller = caller(&request)?;
        let pb::ListPointsChangesRequest { team_id, program_id, start_time, end_time, page_size, page_token } =
            request.into_inner();
        let start = start_time.as_ref().and_then(from_timestamp);
        let end = end_time.as_ref().and_then(from_timestamp);
        let mut v = Validator::new();
        team_and_program(&mut v, &team_id, &program_id);
        v.check(start.is_some(), "start_time", "must be a valid timestamp").check(
            end.is_some(),
            "end_time",
            "must be a valid timestamp",
        );
        if let (Some(s), Some(e)) = (start, end) {
            v.check(s < e, "end_time", "must be after start_time");
        }
        v.finish()?;
        let page = Page::parse(page_size, &page_token)?;
        self.authorize_read(&caller, &team_id).await?;
        let (start, end) = (start.unwrap_or_default(), end.unwrap_or_default());
        let now = now_micros();
        // Managed entries whose expiry falls in [start, min(end, now]) were lost in the range.
        let lost_until: Micros = end.min(now.saturating_add(1));
        let range = ChangeRange {
            start,
            end,
            lost_from: calendar::active_since(start - 1),
            lost_to: calendar::active_since(lost_until - 1).max(calendar::active_since(start - 1)),
        };
        let mut conn = self.db.acquire().await?;
        let (new_sold, highest_sold, new_managed, lost_managed) =
            store::change_totals(&mut conn, &program_id, &team_id, range).await?;
        let rows =
            store::changes(&mut conn, &program_id, &team_id, range, page.after_key(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |r| r.client_id.clone());
        Ok(pb::ListPointsChangesResponse {
            new_sold_points: new_sold,
            highest_sold_points: highest_sold,
            new_managed_points: new_managed,
            lost_managed_points: lost_managed,
            changes: rows
                .into_iter()
                .map(|r| pb::ClientPointsChange {
                    highest_sold: highest_sold > 0 && r.new_sold == highest_sold,
                    client_id: r.client_id,
                    new_sold_points: r.new_sold,
                    new_managed_points: r.new_managed,
                    lost_managed_points: r.lost_managed,
                })
                .collect(),
            next_page_token,
        })
    }

    async fn list_points_breakdown_(
        &self,
        request: Request<pb::ListPointsBreakdownRequest>,
    ) -> Result<pb::ListPointsBreakdownResponse> {
        let caller = caller(&request)?;
        let pb::ListPointsBreakdownRequest {
            team_id,
            program_id,
            deal_type: deal,
            market_type: market,
            page_size,
            page_token,
        } = request.into_inner();
        let mut v = Validator::new();
        team_and_program(&mut v, &team_id, &program_id);
        optional_enum::<pb::DealType>(&mut v, "deal_type", deal);
        optional_enum::<pb::MarketType>(&mut v, "market_type", market);
        v.finish()?;
        let page = Page::parse(page_size, &page_token)?;
        self.authorize_read(&caller, &team_id).await?;
        let now = now_micros();
        let mut conn = self.db.acquire().await?;
        let rows = store::breakdown(
            &mut conn,
            &program_id,
            &team_id,
            calendar::active_since(now),
            now,
            deal_type(deal).map_or("", DealType::as_str),
            market_type(market).map_or("", MarketType::as_str),
            page.after_key(),
            page.limit(),
        )
        .await?;
        let (rows, next_page_token) = page.finish(rows, |r| r.client_id.clone());
        Ok(pb::ListPointsBreakdownResponse {
            client_points: rows.iter().map(convert::client_points).collect(),
            next_page_token,
        })
    }

    async fn get_client_points_(
        &self,
        request: Request<pb::GetClientPointsRequest>,
    ) -> Result<pb::GetClientPointsResponse> {
        let caller = caller(&request)?;
        let pb::GetClientPointsRequest { team_id, program_id, client_id } = request.into_inner();
        let mut v = Validator::new();
        team_and_program(&mut v, &team_id, &program_id);
        v.text("client_id", &client_id, CLIENT_ID_MAX);
        v.finish()?;
        self.authorize_read(&caller, &team_id).await?;
        let now = now_micros();
        let mut conn = self.db.acquire().await?;
        let summary = store::client_summary(
            &mut conn,
            &program_id,
            &team_id,
            &client_id,
            calendar::active_since(now),
            now,
        )
        .await?
        .ok_or(TiersError::NotFound("client"))?;
        let entries =
            store::client_entries(&mut conn, &program_id, &team_id, &client_id, CLIENT_ENTRIES_MAX).await?;
        Ok(pb::GetClientPointsResponse {
            client_points: Some(convert::client_points(&summary)),
            entries: entries.iter().map(|e| convert::entry(e, now)).collect(),
        })
    }

    async fn get_progress_over_time_(
        &self,
        request: Request<pb::GetProgressOverTimeRequest>,
    ) -> Result<pb::GetProgressOverTimeResponse> {
        let caller = caller(&request)?;
        let pb::GetProgressOverTimeRequest { team_id, program_id, months } = request.into_inner();
        let mut v = Validator::new();
        team_and_program(&mut v, &team_id, &program_id);
        v.check((0..=MONTHS_MAX).contains(&months), "months", "must be between 1 and 36 (0 means 12)");
        v.finish()?;
        self.authorize_read(&caller, &team_id).await?;
        let months = if months == 0 { 12 } else { months };
        let now = now_micros();
        let mut conn = self.db.acquire().await?;
        let facts =
            store::team_facts(&mut conn, &program_id, &team_id, progress::window_start(now, months), now)
                .await?;
        Ok(pb::GetProgressOverTimeResponse {
            months: progress::by_month(&facts, now, months)
                .into_iter()
                .map(|m| pb::MonthProgress {
                    month_start_time: Some(to_timestamp(m.start)),
                    sold_points_earned: m.sold_earned,
                    managed_points_earned: m.managed_earned,
                    active_sold_points: m.active.sold,
                    active_managed_points: m.active.managed,
                    active_points: m.active.total(),
                })
                .collect(),
        })
    }

    async fn calculate_points_(
        &self,
        request: Request<pb::CalculatePointsRequest>,
    ) -> Result<pb::CalculatePointsResponse> {
        caller(&request)?;
        let pb::CalculatePointsRequest { amount, client_market, will_manage, other_managing_partners } =
            request.into_inner();
        let mut v = Validator::new();
        let amount = money_in(&mut v, "amount", amount.as_ref());
        market(&mut v, "client_market", &client_market);
        v.check(
            (0..=OTHER_PARTNERS_MAX).contains(&other_managing_partners),
            "other_managing_partners",
            "must be between 0 and 1000",
        );
        v.finish()?;
        let amount = amount.ok_or_else(|| TiersError::invalid("amount", "must be set"))?;
        let mut conn = self.db.acquire().await?;
        let (rates, market_type) = ledger::rates_for(&mut conn, &amount.currency, &client_market).await?;
        let others = u32::try_from(other_managing_partners).unwrap_or(0);
        let calc =
            points::calculate(&amount, rates, will_manage, others).map_err(|e| points_error("amount", e))?;
        Ok(pb::CalculatePointsResponse {
            sold_points: calc.sold,
            managed_points: calc.managed,
            total_points: calc.total(),
            usd_amount: format_decimal(calc.usd),
            market_multiplier: format_decimal(rates.multiplier),
            market_type: pb::MarketType::from(market_type).into(),
        })
    }

    async fn convert_points_(
        &self,
        request: Request<pb::ConvertPointsRequest>,
    ) -> Result<pb::ConvertPointsResponse> {
        caller(&request)?;
        let pb::ConvertPointsRequest {
            direction,
            client_market,
            currency_code,
            sold_points,
            managed_points,
            sold_value,
            managed_value,
        } = request.into_inner();
        let direction =
            pb::ConversionDirection::try_from(direction).unwrap_or(pb::ConversionDirection::Unspecified);
        let mut v = Validator::new();
        v.check(
            direction != pb::ConversionDirection::Unspecified,
            "direction",
            "must be a known value other than unspecified",
        );
        v.check(
            money::is_currency_code(&currency_code),
            "currency_code",
            "must be an ISO 4217 code such as \"EUR\"",
        );
        market(&mut v, "client_market", &client_market);
        let mut values = (None, None);
        match direction {
            pb::ConversionDirection::PointsToCurrency => {
                v.check(sold_points >= 0, "sold_points", "must not be negative").check(
                    managed_points >= 0,
                    "managed_points",
                    "must not be negative",
                );
            }
            pb::ConversionDirection::CurrencyToPoints => {
                let zero = Money { currency_code: currency_code.clone(), amount_minor: 0 };
                values = (
                    money_in(&mut v, "sold_value", Some(sold_value.as_ref().unwrap_or(&zero))),
                    money_in(&mut v, "managed_value", Some(managed_value.as_ref().unwrap_or(&zero))),
                );
                for (field, value) in [("sold_value", &values.0), ("managed_value", &values.1)] {
                    v.check(
                        value.as_ref().is_none_or(|a| a.currency == currency_code),
                        &format!("{field}.currency_code"),
                        "must be the client's currency_code",
                    );
                }
            }
            pb::ConversionDirection::Unspecified => {}
        }
        v.finish()?;
        let mut conn = self.db.acquire().await?;
        let (rates, _) = ledger::rates_for(&mut conn, &currency_code, &client_market).await?;
        let response = match values {
            (Some(sold), Some(managed)) => pb::ConvertPointsResponse {
                sold_points: points::amount_to_points(&sold, rates)
                    .map_err(|e| points_error("sold_value", e))?,
                managed_points: points::amount_to_points(&managed, rates)
                    .map_err(|e| points_error("managed_value", e))?,
                sold_value: Some(money_out(&sold)),
                managed_value: Some(money_out(&managed)),
                market_multiplier: format_decimal(rates.multiplier),
            },
            _ => {
                let sold = points::points_to_amount(sold_points, &currency_code, rates)
                    .map_err(|e| points_error("sold_points", e))?;
                let managed = points::points_to_amount(managed_points, &currency_code, rates)
                    .map_err(|e| points_error("managed_points", e))?;
                pb::ConvertPointsResponse {
                    sold_points,
                    managed_points,
                    sold_value: Some(money_out(&sold)),
                    managed_value: Some(money_out(&managed)),
                    market_multiplier: format_decimal(rates.multiplier),
                }
            }
        };
        Ok(response)
    }
}
