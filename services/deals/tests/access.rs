//! Who may do what: owner, admin, member, finance, a partner of another team, a user of no
//! team, and vendor staff, on every RPC that guards something; and no token at all.

mod common;

use std::{future::Future, pin::Pin};

use common::{Harness, User, backend_tests};
use futures::StreamExt;
use prost_types::FieldMask;
use tandem_platform::{ids::new_id, testing::TestDb};
use tandem_proto::deals::v1::{
    self as pb, assign_lead_request, bulk_reassign_leads_request, create_assignment_rule_request,
};
use tonic::{Code, Status};

backend_tests!(
    every_role_on_every_guarded_rpc,
    no_token_is_unauthenticated,
    only_admins_and_channel_managers_review_registrations,
    partners_see_only_their_teams_in_a_queue
);

type Call<'a> = Pin<Box<dyn Future<Output = Result<(), Status>> + Send + 'a>>;

const OK: Option<Code> = None;
const DENIED: Option<Code> = Some(Code::PermissionDenied);
const HIDDEN: Option<Code> = Some(Code::NotFound);

/// Expected answers in the order owner, admin, member, finance, other team, outsider, staff.
async fn expect<'a, F>(h: &'a Harness, rpc: &str, expected: [Option<Code>; 7], call: F)
where
    F: Fn(&'a User) -> Call<'a>,
{
    let who = [&h.owner, &h.admin, &h.member, &h.finance, &h.other, &h.outsider, &h.staff];
    let names = ["owner", "admin", "member", "finance", "other team", "outsider", "staff"];
    for ((user, name), want) in who.into_iter().zip(names).zip(expected) {
        let got = call(user).await.err().map(|s| s.code());
        assert_eq!(got, want, "{rpc} as {name}");
    }
}

fn done<T>(r: Result<tonic::Response<T>, Status>) -> Result<(), Status> {
    r.map(|_| ())
}

async fn assigned_lead(h: &Harness) -> String {
    let lead = h.create_lead("FR", "Retail", 1).await;
    h.leads
        .clone()
        .assign_lead(h.staff.req(pb::AssignLeadRequest {
            lead_id: lead.id.clone(),
            target: Some(assign_lead_request::Target::UserId(h.member.id.clone())),
            team_id: String::new(),
            notify: false,
        }))
        .await
        .unwrap();
    lead.id
}

async fn every_role_on_every_guarded_rpc(db: TestDb) {
    let h = Harness::start(db).await;
    let staff_only = [DENIED, DENIED, DENIED, DENIED, DENIED, DENIED, OK];
    let team_read = [OK, OK, OK, OK, HIDDEN, HIDDEN, OK];
    let contribute = [OK, OK, OK, DENIED, HIDDEN, HIDDEN, OK];
    let everyone = [OK; 7];

    // --- leads ---
    expect(&h, "CreateLead", staff_only, |u| {
        let mut c = h.leads.clone();
        Box::pin(async move {
            done(
                c.create_lead(
                    u.req(pb::CreateLeadRequest { company_name: "A".into(), ..Default::default() }),
                )
                .await,
            )
        })
    })
    .await;
    let lead = assigned_lead(&h).await;
    expect(&h, "GetLead", team_read, |u| {
        let mut c = h.leads.clone();
        let lead = lead.clone();
        Box::pin(async move { done(c.get_lead(u.req(pb::GetLeadRequest { lead_id: lead })).await) })
    })
    .await;
    expect(&h, "ListLeads", team_read, |u| {
        let mut c = h.leads.clone();
        let team = h.team.clone();
        Box::pin(async move {
            done(c.list_leads(u.req(pb::ListLeadsRequest { team_id: team, ..Default::default() })).await)
        })
    })
    .await;
    expect(&h, "UpdateLead", contribute, |u| {
        let mut c = h.leads.clone();
        let lead = lead.clone();
        Box::pin(async move {
            done(
                c.update_lead(u.req(pb::UpdateLeadRequest {
                    lead: Some(pb::Lead { id: lead, industry: "Software".into(), ..Default::default() }),
                    update_mask: Some(FieldMask { paths: vec!["industry".into()] }),
                }))
                .await,
            )
        })
    })
    .await;
    expect(&h, "AssignLead", staff_only, |u| {
        let mut c = h.leads.clone();
        let (lead, to) = (lead.clone(), h.admin.id.clone());
        Box::pin(async move {
            done(
                c.assign_lead(u.req(pb::AssignLeadRequest {
                    lead_id: lead,
                    target: Some(assign_lead_request::Target::UserId(to)),
                    team_id: String::new(),
                    notify: false,
                }))
                .await,
            )
        })
    })
    .await;
    expect(&h, "BulkReassignLeads", staff_only, |u| {
        let mut c = h.leads.clone();
        let (lead, to) = (lead.clone(), h.member.id.clone());
        Box::pin(async move {
            let stream = c
                .bulk_reassign_leads(u.req(pb::BulkReassignLeadsRequest {
                    lead_ids: vec![lead],
                    target: Some(bulk_reassign_leads_request::Target::UserId(to)),
                    team_id: String::new(),
                    notify: false,
                }))
                .await?
                .into_inner();
            let progress: Vec<_> = stream.collect().await;
            assert!(progress.iter().all(Result::is_ok));
            Ok(())
        })
    })
    .await;
    // Each decline needs a lead the team still holds.
    let mut fresh = Vec::new();
    for _ in 0..7 {
        fresh.push(assigned_lead(&h).await);
    }
    let fresh = std::sync::Mutex::new(fresh);
    expect(&h, "DeclineLead", contribute, |u| {
        let mut c = h.leads.clone();
        let lead = fresh.lock().unwrap().pop().unwrap();
        Box::pin(async move {
            done(c.decline_lead(u.req(pb::DeclineLeadRequest { lead_id: lead, reason: String::new() })).await)
        })
    })
    .await;
    // Claims: only members of the lead's queue (here `member`); others who see nothing get
    // NOT_FOUND.
    let queue = h.create_queue(&[&h.member]).await;
    expect(
        &h,
        "ClaimLead",
        [HIDDEN, HIDDEN, OK, HIDDEN, HIDDEN, HIDDEN, Some(Code::FailedPrecondition)],
        |u| {
            let mut c = h.leads.clone();
            let staff = h.staff.clone();
            let queue = queue.id.clone();
            let h = &h;
            Box::pin(async move {
                let lead = h.create_lead("FR", "Retail", 1).await.id;
                c.assign_lead(staff.req(pb::AssignLeadRequest {
                    lead_id: lead.clone(),
                    target: Some(assign_lead_request::Target::QueueId(queue)),
                    team_id: String::new(),
                    notify: false,
                }))
                .await?;
                done(c.claim_lead(u.req(pb::ClaimLeadRequest { lead_id: lead })).await)
            })
        },
    )
    .await;

    // --- queues and rules ---
    expect(&h, "CreateQueue", staff_only, |u| {
        let mut c = h.queues.clone();
        Box::pin(async move {
            done(
                c.create_queue(u.req(pb::CreateQueueRequest { name: "Q".into(), member_user_ids: vec![] }))
                    .await,
            )
        })
    })
    .await;
    expect(&h, "AddQueueMember", staff_only, |u| {
        let mut c = h.queues.clone();
        let (queue, user) = (queue.id.clone(), h.admin.id.clone());
        Box::pin(async move {
            done(
                c.add_queue_member(u.req(pb::AddQueueMemberRequest {
                    queue_id: queue,
                    user_id: user,
                    team_id: String::new(),
                }))
                .await,
            )
        })
    })
    .await;
    expect(&h, "RemoveQueueMember", staff_only, |u| {
        let mut c = h.queues.clone();
        let (queue, user, staff) = (queue.id.clone(), h.owner.id.clone(), h.staff.clone());
        Box::pin(async move {
            c.add_queue_member(staff.req(pb::AddQueueMemberRequest {
                queue_id: queue.clone(),
                user_id: user.clone(),
                team_id: String::new(),
            }))
            .await?;
            done(
                c.remove_queue_member(u.req(pb::RemoveQueueMemberRequest { queue_id: queue, user_id: user }))
                    .await,
            )
        })
    })
    .await;
    expect(&h, "ListQueues", everyone, |u| {
        let mut c = h.queues.clone();
        Box::pin(async move { done(c.list_queues(u.req(pb::ListQueuesRequest::default())).await) })
    })
    .await;
    expect(&h, "CreateAssignmentRule", staff_only, |u| {
        let mut c = h.rules.clone();
        let queue = queue.id.clone();
        Box::pin(async move {
            done(
                c.create_assignment_rule(u.req(pb::CreateAssignmentRuleRequest {
                    priority: 100,
                    criteria: vec![pb::Criterion {
                        field: "country".into(),
                        operator: pb::CriterionOperator::Equals.into(),
                        value: "ZZ".into(),
                    }],
                    target: Some(create_assignment_rule_request::Target::QueueId(queue)),
                    team_id: String::new(),
                }))
                .await,
            )
        })
    })
    .await;
    expect(&h, "ListAssignmentRules", staff_only, |u| {
        let mut c = h.rules.clone();
        Box::pin(async move {
            done(c.list_assignment_rules(u.req(pb::ListAssignmentRulesRequest::default())).await)
        })
    })
    .await;
    expect(&h, "ApplyAssignmentRules", staff_only, |u| {
        let mut c = h.rules.clone();
        let lead = lead.clone();
        Box::pin(async move {
            done(
                c.apply_assignment_rules(u.req(pb::ApplyAssignmentRulesRequest { lead_ids: vec![lead] }))
                    .await,
            )
        })
    })
    .await;
    expect(&h, "DeleteAssignmentRule", [DENIED, DENIED, DENIED, DENIED, DENIED, DENIED, HIDDEN], |u| {
        let mut c = h.rules.clone();
        Box::pin(async move {
            done(
                c.delete_assignment_rule(u.req(pb::DeleteAssignmentRuleRequest { rule_id: new_id("rule") }))
                    .await,
            )
        })
    })
    .await;

    // --- deals ---
    expect(&h, "RegisterDeal", contribute, |u| {
        let mut c = h.deal.clone();
        let r = h.register_request(&h.team, "acme.com", &new_id("req"));
        Box::pin(async move { done(c.register_deal(u.req(r)).await) })
    })
    .await;
    let deal = h.register(&h.member, &h.team, "acme.com").await.id;
    expect(&h, "GetDeal", team_read, |u| {
        let mut c = h.deal.clone();
        let deal = deal.clone();
        Box::pin(async move { done(c.get_deal(u.req(pb::GetDealRequest { deal_id: deal })).await) })
    })
    .await;
    expect(&h, "ListDeals", team_read, |u| {
        let mut c = h.deal.clone();
        let team = h.team.clone();
        Box::pin(async move {
            done(c.list_deals(u.req(pb::ListDealsRequest { team_id: team, ..Default::default() })).await)
        })
    })
    .await;
    expect(&h, "UpdateDeal", contribute, |u| {
        let mut c = h.deal.clone();
        let deal = deal.clone();
        Box::pin(async move {
            done(
                c.update_deal(u.req(pb::UpdateDealRequest {
                    deal: Some(pb::Deal {
                        id: deal,
                        products: vec!["Service Hub".into()],
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask { paths: vec!["products".into()] }),
                }))
                .await,
            )
        })
    })
    .await;
    let rep = h.staff_user();
    expect(&h, "AddDealTeamMember", contribute, |u| {
        let mut c = h.deal.clone();
        let deal = deal.clone();
        // Each side adds one of its own: a teammate, or a fellow staff user.
        let user = if u.id == h.staff.id { rep.id.clone() } else { h.admin.id.clone() };
        Box::pin(async move {
            done(
                c.add_deal_team_member(u.req(pb::AddDealTeamMemberRequest { deal_id: deal, user_id: user }))
                    .await,
            )
        })
    })
    .await;
    expect(&h, "RemoveDealTeamMember", contribute, |u| {
        let mut c = h.deal.clone();
        let deal = deal.clone();
        let staff_side = u.id == h.staff.id;
        let (adder, user) = if staff_side {
            (h.staff.clone(), rep.id.clone())
        } else {
            (h.owner.clone(), h.admin.id.clone())
        };
        Box::pin(async move {
            c.add_deal_team_member(
                adder.req(pb::AddDealTeamMemberRequest { deal_id: deal.clone(), user_id: user.clone() }),
            )
            .await?;
            done(
                c.remove_deal_team_member(
                    u.req(pb::RemoveDealTeamMemberRequest { deal_id: deal, user_id: user }),
                )
                .await,
            )
        })
    })
    .await;
    expect(&h, "ApproveRegistration", [DENIED, DENIED, DENIED, DENIED, DENIED, DENIED, OK], |u| {
        let mut c = h.deal.clone();
        let h = &h;
        Box::pin(async move {
            let deal = h.register(&h.member, &h.team, "globex.example").await.id;
            done(c.approve_registration(u.req(pb::ApproveRegistrationRequest { deal_id: deal })).await)
        })
    })
    .await;
    expect(&h, "RejectRegistration", [DENIED, DENIED, DENIED, DENIED, DENIED, DENIED, OK], |u| {
        let mut c = h.deal.clone();
        let h = &h;
        Box::pin(async move {
            let deal = h.register(&h.member, &h.team, "globex.example").await.id;
            done(
                c.reject_registration(
                    u.req(pb::RejectRegistrationRequest { deal_id: deal, reason: "duplicate".into() }),
                )
                .await,
            )
        })
    })
    .await;
    expect(&h, "CloseDeal", contribute, |u| {
        let mut c = h.deal.clone();
        let h = &h;
        Box::pin(async move {
            let deal = h.register(&h.member, &h.team, "initech.example").await.id;
            c.approve_registration(h.staff.req(pb::ApproveRegistrationRequest { deal_id: deal.clone() }))
                .await?;
            done(
                c.close_deal(
                    u.req(pb::CloseDealRequest { deal_id: deal, outcome: pb::DealOutcome::Won.into() }),
                )
                .await,
            )
        })
    })
    .await;

    // --- pipelines ---
    expect(&h, "CreatePipeline", staff_only, |u| {
        let mut c = h.pipelines.clone();
        Box::pin(async move {
            done(
                c.create_pipeline(u.req(pb::CreatePipelineRequest {
                    name: "P".into(),
                    stages: vec![pb::Stage { name: "S".into() }],
                }))
                .await,
            )
        })
    })
    .await;
    expect(&h, "ListPipelines", everyone, |u| {
        let mut c = h.pipelines.clone();
        Box::pin(async move { done(c.list_pipelines(u.req(pb::ListPipelinesRequest::default())).await) })
    })
    .await;
    let pipeline = h
        .pipelines
        .clone()
        .create_pipeline(h.staff.req(pb::CreatePipelineRequest {
            name: "Shared".into(),
            stages: vec![pb::Stage { name: "New".into() }],
        }))
        .await
        .unwrap()
        .into_inner()
        .pipeline
        .unwrap()
        .id;
    expect(&h, "SetDefaultSharedDealPipeline", [OK, OK, DENIED, DENIED, HIDDEN, HIDDEN, DENIED], |u| {
        let mut c = h.pipelines.clone();
        let (team, pipeline) = (h.team.clone(), pipeline.clone());
        Box::pin(async move {
            done(
                c.set_default_shared_deal_pipeline(
                    u.req(pb::SetDefaultSharedDealPipelineRequest { team_id: team, pipeline_id: pipeline }),
                )
                .await,
            )
        })
    })
    .await;
}

async fn no_token_is_unauthenticated(db: TestDb) {
    let h = Harness::start(db).await;
    let anonymous = User { id: String::new(), token: String::new() };
    let codes = [
        done(h.leads.clone().create_lead(anonymous.req(pb::CreateLeadRequest::default())).await),
        done(h.leads.clone().list_leads(anonymous.req(pb::ListLeadsRequest::default())).await),
        done(h.queues.clone().list_queues(anonymous.req(pb::ListQueuesRequest::default())).await),
        done(
            h.rules
                .clone()
                .list_assignment_rules(anonymous.req(pb::ListAssignmentRulesRequest::default()))
                .await,
        ),
        done(h.deal.clone().register_deal(anonymous.req(pb::RegisterDealRequest::default())).await),
        done(h.deal.clone().list_deals(anonymous.req(pb::ListDealsRequest::default())).await),
        done(h.pipelines.clone().list_pipelines(anonymous.req(pb::ListPipelinesRequest::default())).await),
    ];
    for code in codes {
        assert_eq!(code.unwrap_err().code(), Code::Unauthenticated);
    }
}

async fn only_admins_and_channel_managers_review_registrations(db: TestDb) {
    let h = Harness::start(db).await;
    let finance = h.staff_with_role("STAFF_ROLE_FINANCE");
    let admin = h.staff_with_role("STAFF_ROLE_ADMIN");
    let approve = |by: &User, deal_id: &str| {
        let mut c = h.deal.clone();
        let request = by.req(pb::ApproveRegistrationRequest { deal_id: deal_id.into() });
        async move { done(c.approve_registration(request).await) }
    };
    let reject = |by: &User, deal_id: &str| {
        let mut c = h.deal.clone();
        let request =
            by.req(pb::RejectRegistrationRequest { deal_id: deal_id.into(), reason: "duplicate".into() });
        async move { done(c.reject_registration(request).await) }
    };
    let first = h.register(&h.owner, &h.team, "first.example").await;
    let second = h.register(&h.owner, &h.team, "second.example").await;
    // Finance staff handle money, not registrations.
    assert_eq!(approve(&finance, &first.id).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(reject(&finance, &first.id).await.unwrap_err().code(), Code::PermissionDenied);
    // The channel manager and the admin do.
    approve(&h.staff, &first.id).await.expect("a channel manager approves");
    reject(&admin, &second.id).await.expect("an admin rejects");
}

async fn partners_see_only_their_teams_in_a_queue(db: TestDb) {
    let h = Harness::start(db).await;
    let queue = h.create_queue(&[&h.member, &h.admin, &h.other]).await;
    let listed = |by: &User| {
        let mut c = h.queues.clone();
        let request = by.req(pb::ListQueuesRequest::default());
        async move {
            let queues = c.list_queues(request).await.expect("list queues").into_inner().queues;
            queues
                .into_iter()
                .map(|q| (q.id, q.members.into_iter().map(|m| m.user_id).collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        }
    };
    let mut ours = vec![h.member.id.clone(), h.admin.id.clone()];
    ours.sort();
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    let seen = listed(&h.member).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, queue.id);
    assert_eq!(sorted(seen[0].1.clone()), ours, "the member sees its team's seats only");
    let seen = listed(&h.other).await;
    assert_eq!(seen, [(queue.id.clone(), vec![h.other.id.clone()])], "the other team sees its own seat only");
    // Staff see every seat; a partner of no seat sees no queue.
    let seen = listed(&h.staff).await;
    assert_eq!(seen[0].1.len(), 3);
    assert!(listed(&h.owner).await.is_empty());
}
