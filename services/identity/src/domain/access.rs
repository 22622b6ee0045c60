//! Who may do what on a partner team: the permission table of seed 000, exactly.
//!
//! | action | owner | admin | member | finance |
//! |---|---|---|---|---|
//! | see members, pipelines and activity | yes | yes | yes | yes |
//! | contribute referrals / register deals | yes | yes | yes | no |
//! | invite, remove members, promote to admin | yes | yes | no | no |
//! | change team settings (name, rewards visibility) | yes | yes | no | no |
//! | enrol the team in programs | yes | no | no | no |
//! | see rewards | yes | yes | if visibility = show | yes |
//! | withdraw rewards | yes | no | no | yes |
//! | delete the team | yes | no | no | no |
//!
//! Finance members view and withdraw rewards and do not contribute deals: their role is the
//! team's money, and keeping them out of the pipeline keeps the deal team to the sellers.
//! Vendor staff are not team members: every staff role sees every team and its rewards, and
//! acts on partners through the staff RPCs, never through a team's permissions.

use tandem_proto::identity::v1::{Permission, RewardsVisibility, StaffRole, TeamRole};

/// The actions of the permission table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    View,
    Contribute,
    ManageMembers,
    ManageSettings,
    ManagePrograms,
    ViewRewards,
    WithdrawRewards,
    DeleteTeam,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::View,
        Action::Contribute,
        Action::ManageMembers,
        Action::ManageSettings,
        Action::ManagePrograms,
        Action::ViewRewards,
        Action::WithdrawRewards,
        Action::DeleteTeam,
    ];

    /// The action a `Permission` of the access API asks about.
    pub fn from_permission(permission: Permission) -> Option<Self> {
        Some(match permission {
            Permission::Unspecified => return None,
            Permission::TeamView => Action::View,
            Permission::TeamManage => Action::ManageSettings,
            Permission::MembersManage => Action::ManageMembers,
            Permission::ProgramsManage => Action::ManagePrograms,
            Permission::DealsContribute => Action::Contribute,
            Permission::RewardsView => Action::ViewRewards,
            Permission::RewardsWithdraw => Action::WithdrawRewards,
        })
    }
}

/// Whether a member with `role` may do `action` on a team whose rewards are `visibility`.
pub fn role_allows(role: TeamRole, action: Action, visibility: RewardsVisibility) -> bool {
    use Action::*;
    use TeamRole::*;
    match (role, action) {
        (Unspecified, _) => false,
        (_, View) => true,
        (Owner | Admin | Member, Contribute) => true,
        (Owner | Admin, ManageMembers | ManageSettings) => true,
        (Owner, ManagePrograms | DeleteTeam) => true,
        (Owner | Admin | Finance, ViewRewards) => true,
        (Member, ViewRewards) => visibility == RewardsVisibility::Show,
        (Owner | Finance, WithdrawRewards) => true,
        _ => false,
    }
}

/// What vendor staff may do on any team: see it and its rewards.
pub fn staff_allows(role: StaffRole, action: Action) -> bool {
    role != StaffRole::Unspecified && matches!(action, Action::View | Action::ViewRewards)
}

/// Whether an actor with `actor` role may give `target` (currently `current`) the role `new`.
/// The owner's role never changes and no one is made owner; owners and admins manage the rest.
pub fn may_change_role(actor: TeamRole, current: TeamRole, new: TeamRole) -> Result<(), RoleChangeRefusal> {
    if current == TeamRole::Owner || new == TeamRole::Owner {
        return Err(RoleChangeRefusal::OwnerImmutable);
    }
    if !role_allows(actor, Action::ManageMembers, RewardsVisibility::Hide) {
        return Err(RoleChangeRefusal::NotAllowed);
    }
    Ok(())
}

/// Whether an actor may remove a member with role `target`.
pub fn may_remove(actor: TeamRole, target: TeamRole) -> Result<(), RoleChangeRefusal> {
    if target == TeamRole::Owner {
        return Err(RoleChangeRefusal::OwnerImmutable);
    }
    if !role_allows(actor, Action::ManageMembers, RewardsVisibility::Hide) {
        return Err(RoleChangeRefusal::NotAllowed);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChangeRefusal {
    OwnerImmutable,
    NotAllowed,
}

/// The roles an invitation may offer: every role but owner.
pub fn invitable(role: TeamRole) -> bool {
    matches!(role, TeamRole::Admin | TeamRole::Member | TeamRole::Finance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use TeamRole::*;

    /// The whole table, written out: every role × every action × both visibilities.
    #[test]
    fn permission_table_is_exactly_the_seed() {
        let expected = |role: TeamRole, action: Action, vis: RewardsVisibility| -> bool {
            match action {
                View => true,
                Contribute => matches!(role, Owner | Admin | Member),
                ManageMembers => matches!(role, Owner | Admin),
                ManageSettings => matches!(role, Owner | Admin),
                ManagePrograms => role == Owner,
                ViewRewards => match role {
                    Owner | Admin | Finance => true,
                    Member => vis == RewardsVisibility::Show,
                    Unspecified => false,
                },
                WithdrawRewards => matches!(role, Owner | Finance),
                DeleteTeam => role == Owner,
            }
        };
        let rows: [(TeamRole, [bool; 8], [bool; 8]); 4] = [
            // View, Contribute, ManageMembers, ManageSettings, ManagePrograms, ViewRewards, Withdraw, Delete
            (
                Owner,
                [true, true, true, true, true, true, true, true],
                [true, true, true, true, true, true, true, true],
            ),
            (
                Admin,
                [true, true, true, true, false, true, false, false],
                [true, true, true, true, false, true, false, false],
            ),
            (
                Member,
                [true, true, false, false, false, true, false, false],
                [true, true, false, false, false, false, false, false],
            ),
            (
                Finance,
                [true, false, false, false, false, true, true, false],
                [true, false, false, false, false, true, true, false],
            ),
        ];
        for (role, show, hide) in rows {
            for (i, action) in Action::ALL.into_iter().enumerate() {
                assert_eq!(
                    role_allows(role, action, RewardsVisibility::Show),
                    show[i],
                    "{role:?} {action:?} show"
                );
                assert_eq!(
                    role_allows(role, action, RewardsVisibility::Hide),
                    hide[i],
                    "{role:?} {action:?} hide"
                );
                assert_eq!(expected(role, action, RewardsVisibility::Show), show[i]);
                assert_eq!(expected(role, action, RewardsVisibility::Hide), hide[i]);
            }
        }
    }

    #[test]
    fn no_role_and_unspecified_visibility_grant_nothing_extra() {
        for action in Action::ALL {
            assert!(!role_allows(Unspecified, action, RewardsVisibility::Show));
        }
        assert!(!role_allows(Member, ViewRewards, RewardsVisibility::Unspecified));
    }

    #[test]
    fn staff_see_but_do_not_act_for_teams() {
        for role in [StaffRole::Admin, StaffRole::ChannelManager, StaffRole::Finance] {
            for action in Action::ALL {
                assert_eq!(
                    staff_allows(role, action),
                    matches!(action, View | ViewRewards),
                    "{role:?} {action:?}"
                );
            }
        }
        assert!(!staff_allows(StaffRole::Unspecified, View));
    }

    #[test]
    fn permissions_map_to_actions() {
        assert_eq!(Action::from_permission(Permission::Unspecified), None);
        assert_eq!(Action::from_permission(Permission::TeamManage), Some(ManageSettings));
        assert_eq!(Action::from_permission(Permission::RewardsWithdraw), Some(WithdrawRewards));
        assert_eq!(Action::from_permission(Permission::ProgramsManage), Some(ManagePrograms));
    }

    #[test]
    fn the_owner_is_never_demoted_removed_or_replaced() {
        for actor in [Owner, Admin] {
            for new in [Admin, Member, Finance] {
                assert_eq!(may_change_role(actor, Owner, new), Err(RoleChangeRefusal::OwnerImmutable));
            }
            assert_eq!(may_change_role(actor, Member, Owner), Err(RoleChangeRefusal::OwnerImmutable));
            assert_eq!(may_remove(actor, Owner), Err(RoleChangeRefusal::OwnerImmutable));
        }
    }

    #[test]
    fn owners_and_admins_promote_and_remove_others_do_not() {
        for actor in [Owner, Admin] {
            assert_eq!(may_change_role(actor, Member, Admin), Ok(()));
            assert_eq!(may_change_role(actor, Admin, Finance), Ok(()));
            assert_eq!(may_remove(actor, Admin), Ok(()));
        }
        for actor in [Member, Finance] {
            assert_eq!(may_change_role(actor, Member, Admin), Err(RoleChangeRefusal::NotAllowed));
            assert_eq!(may_remove(actor, Member), Err(RoleChangeRefusal::NotAllowed));
        }
    }

    #[test]
    fn invitations_never_offer_ownership() {
        assert!(!invitable(Owner));
        assert!(!invitable(Unspecified));
        assert!(invitable(Admin) && invitable(Member) && invitable(Finance));
    }
}
