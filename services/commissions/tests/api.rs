//! The commissions API over gRPC on SQLite and PostgreSQL: customers, payments and refunds,
//! the ledger through accrual, hold, release, clawback, withdrawal and payout, idempotency and
//! concurrency, bad input, and won deals and tier changes from the bus.

mod common;

use common::{Harness, add_customer_request, reason, req, usd, violations};
use tandem_platform::{ids::new_id, testing::TestDb};
use tandem_proto::{
    commissions::v1 as pb,
    common::v1::Money,
    events::v1::{DealClosed, Event, TierChanged, event::Payload},
    identity::v1::RewardsVisibility,
};
use tonic::Code;

async fn customers_are_mapped_once_and_managed_after_verification(db: TestDb) {
    let h = Harness::start(db).await;
    let c = h.add_customer(&h.t.admin, &h.team, "Acme.example.COM").await.unwrap();
    assert_eq!(c.domain, "acme.example.com");
    assert!(!c.domain_verified);
    assert_eq!(c.txt_record_name, "_tandem-customer.acme.example.com");

    let again = h.add_customer(&h.t.owner, &h.team, "acme.example.com").await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let elsewhere = h.add_customer(&h.t.outsider, &h.other_team, "acme.example.com").await.unwrap_err();
    assert_eq!(elsewhere.code(), Code::FailedPrecondition);
    assert_eq!(reason(&elsewhere), "CUSTOMER_MAPPED_TO_ANOTHER_PARTNER");
    assert!(elsewhere.message().contains("mapped to another partner"));

    let change = |token: &str| {
        let mut client = h.customers.clone();
        let request = req(
            token,
            pb::ChangePlanRequest {
                customer_id: c.id.clone(),
                plan: "Workplace Professional".into(),
                licences: 40,
                monthly_price: Some(usd(16_000)),
            },
        );
        async move { client.change_plan(request).await }
    };
    let refused = change(&h.t.owner).await.unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::FailedPrecondition, "DOMAIN_NOT_VERIFIED")
    );

    let verify = pb::VerifyCustomerDomainRequest { customer_id: c.id.clone() };
    let failed =
        h.customers.clone().verify_customer_domain(req(&h.t.owner, verify.clone())).await.unwrap_err();
    assert_eq!(reason(&failed), "DOMAIN_VERIFICATION_FAILED");
    h.txt.publish(&c.txt_record_name, &c.txt_record_value);
    let member =
        h.customers.clone().verify_customer_domain(req(&h.t.member, verify.clone())).await.unwrap_err();
    assert_eq!(member.code(), Code::PermissionDenied);
    let verified = h.customers.clone().verify_customer_domain(req(&h.t.owner, verify)).await.unwrap();
    assert!(verified.into_inner().customer.unwrap().domain_verified);

    let changed = change(&h.t.admin).await.unwrap().into_inner().customer.unwrap();
    assert_eq!((changed.plan.as_str(), changed.licences), ("Workplace Professional", 40));

    let listed = h
        .customers
        .clone()
        .list_customers(req(
            &h.t.member,
            pb::ListCustomersRequest { team_id: h.team.clone(), page_size: 0, page_token: String::new() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.customers.len(), 1);
    let listed = &listed.customers[0];
    assert_eq!(
        (
            listed.org_name.as_str(),
            listed.super_admin_email.as_str(),
            listed.licences,
            listed.domain_verified
        ),
        ("Acme Corp", "admin@acme.example.com", 40, true)
    );
    assert!(listed.renewal_date.is_some());

    let renewals = h
        .renewals
        .clone()
        .list_renewals(req(
            &h.t.member,
            pb::ListRenewalsRequest { team_id: h.team.clone(), page_size: 0, page_token: String::new() },
        ))
        .await
        .unwrap()
        .into_inner()
        .renewals;
    assert_eq!(renewals.len(), 1);
    assert_eq!(renewals[0].mrr_change, Some(usd(6_000)));
    assert_eq!(renewals[0].products, ["Workplace Professional"]);
    assert_eq!(renewals[0].renewal_term_months, 12);
}

async fn commission_is_held_released_withdrawn_whole_and_paid(db: TestDb) {
    let h = Harness::start(db).await;
    h.plan(1_500, 12, 30, 1_000).await;
    let c = h.verified_customer("acme.example.com").await;
    let paid = h.pay(&h.t.owner, &c.id, 10_000, "r1").await.unwrap();
    let commission = paid.commission.unwrap();
    assert_eq!(commission.amount, Some(usd(1_500)));
    assert_eq!(commission.status(), pb::CommissionStatus::Pending);
    assert_eq!(h.amounts().await, (0, 1_500, 0));

    let early = h.withdraw(&h.t.finance, "w0").await.unwrap_err();
    assert_eq!(reason(&early), "BELOW_MINIMUM_PAYOUT");
    assert_eq!(h.release_after(29).await, 0);
    assert_eq!(h.release_after(31).await, 1);
    assert_eq!(h.release_after(31).await, 0, "a commission is released once");
    assert_eq!(h.amounts().await, (1_500, 0, 0));

    let admin = h.withdraw(&h.t.admin, "w1").await.unwrap_err();
    assert_eq!(admin.code(), Code::PermissionDenied);
    let payout = h.withdraw(&h.t.finance, "w1").await.unwrap();
    assert_eq!((payout.amount.clone(), payout.status()), (Some(usd(1_500)), pb::PayoutStatus::Requested));
    let again = h.withdraw(&h.t.owner, "w2").await.unwrap_err();
    assert_eq!(reason(&again), "BELOW_MINIMUM_PAYOUT", "nothing is left to withdraw");
    let b = h.balance(&h.t.owner).await.unwrap();
    assert_eq!((b.available, b.payable), (Some(usd(0)), Some(usd(1_500))));

    let batch = h
        .payouts
        .clone()
        .create_payout_batch(req(
            &h.t.staff,
            pb::CreatePayoutBatchRequest { currency_code: "USD".into(), request_id: "b1".into() },
        ))
        .await
        .unwrap()
        .into_inner()
        .batch
        .unwrap();
    assert_eq!((batch.payout_ids.clone(), batch.totals.clone()), (vec![payout.id.clone()], vec![usd(1_500)]));
    let mark = |rid: &str| {
        let mut client = h.payouts.clone();
        let request = req(
            &h.t.staff,
            pb::MarkPayoutPaidRequest { payout_id: payout.id.clone(), request_id: rid.into() },
        );
        async move { client.mark_payout_paid(request).await }
    };
    let marked = mark("m1").await.unwrap().into_inner().payout.unwrap();
    assert_eq!(marked.status(), pb::PayoutStatus::Paid);
    assert_eq!(mark("m1").await.unwrap().into_inner().payout.unwrap(), marked, "a retry answers the same");
    assert_eq!(reason(&mark("m2").await.unwrap_err()), "PAYOUT_STATE");
    assert_eq!(h.amounts().await, (0, 0, 1_500));
    assert_eq!(
        tandem_platform::outbox::backlog(&h.db).await.unwrap(),
        1,
        "the requester's notification waits in the outbox"
    );

    let listed = h
        .payouts
        .clone()
        .list_payouts(req(
            &h.t.owner,
            pb::ListPayoutsRequest { team_id: h.team.clone(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .payouts;
    assert_eq!(listed, vec![marked]);
    let rewards = h
        .rewards
        .clone()
        .list_rewards(req(
            &h.t.member,
            pb::ListRewardsRequest { team_id: h.team.clone(), page_size: 2, page_token: String::new() },
        ))
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<_> = rewards.rewards.iter().map(|r| r.kind()).collect();
    assert_eq!(kinds, [pb::RewardKind::Accrual, pb::RewardKind::Release]);
    assert!(!rewards.next_page_token.is_empty());
    let statements = h
        .plans
        .clone()
        .list_statements(req(
            &h.t.finance,
            pb::ListStatementsRequest { team_id: h.team.clone(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .statements;
    assert_eq!(statements.iter().map(|s| s.accrued.as_ref().unwrap().amount_minor).sum::<i64>(), 1_500);
    assert_eq!(statements.iter().map(|s| s.paid.as_ref().unwrap().amount_minor).sum::<i64>(), 1_500);
    assert!(statements.iter().any(|s| s.upcoming && s.released.as_ref().unwrap().amount_minor == 1_500));
    h.assert_books_balance().await;
    assert!(!h.commissions.team_holds_rewards(&h.team).await.unwrap(), "everything is paid");
}

async fn refunds_claw_back_pending_available_and_paid_commission(db: TestDb) {
    let h = Harness::start(db).await;
    h.plan(1_500, 12, 30, 0).await;
    let c = h.verified_customer("acme.example.com").await;

    // Pending: cancelled.
    let p1 = h.pay(&h.t.owner, &c.id, 10_000, "p1").await.unwrap().payment.unwrap();
    let r = h.refund(&h.t.admin, &p1.id, 10_000, "r1").await.unwrap();
    assert_eq!(r.refund.unwrap().clawback, Some(usd(1_500)));
    assert_eq!(h.amounts().await, (0, 0, 0));
    let too_much = h.refund(&h.t.admin, &p1.id, 1, "r2").await.unwrap_err();
    assert_eq!(
        (too_much.code(), reason(&too_much).as_str()),
        (Code::FailedPrecondition, "REFUND_EXCEEDS_PAYMENT")
    );
    let commissions = h
        .plans
        .clone()
        .list_commissions(req(
            &h.t.owner,
            pb::ListCommissionsRequest { team_id: h.team.clone(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .commissions;
    assert_eq!(commissions[0].status(), pb::CommissionStatus::Cancelled);

    // Available: debited.
    let p2 = h.pay(&h.t.owner, &c.id, 10_000, "p2").await.unwrap().payment.unwrap();
    h.release_after(31).await;
    h.refund(&h.t.owner, &p2.id, 5_000, "r3").await.unwrap();
    assert_eq!(h.amounts().await, (750, 0, 0));

    // Paid: the rest of the refund leaves a negative balance that blocks withdrawals.
    let payout = h.withdraw(&h.t.owner, "w1").await.unwrap();
    h.payouts
        .clone()
        .mark_payout_paid(req(
            &h.t.staff,
            pb::MarkPayoutPaidRequest { payout_id: payout.id, request_id: "m1".into() },
        ))
        .await
        .unwrap();
    let last = h.refund(&h.t.owner, &p2.id, 5_000, "r4").await.unwrap();
    assert_eq!(last.payment.unwrap().refunded, Some(usd(10_000)));
    assert_eq!(h.amounts().await, (-750, 0, 750));
    assert!(
        h.commissions.team_holds_rewards(&h.team).await.unwrap(),
        "a negative balance is still to settle"
    );
    let blocked = h.withdraw(&h.t.finance, "w2").await.unwrap_err();
    assert_eq!(reason(&blocked), "NEGATIVE_BALANCE");

    // Later earnings cover it.
    h.pay(&h.t.owner, &c.id, 20_000, "p3").await.unwrap();
    h.release_after(31).await;
    assert_eq!(h.amounts().await, (2_250, 0, 750));
    assert_eq!(h.withdraw(&h.t.finance, "w3").await.unwrap().amount, Some(usd(2_250)));

    let rewards = h
        .rewards
        .clone()
        .list_rewards(req(
            &h.t.owner,
            pb::ListRewardsRequest { team_id: h.team.clone(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .rewards;
    let clawbacks: Vec<_> = rewards.iter().filter(|r| r.kind() == pb::RewardKind::Clawback).collect();
    assert_eq!(clawbacks.len(), 3);
    assert!(
        clawbacks
            .iter()
            .all(|r| r.reason.contains("customer cancelled") && r.amount.as_ref().unwrap().amount_minor < 0)
    );

    let summary = h
        .plans
        .clone()
        .get_commission_summary(req(&h.t.owner, pb::GetCommissionSummaryRequest { team_id: h.team.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.customers.len(), 1);
    let s = &summary.customers[0];
    assert_eq!(
        (s.sales.clone(), s.commission.clone(), s.clawed_back.clone()),
        (Some(usd(20_000)), Some(usd(3_000)), Some(usd(3_000)))
    );
    h.assert_books_balance().await;
}

async fn one_off_plans_pay_once_and_the_newest_plan_applies(db: TestDb) {
    let h = Harness::start(db).await;
    let c = h.verified_customer("acme.example.com").await;
    let before = h.pay(&h.t.owner, &c.id, 10_000, "p0").await.unwrap();
    assert!(before.commission.is_none(), "no plan, no commission");
    h.plan(1_000, 0, 0, 0).await;
    assert_eq!(
        h.pay(&h.t.owner, &c.id, 10_000, "p1").await.unwrap().commission.unwrap().amount,
        Some(usd(1_000))
    );
    assert!(h.pay(&h.t.owner, &c.id, 10_000, "p2").await.unwrap().commission.is_none(), "one-off");
    let d = h.verified_customer("beta.example.com").await;
    h.plan(2_000, 0, 0, 0).await;
    let newest = h.pay(&h.t.owner, &d.id, 1_234, "p3").await.unwrap().commission.unwrap();
    assert_eq!(newest.amount, Some(usd(247)), "20% of 12.34 is 2.468, rounded half up to 2.47");
    h.assert_books_balance().await;
}

async fn the_release_task_makes_held_commission_available(db: TestDb) {
    let h = Harness::start(db).await;
    h.plan(1_000, 12, 0, 0).await;
    let c = h.verified_customer("acme.example.com").await;
    h.pay(&h.t.owner, &c.id, 10_000, "p").await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task =
        tokio::spawn(h.commissions.clone().run_releases(std::time::Duration::from_millis(20), async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        }));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while h.amounts().await != (1_000, 0, 0) {
        assert!(std::time::Instant::now() < deadline, "the release task did not release the commission");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    h.assert_books_balance().await;
}

async fn payments_are_idempotent_by_request_id(db: TestDb) {
    let h = Harness::start(db).await;
    h.plan(1_500, 12, 0, 0).await;
    let c = h.verified_customer("acme.example.com").await;
    let first = h.pay(&h.t.owner, &c.id, 10_000, "same").await.unwrap();
    let again = h.pay(&h.t.admin, &c.id, 10_000, "same").await.unwrap();
    assert_eq!(first, again);
    let other = h.pay(&h.t.owner, &c.id, 9_999, "same").await.unwrap_err();
    assert_eq!((other.code(), reason(&other).as_str()), (Code::AlreadyExists, "REQUEST_ID_REUSED"));
    let payment = first.payment.unwrap();
    let refund = h.refund(&h.t.owner, &payment.id, 100, "rf").await.unwrap();
    assert_eq!(h.refund(&h.t.owner, &payment.id, 100, "rf").await.unwrap(), refund);
    assert_eq!(reason(&h.refund(&h.t.owner, &payment.id, 200, "rf").await.unwrap_err()), "REQUEST_ID_REUSED");
    assert_eq!(h.amounts().await.1, 1_485);
    h.assert_books_balance().await;
}

async fn concurrent_retries_count_once_and_distinct_payments_all_count(db: TestDb) {
    let h = Harness::start(db).await;
    h.plan(1_000, 12, 0, 0).await;
    let c = h.verified_customer("acme.example.com").await;
    let retries = futures::future::join_all((0..20).map(|_| h.pay(&h.t.owner, &c.id, 10_000, "one"))).await;
    let ids: std::collections::HashSet<_> =
        retries.into_iter().map(|r| r.expect("every retry answers").payment.unwrap().id).collect();
    assert_eq!(ids.len(), 1, "20 identical requests make one payment");
    assert_eq!(h.amounts().await.1, 1_000, "and one commission");

    let (hr, cid) = (&h, c.id.as_str());
    let distinct = futures::future::join_all((0..20).map(|i| {
        let rid = format!("many-{i}");
        async move { hr.pay(&hr.t.owner, cid, 10_000, &rid).await }
    }))
    .await;
    assert!(distinct.iter().all(Result::is_ok), "{distinct:?}");
    assert_eq!(h.amounts().await.1, 21_000);
    let commissions = h
        .plans
        .clone()
        .list_commissions(req(
            &h.t.owner,
            pb::ListCommissionsRequest { team_id: h.team.clone(), page_size: 500, page_token: String::new() },
        ))
        .await
        .unwrap()
        .into_inner()
        .commissions;
    assert_eq!(commissions.len(), 21);

    // Concurrent refunds of one payment never exceed it.
    let payment = h.pay(&h.t.owner, &c.id, 1_000, "to-refund").await.unwrap().payment.unwrap();
    let pid = payment.id.as_str();
    let refunds = futures::future::join_all((0..20).map(|i| {
        let rid = format!("refund-{i}");
        async move { hr.refund(&hr.t.owner, pid, 100, &rid).await }
    }))
    .await;
    assert_eq!(refunds.iter().filter(|r| r.is_ok()).count(), 10);
    for refused in refunds.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(reason(refused), "REFUND_EXCEEDS_PAYMENT");
    }
    assert_eq!(h.amounts().await.1, 21_000, "the refunded payment's commission is all clawed back");

    // Concurrent withdrawals take the balance once.
    h.release_after(1).await;
    let withdrawals = futures::future::join_all((0..5).map(|i| {
        let rid = format!("w-{i}");
        async move { hr.withdraw(&hr.t.owner, &rid).await }
    }))
    .await;
    assert_eq!(withdrawals.iter().filter(|w| w.is_ok()).count(), 1);
    assert_eq!(h.amounts().await.0, 0);
    h.assert_books_balance().await;
}

async fn bad_input_is_refused_with_the_right_codes(db: TestDb) {
    let h = Harness::start(db).await;
    h.plan(1_500, 12, 0, 0).await;
    let c = h.verified_customer("acme.example.com").await;
    let err = h.pay(&h.t.owner, &c.id, 0, "z").await.unwrap_err();
    assert_eq!(violations(&err), ["amount.amount_minor"]);
    let err = h.pay(&h.t.owner, &c.id, -5, "n").await.unwrap_err();
    assert_eq!(violations(&err), ["amount.amount_minor"]);
    let err = h.pay(&h.t.owner, &c.id, 10, "").await.unwrap_err();
    assert_eq!(violations(&err), ["request_id"]);
    let eur = h
        .customers
        .clone()
        .record_payment(req(
            &h.t.owner,
            pb::RecordPaymentRequest {
                customer_id: c.id.clone(),
                amount: Some(Money { currency_code: "EUR".into(), amount_minor: 100 }),
                request_id: "e".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&eur), ["amount.currency_code"]);
    let bad_currency = h
        .customers
        .clone()
        .record_payment(req(
            &h.t.owner,
            pb::RecordPaymentRequest {
                customer_id: c.id.clone(),
                amount: Some(Money { currency_code: "dollars".into(), amount_minor: 100 }),
                request_id: "d".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&bad_currency), ["amount.currency_code"]);
    let missing = h
        .customers
        .clone()
        .record_payment(req(
            &h.t.owner,
            pb::RecordPaymentRequest { customer_id: c.id.clone(), amount: None, request_id: "m".into() },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&missing), ["amount"]);
    assert_eq!(h.pay(&h.t.owner, &new_id("cust"), 10, "u").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(violations(&h.pay(&h.t.owner, "nope", 10, "u").await.unwrap_err()), ["customer_id"]);
    assert_eq!(h.refund(&h.t.owner, &new_id("pay"), 10, "u").await.unwrap_err().code(), Code::NotFound);
    let p = h.pay(&h.t.owner, &c.id, 1_000, "ok").await.unwrap().payment.unwrap();
    assert_eq!(violations(&h.refund(&h.t.owner, &p.id, 0, "r0").await.unwrap_err()), ["amount.amount_minor"]);
    assert_eq!(
        violations(&h.refund(&h.t.owner, &p.id, -1, "r0").await.unwrap_err()),
        ["amount.amount_minor"]
    );
    let mismatched = h
        .customers
        .clone()
        .record_refund(req(
            &h.t.owner,
            pb::RecordRefundRequest {
                payment_id: p.id.clone(),
                amount: Some(Money { currency_code: "EUR".into(), amount_minor: 1 }),
                request_id: "r".into(),
                reason: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&mismatched), ["amount.currency_code"]);

    let mut bad_customer = add_customer_request(&h.team, "not a domain");
    bad_customer.licences = 0;
    bad_customer.monthly_price = Some(usd(-1));
    let err = h.customers.clone().add_customer(req(&h.t.owner, bad_customer)).await.unwrap_err();
    assert_eq!(violations(&err), ["domain", "super_admin_email", "licences", "monthly_price.amount_minor"]);
    let plan = h
        .plans
        .clone()
        .create_commission_plan(req(
            &h.t.staff,
            pb::CreateCommissionPlanRequest {
                name: String::new(),
                rate_bps: 0,
                recurring_months: -1,
                hold_days: -1,
                minimum_payout: Some(usd(-1)),
                tier_multipliers: vec![pb::TierMultiplier { tier_id: "gold".into(), multiplier_bps: 0 }],
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violations(&plan),
        [
            "name",
            "rate_bps",
            "recurring_months",
            "hold_days",
            "minimum_payout.amount_minor",
            "tier_multipliers[0].multiplier_bps"
        ]
    );
    let unknown_payout = h
        .payouts
        .clone()
        .mark_payout_paid(req(
            &h.t.staff,
            pb::MarkPayoutPaidRequest { payout_id: new_id("pout"), request_id: "x".into() },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown_payout.code(), Code::NotFound);
    let nothing = h
        .payouts
        .clone()
        .create_payout_batch(req(
            &h.t.staff,
            pb::CreatePayoutBatchRequest { currency_code: String::new(), request_id: "b".into() },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&nothing), "NOTHING_TO_BATCH");
}

/// Every guarded RPC tried by every role, with rewards shown and hidden, an outsider, staff
/// and no token.
async fn every_role_on_every_guarded_rpc(db: TestDb) {
    let h = Harness::start(db).await;
    h.plan(1_500, 12, 0, 0).await;
    let c = h.verified_customer("acme.example.com").await;
    let p = h.pay(&h.t.owner, &c.id, 10_000, "seed").await.unwrap().payment.unwrap();
    h.release_after(1).await;
    let team = h.team.clone();

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Who {
        Owner,
        Admin,
        Member,
        Finance,
        Outsider,
        Staff,
        Anonymous,
    }
    let token = |who: Who| match who {
        Who::Owner => h.t.owner.clone(),
        Who::Admin => h.t.admin.clone(),
        Who::Member => h.t.member.clone(),
        Who::Finance => h.t.finance.clone(),
        Who::Outsider => h.t.outsider.clone(),
        Who::Staff => h.t.staff.clone(),
        Who::Anonymous => String::new(),
    };
    let all = [Who::Owner, Who::Admin, Who::Member, Who::Finance, Who::Outsider, Who::Staff, Who::Anonymous];
    let mut n = 0;
    let mut call = |rpc: &'static str, who: Who| {
        n += 1;
        let tok = token(who);
        let rid = format!("rid-{n}");
        let (team, c, p, h) = (team.clone(), c.clone(), p.clone(), &h);
        async move {
            let r = match rpc {
                "ListCustomers" => h
                    .customers
                    .clone()
                    .list_customers(req(
                        &tok,
                        pb::ListCustomersRequest { team_id: team, ..Default::default() },
                    ))
                    .await
                    .map(|_| ()),
                "AddCustomer" => h
                    .customers
                    .clone()
                    .add_customer(req(&tok, add_customer_request(&team, &format!("{rid}.example.com"))))
                    .await
                    .map(|_| ()),
                "VerifyCustomerDomain" => h
                    .customers
                    .clone()
                    .verify_customer_domain(req(&tok, pb::VerifyCustomerDomainRequest { customer_id: c.id }))
                    .await
                    .map(|_| ()),
                "ChangePlan" => h
                    .customers
                    .clone()
                    .change_plan(req(
                        &tok,
                        pb::ChangePlanRequest {
                            customer_id: c.id,
                            plan: "Pro".into(),
                            licences: 3,
                            monthly_price: None,
                        },
                    ))
                    .await
                    .map(|_| ()),
                "RecordPayment" => h
                    .customers
                    .clone()
                    .record_payment(req(
                        &tok,
                        pb::RecordPaymentRequest {
                            customer_id: c.id,
                            amount: Some(usd(100)),
                            request_id: rid,
                        },
                    ))
                    .await
                    .map(|_| ()),
                "RecordRefund" => h
                    .customers
                    .clone()
                    .record_refund(req(
                        &tok,
                        pb::RecordRefundRequest {
                            payment_id: p.id,
                            amount: Some(usd(1)),
                            request_id: rid,
                            reason: String::new(),
                        },
                    ))
                    .await
                    .map(|_| ()),
                "ListRenewals" => h
                    .renewals
                    .clone()
                    .list_renewals(req(&tok, pb::ListRenewalsRequest { team_id: team, ..Default::default() }))
                    .await
                    .map(|_| ()),
                "ListCommissions" => h
                    .plans
                    .clone()
                    .list_commissions(req(
                        &tok,
                        pb::ListCommissionsRequest { team_id: team, ..Default::default() },
                    ))
                    .await
                    .map(|_| ()),
                "GetCommissionSummary" => h
                    .plans
                    .clone()
                    .get_commission_summary(req(&tok, pb::GetCommissionSummaryRequest { team_id: team }))
                    .await
                    .map(|_| ()),
                "ListStatements" => h
                    .plans
                    .clone()
                    .list_statements(req(
                        &tok,
                        pb::ListStatementsRequest { team_id: team, ..Default::default() },
                    ))
                    .await
                    .map(|_| ()),
                "GetRewardBalance" => h
                    .rewards
                    .clone()
                    .get_reward_balance(req(
                        &tok,
                        pb::GetRewardBalanceRequest { team_id: team, currency_code: String::new() },
                    ))
                    .await
                    .map(|_| ()),
                "ListRewards" => h
                    .rewards
                    .clone()
                    .list_rewards(req(&tok, pb::ListRewardsRequest { team_id: team, ..Default::default() }))
                    .await
                    .map(|_| ()),
                "ListPayouts" => h
                    .payouts
                    .clone()
                    .list_payouts(req(&tok, pb::ListPayoutsRequest { team_id: team, ..Default::default() }))
                    .await
                    .map(|_| ()),
                // Below the minimum (nothing) is a FAILED_PRECONDITION after authorisation.
                "RequestWithdrawal" => h
                    .rewards
                    .clone()
                    .request_withdrawal(req(
                        &tok,
                        pb::RequestWithdrawalRequest {
                            team_id: team,
                            request_id: rid,
                            currency_code: "EUR".into(),
                        },
                    ))
                    .await
                    .map(|_| ()),
                "CheckTeamRewards" => h
                    .rewards
                    .clone()
                    .check_team_rewards(req(&tok, pb::CheckTeamRewardsRequest { team_id: team }))
                    .await
                    .map(|_| ()),
                "CreateCommissionPlan" => h
                    .plans
                    .clone()
                    .create_commission_plan(req(
                        &tok,
                        pb::CreateCommissionPlanRequest {
                            name: "P".into(),
                            rate_bps: 1_500,
                            recurring_months: 12,
                            hold_days: 0,
                            minimum_payout: Some(usd(0)),
                            tier_multipliers: vec![],
                            request_id: rid,
                        },
                    ))
                    .await
                    .map(|_| ()),
                "CreatePayoutBatch" => h
                    .payouts
                    .clone()
                    .create_payout_batch(req(
                        &tok,
                        pb::CreatePayoutBatchRequest { currency_code: String::new(), request_id: rid },
                    ))
                    .await
                    .map(|_| ()),
                "MarkPayoutPaid" => h
                    .payouts
                    .clone()
                    .mark_payout_paid(req(
                        &tok,
                        pb::MarkPayoutPaidRequest { payout_id: new_id("pout"), request_id: rid },
                    ))
                    .await
                    .map(|_| ()),
                other => panic!("unknown rpc {other}"),
            };
            r.map_err(|s| s.code())
        }
    };

    use Code::{FailedPrecondition, NotFound, PermissionDenied, Unauthenticated};
    let ok: Result<(), Code> = Ok(());
    // What each caller gets, in the order of `all`.
    let team_view = [ok, ok, ok, ok, Err(NotFound), ok, Err(Unauthenticated)];
    let manage =
        [ok, ok, Err(PermissionDenied), Err(PermissionDenied), Err(NotFound), ok, Err(Unauthenticated)];
    let rewards_shown = [ok, ok, ok, ok, Err(NotFound), ok, Err(Unauthenticated)];
    let rewards_hidden = [ok, ok, Err(PermissionDenied), ok, Err(NotFound), ok, Err(Unauthenticated)];
    let withdraw = [
        Err(FailedPrecondition),
        Err(PermissionDenied),
        Err(PermissionDenied),
        Err(FailedPrecondition),
        Err(NotFound),
        Err(PermissionDenied),
        Err(Unauthenticated),
    ];
    let staff_only = |staff: Result<(), Code>| {
        [
            Err(PermissionDenied),
            Err(PermissionDenied),
            Err(PermissionDenied),
            Err(PermissionDenied),
            Err(PermissionDenied),
            staff,
            Err(Unauthenticated),
        ]
    };
    let cases: Vec<(&'static str, [Result<(), Code>; 7])> = vec![
        ("ListCustomers", team_view),
        ("ListRenewals", team_view),
        ("AddCustomer", manage),
        ("VerifyCustomerDomain", manage),
        ("ChangePlan", manage),
        ("RecordPayment", manage),
        ("RecordRefund", manage),
        ("ListCommissions", rewards_shown),
        ("GetCommissionSummary", rewards_shown),
        ("ListStatements", rewards_shown),
        ("GetRewardBalance", rewards_shown),
        ("ListRewards", rewards_shown),
        ("ListPayouts", rewards_shown),
        ("RequestWithdrawal", withdraw),
        ("CheckTeamRewards", staff_only(ok)),
        ("CreateCommissionPlan", staff_only(ok)),
        ("CreatePayoutBatch", staff_only(Err(FailedPrecondition))),
        ("MarkPayoutPaid", staff_only(Err(NotFound))),
    ];
    for (rpc, expected) in &cases {
        for (who, want) in all.iter().zip(expected) {
            assert_eq!(&call(rpc, *who).await, want, "{rpc} by {who:?} with rewards shown");
        }
    }
    h.set_visibility(RewardsVisibility::Hide);
    for rpc in [
        "ListCommissions",
        "GetCommissionSummary",
        "ListStatements",
        "GetRewardBalance",
        "ListRewards",
        "ListPayouts",
    ] {
        for (who, want) in all.iter().zip(&rewards_hidden) {
            assert_eq!(&call(rpc, *who).await, want, "{rpc} by {who:?} with rewards hidden");
        }
    }
    for (who, want) in all.iter().zip(&withdraw) {
        assert_eq!(
            &call("RequestWithdrawal", *who).await,
            want,
            "RequestWithdrawal by {who:?} with rewards hidden"
        );
    }
    h.assert_books_balance().await;
}

fn deal_event(h: &Harness, id: &str, won: bool, minor: i64) -> Event {
    Event {
        id: id.into(),
        aggregate_id: "deal_1".into(),
        occur_time: None,
        source: "deals".into(),
        headers: Default::default(),
        payload: Some(Payload::DealClosed(DealClosed {
            deal_id: format!("deal-{id}"),
            team_id: h.team.clone(),
            program_id: "prog_1".into(),
            client_id: "acme.example.com".into(),
            client_domain: "acme.example.com".into(),
            amount: Some(usd(minor)),
            client_market: "FR".into(),
            deal_type: 1,
            won,
            close_time: None,
            will_manage: false,
        })),
    }
}

async fn won_deals_accrue_once_with_the_tier_multiplier(db: TestDb) {
    let h = Harness::start(db).await;
    h.plan_with(
        1_000,
        0,
        10,
        0,
        vec![pb::TierMultiplier { tier_id: "tier_gold".into(), multiplier_bps: 15_000 }],
    )
    .await;
    let c = h.verified_customer("acme.example.com").await;
    let deals = h.commissions.deal_handler();
    deals.handle(&deal_event(&h, "e1", true, 100_000)).await.unwrap();
    deals.handle(&deal_event(&h, "e1", true, 100_000)).await.unwrap();
    deals.handle(&deal_event(&h, "e2", false, 100_000)).await.unwrap();
    assert_eq!(h.amounts().await, (0, 10_000, 0), "one commission at 1x; lost deals earn nothing");

    let tiers = h.commissions.tier_handler();
    let tier_event = |id: &str, tier: &str| Event {
        id: id.into(),
        payload: Some(Payload::TierChanged(TierChanged {
            team_id: h.team.clone(),
            program_id: "prog_1".into(),
            tier_id: tier.into(),
            tier_name: "Gold".into(),
            rank: 1,
            previous_tier_id: String::new(),
        })),
        ..Default::default()
    };
    tiers.handle(&tier_event("t1", "tier_gold")).await.unwrap();
    deals.handle(&deal_event(&h, "e3", true, 100_000)).await.unwrap();
    assert_eq!(h.amounts().await.1, 25_000, "gold earns 1.5x");
    tiers.handle(&tier_event("t2", "")).await.unwrap();
    deals.handle(&deal_event(&h, "e4", true, 100_000)).await.unwrap();
    assert_eq!(h.amounts().await.1, 35_000, "back to 1x without a tier");

    let commissions = h
        .plans
        .clone()
        .list_commissions(req(
            &h.t.owner,
            pb::ListCommissionsRequest { team_id: h.team.clone(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .commissions;
    assert_eq!(commissions.len(), 3);
    assert!(commissions.iter().all(|x| x.customer_id == c.id && !x.deal_id.is_empty()));
    assert_eq!(commissions[1].multiplier_bps, 15_000);
    assert!(h.commissions.team_holds_rewards(&h.team).await.unwrap());
    assert!(!h.commissions.team_holds_rewards(&h.other_team).await.unwrap());
    // What identity asks before deleting a team, answered from the database alone.
    let rewards = tandem_commissions::TeamRewards(h.db.clone());
    assert!(rewards.holds_rewards(&h.team).await.unwrap());
    assert!(!rewards.holds_rewards(&h.other_team).await.unwrap());
    h.assert_books_balance().await;
}

/// A batch of won deals accrues each once (one already handled, a lost deal among them), in
/// one transaction; a batch with an event that fails accrues none of its events.
async fn a_batch_of_won_deals_accrues_all_or_none(db: TestDb) {
    let h = Harness::start(db).await;
    h.plan_with(1_000, 0, 10, 0, vec![]).await;
    h.verified_customer("acme.example.com").await;
    let deals = h.commissions.deal_handler();
    deals.handle(&deal_event(&h, "e1", true, 100_000)).await.unwrap();
    let batch = [
        deal_event(&h, "e1", true, 100_000),
        deal_event(&h, "e2", true, 50_000),
        deal_event(&h, "e3", false, 100_000),
        deal_event(&h, "e4", true, 20_000),
    ];
    deals.handle_batch(&batch).await.expect("takes batches").unwrap();
    assert_eq!(h.amounts().await, (0, 17_000, 0), "10% of 1 000 + 500 + 200, each once");

    // A second event about a deal that already has its commission breaks the one-commission-
    // per-deal rule, and with it the batch.
    let mut again = deal_event(&h, "e5", true, 100_000);
    if let Some(Payload::DealClosed(d)) = &mut again.payload {
        d.deal_id = "deal-e2".into();
    }
    let failed =
        deals.handle_batch(&[deal_event(&h, "e6", true, 30_000), again]).await.expect("takes batches");
    assert!(failed.is_err());
    assert_eq!(h.amounts().await.1, 17_000, "none of the failed batch");
    deals.handle(&deal_event(&h, "e6", true, 30_000)).await.unwrap();
    assert_eq!(h.amounts().await.1, 20_000);
    h.assert_books_balance().await;
}

tandem_platform::backend_tests!(
    customers_are_mapped_once_and_managed_after_verification,
    commission_is_held_released_withdrawn_whole_and_paid,
    refunds_claw_back_pending_available_and_paid_commission,
    one_off_plans_pay_once_and_the_newest_plan_applies,
    payments_are_idempotent_by_request_id,
    the_release_task_makes_held_commission_available,
    concurrent_retries_count_once_and_distinct_payments_all_count,
    bad_input_is_refused_with_the_right_codes,
    every_role_on_every_guarded_rpc,
    won_deals_accrue_once_with_the_tier_multiplier,
    a_batch_of_won_deals_accrues_all_or_none,
);
