//! Rules of teams, invitations, domains and applications.

use tandem_platform::time::{MICROS_PER_DAY, Micros};
use tandem_proto::identity::v1::{ApplicationStatus, InvitationStatus};

/// How long an invitation stays open.
pub const INVITATION_TTL: Micros = 7 * MICROS_PER_DAY;
/// How long a refresh token lives.
pub const REFRESH_TTL: Micros = 30 * MICROS_PER_DAY;
/// How long an email verification link lives.
pub const EMAIL_VERIFICATION_TTL: Micros = 2 * MICROS_PER_DAY;
/// Access tokens are short-lived.
pub const ACCESS_TTL_SECS: i64 = 15 * 60;

/// An invitation's stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvitationState {
    pub expire_time: Micros,
    pub accept_time: Option<Micros>,
    pub revoke_time: Option<Micros>,
}

impl InvitationState {
    /// Accepted and revoked are final; an open invitation past its expiry is expired.
    pub fn status(&self, now: Micros) -> InvitationStatus {
        if self.accept_time.is_some() {
            InvitationStatus::Accepted
        } else if self.revoke_time.is_some() {
            InvitationStatus::Revoked
        } else if now >= self.expire_time {
            InvitationStatus::Expired
        } else {
            InvitationStatus::Pending
        }
    }
}

/// A domain as stored: trimmed, lower case, without a trailing dot.
pub fn normalize_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The DNS name under which a team publishes its TXT proof for `domain`.
pub fn txt_record_name(domain: &str) -> String {
    format!("_tandem-challenge.{domain}")
}

/// The TXT value that proves the team owns the domain.
pub fn txt_record_value(secret: &str) -> String {
    format!("tandem-verification={secret}")
}

/// Whether one of the TXT strings found holds the expected value (surrounding quotes and
/// whitespace ignored, as resolvers differ).
pub fn txt_matches(found: &[String], expected: &str) -> bool {
    found.iter().any(|v| v.trim().trim_matches('"') == expected)
}

/// The domain of an email address, lower case.
pub fn email_domain(email: &str) -> Option<String> {
    email.rsplit_once('@').map(|(_, d)| normalize_domain(d))
}

/// Why a team may not be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionRefusal {
    OtherMembers,
    HoldsRewards,
}

/// A team is deleted only when no member but the owner remains and it holds no rewards.
pub fn may_delete_team(other_members: i64, holds_rewards: bool) -> Result<(), DeletionRefusal> {
    if other_members > 0 {
        Err(DeletionRefusal::OtherMembers)
    } else if holds_rewards {
        Err(DeletionRefusal::HoldsRewards)
    } else {
        Ok(())
    }
}

/// Only a pending application is reviewed, once.
pub fn review(status: ApplicationStatus, approve: bool) -> Option<ApplicationStatus> {
    (status == ApplicationStatus::Pending).then_some(if approve {
        ApplicationStatus::Approved
    } else {
        ApplicationStatus::Rejected
    })
}

/// The default team's name at sign-up.
pub fn default_team_name(display_name: &str, requested: &str) -> String {
    let requested = requested.trim();
    if requested.is_empty() { format!("{}'s team", display_name.trim()) } else { requested.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Micros = 1_000 * MICROS_PER_DAY;

    fn open(expire_time: Micros) -> InvitationState {
        InvitationState { expire_time, accept_time: None, revoke_time: None }
    }

    #[test]
    fn invitation_statuses() {
        assert_eq!(open(NOW + 1).status(NOW), InvitationStatus::Pending);
        assert_eq!(open(NOW).status(NOW), InvitationStatus::Expired, "expired at the instant");
        assert_eq!(open(NOW - 1).status(NOW), InvitationStatus::Expired);
        let accepted = InvitationState { accept_time: Some(NOW - 5), ..open(NOW - 1) };
        assert_eq!(accepted.status(NOW), InvitationStatus::Accepted, "acceptance is final even past expiry");
        let revoked = InvitationState { revoke_time: Some(NOW - 5), ..open(NOW + 100) };
        assert_eq!(revoked.status(NOW), InvitationStatus::Revoked);
    }

    #[test]
    fn domains_and_txt_proofs() {
        assert_eq!(normalize_domain(" Example.COM. "), "example.com");
        assert_eq!(txt_record_name("example.com"), "_tandem-challenge.example.com");
        let value = txt_record_value("abc");
        assert!(txt_matches(&["v=spf1".into(), format!("\"{value}\"")], &value));
        assert!(!txt_matches(&["tandem-verification=abd".into()], &value));
        assert!(!txt_matches(&[], &value));
        assert_eq!(email_domain("Ann@Example.com").as_deref(), Some("example.com"));
        assert_eq!(email_domain("nope"), None);
    }

    #[test]
    fn deletion_needs_no_other_member_and_no_rewards() {
        assert_eq!(may_delete_team(0, false), Ok(()));
        assert_eq!(may_delete_team(1, false), Err(DeletionRefusal::OtherMembers));
        assert_eq!(may_delete_team(0, true), Err(DeletionRefusal::HoldsRewards));
        assert_eq!(may_delete_team(2, true), Err(DeletionRefusal::OtherMembers));
    }

    #[test]
    fn applications_are_reviewed_once() {
        assert_eq!(review(ApplicationStatus::Pending, true), Some(ApplicationStatus::Approved));
        assert_eq!(review(ApplicationStatus::Pending, false), Some(ApplicationStatus::Rejected));
        assert_eq!(review(ApplicationStatus::Approved, false), None);
        assert_eq!(review(ApplicationStatus::Rejected, true), None);
    }

    #[test]
    fn default_team_names() {
        assert_eq!(default_team_name("Ann", ""), "Ann's team");
        assert_eq!(default_team_name("Ann", " Acme "), "Acme");
    }
}
