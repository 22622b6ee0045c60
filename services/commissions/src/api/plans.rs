//! `CommissionService`: commission plans (staff) and a team's commissions, per-customer
//! summary and monthly statements.

use std::collections::BTreeMap;

use tandem_platform::{
    idempotency::{self, Claim},
    ids::new_id,
    paging::Page,
    time::now_micros,
    validate::{ID_MAX, NAME_MAX, Validator},
};
use tandem_proto::{
    commissions::v1::{self as pb, commission_service_server::CommissionService},
    identity::v1::Permission,
};
use tonic::Request;

use super::{CommissionsApi, caller, convert, grpc, non_negative_amount, request_id_reused, require_staff};
use crate::{
    domain::{
        commission::{self, MAX_MULTIPLIER_BPS, MAX_RATE_BPS},
        ledger::PostingKind,
        money::Money,
        statements::{self, Fact},
    },
    error::{CommissionsError, Result},
    store::{self, PlanRow},
};

grpc! {
    CommissionService {
        create_commission_plan => create_commission_plan_(CreateCommissionPlanRequest) -> CreateCommissionPlanResponse;
        list_commissions => list_commissions_(ListCommissionsRequest) -> ListCommissionsResponse;
        get_commission_summary => get_commission_summary_(GetCommissionSummaryRequest) -> GetCommissionSummaryResponse;
        list_statements => list_statements_(ListStatementsRequest) -> ListStatementsResponse;
    }
}

const PLAN_SCOPE: &str = "commissions.CreateCommissionPlan";

impl CommissionsApi {
    async fn create_commission_plan_(
        &self,
        request: Request<pb::CreateCommissionPlanRequest>,
    ) -> Result<pb::CreateCommissionPlanResponse> {
        require_staff(caller(&request)?.as_ref(), "only vendor staff define commission plans")?;
        let fingerprint = idempotency::fingerprint(request.get_ref());
        let pb::CreateCommissionPlanRequest {
            name,
            rate_bps,
            recurring_months,
            hold_days,
            minimum_payout,
            tier_multipliers,
            request_id,
        } = request.into_inner();
        let mut v = Validator::new();
        v.text("name", &name, NAME_MAX)
            .check((1..=MAX_RATE_BPS).contains(&rate_bps), "rate_bps", "must be between 1 and 10000")
            .check((0..=120).contains(&recurring_months), "recurring_months", "must be between 0 and 120")
            .check((0..=3650).contains(&hold_days), "hold_days", "must be between 0 and 3650")
            .optional_text("request_id", &request_id, ID_MAX);
        let minimum = non_negative_amount(&mut v, "minimum_payout", minimum_payout.as_ref());
        for (i, m) in tier_multipliers.iter().enumerate() {
            v.text(&format!("tier_multipliers[{i}].tier_id"), &m.tier_id, ID_MAX).check(
                (1..=MAX_MULTIPLIER_BPS).contains(&m.multiplier_bps),
                &format!("tier_multipliers[{i}].multiplier_bps"),
                "must be between 1 and 100000",
            );
            if m.tier_id.contains('=') || m.tier_id.contains('\n') {
                v.violation(&format!("tier_multipliers[{i}].tier_id"), "must be a tier id");
            }
        }
        v.finish()?;
        let minimum = minimum.unwrap_or_else(|| Money::zero("USD"));
        let multipliers: Vec<(String, i64)> =
            tier_multipliers.into_iter().map(|m| (m.tier_id, m.multiplier_bps)).collect();
        let mut tx = self.db.begin().await?;
        if !request_id.is_empty() {
            match idempotency::claim::<pb::CreateCommissionPlanResponse>(
                &mut tx,
                PLAN_SCOPE,
                &request_id,
                &fingerprint,
            )
            .await?
            {
                Claim::Replay(response) => return Ok(response),
                Claim::Mismatch => return Err(request_id_reused("plan")),
                Claim::New => {}
            }
        }
        let now = now_micros();
        // Newer than every plan so far, even within one microsecond.
        let newest = store::current_plan(&mut tx).await?.map_or(i64::MIN, |p| p.create_time);
        let plan = PlanRow {
            id: new_id("plan"),
            name: name.trim().to_owned(),
            rate_bps,
            recurring_months: i64::from(recurring_months),
            hold_days: i64::from(hold_days),
            minimum_currency: minimum.currency,
            minimum_minor: minimum.minor,
            tier_multipliers: commission::format_multipliers(&multipliers),
            create_time: now.max(newest.saturating_add(1)),
        };
        store::insert_plan(&mut tx, &plan).await?;
        let response = pb::CreateCommissionPlanResponse { plan: Some(convert::plan(&plan)) };
        if !request_id.is_empty() {
            idempotency::record(&mut tx, PLAN_SCOPE, &request_id, &response).await?;
        }
        self.commit(tx).await?;
        Ok(response)
    }

    async fn list_commissions_(
        &self,
        request: Request<pb::ListCommissionsRequest>,
    ) -> Result<pb::ListCommissionsResponse> {
        let caller = caller(&request)?;
        let pb::ListCommissionsRequest { team_id, page_size, page_token } = request.into_inner();
        Validator::new().id("team_id", "team", &team_id).finish()?;
        let page = Page::parse(page_size, &page_token)?;
        self.authorize(&caller, &team_id, Permission::RewardsView, true, "team").await?;
        let mut conn = self.db.acquire().await?;
        let rows = store::list_commissions(&mut conn, &team_id, page.after_key(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |c| c.id.clone());
        Ok(pb::ListCommissionsResponse {
            commissions: rows.iter().map(convert::commission).collect(),
            next_page_token,
        })
    }

    async fn get_commission_summary_(
        &self,
        request: Request<pb::GetCommissionSummaryRequest>,
    ) -> Result<pb::GetCommissionSummaryResponse> {
        let caller = caller(&request)?;
        let pb::GetCommissionSummaryRequest { team_id } = request.into_inner();
        Validator::new().id("team_id", "team", &team_id).finish()?;
        self.authorize(&caller, &team_id, Permission::RewardsView, true, "team").await?;
        let mut conn = self.db.acquire().await?;
        // (customer, currency) → (sales, commission net of clawbacks, clawed back)
        let mut per: BTreeMap<(String, String), (i64, i64, i64)> = BTreeMap::new();
        for (customer, currency, sales) in store::sales_by_customer(&mut conn, &team_id).await? {
            per.entry((customer, currency)).or_default().0 += sales;
        }
        let mut deals: BTreeMap<String, i64> = BTreeMap::new();
        for c in store::team_commissions(&mut conn, &team_id).await? {
            let net = c.amount_minor - c.clawed_minor;
            match &c.customer_id {
                Some(customer) if c.payment_id.is_some() => {
                    let e = per.entry((customer.clone(), c.currency_code.clone())).or_default();
                    e.1 += net;
                    e.2 += c.clawed_minor;
                }
                _ => *deals.entry(c.currency_code.clone()).or_default() += net,
            }
        }
        let customers: BTreeMap<String, store::CustomerRow> =
            store::list_customers(&mut conn, &team_id, "", i64::MAX)
                .await?
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect();
        Ok(pb::GetCommissionSummaryResponse {
            customers: per
                .into_iter()
                .map(|((customer_id, currency), (sales, commission, clawed))| {
                    let c = customers.get(&customer_id);
                    pb::CustomerSummary {
                        org_name: c.map(|c| c.org_name.clone()).unwrap_or_default(),
                        domain: c.map(|c| c.domain.clone()).unwrap_or_default(),
                        customer_id,
                        sales: Some(convert::money(&currency, sales)),
                        commission: Some(convert::money(&currency, commission)),
                        clawed_back: Some(convert::money(&currency, clawed)),
                    }
                })
                .collect(),
            deal_commission: deals
                .into_iter()
                .map(|(currency, minor)| convert::money(&currency, minor))
                .collect(),
        })
    }

    async fn list_statements_(
        &self,
        request: Request<pb::ListStatementsRequest>,
    ) -> Result<pb::ListStatementsResponse> {
        let caller = caller(&request)?;
        let pb::ListStatementsRequest { team_id, page_size, page_token } = request.into_inner();
        Validator::new().id("team_id", "team", &team_id).finish()?;
        let page = Page::parse(page_size, &page_token)?;
        let skip: usize = match &page.after {
            None => 0,
            Some(key) => key
                .parse()
                .map_err(|_| CommissionsError::invalid("page_token", "is not a token of this list"))?,
        };
        self.authorize(&caller, &team_id, Permission::RewardsView, true, "team").await?;
        let mut conn = self.db.acquire().await?;
        let mut facts = Vec::new();
        for (kind, at, currency, minor) in store::statement_postings(&mut conn, &team_id).await? {
            facts.push(match PostingKind::parse(&kind) {
                Some(PostingKind::Accrual) => Fact::Accrued { at, currency, minor },
                Some(PostingKind::Clawback) => Fact::ClawedBack { at, currency, minor },
                _ => Fact::Paid { at, currency, minor },
            });
        }
        for c in store::team_commissions(&mut conn, &team_id).await? {
            let net = c.amount_minor - c.clawed_minor;
            if c.status != store::CANCELLED && net > 0 {
                facts.push(Fact::Release { at: c.available_time, currency: c.currency_code, minor: net });
            }
        }
        let all = statements::monthly(&facts, now_micros());
        let rows: Vec<(usize, statements::Statement)> = all.into_iter().enumerate().skip(skip).collect();
        let rows: Vec<_> =
            rows.into_iter().take(usize::try_from(page.limit()).unwrap_or(usize::MAX)).collect();
        let (rows, next_page_token) = page.finish(rows, |(i, _)| (i + 1).to_string());
        Ok(pb::ListStatementsResponse {
            statements: rows.iter().map(|(_, s)| convert::statement(s)).collect(),
            next_page_token,
        })
    }
}
