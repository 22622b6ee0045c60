//! Rows to messages.

use tandem_platform::time::{to_optional_timestamp, to_timestamp};
use tandem_proto::identity::v1 as pb;

use crate::{domain::teams::InvitationState, store};

pub fn role(name: &str) -> pb::TeamRole {
    pb::TeamRole::from_str_name(name).unwrap_or(pb::TeamRole::Unspecified)
}

pub fn user(u: &store::UserRow) -> pb::User {
    pb::User {
        id: u.id.clone(),
        email: u.email.clone(),
        display_name: u.display_name.clone(),
        active: u.active,
        email_verified: u.email_verified,
        staff_role: u
            .staff_role
            .as_deref()
            .and_then(pb::StaffRole::from_str_name)
            .unwrap_or(pb::StaffRole::Unspecified)
            .into(),
        create_time: Some(to_timestamp(u.create_time)),
    }
}

pub fn team(t: &store::TeamRow) -> pb::Team {
    pb::Team {
        id: t.id.clone(),
        name: t.name.clone(),
        owner_user_id: t.owner_user_id.clone(),
        rewards_visibility: pb::RewardsVisibility::from_str_name(&t.rewards_visibility)
            .unwrap_or(pb::RewardsVisibility::Hide)
            .into(),
        channel_manager_user_id: t.channel_manager_user_id.clone().unwrap_or_default(),
        create_time: Some(to_timestamp(t.create_time)),
    }
}

pub fn member(m: &store::MemberRow) -> pb::Member {
    pb::Member {
        team_id: m.team_id.clone(),
        user_id: m.user_id.clone(),
        email: m.email.clone(),
        role: role(&m.role).into(),
        display_name: m.display_name.clone(),
        active: m.active,
        join_time: Some(to_timestamp(m.join_time)),
    }
}

pub fn invitation(i: &store::InvitationRow, token: Option<String>, now: i64) -> pb::Invitation {
    let state = InvitationState {
        expire_time: i.expire_time,
        accept_time: i.accept_time,
        revoke_time: i.revoke_time,
    };
    pb::Invitation {
        id: i.id.clone(),
        team_id: i.team_id.clone(),
        email: i.email.clone(),
        role: role(&i.role).into(),
        status: state.status(now).into(),
        token: token.unwrap_or_default(),
        invited_by_user_id: i.invited_by_user_id.clone(),
        create_time: Some(to_timestamp(i.create_time)),
        expire_time: Some(to_timestamp(i.expire_time)),
        accepted_by_user_id: i.accepted_by_user_id.clone().unwrap_or_default(),
    }
}

pub fn domain(d: &store::DomainRow) -> pb::TeamDomain {
    pb::TeamDomain {
        domain: d.domain.clone(),
        txt_record_name: crate::domain::teams::txt_record_name(&d.domain),
        txt_record_value: d.txt_value.clone(),
        verified: d.verify_time.is_some(),
        verify_time: to_optional_timestamp(d.verify_time),
    }
}

pub fn program(p: &store::ProgramRow) -> pb::Program {
    pb::Program {
        id: p.id.clone(),
        name: p.name.clone(),
        description: p.description.clone(),
        create_time: Some(to_timestamp(p.create_time)),
    }
}

pub fn enrollment(e: &store::EnrollmentRow) -> pb::Enrollment {
    pb::Enrollment {
        program_id: e.program_id.clone(),
        team_id: e.team_id.clone(),
        user_id: e.user_id.clone(),
        create_time: Some(to_timestamp(e.create_time)),
    }
}

pub fn application(a: &store::ApplicationRow) -> pb::Application {
    pb::Application {
        id: a.id.clone(),
        status: pb::ApplicationStatus::from_str_name(&a.status)
            .unwrap_or(pb::ApplicationStatus::Unspecified)
            .into(),
        applicant_user_id: a.applicant_user_id.clone(),
        program_id: a.program_id.clone(),
        company_name: a.company_name.clone(),
        contact_email: a.contact_email.clone(),
        address: a.address.clone(),
        primary_expertise: a.primary_expertise.clone(),
        experience: a.experience.clone(),
        plan: a.plan.clone(),
        terms_accepted: a.terms_accepted,
        review_note: a.review_note.clone(),
        reviewer_user_id: a.reviewer_user_id.clone(),
        team_id: a.team_id.clone(),
        create_time: Some(to_timestamp(a.create_time)),
        review_time: to_optional_timestamp(a.review_time),
    }
}

pub fn notification(n: &store::NotificationRow) -> pb::Notification {
    pb::Notification {
        id: n.id.clone(),
        kind: n.kind.clone(),
        title: n.title.clone(),
        body: n.body.clone(),
        subject_id: n.subject_id.clone(),
        read: n.read_time.is_some(),
        create_time: Some(to_timestamp(n.create_time)),
    }
}
