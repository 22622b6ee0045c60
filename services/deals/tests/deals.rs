//! Deals over gRPC on SQLite and PostgreSQL: registration (idempotence, conflicts, programs,
//! bad input), staff review, expiry, the deal team, pipelines and stages, and closing.

mod common;

use common::{Harness, Role, backend_tests, reason, violations};
use prost_types::FieldMask;
use tandem_deals::Settings;
use tandem_platform::{
    ids::new_id,
    testing::TestDb,
    time::{from_timestamp, now_micros},
};
use tandem_proto::{
    common::v1::Money,
    deals::v1 as pb,
    events::v1::{DealKind, event::Payload},
};
use tonic::Code;

backend_tests!(
    a_change_answers_the_deal_as_it_now_reads,
    registration_conflicts_on_the_normalised_domain_first_wins,
    register_deal_retried_concurrently_makes_one_deal,
    concurrent_registrations_of_one_customer_have_one_winner,
    registration_needs_enrolment_when_a_program_is_named,
    bad_deal_input_is_refused_with_field_violations,
    staff_review_registrations_once,
    registrations_expire_unless_the_deal_progresses,
    each_side_manages_only_its_own_deal_team,
    pipelines_stages_and_the_default_never_move_existing_deals,
    closing_won_writes_deal_closed_with_what_tiers_and_commissions_need,
);

async fn approve(h: &Harness, deal: &str) -> pb::Deal {
    h.deal
        .clone()
        .approve_registration(h.staff.req(pb::ApproveRegistrationRequest { deal_id: deal.into() }))
        .await
        .expect("approve")
        .into_inner()
        .deal
        .unwrap()
}

async fn get(h: &Harness, who: &common::User, deal: &str) -> Result<pb::Deal, tonic::Status> {
    h.deal
        .clone()
        .get_deal(who.req(pb::GetDealRequest { deal_id: deal.into() }))
        .await
        .map(|r| r.into_inner().deal.unwrap())
}

async fn update(
    h: &Harness,
    who: &common::User,
    deal: pb::Deal,
    paths: &[&str],
) -> Result<pb::Deal, tonic::Status> {
    h.deal
        .clone()
        .update_deal(who.req(pb::UpdateDealRequest {
            deal: Some(deal),
            update_mask: Some(FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() }),
        }))
        .await
        .map(|r| r.into_inner().deal.unwrap())
}

/// Approving, updating and closing answer the deal as a read right after shows it: its deal
/// team, and its customer's active registrations (two partners registered it).
async fn a_change_answers_the_deal_as_it_now_reads(db: TestDb) {
    let h = Harness::start(db).await;
    let deal = h.register(&h.member, &h.team, "acme.com").await;
    h.register(&h.other, &h.other_team, "acme.com").await;
    let approved = approve(&h, &deal.id).await;
    assert_eq!(approved.active_registration_count, 2);
    assert_eq!(approved, get(&h, &h.member, &deal.id).await.unwrap());
    let updated = update(
        &h,
        &h.member,
        pb::Deal { id: deal.id.clone(), customer_name: "Acme Holdings".into(), ..Default::default() },
        &["customer_name"],
    )
    .await
    .unwrap();
    assert_eq!(updated.customer_name, "Acme Holdings");
    assert_eq!(updated, get(&h, &h.member, &deal.id).await.unwrap());
    let closed = h
        .deal
        .clone()
        .close_deal(
            h.member
                .req(pb::CloseDealRequest { deal_id: deal.id.clone(), outcome: pb::DealOutcome::Won.into() }),
        )
        .await
        .unwrap()
        .into_inner()
        .deal
        .unwrap();
    assert_eq!(closed.outcome(), pb::DealOutcome::Won);
    assert_eq!(closed.deal_team.len(), 1);
    assert_eq!(closed, get(&h, &h.member, &deal.id).await.unwrap());
}

async fn registration_conflicts_on_the_normalised_domain_first_wins(db: TestDb) {
    let h = Harness::start(db).await;
    let first = h.register(&h.member, &h.team, "Acme.com").await;
    assert_eq!(first.customer_domain, "acme.com");
    assert_eq!(first.registration_status(), pb::RegistrationStatus::Pending);
    assert!(first.conflicting_deal_id.is_empty());
    assert_eq!(
        first.deal_team.iter().map(|m| (m.user_id.clone(), m.side())).collect::<Vec<_>>(),
        [(h.member.id.clone(), pb::DealTeamSide::Partner)]
    );
    // Another partner, the same customer written otherwise: a conflict with the first.
    let second = h.register(&h.other, &h.other_team, "https://www.ACME.com:443/pricing").await;
    assert_eq!(
        (second.customer_domain.as_str(), second.conflicting_deal_id.as_str()),
        ("acme.com", first.id.as_str())
    );
    assert_eq!(second.active_registration_count, 2);
    // The same team again is no conflict; a third partner conflicts with the first, not the second.
    let again = h.register(&h.owner, &h.team, "acme.com.").await;
    assert!(again.conflicting_deal_id.is_empty());
    let third_team = new_id("team");
    let third = h.partner(&third_team, Role::Owner);
    let late = h.register(&third, &third_team, "acme.com").await;
    assert_eq!(late.conflicting_deal_id, first.id);
    // Another customer: nothing in common.
    let other = h.register(&h.member, &h.team, "globex.example").await;
    assert_eq!((other.conflicting_deal_id.as_str(), other.active_registration_count), ("", 1));

    // Partners list their team's deals; the count filter keeps the contested ones.
    let list = |who: &common::User, team: &str, min: i32| {
        let mut deals = h.deal.clone();
        let r = who.req(pb::ListDealsRequest {
            team_id: team.into(),
            min_active_registrations: min,
            ..Default::default()
        });
        async move { deals.list_deals(r).await.map(|r| r.into_inner()) }
    };
    let mine = list(&h.finance, &h.team, 0).await.unwrap();
    assert_eq!(mine.deals.len(), 3);
    let contested = list(&h.member, &h.team, 2).await.unwrap();
    assert_eq!(
        contested.deals.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        [again.id.clone(), first.id.clone()]
    );
    assert!(contested.deals.iter().all(|d| d.active_registration_count == 4));
    assert_eq!(list(&h.other, &h.team, 0).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(violations(&list(&h.member, "", 0).await.unwrap_err()), ["team_id"]);
    let all = list(&h.staff, "", 0).await.unwrap();
    assert_eq!(all.deals.len(), 5);
    // Paging walks every deal once.
    let page = h
        .deal
        .clone()
        .list_deals(h.staff.req(pb::ListDealsRequest { page_size: 3, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    let rest = h
        .deal
        .clone()
        .list_deals(h.staff.req(pb::ListDealsRequest {
            page_size: 3,
            page_token: page.next_page_token,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((page.deals.len(), rest.deals.len(), rest.next_page_token.as_str()), (3, 2, ""));
    // Others never see a team's deal.
    for who in [&h.other, &h.outsider] {
        assert_eq!(get(&h, who, &first.id).await.unwrap_err().code(), Code::NotFound);
    }
}

async fn register_deal_retried_concurrently_makes_one_deal(db: TestDb) {
    let h = Harness::start(db).await;
    let request_id = new_id("req");
    let calls = (0..10).map(|_| {
        let mut deals = h.deal.clone();
        let r = h.member.req(h.register_request(&h.team, "acme.com", &request_id));
        tokio::spawn(async move { deals.register_deal(r).await.map(|r| r.into_inner().deal.unwrap()) })
    });
    let results: Vec<pb::Deal> =
        futures::future::join_all(calls).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert!(results.iter().all(|d| d.id == results[0].id), "one deal: {results:?}");
    let all =
        h.deal.clone().list_deals(h.staff.req(pb::ListDealsRequest::default())).await.unwrap().into_inner();
    assert_eq!(all.deals.len(), 1);
    // The same id for another request is refused.
    let mut different = h.register_request(&h.team, "globex.example", &request_id);
    different.customer_name = "Globex".into();
    let err = h.deal.clone().register_deal(h.member.req(different)).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::AlreadyExists, "REQUEST_ID_REUSED"));
}

async fn concurrent_registrations_of_one_customer_have_one_winner(db: TestDb) {
    let h = Harness::start(db).await;
    let partners: Vec<(String, common::User)> = (0..8)
        .map(|_| {
            let team = new_id("team");
            let owner = h.partner(&team, Role::Owner);
            (team, owner)
        })
        .collect();
    let calls = partners.iter().map(|(team, owner)| {
        let mut deals = h.deal.clone();
        let r = owner.req(h.register_request(team, "acme.com", &new_id("req")));
        tokio::spawn(async move { deals.register_deal(r).await.map(|r| r.into_inner().deal.unwrap()) })
    });
    let deals: Vec<pb::Deal> =
        futures::future::join_all(calls).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    let winners: Vec<&pb::Deal> = deals.iter().filter(|d| d.conflicting_deal_id.is_empty()).collect();
    assert_eq!(winners.len(), 1, "{deals:?}");
    assert!(deals.iter().filter(|d| d.id != winners[0].id).all(|d| d.conflicting_deal_id == winners[0].id));
}

async fn registration_needs_enrolment_when_a_program_is_named(db: TestDb) {
    let h = Harness::start(db).await;
    let program = new_id("prog");
    let mut r = h.register_request(&h.team, "acme.com", &new_id("req"));
    r.program_id = program.clone();
    let err = h.deal.clone().register_deal(h.member.req(r.clone())).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "NOT_ENROLLED"));
    h.enrol(&h.team, &program);
    r.request_id = new_id("req");
    let deal = h.deal.clone().register_deal(h.member.req(r)).await.unwrap().into_inner().deal.unwrap();
    assert_eq!(deal.program_id, program);
}

async fn bad_deal_input_is_refused_with_field_violations(db: TestDb) {
    let h = Harness::start(db).await;
    let bad = pb::RegisterDealRequest {
        team_id: h.team.clone(),
        program_id: "nope".into(),
        customer_name: " ".into(),
        customer_domain: "not a domain".into(),
        amount: Some(Money { currency_code: "XYZ".into(), amount_minor: -5 }),
        products: vec![String::new()],
        expected_close_date: None,
        client_market: "France".into(),
        deal_type: 42,
        request_id: String::new(),
        will_manage: false,
    };
    let err = h.deal.clone().register_deal(h.member.req(bad)).await.unwrap_err();
    assert_eq!(
        violations(&err),
        [
            "program_id",
            "customer_name",
            "customer_domain",
            "amount.currency_code",
            "amount.amount_minor",
            "products[0]",
            "client_market",
            "deal_type",
            "request_id",
        ]
    );
    let mut no_amount = h.register_request(&h.team, "acme.com", "r1");
    no_amount.amount = None;
    assert_eq!(
        violations(&h.deal.clone().register_deal(h.member.req(no_amount)).await.unwrap_err()),
        ["amount"]
    );
    let deal = h.register(&h.member, &h.team, "acme.com").await;
    let err = update(
        &h,
        &h.member,
        pb::Deal {
            id: deal.id.clone(),
            amount: Some(Money { currency_code: "EUR".into(), amount_minor: -1 }),
            ..Default::default()
        },
        &["amount"],
    )
    .await
    .unwrap_err();
    assert_eq!(violations(&err), ["deal.amount.amount_minor"]);
    let err = update(&h, &h.member, pb::Deal { id: deal.id.clone(), ..Default::default() }, &["team_id"])
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["update_mask"]);
    let err = h
        .pipelines
        .clone()
        .create_pipeline(h.staff.req(pb::CreatePipelineRequest {
            name: String::new(),
            stages: vec![pb::Stage { name: "A".into() }, pb::Stage { name: "a".into() }],
        }))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["name", "stages[1].name"]);
    let err = h
        .deal
        .clone()
        .reject_registration(
            h.staff.req(pb::RejectRegistrationRequest { deal_id: deal.id.clone(), reason: String::new() }),
        )
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["reason"]);
}

async fn staff_review_registrations_once(db: TestDb) {
    let h = Harness::start(db).await;
    let a = h.register(&h.member, &h.team, "acme.com").await;
    let b = h.register(&h.member, &h.team, "globex.example").await;
    let err = h
        .deal
        .clone()
        .approve_registration(h.owner.req(pb::ApproveRegistrationRequest { deal_id: a.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(approve(&h, &a.id).await.registration_status(), pb::RegistrationStatus::Approved);
    let err = h
        .deal
        .clone()
        .approve_registration(h.staff.req(pb::ApproveRegistrationRequest { deal_id: a.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "REGISTRATION_NOT_PENDING");
    let rejected = h
        .deal
        .clone()
        .reject_registration(h.staff.req(pb::RejectRegistrationRequest {
            deal_id: b.id.clone(),
            reason: "already a customer".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .deal
        .unwrap();
    assert_eq!(
        (rejected.registration_status(), rejected.rejection_reason.as_str()),
        (pb::RegistrationStatus::Rejected, "already a customer")
    );
    // A rejected registration no longer holds the customer: the next partner has no conflict.
    let next = h.register(&h.other, &h.other_team, "globex.example").await;
    assert!(next.conflicting_deal_id.is_empty());
    // The deal team heard of both reviews.
    let kinds: Vec<String> = h
        .events()
        .await
        .into_iter()
        .filter_map(|e| match e.payload {
            Some(Payload::NotificationRequested(n)) if n.user_ids == [h.member.id.clone()] => Some(n.kind),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["deal.registration_approved", "deal.registration_rejected"]);
}

async fn registrations_expire_unless_the_deal_progresses(db: TestDb) {
    let h = Harness::start_with(db, Settings { registration_expiry_days: 30 }).await;
    let pipeline = h
        .pipelines
        .clone()
        .create_pipeline(h.staff.req(pb::CreatePipelineRequest {
            name: "Shared".into(),
            stages: vec![pb::Stage { name: "Qualify".into() }, pb::Stage { name: "Propose".into() }],
        }))
        .await
        .unwrap()
        .into_inner()
        .pipeline
        .unwrap();
    h.pipelines
        .clone()
        .set_default_shared_deal_pipeline(h.owner.req(pb::SetDefaultSharedDealPipelineRequest {
            team_id: h.team.clone(),
            pipeline_id: pipeline.id.clone(),
        }))
        .await
        .unwrap();
    let idle = h.register(&h.member, &h.team, "acme.com").await;
    let moving = h.register(&h.member, &h.team, "globex.example").await;
    let closed = h.register(&h.member, &h.team, "initech.example").await;
    approve(&h, &closed.id).await;
    h.deal
        .clone()
        .close_deal(
            h.member.req(pb::CloseDealRequest {
                deal_id: closed.id.clone(),
                outcome: pb::DealOutcome::Lost.into(),
            }),
        )
        .await
        .unwrap();
    let expire_at = |d: &pb::Deal| d.registration_expire_time.as_ref().map(|t| (t.seconds, t.nanos)).unwrap();
    assert_eq!(expire_at(&idle).0 - idle.create_time.as_ref().unwrap().seconds, 30 * 86_400);
    let day = 86_400_000_000;
    assert_eq!(h.deals.expire_registrations(now_micros() + 20 * day).await.unwrap(), 0);
    // The deal progresses: its clock starts again from now.
    let moved = update(
        &h,
        &h.member,
        pb::Deal { id: moving.id.clone(), stage: "Propose".into(), ..Default::default() },
        &["stage"],
    )
    .await
    .unwrap();
    assert!(expire_at(&moved) > expire_at(&moving));
    let micros = |d: &pb::Deal| from_timestamp(d.registration_expire_time.as_ref().unwrap()).unwrap();
    // Just before the moved deal's new time only the idle one expires, once, and its deal
    // team is told.
    let cut = micros(&moved) - 1;
    assert!(micros(&idle) <= cut);
    assert_eq!(h.deals.expire_registrations(cut).await.unwrap(), 1);
    assert_eq!(h.deals.expire_registrations(cut).await.unwrap(), 0);
    assert_eq!(
        get(&h, &h.member, &idle.id).await.unwrap().registration_status(),
        pb::RegistrationStatus::Expired
    );
    assert_eq!(
        get(&h, &h.member, &moving.id).await.unwrap().registration_status(),
        pb::RegistrationStatus::Pending
    );
    assert_eq!(
        get(&h, &h.member, &closed.id).await.unwrap().registration_status(),
        pb::RegistrationStatus::Approved
    );
    let expired: Vec<_> = h
        .events()
        .await
        .into_iter()
        .filter_map(|e| match e.payload {
            Some(Payload::NotificationRequested(n)) if n.kind == "deal.registration_expired" => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (expired[0].subject_id.as_str(), expired[0].user_ids.clone()),
        (idle.id.as_str(), vec![h.member.id.clone()])
    );
    // An expired registration no longer conflicts.
    assert!(h.register(&h.other, &h.other_team, "acme.com").await.conflicting_deal_id.is_empty());
}

async fn each_side_manages_only_its_own_deal_team(db: TestDb) {
    let h = Harness::start(db).await;
    let deal = h.register(&h.member, &h.team, "acme.com").await;
    let add = |who: &common::User, user: &str| {
        let mut deals = h.deal.clone();
        let r = who.req(pb::AddDealTeamMemberRequest { deal_id: deal.id.clone(), user_id: user.into() });
        async move { deals.add_deal_team_member(r).await.map(|r| r.into_inner().deal.unwrap()) }
    };
    let remove = |who: &common::User, user: &str| {
        let mut deals = h.deal.clone();
        let r = who.req(pb::RemoveDealTeamMemberRequest { deal_id: deal.id.clone(), user_id: user.into() });
        async move { deals.remove_deal_team_member(r).await.map(|r| r.into_inner().deal.unwrap()) }
    };
    let rep = h.staff_user();
    // Partners add their team's users; staff add staff; never the other side's.
    add(&h.member, &h.admin.id).await.unwrap();
    assert_eq!(reason(&add(&h.member, &rep.id).await.unwrap_err()), "DEAL_TEAM_OTHER_SIDE");
    assert_eq!(reason(&add(&h.member, &h.other.id).await.unwrap_err()), "DEAL_TEAM_OTHER_SIDE");
    assert_eq!(reason(&add(&h.staff, &h.owner.id).await.unwrap_err()), "DEAL_TEAM_OTHER_SIDE");
    let full = add(&h.staff, &rep.id).await.unwrap();
    let sides: Vec<_> = full.deal_team.iter().map(|m| (m.user_id.clone(), m.side())).collect();
    assert_eq!(
        sides,
        [
            (h.member.id.clone(), pb::DealTeamSide::Partner),
            (h.admin.id.clone(), pb::DealTeamSide::Partner),
            (rep.id.clone(), pb::DealTeamSide::Vendor),
        ]
    );
    assert_eq!(add(&h.finance, &h.owner.id).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(add(&h.other, &h.other.id).await.unwrap_err().code(), Code::NotFound);
    let inactive = h.partner(&h.team, Role::Member);
    h.deactivate(&inactive.id);
    assert_eq!(reason(&add(&h.owner, &inactive.id).await.unwrap_err()), "USER_INACTIVE");
    assert_eq!(reason(&remove(&h.member, &rep.id).await.unwrap_err()), "DEAL_TEAM_OTHER_SIDE");
    assert_eq!(reason(&remove(&h.staff, &h.admin.id).await.unwrap_err()), "DEAL_TEAM_OTHER_SIDE");
    let after = remove(&h.owner, &h.admin.id).await.unwrap();
    assert_eq!(after.deal_team.len(), 2);
    assert_eq!(remove(&h.owner, &h.admin.id).await.unwrap_err().code(), Code::NotFound);
    // Every deal-team member but the actor hears of activity.
    update(
        &h,
        &h.member,
        pb::Deal {
            id: deal.id.clone(),
            products: vec!["Sales Hub".into(), "Service Hub".into()],
            ..Default::default()
        },
        &["products"],
    )
    .await
    .unwrap();
    let last = h.events().await.pop().unwrap();
    let Some(Payload::NotificationRequested(n)) = last.payload else { panic!("{last:?}") };
    assert_eq!((n.kind.as_str(), n.user_ids), ("deal.updated", vec![rep.id.clone()]));
    assert_eq!(get(&h, &h.finance, &deal.id).await.unwrap().products, ["Sales Hub", "Service Hub"]);
}

async fn pipelines_stages_and_the_default_never_move_existing_deals(db: TestDb) {
    let h = Harness::start(db).await;
    let create = |name: &str, stages: &[&str]| {
        let mut p = h.pipelines.clone();
        let r = h.staff.req(pb::CreatePipelineRequest {
            name: name.into(),
            stages: stages.iter().map(|s| pb::Stage { name: s.to_string() }).collect(),
        });
        async move { p.create_pipeline(r).await.map(|r| r.into_inner().pipeline.unwrap()) }
    };
    let first = create("Referred", &["New", "Qualified", "Won"]).await.unwrap();
    let second = create("Co-sell", &["Discovery", "Proposal"]).await.unwrap();
    let err = h
        .pipelines
        .clone()
        .create_pipeline(h.owner.req(pb::CreatePipelineRequest {
            name: "Mine".into(),
            stages: vec![pb::Stage { name: "A".into() }],
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let listed = h
        .pipelines
        .clone()
        .list_pipelines(h.member.req(pb::ListPipelinesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.pipelines.len(), 2);
    assert_eq!(listed.pipelines[0].stages.len(), 3);

    let set = |who: &common::User, pipeline: &str| {
        let mut p = h.pipelines.clone();
        let r = who.req(pb::SetDefaultSharedDealPipelineRequest {
            team_id: h.team.clone(),
            pipeline_id: pipeline.into(),
        });
        async move { p.set_default_shared_deal_pipeline(r).await }
    };
    let before = h.register(&h.member, &h.team, "acme.com").await;
    assert_eq!((before.pipeline_id.as_str(), before.stage.as_str()), ("", ""));
    for who in [&h.member, &h.finance, &h.staff] {
        assert_eq!(set(who, &first.id).await.unwrap_err().code(), Code::PermissionDenied);
    }
    assert_eq!(set(&h.other, &first.id).await.unwrap_err().code(), Code::NotFound);
    set(&h.admin, &first.id).await.unwrap();
    let in_first = h.register(&h.member, &h.team, "globex.example").await;
    assert_eq!((in_first.pipeline_id.as_str(), in_first.stage.as_str()), (first.id.as_str(), "New"));
    set(&h.owner, &second.id).await.unwrap();
    // Existing deals stay where they are.
    assert_eq!(get(&h, &h.member, &in_first.id).await.unwrap().pipeline_id, first.id);
    assert_eq!(get(&h, &h.member, &before.id).await.unwrap().pipeline_id, "");
    assert_eq!(h.register(&h.member, &h.team, "initech.example").await.pipeline_id, second.id);
    // Stages move within the deal's pipeline only.
    let moved = update(
        &h,
        &h.member,
        pb::Deal { id: in_first.id.clone(), stage: "Qualified".into(), ..Default::default() },
        &["stage"],
    )
    .await
    .unwrap();
    assert_eq!(moved.stage, "Qualified");
    let err = update(
        &h,
        &h.member,
        pb::Deal { id: in_first.id.clone(), stage: "Proposal".into(), ..Default::default() },
        &["stage"],
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&err), "UNKNOWN_STAGE");
    let switched = update(
        &h,
        &h.member,
        pb::Deal { id: in_first.id.clone(), pipeline_id: second.id.clone(), ..Default::default() },
        &["pipeline_id"],
    )
    .await
    .unwrap();
    assert_eq!((switched.pipeline_id.as_str(), switched.stage.as_str()), (second.id.as_str(), "Discovery"));
    assert_eq!(
        update(
            &h,
            &h.finance,
            pb::Deal { id: in_first.id.clone(), stage: "Proposal".into(), ..Default::default() },
            &["stage"]
        )
        .await
        .unwrap_err()
        .code(),
        Code::PermissionDenied
    );
}

async fn closing_won_writes_deal_closed_with_what_tiers_and_commissions_need(db: TestDb) {
    let h = Harness::start(db).await;
    let program = new_id("prog");
    h.enrol(&h.team, &program);
    let mut r = h.register_request(&h.team, "https://www.acme.com", &new_id("req"));
    r.program_id = program.clone();
    r.amount = Some(Money { currency_code: "EUR".into(), amount_minor: 250_000 });
    r.client_market = "br".into();
    r.deal_type = pb::DealType::Upsell.into();
    r.will_manage = true;
    let deal = h.deal.clone().register_deal(h.member.req(r)).await.unwrap().into_inner().deal.unwrap();
    h.deal
        .clone()
        .add_deal_team_member(
            h.member
                .req(pb::AddDealTeamMemberRequest { deal_id: deal.id.clone(), user_id: h.admin.id.clone() }),
        )
        .await
        .unwrap();
    let close = |who: &common::User, outcome: pb::DealOutcome| {
        let mut deals = h.deal.clone();
        let r = who.req(pb::CloseDealRequest { deal_id: deal.id.clone(), outcome: outcome.into() });
        async move { deals.close_deal(r).await.map(|r| r.into_inner().deal.unwrap()) }
    };
    assert_eq!(
        reason(&close(&h.member, pb::DealOutcome::Won).await.unwrap_err()),
        "REGISTRATION_NOT_APPROVED"
    );
    approve(&h, &deal.id).await;
    assert_eq!(close(&h.finance, pb::DealOutcome::Won).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(close(&h.other, pb::DealOutcome::Won).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(violations(&close(&h.member, pb::DealOutcome::Unspecified).await.unwrap_err()), ["outcome"]);
    let before = h.events().await.len();
    let won = close(&h.member, pb::DealOutcome::Won).await.unwrap();
    assert_eq!(won.outcome(), pb::DealOutcome::Won);
    assert!(won.close_time.is_some());
    let events = h.events().await;
    let closed: Vec<_> = events[before..]
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::DealClosed(d)) => Some((e.clone(), d.clone())),
            _ => None,
        })
        .collect();
    let [(event, closed)] = closed.as_slice() else { panic!("one DealClosed: {events:?}") };
    assert_eq!(event.aggregate_id, deal.id);
    assert_eq!(
        (closed.deal_id.as_str(), closed.team_id.as_str(), closed.program_id.as_str()),
        (deal.id.as_str(), h.team.as_str(), program.as_str())
    );
    assert_eq!((closed.client_id.as_str(), closed.client_domain.as_str()), ("acme.com", "acme.com"));
    assert_eq!(closed.amount, Some(Money { currency_code: "EUR".into(), amount_minor: 250_000 }));
    assert_eq!(
        (closed.client_market.as_str(), closed.deal_type(), closed.won, closed.will_manage),
        ("BR", DealKind::Upsell, true, true)
    );
    assert_eq!(closed.close_time, won.close_time);
    let told: Vec<_> = events[before..]
        .iter()
        .filter_map(|e| match &e.payload {
            Some(Payload::NotificationRequested(n)) => Some((n.kind.clone(), n.user_ids.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(told, [("deal.won".to_owned(), vec![h.admin.id.clone()])]);
    // Closed is closed.
    assert_eq!(reason(&close(&h.member, pb::DealOutcome::Lost).await.unwrap_err()), "DEAL_CLOSED");
    let err = update(
        &h,
        &h.member,
        pb::Deal { id: deal.id.clone(), products: vec!["x".into()], ..Default::default() },
        &["products"],
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&err), "DEAL_CLOSED");
}
