//! `TeamService`: partner teams and their members.

use tandem_platform::{
    FieldViolation,
    auth::Caller,
    paging::Page,
    validate::{NAME_MAX, Validator},
};
use tandem_proto::{
    common::v1::ErrorReason,
    events::v1::{MembershipChange, TeamDeleted, event::Payload},
    identity::v1::{self as pb, RewardsVisibility, StaffRole, TeamRole, team_service_server::TeamService},
};
use tonic::Request;

use super::{IdentityApi, auth::membership_event, caller, convert, grpc, team_id};
use crate::{
    domain::{
        access::{Action, RoleChangeRefusal, may_change_role, may_remove},
        teams::{DeletionRefusal, may_delete_team},
    },
    error::{IdentityError, Result},
    ports::LedgerError,
    store,
};

grpc! {
    TeamService {
        create_team => create_team_(CreateTeamRequest) -> CreateTeamResponse;
        get_team => get_team_(GetTeamRequest) -> GetTeamResponse;
        list_teams => list_teams_(ListTeamsRequest) -> ListTeamsResponse;
        update_team => update_team_(UpdateTeamRequest) -> UpdateTeamResponse;
        delete_team => delete_team_(DeleteTeamRequest) -> DeleteTeamResponse;
        list_members => list_members_(ListMembersRequest) -> ListMembersResponse;
        update_member_role => update_member_role_(UpdateMemberRoleRequest) -> UpdateMemberRoleResponse;
        remove_member => remove_member_(RemoveMemberRequest) -> RemoveMemberResponse;
        leave_team => leave_team_(LeaveTeamRequest) -> LeaveTeamResponse;
    }
}

fn refusal(r: RoleChangeRefusal) -> IdentityError {
    match r {
        RoleChangeRefusal::OwnerImmutable => IdentityError::rule(
            ErrorReason::OwnerImmutable,
            "the team's owner cannot be removed, demoted or replaced",
        ),
        RoleChangeRefusal::NotAllowed => {
            IdentityError::Denied("only the team's owner and admins manage members")
        }
    }
}

impl IdentityApi {
    async fn create_team_(&self, request: Request<pb::CreateTeamRequest>) -> Result<pb::CreateTeamResponse> {
        let caller = caller(&request)?;
        if caller.is_staff() {
            return Err(IdentityError::Denied("vendor staff do not own partner teams"));
        }
        let pb::CreateTeamRequest { name } = request.into_inner();
        Validator::new().text("name", &name, NAME_MAX).finish()?;
        let mut tx = self.db.begin().await?;
        let team = self.create_team_in(&mut tx, &name, &caller.user_id).await?;
        self.commit(tx).await?;
        Ok(pb::CreateTeamResponse { team: Some(convert::team(&team)) })
    }

    async fn load_team(&self, id: &str) -> Result<store::TeamRow> {
        let mut conn = self.db.acquire().await?;
        store::team(&mut conn, id).await?.ok_or(IdentityError::NotFound("team"))
    }

    async fn get_team_(&self, request: Request<pb::GetTeamRequest>) -> Result<pb::GetTeamResponse> {
        let caller = caller(&request)?;
        let id = &request.get_ref().team_id;
        team_id("team_id", id)?;
        self.authorize(&caller, id, Action::View).await?;
        Ok(pb::GetTeamResponse { team: Some(convert::team(&self.load_team(id).await?)) })
    }

    async fn list_teams_(&self, request: Request<pb::ListTeamsRequest>) -> Result<pb::ListTeamsResponse> {
        let caller = caller(&request)?;
        let pb::ListTeamsRequest { page_size, page_token } = request.into_inner();
        let page = Page::parse(page_size, &page_token)?;
        let mut conn = self.db.acquire().await?;
        let rows = if caller.is_staff() {
            store::list_all_teams(&mut conn, page.after_key(), page.limit()).await?
        } else {
            store::list_teams_of_user(&mut conn, &caller.user_id, page.after_key(), page.limit()).await?
        };
        let (rows, next_page_token) = page.finish(rows, |t| t.id.clone());
        Ok(pb::ListTeamsResponse { teams: rows.iter().map(convert::team).collect(), next_page_token })
    }

    async fn update_team_(&self, request: Request<pb::UpdateTeamRequest>) -> Result<pb::UpdateTeamResponse> {
        let caller = caller(&request)?;
        let pb::UpdateTeamRequest { team, update_mask } = request.into_inner();
        let team =
            team.ok_or_else(|| IdentityError::Invalid(vec![FieldViolation::new("team", "is required")]))?;
        team_id("team.id", &team.id)?;
        let paths = update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Validator::new();
        v.check(!paths.is_empty(), "update_mask", "must name the fields to change");
        for path in &paths {
            match path.as_str() {
                "name" => {
                    v.text("team.name", &team.name, NAME_MAX);
                }
                "rewards_visibility" => {
                    v.known_enum::<RewardsVisibility>("team.rewards_visibility", team.rewards_visibility);
                }
                "channel_manager_user_id" => {
                    if !team.channel_manager_user_id.is_empty() {
                        v.id("team.channel_manager_user_id", "user", &team.channel_manager_user_id);
                    }
                }
                other => {
                    v.violation("update_mask", format!("unknown field `{other}`"));
                }
            }
        }
        v.finish()?;
        let settings = paths.iter().any(|p| p == "name" || p == "rewards_visibility");
        let manager = paths.iter().any(|p| p == "channel_manager_user_id");
        if settings {
            self.authorize(&caller, &team.id, Action::ManageSettings).await?;
        }
        if manager {
            self.authorize(&caller, &team.id, Action::View).await?;
            if !caller.has_staff_role(&[StaffRole::Admin, StaffRole::ChannelManager]) {
                return Err(IdentityError::Denied("only vendor staff assign a team's channel manager"));
            }
        }
        let mut tx = self.db.begin().await?;
        let mut row = store::team(&mut tx, &team.id).await?.ok_or(IdentityError::NotFound("team"))?;
        for path in &paths {
            match path.as_str() {
                "name" => row.name = team.name.trim().to_owned(),
                "rewards_visibility" => {
                    row.rewards_visibility = team.rewards_visibility().as_str_name().to_owned()
                }
                _ => {
                    row.channel_manager_user_id = if team.channel_manager_user_id.is_empty() {
                        None
                    } else {
                        let user = store::user_by_id(&mut tx, &team.channel_manager_user_id).await?;
                        if !user.is_some_and(|u| u.staff_role.is_some() && u.active) {
                            return Err(IdentityError::Invalid(vec![FieldViolation::new(
                                "team.channel_manager_user_id",
                                "must be an active vendor staff user",
                            )]));
                        }
                        Some(team.channel_manager_user_id.clone())
                    };
                }
            }
        }
        store::update_team(&mut tx, &row).await?;
        self.commit(tx).await?;
        self.forget_team(&row.id).await;
        Ok(pb::UpdateTeamResponse { team: Some(convert::team(&row)) })
    }

    async fn delete_team_(&self, request: Request<pb::DeleteTeamRequest>) -> Result<pb::DeleteTeamResponse> {
        let caller = caller(&request)?;
        let id = request.into_inner().team_id;
        team_id("team_id", &id)?;
        self.authorize(&caller, &id, Action::DeleteTeam).await?;
        let holds_rewards = self
            .ports
            .rewards
            .team_holds_rewards(&id)
            .await
            .map_err(|e| match e {
                LedgerError::Unconfigured => IdentityError::rule(
                    ErrorReason::RewardsLedgerUnconfigured,
                    "teams cannot be deleted: no commissions service is configured to tell whether the team holds rewards",
                ),
                LedgerError::Unavailable(m) => IdentityError::Unavailable(format!("rewards ledger: {m}")),
            })?;
        let mut tx = self.db.begin().await?;
        let team = store::team(&mut tx, &id).await?.ok_or(IdentityError::NotFound("team"))?;
        let others = store::count_other_members(&mut tx, &id, &team.owner_user_id).await?;
        may_delete_team(others, holds_rewards).map_err(|r| match r {
            DeletionRefusal::OtherMembers => IdentityError::rule(
                ErrorReason::TeamHasMembers,
                "remove every other member before deleting the team",
            ),
            DeletionRefusal::HoldsRewards => IdentityError::rule(
                ErrorReason::TeamHoldsRewards,
                "the team holds rewards; withdraw or settle them first",
            ),
        })?;
        store::delete_team(&mut tx, &id).await?;
        self.emit(
            &mut tx,
            &id,
            membership_event(&id, &team.owner_user_id, MembershipChange::Removed, TeamRole::Owner),
        )
        .await?;
        self.emit(&mut tx, &id, Payload::TeamDeleted(TeamDeleted { team_id: id.clone() })).await?;
        self.commit(tx).await?;
        self.forget_team(&id).await;
        Ok(pb::DeleteTeamResponse {})
    }

    async fn list_members_(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<pb::ListMembersResponse> {
        let caller = caller(&request)?;
        let pb::ListMembersRequest { team_id: id, page_size, page_token } = request.into_inner();
        team_id("team_id", &id)?;
        let page = Page::parse(page_size, &page_token)?;
        self.authorize(&caller, &id, Action::View).await?;
        let mut conn = self.db.acquire().await?;
        let rows = store::list_members(&mut conn, &id, page.after_key(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |m| m.user_id.clone());
        Ok(pb::ListMembersResponse { members: rows.iter().map(convert::member).collect(), next_page_token })
    }

    /// The actor's role in a team it may manage members of.
    async fn manager_role(&self, caller: &Caller, team: &str) -> Result<TeamRole> {
        let access = self.authorize(caller, team, Action::ManageMembers).await?;
        access.role.ok_or(IdentityError::Denied("only the team's owner and admins manage members"))
    }

    async fn update_member_role_(
        &self,
        request: Request<pb::UpdateMemberRoleRequest>,
    ) -> Result<pb::UpdateMemberRoleResponse> {
        let caller = caller(&request)?;
        let pb::UpdateMemberRoleRequest { team_id: team, user_id, role } = request.into_inner();
        Validator::new()
            .id("team_id", "team", &team)
            .id("user_id", "user", &user_id)
            .known_enum::<TeamRole>("role", role)
            .finish()?;
        let new = TeamRole::try_from(role).unwrap_or(TeamRole::Unspecified);
        let actor = self.manager_role(&caller, &team).await?;
        let mut tx = self.db.begin().await?;
        let target =
            store::member(&mut tx, &team, &user_id).await?.ok_or(IdentityError::NotFound("member"))?;
        may_change_role(actor, convert::role(&target.role), new).map_err(refusal)?;
        store::set_member_role(&mut tx, &team, &user_id, new.as_str_name()).await?;
        self.emit(&mut tx, &team, membership_event(&team, &user_id, MembershipChange::RoleChanged, new))
            .await?;
        let updated =
            store::member(&mut tx, &team, &user_id).await?.ok_or(IdentityError::NotFound("member"))?;
        self.commit(tx).await?;
        self.forget_member(&user_id, &team).await;
        Ok(pb::UpdateMemberRoleResponse { member: Some(convert::member(&updated)) })
    }

    async fn remove_member_(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<pb::RemoveMemberResponse> {
        let caller = caller(&request)?;
        let pb::RemoveMemberRequest { team_id: team, user_id } = request.into_inner();
        Validator::new().id("team_id", "team", &team).id("user_id", "user", &user_id).finish()?;
        let actor = self.manager_role(&caller, &team).await?;
        let mut tx = self.db.begin().await?;
        let target =
            store::member(&mut tx, &team, &user_id).await?.ok_or(IdentityError::NotFound("member"))?;
        may_remove(actor, convert::role(&target.role)).map_err(refusal)?;
        store::delete_member(&mut tx, &team, &user_id).await?;
        self.emit(
            &mut tx,
            &team,
            membership_event(&team, &user_id, MembershipChange::Removed, TeamRole::Unspecified),
        )
        .await?;
        self.commit(tx).await?;
        self.forget_member(&user_id, &team).await;
        Ok(pb::RemoveMemberResponse {})
    }

    async fn leave_team_(&self, request: Request<pb::LeaveTeamRequest>) -> Result<pb::LeaveTeamResponse> {
        let caller = caller(&request)?;
        let team = request.into_inner().team_id;
        team_id("team_id", &team)?;
        let access = self.authorize(&caller, &team, Action::View).await?;
        match access.role {
            Some(TeamRole::Owner) => {
                return Err(IdentityError::rule(
                    ErrorReason::OwnerCannotLeave,
                    "the owner cannot leave the team; delete it once the other members are gone",
                ));
            }
            None => return Err(IdentityError::NotFound("team")),
            Some(_) => {}
        }
        let mut tx = self.db.begin().await?;
        if store::delete_member(&mut tx, &team, &caller.user_id).await? {
            self.emit(
                &mut tx,
                &team,
                membership_event(&team, &caller.user_id, MembershipChange::Removed, TeamRole::Unspecified),
            )
            .await?;
        }
        self.commit(tx).await?;
        self.forget_member(&caller.user_id, &team).await;
        Ok(pb::LeaveTeamResponse {})
    }
}
