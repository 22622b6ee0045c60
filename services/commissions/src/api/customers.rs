//! `CustomerService` and `RenewalService`: a team's customers, their domain verification and
//! plans, their payments (commission accrues) and refunds (commission is clawed back).

use tandem_platform::{
    db::DbError,
    idempotency::{self, Claim},
    ids::new_id,
    paging::Page,
    time::{from_timestamp, now_micros},
    validate::{NAME_MAX, TEXT_MAX, Validator, is_domain, normalize_email},
};
use tandem_proto::{
    commissions::v1::{
        self as pb, customer_service_server::CustomerService, renewal_service_server::RenewalService,
    },
    common::v1::ErrorReason,
    identity::v1::Permission,
};
use tonic::Request;

use super::{
    CommissionsApi, caller, convert, grpc, non_negative_amount, positive_amount, request_id,
    request_id_reused,
};
use crate::{
    domain::{commission, money::Money},
    error::{CommissionsError, Result},
    ledger::{self, Source},
    store::{self, CustomerRow, PaymentRow, RefundRow},
};

grpc! {
    CustomerService {
        add_customer => add_customer_(AddCustomerRequest) -> AddCustomerResponse;
        list_customers => list_customers_(ListCustomersRequest) -> ListCustomersResponse;
        verify_customer_domain => verify_customer_domain_(VerifyCustomerDomainRequest) -> VerifyCustomerDomainResponse;
        change_plan => change_plan_(ChangePlanRequest) -> ChangePlanResponse;
        record_payment => record_payment_(RecordPaymentRequest) -> RecordPaymentResponse;
        record_refund => record_refund_(RecordRefundRequest) -> RecordRefundResponse;
    }
}

grpc! {
    RenewalService {
        list_renewals => list_renewals_(ListRenewalsRequest) -> ListRenewalsResponse;
    }
}

const PAYMENT_SCOPE: &str = "commissions.RecordPayment";
const REFUND_SCOPE: &str = "commissions.RecordRefund";
/// Longest plan name.
const PLAN_MAX: usize = 100;
/// Most licences of one customer.
const LICENCES_MAX: i32 = 1_000_000;

fn mapped_elsewhere() -> CommissionsError {
    CommissionsError::rule(
        ErrorReason::CustomerMappedToAnotherPartner,
        "this customer is mapped to another partner; mapping it again needs the customer's consent",
    )
}

fn not_verified() -> CommissionsError {
    CommissionsError::rule(
        ErrorReason::DomainNotVerified,
        "verify the customer's domain before managing the customer",
    )
}

impl CommissionsApi {
    /// The customer, when the caller may act on its team with `permission`.
    async fn customer_for(
        &self,
        caller: &tandem_platform::auth::Caller,
        customer_id: &str,
        permission: Permission,
    ) -> Result<CustomerRow> {
        let mut conn = self.db.acquire().await?;
        let customer =
            store::customer(&mut conn, customer_id).await?.ok_or(CommissionsError::NotFound("customer"))?;
        drop(conn);
        self.authorize(caller, &customer.team_id, permission, true, "customer").await?;
        Ok(customer)
    }

    async fn add_customer_(
        &self,
        request: Request<pb::AddCustomerRequest>,
    ) -> Result<pb::AddCustomerResponse> {
        let caller = caller(&request)?;
        let pb::AddCustomerRequest {
            team_id,
            org_name,
            domain,
            super_admin_email,
            plan,
            licences,
            renewal_date,
            monthly_price,
            renewal_term_months,
        } = request.into_inner();
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let mut v = Validator::new();
        v.id("team_id", "team", &team_id)
            .text("org_name", &org_name, NAME_MAX)
            .check(is_domain(&domain), "domain", "must be a domain name such as example.com")
            .email("super_admin_email", super_admin_email.trim())
            .text("plan", &plan, PLAN_MAX)
            .check((1..=LICENCES_MAX).contains(&licences), "licences", "must be between 1 and 1000000")
            .check(
                (0..=120).contains(&renewal_term_months),
                "renewal_term_months",
                "must be between 0 and 120",
            );
        let renewal_date = match renewal_date.as_ref() {
            None => None,
            Some(ts) => {
                let t = from_timestamp(ts);
                v.check(t.is_some(), "renewal_date", "must be a valid timestamp");
                t
            }
        };
        let price = non_negative_amount(&mut v, "monthly_price", monthly_price.as_ref());
        v.finish()?;
        self.authorize(&caller, &team_id, Permission::TeamManage, true, "team").await?;
        let price = price.unwrap_or_else(|| Money::zero("USD"));
        let now = now_micros();
        let row = CustomerRow {
            id: new_id("cust"),
            team_id,
            org_name: org_name.trim().to_owned(),
            domain,
            super_admin_email: normalize_email(&super_admin_email),
            plan: plan.trim().to_owned(),
            licences: i64::from(licences),
            renewal_date,
            currency_code: price.currency.clone(),
            monthly_price_minor: price.minor,
            previous_price_minor: price.minor,
            renewal_term_months: if renewal_term_months == 0 { 12 } else { i64::from(renewal_term_months) },
            txt_token: format!("tandem-customer-verification={}", uuid::Uuid::now_v7().simple()),
            domain_verified: false,
            owner_user_id: caller.user_id.clone(),
            first_commission_time: None,
            create_time: now,
            update_time: now,
        };
        let mut conn = self.db.acquire().await?;
        match store::insert_customer(&mut conn, &row).await {
            Ok(()) => {}
            Err(DbError::UniqueViolation) => {
                let existing = store::customer_by_domain(&mut conn, &row.domain).await?;
                return Err(match existing {
                    Some(c) if c.team_id == row.team_id => CommissionsError::Duplicate(
                        ErrorReason::AlreadyExists,
                        format!("the team already has this customer ({})", c.id),
                    ),
                    _ => mapped_elsewhere(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        Ok(pb::AddCustomerResponse { customer: Some(convert::customer(&row)) })
    }

    async fn list_customers_(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<pb::ListCustomersResponse> {
        let caller = caller(&request)?;
        let pb::ListCustomersRequest { team_id, page_size, page_token } = request.into_inner();
        Validator::new().id("team_id", "team", &team_id).finish()?;
        let page = Page::parse(page_size, &page_token)?;
        self.authorize(&caller, &team_id, Permission::TeamView, true, "team").await?;
        let mut conn = self.db.acquire().await?;
        let rows = store::list_customers(&mut conn, &team_id, page.after_key(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |c| c.id.clone());
        Ok(pb::ListCustomersResponse {
            customers: rows.iter().map(convert::customer).collect(),
            next_page_token,
        })
    }

    async fn verify_customer_domain_(
        &self,
        request: Request<pb::VerifyCustomerDomainRequest>,
    ) -> Result<pb::VerifyCustomerDomainResponse> {
        let caller = caller(&request)?;
        let pb::VerifyCustomerDomainRequest { customer_id } = request.into_inner();
        Validator::new().id("customer_id", "cust", &customer_id).finish()?;
        let mut customer = self.customer_for(&caller, &customer_id, Permission::TeamManage).await?;
        if !customer.domain_verified {
            let name = convert::txt_record_name(&customer.domain);
            let records = self.txt.txt(&name).await.map_err(|e| {
                tracing::warn!(error = %e, name, "txt lookup failed");
                CommissionsError::Unavailable("the domain's DNS did not answer".into())
            })?;
            if !records.iter().any(|r| r.trim() == customer.txt_token) {
                return Err(CommissionsError::rule(
                    ErrorReason::DomainVerificationFailed,
                    format!("publish the TXT record {:?} at {name} first", customer.txt_token),
                ));
            }
            let now = now_micros();
            let mut conn = self.db.acquire().await?;
            store::set_verified(&mut conn, &customer.id, now).await?;
            customer.domain_verified = true;
            customer.update_time = now;
        }
        Ok(pb::VerifyCustomerDomainResponse { customer: Some(convert::customer(&customer)) })
    }

    async fn change_plan_(&self, request: Request<pb::ChangePlanRequest>) -> Result<pb::ChangePlanResponse> {
        let caller = caller(&request)?;
        let pb::ChangePlanRequest { customer_id, plan, licences, monthly_price } = request.into_inner();
        let mut v = Validator::new();
        v.id("customer_id", "cust", &customer_id).text("plan", &plan, PLAN_MAX).check(
            (1..=LICENCES_MAX).contains(&licences),
            "licences",
            "must be between 1 and 1000000",
        );
        let price = match monthly_price.as_ref() {
            None => None,
            some => non_negative_amount(&mut v, "monthly_price", some),
        };
        v.finish()?;
        let mut customer = self.customer_for(&caller, &customer_id, Permission::TeamManage).await?;
        if !customer.domain_verified {
            return Err(not_verified());
        }
        let now = now_micros();
        customer.plan = plan.trim().to_owned();
        customer.licences = i64::from(licences);
        if let Some(price) = price {
            if price.currency != customer.currency_code && customer.monthly_price_minor != 0 {
                return Err(CommissionsError::invalid(
                    "monthly_price.currency_code",
                    format!("must be the customer's currency, {}", customer.currency_code),
                ));
            }
            customer.previous_price_minor = customer.monthly_price_minor;
            customer.monthly_price_minor = price.minor;
            customer.currency_code = price.currency;
        }
        customer.update_time = now;
        let mut conn = self.db.acquire().await?;
        store::update_plan(&mut conn, &customer).await?;
        Ok(pb::ChangePlanResponse { customer: Some(convert::customer(&customer)) })
    }

    async fn record_payment_(
        &self,
        request: Request<pb::RecordPaymentRequest>,
    ) -> Result<pb::RecordPaymentResponse> {
        let caller = caller(&request)?;
        let fingerprint = idempotency::fingerprint(request.get_ref());
        let pb::RecordPaymentRequest { customer_id, amount, request_id: rid } = request.into_inner();
        let mut v = Validator::new();
        v.id("customer_id", "cust", &customer_id);
        let amount = positive_amount(&mut v, "amount", amount.as_ref());
        request_id(&mut v, &rid);
        v.finish()?;
        let amount = amount.unwrap_or_else(|| Money::zero("USD"));
        let customer = self.customer_for(&caller, &customer_id, Permission::TeamManage).await?;
        if amount.currency != customer.currency_code {
            return Err(CommissionsError::invalid(
                "amount.currency_code",
                format!("must be the customer's currency, {}", customer.currency_code),
            ));
        }
        if !customer.domain_verified {
            return Err(not_verified());
        }

        let mut tx = self.db.begin().await?;
        match idempotency::claim::<pb::RecordPaymentResponse>(&mut tx, PAYMENT_SCOPE, &rid, &fingerprint)
            .await?
        {
            Claim::Replay(response) => return Ok(response),
            Claim::Mismatch => return Err(request_id_reused("payment")),
            Claim::New => {}
        }
        let now = now_micros();
        let payment = PaymentRow {
            id: new_id("pay"),
            customer_id: customer.id.clone(),
            team_id: customer.team_id.clone(),
            currency_code: amount.currency.clone(),
            amount_minor: amount.minor,
            refunded_minor: 0,
            create_time: now,
        };
        store::insert_payment(&mut tx, &payment).await?;
        let mut accrued = None;
        if let Some(plan) = store::current_plan(&mut tx).await? {
            // Locks the customer: concurrent payments of one customer decide one after another.
            let first = store::lock_first_commission(&mut tx, &customer.id).await?;
            if commission::payment_earns(plan.recurring_months, first, now) {
                let source = Source::Payment { payment_id: &payment.id, customer_id: &customer.id };
                accrued = ledger::accrue(&mut tx, &customer.team_id, source, &amount, &plan, now).await?;
                if first.is_none() {
                    store::set_first_commission(&mut tx, &customer.id, now).await?;
                }
            }
        }
        let response = pb::RecordPaymentResponse {
            payment: Some(convert::payment(&payment, accrued.as_ref())),
            commission: accrued.as_ref().map(convert::commission),
        };
        idempotency::record(&mut tx, PAYMENT_SCOPE, &rid, &response).await?;
        self.commit(tx).await?;
        Ok(response)
    }

    async fn record_refund_(
        &self,
        request: Request<pb::RecordRefundRequest>,
    ) -> Result<pb::RecordRefundResponse> {
        let caller = caller(&request)?;
        let fingerprint = idempotency::fingerprint(request.get_ref());
        let pb::RecordRefundRequest { payment_id, amount, request_id: rid, reason } = request.into_inner();
        let mut v = Validator::new();
        v.id("payment_id", "pay", &payment_id).optional_text("reason", &reason, TEXT_MAX);
        let amount = positive_amount(&mut v, "amount", amount.as_ref());
        request_id(&mut v, &rid);
        v.finish()?;
        let amount = amount.unwrap_or_else(|| Money::zero("USD"));
        let payment = {
            let mut conn = self.db.acquire().await?;
            store::payment(&mut conn, &payment_id).await?.ok_or(CommissionsError::NotFound("payment"))?
        };
        let customer = self
            .customer_for(&caller, &payment.customer_id, Permission::TeamManage)
            .await
            .map_err(|e| match e {
                CommissionsError::NotFound(_) => CommissionsError::NotFound("payment"),
                other => other,
            })?;
        if amount.currency != payment.currency_code {
            return Err(CommissionsError::invalid(
                "amount.currency_code",
                format!("must be the payment's currency, {}", payment.currency_code),
            ));
        }
        if !customer.domain_verified {
            return Err(not_verified());
        }

        let mut tx = self.db.begin().await?;
        match idempotency::claim::<pb::RecordRefundResponse>(&mut tx, REFUND_SCOPE, &rid, &fingerprint)
            .await?
        {
            Claim::Replay(response) => return Ok(response),
            Claim::Mismatch => return Err(request_id_reused("refund")),
            Claim::New => {}
        }
        let now = now_micros();
        // Locks the payment: concurrent refunds of one payment queue here.
        let Some(refunded_before) = store::add_refunded(&mut tx, &payment.id, amount.minor).await? else {
            let current = store::payment(&mut tx, &payment.id).await?.unwrap_or(payment);
            return Err(CommissionsError::rule(
                ErrorReason::RefundExceedsPayment,
                format!(
                    "only {} {} of the payment remains refundable",
                    current.amount_minor - current.refunded_minor,
                    current.currency_code
                ),
            ));
        };
        let refund_id = new_id("rfd");
        let reason = match reason.trim() {
            "" => format!("refund {refund_id} of payment {}", payment.id),
            given => format!("refund {refund_id} of payment {}: {given}", payment.id),
        };
        let mut clawback = 0;
        if let Some(c) = store::commission_of_payment(&mut tx, &payment.id).await? {
            clawback = commission::clawback_for_refund(
                c.amount_minor,
                payment.amount_minor,
                refunded_before,
                amount.minor,
            );
            ledger::claw_back(&mut tx, &c, clawback, &reason, now).await?;
        }
        let refund = RefundRow {
            id: refund_id,
            payment_id: payment.id.clone(),
            amount_minor: amount.minor,
            clawback_minor: clawback,
            reason,
            create_time: now,
        };
        store::insert_refund(&mut tx, &refund).await?;
        let payment =
            store::payment(&mut tx, &payment.id).await?.ok_or(CommissionsError::NotFound("payment"))?;
        let commission = store::commission_of_payment(&mut tx, &payment.id).await?;
        let response = pb::RecordRefundResponse {
            refund: Some(convert::refund(&refund, &payment.currency_code)),
            payment: Some(convert::payment(&payment, commission.as_ref())),
        };
        idempotency::record(&mut tx, REFUND_SCOPE, &rid, &response).await?;
        self.commit(tx).await?;
        Ok(response)
    }

    async fn list_renewals_(
        &self,
        request: Request<pb::ListRenewalsRequest>,
    ) -> Result<pb::ListRenewalsResponse> {
        let caller = caller(&request)?;
        let pb::ListRenewalsRequest { team_id, page_size, page_token } = request.into_inner();
        Validator::new().id("team_id", "team", &team_id).finish()?;
        let page = Page::parse(page_size, &page_token)?;
        let after = match &page.after {
            None => (i64::MIN, String::new()),
            Some(key) => key
                .split_once(':')
                .and_then(|(t, id)| Some((t.parse().ok()?, id.to_owned())))
                .ok_or_else(|| CommissionsError::invalid("page_token", "is not a token of this list"))?,
        };
        self.authorize(&caller, &team_id, Permission::TeamView, true, "team").await?;
        let mut conn = self.db.acquire().await?;
        let rows = store::list_renewals(&mut conn, &team_id, (after.0, &after.1), page.limit()).await?;
        let (rows, next_page_token) =
            page.finish(rows, |c| format!("{}:{}", c.renewal_date.unwrap_or_default(), c.id));
        Ok(pb::ListRenewalsResponse {
            renewals: rows.iter().map(convert::renewal).collect(),
            next_page_token,
        })
    }
}
