//! `DealService`: deal registration (idempotent by `request_id`, conflicts on the normalised
//! customer domain), staff review, shared deals (deal team, pipeline stage, product interest)
//! and closing, which writes `DealClosed` to the outbox in the same transaction.

use tandem_platform::{
    auth::Caller,
    idempotency::{self, Claim},
    ids::new_id,
    paging::Page,
    time::{from_timestamp, now_micros},
    validate::{ID_MAX, NAME_MAX, TEXT_MAX, Validator},
};
use tandem_proto::{
    common::v1::{ErrorReason, Money},
    deals::v1::{self as pb, deal_service_server::DealService},
    events::v1::{DealClosed, DealKind, event::Payload},
};
use tonic::Request;

use super::{DealsApi, caller, convert, grpc, require_channel_staff};
use crate::{
    domain::registration::{self, RegistrationStatus, is_known_currency, normalize_domain},
    error::{DealsError, Result},
    store::{self, DealFilter, DealRow, DealTeamRow},
};

grpc! {
    DealService {
        register_deal => register_deal_(RegisterDealRequest) -> RegisterDealResponse;
        approve_registration => approve_registration_(ApproveRegistrationRequest) -> ApproveRegistrationResponse;
        reject_registration => reject_registration_(RejectRegistrationRequest) -> RejectRegistrationResponse;
        get_deal => get_deal_(GetDealRequest) -> GetDealResponse;
        list_deals => list_deals_(ListDealsRequest) -> ListDealsResponse;
        update_deal => update_deal_(UpdateDealRequest) -> UpdateDealResponse;
        add_deal_team_member => add_deal_team_member_(AddDealTeamMemberRequest) -> AddDealTeamMemberResponse;
        remove_deal_team_member => remove_deal_team_member_(RemoveDealTeamMemberRequest) -> RemoveDealTeamMemberResponse;
        close_deal => close_deal_(CloseDealRequest) -> CloseDealResponse;
    }
}

const REGISTER_SCOPE: &str = "deals.RegisterDeal";
/// Most products of interest on one deal.
const PRODUCTS_MAX: usize = 50;

/// Checks an amount: a listed ISO 4217 currency and a non-negative number of minor units.
fn check_money(v: &mut Validator, field: &str, money: Option<&Money>) {
    match money {
        None => {
            v.violation(field, "is required");
        }
        Some(m) => {
            v.check(
                is_known_currency(&m.currency_code),
                &format!("{field}.currency_code"),
                "must be an ISO 4217 code Tandem accepts (USD, EUR, GBP, JPY, …)",
            );
            v.check(m.amount_minor >= 0, &format!("{field}.amount_minor"), "must not be negative");
        }
    }
}

fn check_products(v: &mut Validator, field: &str, products: &[String]) {
    v.check(products.len() <= PRODUCTS_MAX, field, "must name at most 50 products");
    for (i, p) in products.iter().enumerate() {
        v.text(&format!("{field}[{i}]"), p, NAME_MAX);
        v.check(!p.contains('\n'), &format!("{field}[{i}]"), "must be one line");
    }
}

fn check_market(v: &mut Validator, field: &str, market: &str) {
    v.check(
        market.is_empty() || (market.len() == 2 && market.bytes().all(|b| b.is_ascii_uppercase())),
        field,
        "must be an ISO 3166-1 alpha-2 code such as FR",
    );
}

fn deal_type(v: &mut Validator, field: &str, value: i32) -> String {
    match pb::DealType::try_from(value) {
        Ok(pb::DealType::Unspecified) => "NEW_BUSINESS".to_owned(),
        Ok(t) => convert::deal_type_name(t),
        Err(_) => {
            v.violation(field, "must be a known value");
            String::new()
        }
    }
}

fn is_closed(d: &DealRow) -> bool {
    !d.outcome.is_empty()
}

fn closed_error() -> DealsError {
    DealsError::rule(ErrorReason::DealClosed, "the deal is closed")
}

impl DealsApi {
    /// The deal as the API shows it: with its deal team and the active registrations of its
    /// domain.
    async fn deal_message(&self, id: &str) -> Result<pb::Deal> {
        let mut conn = self.db.acquire().await?;
        let view = store::deal_view(&mut conn, id).await?.ok_or(DealsError::NotFound("deal"))?;
        let team = store::deal_team(&mut conn, id).await?;
        Ok(convert::deal(&view.deal, view.active_registrations, &team))
    }

    /// The deal when the caller may see it (staff, viewers of its team); NOT_FOUND otherwise.
    async fn visible_deal(&self, caller: &Caller, deal_id: &str) -> Result<DealRow> {
        let deal = self.deal_row(deal_id).await?;
        self.authorize_view(caller, &deal.team_id, "deal").await?;
        Ok(deal)
    }

    /// The deal when the caller may change it (staff, contributors of its team);
    /// PERMISSION_DENIED for its team's other viewers, NOT_FOUND for everyone else. One
    /// question to identity when the answer is yes.
    async fn contributable_deal(&self, caller: &Caller, deal_id: &str) -> Result<DealRow> {
        let deal = self.deal_row(deal_id).await?;
        self.authorize_contribute(caller, &deal.team_id, "deal").await?;
        Ok(deal)
    }

    /// The deal, unauthorised: for the two above. The connection goes back to the pool
    /// before identity is asked.
    async fn deal_row(&self, deal_id: &str) -> Result<DealRow> {
        Validator::new().id("deal_id", "deal", deal_id).finish()?;
        let mut conn = self.db.acquire().await?;
        store::deal(&mut conn, deal_id).await?.ok_or(DealsError::NotFound("deal"))
    }

    /// Notifies the deal team of a change, except the user who made it, and commits the
    /// change. Returns the deal as changed, read in the change's transaction (so the answer
    /// needs no second trip to the database).
    async fn notify_and_commit(
        &self,
        mut tx: tandem_platform::db::Tx,
        deal: &DealRow,
        actor: &str,
        kind: &str,
        title: String,
    ) -> Result<pb::Deal> {
        let team = store::deal_team(&mut tx, &deal.id).await?;
        let users: Vec<String> = team.iter().map(|m| m.user_id.clone()).filter(|u| u != actor).collect();
        self.notify(&mut tx, users, kind, title, &deal.id).await?;
        let active = store::active_registration_count(&mut tx, &deal.id).await?;
        self.commit(tx).await?;
        Ok(convert::deal(deal, active, &team))
    }

    async fn register_deal_(
        &self,
        request: Request<pb::RegisterDealRequest>,
    ) -> Result<pb::RegisterDealResponse> {
        let caller = caller(&request)?;
        let message = request.into_inner();
        let fingerprint = idempotency::fingerprint(&message);
        let pb::RegisterDealRequest {
            team_id,
            program_id,
            customer_name,
            customer_domain,
            amount,
            products,
            expected_close_date,
            client_market,
            deal_type: kind,
            request_id,
            will_manage,
        } = message;
        let mut v = Validator::new();
        v.id("team_id", "team", &team_id);
        if !program_id.is_empty() {
            v.id("program_id", "prog", &program_id);
        }
        v.text("customer_name", &customer_name, NAME_MAX);
        let domain = normalize_domain(&customer_domain);
        v.check(domain.is_some(), "customer_domain", "must be a domain name such as acme.com");
        check_money(&mut v, "amount", amount.as_ref());
        let products: Vec<String> = products.iter().map(|p| p.trim().to_owned()).collect();
        check_products(&mut v, "products", &products);
        let expected_close = expected_close_date.as_ref().map(from_timestamp);
        v.check(!matches!(expected_close, Some(None)), "expected_close_date", "must be a valid timestamp");
        let client_market = client_market.trim().to_ascii_uppercase();
        check_market(&mut v, "client_market", &client_market);
        let kind = deal_type(&mut v, "deal_type", kind);
        v.text("request_id", &request_id, ID_MAX);
        v.finish()?;
        self.authorize_contribute(&caller, &team_id, "team").await?;
        if !program_id.is_empty() && !self.directory.team_enrolled(&caller, &team_id, &program_id).await? {
            return Err(DealsError::rule(
                ErrorReason::NotEnrolled,
                "the team is not enrolled in the program",
            ));
        }
        let domain = domain.unwrap_or_default();
        let amount = amount.unwrap_or_default();
        let mut tx = self.db.begin().await?;
        match idempotency::claim::<pb::RegisterDealResponse>(
            &mut tx,
            REGISTER_SCOPE,
            &request_id,
            &fingerprint,
        )
        .await?
        {
            Claim::New => {}
            Claim::Replay(response) => return Ok(response),
            Claim::Mismatch => {
                return Err(DealsError::Duplicate(
                    ErrorReason::RequestIdReused,
                    "request_id was used for another registration".into(),
                ));
            }
        }
        let (pipeline_id, stage) = match store::default_pipeline(&mut tx, &team_id).await? {
            Some(p) => {
                let first = store::stages(&mut tx, &p).await?.into_iter().next().unwrap_or_default();
                (p, first)
            }
            None => (String::new(), String::new()),
        };
        store::lock_domain(&mut tx, &domain).await?;
        // Read the time under the domain's lock: registrations of one domain are stamped in the
        // order they hold it.
        let now = now_micros();
        let others = store::active_registrations(&mut tx, &domain).await?;
        let deal = DealRow {
            id: new_id("deal"),
            team_id: team_id.clone(),
            program_id,
            customer_name: customer_name.trim().to_owned(),
            conflicting_deal_id: registration::conflict(&team_id, &others).unwrap_or_default().to_owned(),
            customer_domain: domain,
            currency_code: amount.currency_code,
            amount_minor: amount.amount_minor,
            products: products.join("\n"),
            expected_close_time: expected_close.flatten(),
            client_market,
            deal_type: kind,
            pipeline_id,
            stage,
            registration_status: RegistrationStatus::Pending.as_str().to_owned(),
            will_manage,
            outcome: String::new(),
            close_time: None,
            registration_expire_time: registration::expire_time(now, self.settings.registration_expiry_days),
            rejection_reason: String::new(),
            create_time: now,
            update_time: now,
        };
        store::insert_deal(&mut tx, &deal).await?;
        let side = if caller.is_staff() { "VENDOR" } else { "PARTNER" };
        store::insert_deal_team_member(
            &mut tx,
            &deal.id,
            &DealTeamRow { user_id: caller.user_id.clone(), side: side.into() },
            now,
        )
        .await?;
        let view = store::deal_view(&mut tx, &deal.id).await?.ok_or(DealsError::NotFound("deal"))?;
        let team = store::deal_team(&mut tx, &deal.id).await?;
        let response = pb::RegisterDealResponse {
            deal: Some(convert::deal(&view.deal, view.active_registrations, &team)),
        };
        idempotency::record(&mut tx, REGISTER_SCOPE, &request_id, &response).await?;
        self.commit(tx).await?;
        Ok(response)
    }

    /// Moves a pending registration to `to` (staff review).
    async fn review(
        &self,
        caller: &Caller,
        deal_id: &str,
        to: RegistrationStatus,
        reason: &str,
    ) -> Result<pb::Deal> {
        require_channel_staff(caller, "only vendor admins and channel managers review registrations")?;
        let current = self.visible_deal(caller, deal_id).await?;
        if current.registration_status != RegistrationStatus::Pending.as_str() {
            return Err(DealsError::rule(
                ErrorReason::RegistrationNotPending,
                "the registration was already approved, rejected or expired",
            ));
        }
        let mut row = current.clone();
        row.registration_status = to.as_str().to_owned();
        row.rejection_reason = reason.to_owned();
        row.update_time = now_micros().max(current.update_time + 1);
        let mut tx = self.db.begin().await?;
        if !store::update_deal(&mut tx, &row, current.update_time).await? {
            return Err(DealsError::Conflict("the deal"));
        }
        let verb = if to == RegistrationStatus::Approved { "approved" } else { "rejected" };
        self.notify_and_commit(
            tx,
            &row,
            &caller.user_id,
            &format!("deal.registration_{verb}"),
            format!("The registration of {} was {verb}", row.customer_name),
        )
        .await
    }

    async fn approve_registration_(
        &self,
        request: Request<pb::ApproveRegistrationRequest>,
    ) -> Result<pb::ApproveRegistrationResponse> {
        let caller = caller(&request)?;
        let deal = self.review(&caller, &request.get_ref().deal_id, RegistrationStatus::Approved, "").await?;
        Ok(pb::ApproveRegistrationResponse { deal: Some(deal) })
    }

    async fn reject_registration_(
        &self,
        request: Request<pb::RejectRegistrationRequest>,
    ) -> Result<pb::RejectRegistrationResponse> {
        let caller = caller(&request)?;
        let pb::RejectRegistrationRequest { deal_id, reason } = request.into_inner();
        require_channel_staff(&caller, "only vendor admins and channel managers review registrations")?;
        Validator::new().id("deal_id", "deal", &deal_id).text("reason", &reason, TEXT_MAX).finish()?;
        let deal = self.review(&caller, &deal_id, RegistrationStatus::Rejected, reason.trim()).await?;
        Ok(pb::RejectRegistrationResponse { deal: Some(deal) })
    }

    async fn get_deal_(&self, request: Request<pb::GetDealRequest>) -> Result<pb::GetDealResponse> {
        let caller = caller(&request)?;
        let deal = self.visible_deal(&caller, &request.get_ref().deal_id).await?;
        Ok(pb::GetDealResponse { deal: Some(self.deal_message(&deal.id).await?) })
    }

    async fn list_deals_(&self, request: Request<pb::ListDealsRequest>) -> Result<pb::ListDealsResponse> {
        let caller = caller(&request)?;
        let pb::ListDealsRequest {
            team_id,
            registration_status,
            min_active_registrations,
            page_size,
            page_token,
        } = request.into_inner();
        let mut v = Validator::new();
        if team_id.is_empty() {
            v.check(caller.is_staff(), "team_id", "partners list the deals of one of their teams");
        } else {
            v.id("team_id", "team", &team_id);
        }
        let status = match pb::RegistrationStatus::try_from(registration_status) {
            Ok(s) => convert::registration_status_from(s),
            Err(_) => {
                v.violation("registration_status", "must be a known value");
                None
            }
        };
        v.check(min_active_registrations >= 0, "min_active_registrations", "must not be negative");
        v.finish()?;
        let page = Page::parse(page_size, &page_token)?;
        if !team_id.is_empty() {
            self.authorize_view(&caller, &team_id, "team").await?;
        }
        let filter = DealFilter {
            team_id,
            registration_status: status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            min_active_registrations: i64::from(min_active_registrations),
        };
        let mut conn = self.db.acquire().await?;
        let rows = store::list_deals(&mut conn, &filter, page.after_key(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |d| d.deal.id.clone());
        let mut deals = Vec::with_capacity(rows.len());
        for d in &rows {
            let team = store::deal_team(&mut conn, &d.deal.id).await?;
            deals.push(convert::deal(&d.deal, d.active_registrations, &team));
        }
        Ok(pb::ListDealsResponse { deals, next_page_token })
    }

    async fn update_deal_(&self, request: Request<pb::UpdateDealRequest>) -> Result<pb::UpdateDealResponse> {
        const UPDATABLE: &[&str] = &[
            "customer_name",
            "amount",
            "products",
            "expected_close_date",
            "client_market",
            "deal_type",
            "will_manage",
            "pipeline_id",
            "stage",
        ];
        let caller = caller(&request)?;
        let pb::UpdateDealRequest { deal, update_mask } = request.into_inner();
        let input = deal.unwrap_or_default();
        let paths = update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Validator::new();
        v.id("deal.id", "deal", &input.id);
        v.check(!paths.is_empty(), "update_mask", "must name the fields to change");
        for path in &paths {
            v.check(
                UPDATABLE.contains(&path.as_str()),
                "update_mask",
                "names a field that cannot be changed",
            );
        }
        let has = |p: &str| paths.iter().any(|x| x == p);
        if has("customer_name") {
            v.text("deal.customer_name", &input.customer_name, NAME_MAX);
        }
        if has("amount") {
            check_money(&mut v, "deal.amount", input.amount.as_ref());
        }
        let products: Vec<String> = input.products.iter().map(|p| p.trim().to_owned()).collect();
        if has("products") {
            check_products(&mut v, "deal.products", &products);
        }
        let expected_close = input.expected_close_date.as_ref().map(from_timestamp);
        if has("expected_close_date") {
            v.check(
                !matches!(expected_close, Some(None)),
                "deal.expected_close_date",
                "must be a valid timestamp",
            );
        }
        let market = input.client_market.trim().to_ascii_uppercase();
        if has("client_market") {
            check_market(&mut v, "deal.client_market", &market);
        }
        let kind = if has("deal_type") {
            deal_type(&mut v, "deal.deal_type", input.deal_type)
        } else {
            String::new()
        };
        if has("pipeline_id") {
            v.id("deal.pipeline_id", "pipe", &input.pipeline_id);
        }
        v.finish()?;
        let current = self.contributable_deal(&caller, &input.id).await?;
        if is_closed(&current) {
            return Err(closed_error());
        }
        let now = now_micros().max(current.update_time + 1);
        let mut row = current.clone();
        let mut tx = self.db.begin().await?;
        for path in &paths {
            match path.as_str() {
                "customer_name" => row.customer_name = input.customer_name.trim().to_owned(),
                "amount" => {
                    let m = input.amount.clone().unwrap_or_default();
                    row.currency_code = m.currency_code;
                    row.amount_minor = m.amount_minor;
                }
                "products" => row.products = products.join("\n"),
                "expected_close_date" => row.expected_close_time = expected_close.flatten(),
                "client_market" => row.client_market = market.clone(),
                "deal_type" => row.deal_type = kind.clone(),
                "will_manage" => row.will_manage = input.will_manage,
                "pipeline_id" => {
                    let stages = store::stages(&mut tx, &input.pipeline_id).await?;
                    if store::pipeline(&mut tx, &input.pipeline_id).await?.is_none() {
                        return Err(DealsError::NotFound("pipeline"));
                    }
                    row.pipeline_id = input.pipeline_id.clone();
                    if !has("stage") {
                        row.stage = stages.into_iter().next().unwrap_or_default();
                    }
                }
                _ => {}
            }
        }
        if has("stage") {
            let stages = store::stages(&mut tx, &row.pipeline_id).await?;
            if !stages.contains(&input.stage) {
                return Err(DealsError::rule(
                    ErrorReason::UnknownStage,
                    "the stage is not one of the deal's pipeline",
                ));
            }
            // The deal progressed: its registration's clock starts again.
            if row.stage != input.stage
                && RegistrationStatus::parse(&row.registration_status)
                    .is_some_and(RegistrationStatus::is_active)
            {
                row.registration_expire_time =
                    registration::expire_time(now, self.settings.registration_expiry_days);
            }
            row.stage = input.stage.clone();
        }
        row.update_time = now;
        if !store::update_deal(&mut tx, &row, current.update_time).await? {
            return Err(DealsError::Conflict("the deal"));
        }
        let deal = self
            .notify_and_commit(
                tx,
                &row,
                &caller.user_id,
                "deal.updated",
                format!("{} was updated", row.customer_name),
            )
            .await?;
        Ok(pb::UpdateDealResponse { deal: Some(deal) })
    }

    /// The side the caller acts for on a deal's team; partners must contribute to its team.
    async fn deal_team_side(&self, caller: &Caller, deal: &DealRow) -> Result<&'static str> {
        if caller.is_staff() {
            return Ok("VENDOR");
        }
        self.authorize_contribute(caller, &deal.team_id, "deal").await?;
        Ok("PARTNER")
    }

    async fn add_deal_team_member_(
        &self,
        request: Request<pb::AddDealTeamMemberRequest>,
    ) -> Result<pb::AddDealTeamMemberResponse> {
        let caller = caller(&request)?;
        let pb::AddDealTeamMemberRequest { deal_id, user_id } = request.into_inner();
        Validator::new().id("deal_id", "deal", &deal_id).id("user_id", "user", &user_id).finish()?;
        let deal = self.visible_deal(&caller, &deal_id).await?;
        let side = self.deal_team_side(&caller, &deal).await?;
        if is_closed(&deal) {
            return Err(closed_error());
        }
        let user = self.user_seen_by(&caller, &user_id).await?.ok_or(DealsError::NotFound("user"))?;
        if !user.active {
            return Err(DealsError::rule(ErrorReason::UserInactive, "the user is deactivated"));
        }
        let own_account = match side {
            "VENDOR" => user.staff,
            _ => !user.staff && user.team_ids.contains(&deal.team_id),
        };
        if !own_account {
            return Err(DealsError::rule(
                ErrorReason::DealTeamOtherSide,
                "each side adds only users of its own account",
            ));
        }
        let mut tx = self.db.begin().await?;
        let added = store::insert_deal_team_member(
            &mut tx,
            &deal.id,
            &DealTeamRow { user_id: user_id.clone(), side: side.to_owned() },
            now_micros(),
        )
        .await?;
        if added {
            self.notify(
                &mut tx,
                vec![user_id],
                "deal.team_added",
                format!("You were added to the deal team of {}", deal.customer_name),
                &deal.id,
            )
            .await?;
        }
        self.commit(tx).await?;
        Ok(pb::AddDealTeamMemberResponse { deal: Some(self.deal_message(&deal.id).await?) })
    }

    async fn remove_deal_team_member_(
        &self,
        request: Request<pb::RemoveDealTeamMemberRequest>,
    ) -> Result<pb::RemoveDealTeamMemberResponse> {
        let caller = caller(&request)?;
        let pb::RemoveDealTeamMemberRequest { deal_id, user_id } = request.into_inner();
        Validator::new().id("deal_id", "deal", &deal_id).id("user_id", "user", &user_id).finish()?;
        let deal = self.visible_deal(&caller, &deal_id).await?;
        let side = self.deal_team_side(&caller, &deal).await?;
        let mut tx = self.db.begin().await?;
        let team = store::deal_team(&mut tx, &deal.id).await?;
        let member =
            team.iter().find(|m| m.user_id == user_id).ok_or(DealsError::NotFound("deal team member"))?;
        if member.side != side {
            return Err(DealsError::rule(
                ErrorReason::DealTeamOtherSide,
                "each side removes only users of its own account",
            ));
        }
        store::delete_deal_team_member(&mut tx, &deal.id, &user_id).await?;
        self.commit(tx).await?;
        Ok(pb::RemoveDealTeamMemberResponse { deal: Some(self.deal_message(&deal.id).await?) })
    }

    async fn close_deal_(&self, request: Request<pb::CloseDealRequest>) -> Result<pb::CloseDealResponse> {
        let caller = caller(&request)?;
        let pb::CloseDealRequest { deal_id, outcome } = request.into_inner();
        let mut v = Validator::new();
        v.id("deal_id", "deal", &deal_id).known_enum::<pb::DealOutcome>("outcome", outcome);
        v.finish()?;
        let won = outcome == i32::from(pb::DealOutcome::Won);
        let current = self.contributable_deal(&caller, &deal_id).await?;
        if is_closed(&current) {
            return Err(closed_error());
        }
        if won && current.registration_status != RegistrationStatus::Approved.as_str() {
            return Err(DealsError::rule(
                ErrorReason::RegistrationNotApproved,
                "only a deal whose registration was approved can be closed won",
            ));
        }
        let now = now_micros().max(current.update_time + 1);
        let mut row = current.clone();
        row.outcome = if won { "WON" } else { "LOST" }.to_owned();
        row.close_time = Some(now);
        row.update_time = now;
        let mut tx = self.db.begin().await?;
        if !store::update_deal(&mut tx, &row, current.update_time).await? {
            return Err(DealsError::Conflict("the deal"));
        }
        let event = DealClosed {
            deal_id: row.id.clone(),
            team_id: row.team_id.clone(),
            program_id: row.program_id.clone(),
            client_id: row.customer_domain.clone(),
            client_domain: row.customer_domain.clone(),
            amount: Some(Money { currency_code: row.currency_code.clone(), amount_minor: row.amount_minor }),
            client_market: row.client_market.clone(),
            deal_type: match row.deal_type.as_str() {
                "UPSELL" => DealKind::Upsell,
                "RENEWAL" => DealKind::Renewal,
                _ => DealKind::NewBusiness,
            }
            .into(),
            won,
            close_time: Some(tandem_platform::time::to_timestamp(now)),
            will_manage: row.will_manage,
        };
        self.emit(&mut tx, &row.id, Payload::DealClosed(event)).await?;
        let verb = if won { "won" } else { "lost" };
        let deal = self
            .notify_and_commit(
                tx,
                &row,
                &caller.user_id,
                &format!("deal.{verb}"),
                format!("{} was {verb}", row.customer_name),
            )
            .await?;
        Ok(pb::CloseDealResponse { deal: Some(deal) })
    }
}
