//! The rules of deals' copy of identity's members: what a membership event means for the copy,
//! and what of a user a caller may learn (the same as identity's `GetUserAccess` answers).

use tandem_proto::events::v1::MembershipChange;

/// A membership as an event leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// A member, with its role's name (`TEAM_ROLE_MEMBER`, …).
    Member(String),
    Removed,
}

/// What a `MembershipChanged` event sets; `None` for a change this version does not know
/// (the event is skipped, not failed: failing would dead-letter it on every replica).
pub fn membership(change: MembershipChange, role: &str) -> Option<Membership> {
    match change {
        MembershipChange::Added | MembershipChange::RoleChanged => Some(Membership::Member(role.to_owned())),
        MembershipChange::Removed => Some(Membership::Removed),
        MembershipChange::Unspecified => None,
    }
}

/// Of a partner user's teams, the ones a partner viewer shares with it; `None` when they share
/// none (the user is then unknown to the viewer). Staff, and a user asking about itself, see
/// everything without this.
pub fn shared_teams(viewer_teams: &[String], user_teams: &[String]) -> Option<Vec<String>> {
    let shared: Vec<String> = user_teams.iter().filter(|t| viewer_teams.contains(t)).cloned().collect();
    (!shared.is_empty()).then_some(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn teams(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn events_set_member_or_removed() {
        assert_eq!(
            membership(MembershipChange::Added, "TEAM_ROLE_OWNER"),
            Some(Membership::Member("TEAM_ROLE_OWNER".into()))
        );
        assert_eq!(
            membership(MembershipChange::RoleChanged, "TEAM_ROLE_FINANCE"),
            Some(Membership::Member("TEAM_ROLE_FINANCE".into()))
        );
        assert_eq!(membership(MembershipChange::Removed, ""), Some(Membership::Removed));
        assert_eq!(membership(MembershipChange::Unspecified, "TEAM_ROLE_MEMBER"), None);
    }

    #[test]
    fn a_partner_sees_only_the_teams_it_shares() {
        assert_eq!(shared_teams(&teams(&["a", "b"]), &teams(&["b", "c"])), Some(teams(&["b"])));
        assert_eq!(shared_teams(&teams(&["a"]), &teams(&["b", "c"])), None);
        assert_eq!(shared_teams(&teams(&[]), &teams(&["b"])), None);
        assert_eq!(shared_teams(&teams(&["a"]), &teams(&[])), None, "a user of no team is unknown to others");
    }
}
