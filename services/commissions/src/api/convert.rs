//! Rows and domain values to messages.

use tandem_platform::time::{to_optional_timestamp, to_timestamp};
use tandem_proto::{commissions::v1 as pb, common::v1::Money};

use crate::{
    domain::{commission, ledger::PostingKind, ledger::TeamBalance, statements::Statement},
    store::{self, CommissionRow, CustomerRow, PaymentRow, PayoutRow, PlanRow, RefundRow, RewardRow},
};

pub fn money(currency: &str, minor: i64) -> Money {
    Money { currency_code: currency.to_owned(), amount_minor: minor }
}

/// The TXT record name a customer's domain publishes its verification value at.
pub fn txt_record_name(domain: &str) -> String {
    format!("_tandem-customer.{domain}")
}

pub fn customer(c: &CustomerRow) -> pb::Customer {
    pb::Customer {
        id: c.id.clone(),
        team_id: c.team_id.clone(),
        org_name: c.org_name.clone(),
        domain: c.domain.clone(),
        super_admin_email: c.super_admin_email.clone(),
        plan: c.plan.clone(),
        licences: i32::try_from(c.licences).unwrap_or(i32::MAX),
        renewal_date: to_optional_timestamp(c.renewal_date),
        domain_verified: c.domain_verified,
        txt_record_name: txt_record_name(&c.domain),
        txt_record_value: c.txt_token.clone(),
        monthly_price: Some(money(&c.currency_code, c.monthly_price_minor)),
        renewal_term_months: i32::try_from(c.renewal_term_months).unwrap_or(i32::MAX),
        owner_user_id: c.owner_user_id.clone(),
        create_time: Some(to_timestamp(c.create_time)),
        update_time: Some(to_timestamp(c.update_time)),
    }
}

pub fn renewal(c: &CustomerRow) -> pb::Renewal {
    pb::Renewal {
        customer_id: c.id.clone(),
        org_name: c.org_name.clone(),
        domain: c.domain.clone(),
        products: vec![c.plan.clone()],
        renewal_date: to_optional_timestamp(c.renewal_date),
        renewal_term_months: i32::try_from(c.renewal_term_months).unwrap_or(i32::MAX),
        monthly_price: Some(money(&c.currency_code, c.monthly_price_minor)),
        mrr_change: Some(money(&c.currency_code, c.monthly_price_minor - c.previous_price_minor)),
        renewal_owner_user_id: c.owner_user_id.clone(),
    }
}

pub fn payment(p: &PaymentRow, commission: Option<&CommissionRow>) -> pb::Payment {
    pb::Payment {
        id: p.id.clone(),
        customer_id: p.customer_id.clone(),
        team_id: p.team_id.clone(),
        amount: Some(money(&p.currency_code, p.amount_minor)),
        refunded: Some(money(&p.currency_code, p.refunded_minor)),
        commission: Some(money(&p.currency_code, commission.map_or(0, |c| c.amount_minor))),
        create_time: Some(to_timestamp(p.create_time)),
    }
}

pub fn refund(r: &RefundRow, currency: &str) -> pb::Refund {
    pb::Refund {
        id: r.id.clone(),
        payment_id: r.payment_id.clone(),
        amount: Some(money(currency, r.amount_minor)),
        clawback: Some(money(currency, r.clawback_minor)),
        reason: r.reason.clone(),
        create_time: Some(to_timestamp(r.create_time)),
    }
}

pub fn plan(p: &PlanRow) -> pb::CommissionPlan {
    pb::CommissionPlan {
        id: p.id.clone(),
        name: p.name.clone(),
        rate_bps: p.rate_bps,
        recurring_months: i32::try_from(p.recurring_months).unwrap_or(i32::MAX),
        hold_days: i32::try_from(p.hold_days).unwrap_or(i32::MAX),
        minimum_payout: Some(money(&p.minimum_currency, p.minimum_minor)),
        tier_multipliers: commission::parse_multipliers(&p.tier_multipliers)
            .into_iter()
            .map(|(tier_id, multiplier_bps)| pb::TierMultiplier { tier_id, multiplier_bps })
            .collect(),
        create_time: Some(to_timestamp(p.create_time)),
    }
}

pub fn commission(c: &CommissionRow) -> pb::Commission {
    let status = match c.status.as_str() {
        store::PENDING => pb::CommissionStatus::Pending,
        store::AVAILABLE => pb::CommissionStatus::Available,
        store::CANCELLED => pb::CommissionStatus::Cancelled,
        _ => pb::CommissionStatus::Unspecified,
    };
    pb::Commission {
        id: c.id.clone(),
        team_id: c.team_id.clone(),
        customer_id: c.customer_id.clone().unwrap_or_default(),
        payment_id: c.payment_id.clone().unwrap_or_default(),
        deal_id: c.deal_id.clone().unwrap_or_default(),
        plan_id: c.plan_id.clone(),
        base: Some(money(&c.currency_code, c.base_minor)),
        amount: Some(money(&c.currency_code, c.amount_minor)),
        clawed_back: Some(money(&c.currency_code, c.clawed_minor)),
        multiplier_bps: c.multiplier_bps,
        status: status.into(),
        available_time: Some(to_timestamp(c.available_time)),
        create_time: Some(to_timestamp(c.create_time)),
    }
}

pub fn payout_status(s: &str) -> pb::PayoutStatus {
    match s {
        store::REQUESTED => pb::PayoutStatus::Requested,
        store::BATCHED => pb::PayoutStatus::Batched,
        store::PAID => pb::PayoutStatus::Paid,
        _ => pb::PayoutStatus::Unspecified,
    }
}

pub fn payout(p: &PayoutRow) -> pb::Payout {
    pb::Payout {
        id: p.id.clone(),
        team_id: p.team_id.clone(),
        amount: Some(money(&p.currency_code, p.amount_minor)),
        status: payout_status(&p.status).into(),
        batch_id: p.batch_id.clone().unwrap_or_default(),
        requested_by_user_id: p.requested_by.clone(),
        create_time: Some(to_timestamp(p.create_time)),
        paid_time: to_optional_timestamp(p.paid_time),
    }
}

pub fn reward(r: &RewardRow) -> pb::Reward {
    let kind = PostingKind::parse(&r.kind);
    let (kind, sign) = match kind {
        Some(PostingKind::Accrual) => (pb::RewardKind::Accrual, 1),
        Some(PostingKind::Release) => (pb::RewardKind::Release, 1),
        Some(PostingKind::Clawback) => (pb::RewardKind::Clawback, -1),
        Some(PostingKind::Withdrawal) => (pb::RewardKind::Withdrawal, 1),
        Some(PostingKind::PayoutPaid) => (pb::RewardKind::PayoutPaid, 1),
        None => (pb::RewardKind::Unspecified, 1),
    };
    pb::Reward {
        id: r.id.clone(),
        team_id: r.team_id.clone(),
        kind: kind.into(),
        amount: Some(money(&r.currency_code, sign * r.amount_minor)),
        reason: r.reason.clone(),
        commission_id: r.commission_id.clone().unwrap_or_default(),
        payout_id: r.payout_id.clone().unwrap_or_default(),
        create_time: Some(to_timestamp(r.create_time)),
    }
}

pub fn balance(currency: &str, b: &TeamBalance) -> pb::Balance {
    pb::Balance {
        available: Some(money(currency, b.available)),
        pending: Some(money(currency, b.pending)),
        paid: Some(money(currency, b.paid)),
        payable: Some(money(currency, b.payable)),
    }
}

pub fn statement(s: &Statement) -> pb::Statement {
    pb::Statement {
        month_start_time: Some(to_timestamp(s.month_start)),
        currency_code: s.currency.clone(),
        accrued: Some(money(&s.currency, s.accrued)),
        clawed_back: Some(money(&s.currency, s.clawed_back)),
        paid: Some(money(&s.currency, s.paid)),
        released: Some(money(&s.currency, s.released)),
        upcoming: s.upcoming,
    }
}
