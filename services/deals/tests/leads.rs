//! Leads over gRPC on SQLite and PostgreSQL: creation, visibility, updates, manual assignment,
//! rules, round-robin under concurrency, queue claims, declines and bulk reassignment.

mod common;

use common::{Harness, backend_tests, reason, violations};
use futures::StreamExt;
use tandem_platform::testing::TestDb;
use tandem_proto::{
    deals::v1::{
        self as pb, assign_lead_request, bulk_reassign_leads_request, create_assignment_rule_request,
    },
    events::v1::event::Payload,
};
use tonic::Code;

backend_tests!(
    leads_are_created_seen_by_their_team_and_final_states_stay,
    manual_assignment_needs_an_active_partner_and_can_notify,
    rules_assign_new_leads_first_match_by_priority,
    round_robin_is_exact_under_concurrent_creation,
    two_members_claiming_at_once_one_wins,
    a_declined_lead_never_goes_back_to_that_team,
    bulk_reassignment_streams_progress_and_retries_without_double_work,
    bad_lead_input_is_refused_with_field_violations,
);

async fn rule(
    h: &Harness,
    priority: i32,
    criteria: Vec<pb::Criterion>,
    target: create_assignment_rule_request::Target,
) -> pb::AssignmentRule {
    h.rules
        .clone()
        .create_assignment_rule(h.staff.req(pb::CreateAssignmentRuleRequest {
            priority,
            criteria,
            target: Some(target),
            team_id: String::new(),
        }))
        .await
        .expect("create rule")
        .into_inner()
        .assignment_rule
        .unwrap()
}

fn criterion(field: &str, op: pb::CriterionOperator, value: &str) -> pb::Criterion {
    pb::Criterion { field: field.into(), operator: op.into(), value: value.into() }
}

async fn assign_to(h: &Harness, lead: &str, user: &str, notify: bool) -> Result<pb::Lead, tonic::Status> {
    h.leads
        .clone()
        .assign_lead(h.staff.req(pb::AssignLeadRequest {
            lead_id: lead.into(),
            target: Some(assign_lead_request::Target::UserId(user.into())),
            team_id: String::new(),
            notify,
        }))
        .await
        .map(|r| r.into_inner().lead.unwrap())
}

async fn leads_are_created_seen_by_their_team_and_final_states_stay(db: TestDb) {
    let h = Harness::start(db).await;
    let lead = h.create_lead("FR", "Retail", 40).await;
    assert_eq!(lead.status(), pb::LeadStatus::New);
    assert!(lead.owner_user_id.is_empty());
    // Nobody's lead yet: partners do not see it.
    let err = h
        .leads
        .clone()
        .get_lead(h.member.req(pb::GetLeadRequest { lead_id: lead.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let lead = assign_to(&h, &lead.id, &h.member.id, false).await.unwrap();
    assert_eq!((lead.status(), lead.team_id.as_str()), (pb::LeadStatus::Assigned, h.team.as_str()));
    for who in [&h.owner, &h.admin, &h.member, &h.finance, &h.staff] {
        let got = h.leads.clone().get_lead(who.req(pb::GetLeadRequest { lead_id: lead.id.clone() })).await;
        assert!(got.is_ok(), "{who:?} sees the team's lead");
    }
    for who in [&h.other, &h.outsider] {
        let err = h
            .leads
            .clone()
            .get_lead(who.req(pb::GetLeadRequest { lead_id: lead.id.clone() }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }

    // Listing: partners name their team; pages walk every lead once.
    for _ in 0..4 {
        let l = h.create_lead("DE", "Food", 1).await;
        assign_to(&h, &l.id, &h.admin.id, false).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .leads
            .clone()
            .list_leads(h.member.req(pb::ListLeadsRequest {
                team_id: h.team.clone(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.leads.into_iter().map(|l| l.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen.iter().collect::<std::collections::HashSet<_>>().len(), 5);
    let owned = h
        .leads
        .clone()
        .list_leads(
            h.staff.req(pb::ListLeadsRequest { owner_user_id: h.member.id.clone(), ..Default::default() }),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(owned.leads.len(), 1);
    let err = h
        .leads
        .clone()
        .list_leads(h.other.req(pb::ListLeadsRequest { team_id: h.team.clone(), ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // The owner works it and wins it; then it is final.
    let update = |status: pb::LeadStatus, who: &common::User| {
        let mut leads = h.leads.clone();
        let req = who.req(pb::UpdateLeadRequest {
            lead: Some(pb::Lead { id: lead.id.clone(), status: status.into(), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
        });
        async move { leads.update_lead(req).await.map(|r| r.into_inner().lead.unwrap()) }
    };
    let err = update(pb::LeadStatus::Working, &h.finance).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "finance does not work leads");
    assert_eq!(update(pb::LeadStatus::Working, &h.member).await.unwrap().status(), pb::LeadStatus::Working);
    assert_eq!(update(pb::LeadStatus::Won, &h.member).await.unwrap().status(), pb::LeadStatus::Won);
    let err = update(pb::LeadStatus::Working, &h.member).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "LEAD_FINAL"));
    let err = assign_to(&h, &lead.id, &h.admin.id, false).await.unwrap_err();
    assert_eq!(reason(&err), "LEAD_FINAL");
}

async fn manual_assignment_needs_an_active_partner_and_can_notify(db: TestDb) {
    let h = Harness::start(db).await;
    let lead = h.create_lead("FR", "Retail", 40).await;
    let inactive = h.partner(&h.team, common::Role::Member);
    h.deactivate(&inactive.id);
    let err = assign_to(&h, &lead.id, &inactive.id, true).await.unwrap_err();
    assert_eq!((err.code(), reason(&err).as_str()), (Code::FailedPrecondition, "USER_INACTIVE"));
    let err = assign_to(&h, &lead.id, &h.staff_user().id, true).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "staff do not own partner leads");
    // Two teams: the team must be named.
    let both = h.user(&[&h.team, &h.other_team]);
    let err = assign_to(&h, &lead.id, &both.id, false).await.unwrap_err();
    assert_eq!(reason(&err), "USER_NOT_IN_TEAM");
    // Only staff assign.
    let err = h
        .leads
        .clone()
        .assign_lead(h.owner.req(pb::AssignLeadRequest {
            lead_id: lead.id.clone(),
            target: Some(assign_lead_request::Target::UserId(h.member.id.clone())),
            team_id: String::new(),
            notify: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    assert!(h.events().await.is_empty());
    let assigned = assign_to(&h, &lead.id, &h.member.id, true).await.unwrap();
    assert_eq!(assigned.owner_user_id, h.member.id);
    let events = h.events().await;
    let [event] = events.as_slice() else { panic!("one notification: {events:?}") };
    let Some(Payload::NotificationRequested(n)) = &event.payload else { panic!("{event:?}") };
    assert_eq!((n.user_ids.clone(), n.subject_id.as_str()), (vec![h.member.id.clone()], lead.id.as_str()));
    // Without `notify` nobody is told.
    assign_to(&h, &lead.id, &h.admin.id, false).await.unwrap();
    assert_eq!(h.events().await.len(), 1);
}

async fn rules_assign_new_leads_first_match_by_priority(db: TestDb) {
    use create_assignment_rule_request::Target;
    let h = Harness::start(db).await;
    let queue = h.create_queue(&[&h.member]).await;
    rule(
        &h,
        20,
        vec![criterion("country", pb::CriterionOperator::In, "FR,BE")],
        Target::UserId(h.admin.id.clone()),
    )
    .await;
    rule(
        &h,
        10,
        vec![
            criterion("country", pb::CriterionOperator::Equals, "fr"),
            criterion("employee_count", pb::CriterionOperator::GreaterThan, "1000"),
        ],
        Target::QueueId(queue.id.clone()),
    )
    .await;
    rule(
        &h,
        30,
        vec![criterion("industry", pb::CriterionOperator::Equals, "Retail")],
        Target::UserId(h.other.id.clone()),
    )
    .await;

    let big = h.create_lead("FR", "Retail", 5000).await;
    assert_eq!((big.queue_id.as_str(), big.owner_user_id.as_str()), (queue.id.as_str(), ""));
    let small = h.create_lead("BE", "Retail", 10).await;
    assert_eq!(
        (small.owner_user_id.as_str(), small.team_id.as_str()),
        (h.admin.id.as_str(), h.team.as_str())
    );
    let retail = h.create_lead("DE", "Retail", 10).await;
    assert_eq!(retail.team_id, h.other_team);
    let none = h.create_lead("DE", "Food", 10).await;
    assert_eq!((none.status(), none.owner_user_id.as_str()), (pb::LeadStatus::New, ""));
    // An inactive user's rule passes to the next.
    h.deactivate(&h.admin.id);
    let passed = h.create_lead("BE", "Retail", 10).await;
    assert_eq!(passed.team_id, h.other_team);

    let listed = h
        .rules
        .clone()
        .list_assignment_rules(
            h.staff.req(pb::ListAssignmentRulesRequest { page_size: 2, page_token: String::new() }),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.assignment_rules.iter().map(|r| r.priority).collect::<Vec<_>>(), [10, 20]);
    assert_eq!(listed.assignment_rules[0].criteria.len(), 2);
    let rest = h
        .rules
        .clone()
        .list_assignment_rules(
            h.staff.req(pb::ListAssignmentRulesRequest { page_size: 2, page_token: listed.next_page_token }),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.assignment_rules.iter().map(|r| r.priority).collect::<Vec<_>>(), [30]);

    // ApplyAssignmentRules places leads that have no owner, after a new rule.
    let catch_all = rule(&h, 40, vec![], Target::UserId(h.owner.id.clone())).await;
    let applied = h
        .rules
        .clone()
        .apply_assignment_rules(
            h.staff
                .req(pb::ApplyAssignmentRulesRequest { lead_ids: vec![none.id.clone(), small.id.clone()] }),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(applied.leads[0].owner_user_id, h.owner.id);
    assert_eq!(applied.leads[1].owner_user_id, h.admin.id, "owned leads are left as they were");
    h.rules
        .clone()
        .delete_assignment_rule(
            h.staff.req(pb::DeleteAssignmentRuleRequest { rule_id: catch_all.id.clone() }),
        )
        .await
        .unwrap();
    let err = h
        .rules
        .clone()
        .delete_assignment_rule(h.staff.req(pb::DeleteAssignmentRuleRequest { rule_id: catch_all.id }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

async fn round_robin_is_exact_under_concurrent_creation(db: TestDb) {
    let h = Harness::start(db).await;
    let a = h.partner(&h.team, common::Role::Member);
    let b = h.partner(&h.team, common::Role::Member);
    let c = h.partner(&h.other_team, common::Role::Member);
    let queue = h.create_queue(&[&a, &b, &c]).await;
    rule(&h, 1, vec![], create_assignment_rule_request::Target::RoundRobinQueueId(queue.id.clone())).await;
    let creates = (0..30).map(|_| {
        let leads = h.leads.clone();
        let req = h.staff.req(pb::CreateLeadRequest { company_name: "Acme".into(), ..Default::default() });
        tokio::spawn(
            async move { leads.clone().create_lead(req).await.map(|r| r.into_inner().lead.unwrap()) },
        )
    });
    let leads: Vec<pb::Lead> =
        futures::future::join_all(creates).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    let count = |u: &common::User| leads.iter().filter(|l| l.owner_user_id == u.id).count();
    assert_eq!((count(&a), count(&b), count(&c)), (10, 10, 10));
    assert!(leads.iter().all(|l| l.queue_id == queue.id && l.status() == pb::LeadStatus::Assigned));
    // A deactivated member is skipped; the others keep taking turns.
    h.deactivate(&c.id);
    let mut owners = Vec::new();
    for _ in 0..4 {
        owners.push(h.create_lead("FR", "Retail", 1).await.owner_user_id);
    }
    let to = |u: &common::User| owners.iter().filter(|o| **o == u.id).count();
    assert_eq!((to(&a), to(&b), to(&c)), (2, 2, 0));
}

async fn two_members_claiming_at_once_one_wins(db: TestDb) {
    let h = Harness::start(db).await;
    let a = h.partner(&h.team, common::Role::Member);
    let b = h.partner(&h.other_team, common::Role::Member);
    let queue = h.create_queue(&[&a, &b]).await;
    for _ in 0..5 {
        let lead = h.create_lead("FR", "Retail", 1).await;
        h.leads
            .clone()
            .assign_lead(h.staff.req(pb::AssignLeadRequest {
                lead_id: lead.id.clone(),
                target: Some(assign_lead_request::Target::QueueId(queue.id.clone())),
                team_id: String::new(),
                notify: false,
            }))
            .await
            .unwrap();
        // Members see the waiting lead; outsiders do not.
        let waiting = h
            .leads
            .clone()
            .list_leads(a.req(pb::ListLeadsRequest { queue_id: queue.id.clone(), ..Default::default() }))
            .await
            .unwrap()
            .into_inner();
        assert!(waiting.leads.iter().any(|l| l.id == lead.id));
        let err = h
            .leads
            .clone()
            .claim_lead(h.outsider.req(pb::ClaimLeadRequest { lead_id: lead.id.clone() }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);

        let claim = |u: &common::User| {
            let mut leads = h.leads.clone();
            let r = u.req(pb::ClaimLeadRequest { lead_id: lead.id.clone() });
            tokio::spawn(async move { leads.claim_lead(r).await.map(|r| r.into_inner().lead.unwrap()) })
        };
        let (x, y) = tokio::join!(claim(&a), claim(&b));
        let results = [x.unwrap(), y.unwrap()];
        let winners: Vec<&pb::Lead> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert_eq!(
            (loser.code(), reason(loser).as_str()),
            (Code::FailedPrecondition, "LEAD_ALREADY_CLAIMED")
        );
        let stored = h
            .leads
            .clone()
            .get_lead(h.staff.req(pb::GetLeadRequest { lead_id: lead.id.clone() }))
            .await
            .unwrap()
            .into_inner()
            .lead
            .unwrap();
        assert_eq!(stored.owner_user_id, winners[0].owner_user_id);
    }
}

async fn a_declined_lead_never_goes_back_to_that_team(db: TestDb) {
    let h = Harness::start(db).await;
    let third_team = tandem_platform::ids::new_id("team");
    let third = h.partner(&third_team, common::Role::Owner);
    let queue = h.create_queue(&[&h.member, &h.other, &third]).await;
    rule(&h, 1, vec![], create_assignment_rule_request::Target::RoundRobinQueueId(queue.id.clone())).await;
    let lead = h.create_lead("FR", "Retail", 1).await;
    assert_eq!(lead.owner_user_id, h.member.id);
    let decline = |u: &common::User, id: &str| {
        let mut leads = h.leads.clone();
        let r = u.req(pb::DeclineLeadRequest { lead_id: id.into(), reason: "not our market".into() });
        async move { leads.decline_lead(r).await.map(|r| r.into_inner().lead.unwrap()) }
    };
    let err = decline(&h.finance, &lead.id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = decline(&h.other, &lead.id).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let after = decline(&h.member, &lead.id).await.unwrap();
    assert_eq!(after.declined_team_ids, vec![h.team.clone()]);
    assert!(
        after.team_id != h.team && !after.owner_user_id.is_empty(),
        "the rules gave it to another team: {after:?}"
    );
    let err = assign_to(&h, &lead.id, &h.admin.id, false).await.unwrap_err();
    assert_eq!(reason(&err), "LEAD_DECLINED_BY_TEAM");
    // Declined by every team of the queue: nobody gets it.
    let owner = if after.team_id == h.other_team { &h.other } else { &third };
    let after = decline(owner, &lead.id).await.unwrap();
    let last = if after.team_id == h.other_team { &h.other } else { &third };
    let after = decline(last, &lead.id).await.unwrap();
    assert_eq!((after.owner_user_id.as_str(), after.status()), ("", pb::LeadStatus::New));
    assert_eq!(after.declined_team_ids.len(), 3);
}

async fn bulk_reassignment_streams_progress_and_retries_without_double_work(db: TestDb) {
    let h = Harness::start(db).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(h.create_lead("FR", "Retail", 1).await.id);
    }
    let won = &ids[5];
    assign_to(&h, won, &h.admin.id, false).await.unwrap();
    h.leads
        .clone()
        .update_lead(h.admin.req(pb::UpdateLeadRequest {
            lead: Some(pb::Lead {
                id: won.clone(),
                status: pb::LeadStatus::Lost.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
        }))
        .await
        .unwrap();
    let run = |lead_ids: Vec<String>| {
        let mut leads = h.leads.clone();
        let r = h.staff.req(pb::BulkReassignLeadsRequest {
            lead_ids,
            target: Some(bulk_reassign_leads_request::Target::UserId(h.member.id.clone())),
            team_id: String::new(),
            notify: true,
        });
        async move {
            let stream = leads.bulk_reassign_leads(r).await.unwrap().into_inner();
            stream.map(|m| m.unwrap()).collect::<Vec<_>>().await
        }
    };
    let first = run(ids[..3].to_vec()).await;
    assert_eq!(first.iter().map(|p| (p.done, p.total)).collect::<Vec<_>>(), [(1, 3), (2, 3), (3, 3)]);
    assert!(first.iter().all(|p| p.outcome() == pb::ReassignOutcome::Reassigned));
    let notified = h.events().await.len();
    assert_eq!(notified, 3);
    // The retry covers all: the first three are unchanged, the final one fails, the rest move.
    let second = run(ids.clone()).await;
    let outcomes: Vec<_> = second.iter().map(|p| p.outcome()).collect();
    use pb::ReassignOutcome::*;
    assert_eq!(outcomes, [Unchanged, Unchanged, Unchanged, Reassigned, Reassigned, Failed]);
    assert!(second[5].error.contains("lost") || !second[5].error.is_empty());
    assert_eq!(h.events().await.len(), 5, "no second notification for the leads already moved");
    let err = h
        .leads
        .clone()
        .bulk_reassign_leads(h.member.req(pb::BulkReassignLeadsRequest {
            lead_ids: ids.clone(),
            target: Some(bulk_reassign_leads_request::Target::UserId(h.member.id.clone())),
            team_id: String::new(),
            notify: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

async fn bad_lead_input_is_refused_with_field_violations(db: TestDb) {
    let h = Harness::start(db).await;
    let err = h
        .leads
        .clone()
        .create_lead(h.staff.req(pb::CreateLeadRequest {
            company_name: "  ".into(),
            contact_email: "not-an-email".into(),
            country: "France".into(),
            industry: String::new(),
            employee_count: -3,
            notify: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["company_name", "employee_count", "contact_email", "country"]);
    let err = h
        .rules
        .clone()
        .create_assignment_rule(h.staff.req(pb::CreateAssignmentRuleRequest {
            priority: -1,
            criteria: vec![
                criterion("colour", pb::CriterionOperator::Equals, "red"),
                criterion("country", pb::CriterionOperator::GreaterThan, "3"),
                criterion("country", pb::CriterionOperator::Unspecified, "FR"),
            ],
            target: None,
            team_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(
        violations(&err),
        ["priority", "criteria[0].field", "criteria[1].value", "criteria[2].operator", "target"]
    );
    let err = h
        .queues
        .clone()
        .create_queue(
            h.staff.req(pb::CreateQueueRequest { name: String::new(), member_user_ids: vec!["x".into()] }),
        )
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["name", "member_user_ids[0]"]);
}
