//! Rows to messages.

use tandem_platform::time::{to_optional_timestamp, to_timestamp};
use tandem_proto::{common::v1::Money, deals::v1 as pb};

use crate::{
    domain::{leads::LeadStatus, registration::RegistrationStatus},
    store,
};

pub fn lead_status(s: &str) -> pb::LeadStatus {
    match LeadStatus::parse(s) {
        Some(LeadStatus::New) => pb::LeadStatus::New,
        Some(LeadStatus::Assigned) => pb::LeadStatus::Assigned,
        Some(LeadStatus::Working) => pb::LeadStatus::Working,
        Some(LeadStatus::Won) => pb::LeadStatus::Won,
        Some(LeadStatus::Lost) => pb::LeadStatus::Lost,
        Some(LeadStatus::Unqualified) => pb::LeadStatus::Unqualified,
        None => pb::LeadStatus::Unspecified,
    }
}

pub fn lead_status_from(s: pb::LeadStatus) -> Option<LeadStatus> {
    Some(match s {
        pb::LeadStatus::Unspecified => return None,
        pb::LeadStatus::New => LeadStatus::New,
        pb::LeadStatus::Assigned => LeadStatus::Assigned,
        pb::LeadStatus::Working => LeadStatus::Working,
        pb::LeadStatus::Won => LeadStatus::Won,
        pb::LeadStatus::Lost => LeadStatus::Lost,
        pb::LeadStatus::Unqualified => LeadStatus::Unqualified,
    })
}

pub fn lead(l: &store::LeadRow, declined: Vec<String>) -> pb::Lead {
    pb::Lead {
        id: l.id.clone(),
        company_name: l.company_name.clone(),
        contact_email: l.contact_email.clone(),
        country: l.country.clone(),
        industry: l.industry.clone(),
        employee_count: l.employee_count,
        owner_user_id: l.owner_user_id.clone(),
        team_id: l.team_id.clone(),
        queue_id: l.queue_id.clone(),
        status: lead_status(&l.status).into(),
        declined_team_ids: declined,
        create_time: Some(to_timestamp(l.create_time)),
        update_time: Some(to_timestamp(l.update_time)),
    }
}

pub fn queue(q: &store::QueueRow, members: &[store::MemberRow]) -> pb::Queue {
    pb::Queue {
        id: q.id.clone(),
        name: q.name.clone(),
        members: members
            .iter()
            .map(|m| pb::QueueMember { user_id: m.user_id.clone(), team_id: m.team_id.clone() })
            .collect(),
        create_time: Some(to_timestamp(q.create_time)),
    }
}

pub fn operator_name(op: crate::domain::rules::Operator) -> pb::CriterionOperator {
    use crate::domain::rules::Operator;
    match op {
        Operator::Equals => pb::CriterionOperator::Equals,
        Operator::In => pb::CriterionOperator::In,
        Operator::GreaterThan => pb::CriterionOperator::GreaterThan,
        Operator::LessThan => pb::CriterionOperator::LessThan,
    }
}

pub fn rule(r: &store::RuleRow, criteria: &[store::CriterionRow]) -> pb::AssignmentRule {
    use pb::assignment_rule::Target;
    let target = match r.target_kind.as_str() {
        "USER" => Some(Target::UserId(r.target_id.clone())),
        "QUEUE" => Some(Target::QueueId(r.target_id.clone())),
        "ROUND_ROBIN" => Some(Target::RoundRobinQueueId(r.target_id.clone())),
        _ => None,
    };
    pb::AssignmentRule {
        id: r.id.clone(),
        priority: i32::try_from(r.priority).unwrap_or(i32::MAX),
        criteria: criteria
            .iter()
            .filter(|c| c.rule_id == r.id)
            .map(|c| pb::Criterion {
                field: c.field.clone(),
                operator: crate::domain::rules::Operator::parse(&c.operator)
                    .map_or(0, |op| operator_name(op).into()),
                value: c.value.clone(),
            })
            .collect(),
        target,
        team_id: r.team_id.clone(),
        create_time: Some(to_timestamp(r.create_time)),
    }
}

pub fn pipeline(p: &store::PipelineRow, stages: &[String]) -> pb::Pipeline {
    pb::Pipeline {
        id: p.id.clone(),
        name: p.name.clone(),
        stages: stages.iter().map(|s| pb::Stage { name: s.clone() }).collect(),
        create_time: Some(to_timestamp(p.create_time)),
    }
}

pub fn registration_status(s: &str) -> pb::RegistrationStatus {
    match RegistrationStatus::parse(s) {
        Some(RegistrationStatus::Pending) => pb::RegistrationStatus::Pending,
        Some(RegistrationStatus::Approved) => pb::RegistrationStatus::Approved,
        Some(RegistrationStatus::Rejected) => pb::RegistrationStatus::Rejected,
        Some(RegistrationStatus::Expired) => pb::RegistrationStatus::Expired,
        None => pb::RegistrationStatus::Unspecified,
    }
}

pub fn registration_status_from(s: pb::RegistrationStatus) -> Option<RegistrationStatus> {
    Some(match s {
        pb::RegistrationStatus::Unspecified => return None,
        pb::RegistrationStatus::Pending => RegistrationStatus::Pending,
        pb::RegistrationStatus::Approved => RegistrationStatus::Approved,
        pb::RegistrationStatus::Rejected => RegistrationStatus::Rejected,
        pb::RegistrationStatus::Expired => RegistrationStatus::Expired,
    })
}

pub fn deal_type(s: &str) -> pb::DealType {
    pb::DealType::from_str_name(&format!("DEAL_TYPE_{s}")).unwrap_or(pb::DealType::Unspecified)
}

/// `NEW_BUSINESS`, … as stored.
pub fn deal_type_name(t: pb::DealType) -> String {
    t.as_str_name().trim_start_matches("DEAL_TYPE_").to_owned()
}

pub fn outcome(s: &str) -> pb::DealOutcome {
    match s {
        "WON" => pb::DealOutcome::Won,
        "LOST" => pb::DealOutcome::Lost,
        _ => pb::DealOutcome::Unspecified,
    }
}

pub fn side(s: &str) -> pb::DealTeamSide {
    match s {
        "PARTNER" => pb::DealTeamSide::Partner,
        "VENDOR" => pb::DealTeamSide::Vendor,
        _ => pb::DealTeamSide::Unspecified,
    }
}

pub fn deal(d: &store::DealRow, active_registrations: i64, team: &[store::DealTeamRow]) -> pb::Deal {
    pb::Deal {
        id: d.id.clone(),
        team_id: d.team_id.clone(),
        program_id: d.program_id.clone(),
        customer_name: d.customer_name.clone(),
        customer_domain: d.customer_domain.clone(),
        amount: Some(Money { currency_code: d.currency_code.clone(), amount_minor: d.amount_minor }),
        products: d.product_list(),
        expected_close_date: to_optional_timestamp(d.expected_close_time),
        client_market: d.client_market.clone(),
        deal_type: deal_type(&d.deal_type).into(),
        pipeline_id: d.pipeline_id.clone(),
        stage: d.stage.clone(),
        registration_status: registration_status(&d.registration_status).into(),
        conflicting_deal_id: d.conflicting_deal_id.clone(),
        deal_team: team
            .iter()
            .map(|m| pb::DealTeamMember { user_id: m.user_id.clone(), side: side(&m.side).into() })
            .collect(),
        will_manage: d.will_manage,
        outcome: outcome(&d.outcome).into(),
        close_time: to_optional_timestamp(d.close_time),
        registration_expire_time: Some(to_timestamp(d.registration_expire_time)),
        active_registration_count: i32::try_from(active_registrations).unwrap_or(i32::MAX),
        rejection_reason: d.rejection_reason.clone(),
        create_time: Some(to_timestamp(d.create_time)),
        update_time: Some(to_timestamp(d.update_time)),
    }
}
