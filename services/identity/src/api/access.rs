//! `AccessService`: the permission check the other services ask before acting for a team.

use tandem_platform::validate::Validator;
use tandem_proto::identity::v1::{self as pb, Permission, access_service_server::AccessService};
use tonic::Request;

use super::{IdentityApi, caller, grpc};
use crate::{
    domain::access::Action,
    error::{IdentityError, Result},
};

grpc! {
    AccessService {
        check_permission => check_permission_(CheckPermissionRequest) -> CheckPermissionResponse;
        get_user_access => get_user_access_(GetUserAccessRequest) -> GetUserAccessResponse;
        check_team_enrollment => check_team_enrollment_(CheckTeamEnrollmentRequest) -> CheckTeamEnrollmentResponse;
    }
}

impl IdentityApi {
    async fn check_permission_(
        &self,
        request: Request<pb::CheckPermissionRequest>,
    ) -> Result<pb::CheckPermissionResponse> {
        let caller = caller(&request)?;
        let pb::CheckPermissionRequest { user_id, team_id, permission } = request.into_inner();
        Validator::new()
            .id("user_id", "user", &user_id)
            .id("team_id", "team", &team_id)
            .known_enum::<Permission>("permission", permission)
            .finish()?;
        if caller.user_id != user_id && !caller.is_staff() {
            return Err(IdentityError::Denied("a user may only ask about its own permissions"));
        }
        let action =
            Permission::try_from(permission).ok().and_then(Action::from_permission).ok_or_else(|| {
                IdentityError::Invalid(vec![tandem_platform::FieldViolation::new(
                    "permission",
                    "must be a known value",
                )])
            })?;
        Ok(pb::CheckPermissionResponse { allowed: self.is_allowed(&user_id, &team_id, action).await? })
    }

    async fn get_user_access_(
        &self,
        request: Request<pb::GetUserAccessRequest>,
    ) -> Result<pb::GetUserAccessResponse> {
        let caller = caller(&request)?;
        let user_id = request.into_inner().user_id;
        Validator::new().id("user_id", "user", &user_id).finish()?;
        let mut access = self.user_access(&user_id).await?.ok_or(IdentityError::NotFound("user"))?;
        // A partner learns about itself and about the members of its teams, and of their teams
        // only the ones it shares; staff learn about anyone.
        if caller.user_id != user_id && !caller.is_staff() {
            let mine = self.user_access(&caller.user_id).await?.map(|a| a.team_ids).unwrap_or_default();
            access.team_ids.retain(|t| mine.contains(t));
            if access.team_ids.is_empty() {
                return Err(IdentityError::NotFound("user"));
            }
        }
        Ok(pb::GetUserAccessResponse {
            user_id,
            active: access.active,
            staff_role: access.staff_role.map_or(0, i32::from),
            team_ids: access.team_ids,
        })
    }

    async fn check_team_enrollment_(
        &self,
        request: Request<pb::CheckTeamEnrollmentRequest>,
    ) -> Result<pb::CheckTeamEnrollmentResponse> {
        let caller = caller(&request)?;
        let pb::CheckTeamEnrollmentRequest { program_id, team_id } = request.into_inner();
        Validator::new().id("program_id", "prog", &program_id).id("team_id", "team", &team_id).finish()?;
        if !self.is_allowed(&caller.user_id, &team_id, Action::View).await? {
            return Err(IdentityError::NotFound("team"));
        }
        Ok(pb::CheckTeamEnrollmentResponse { enrolled: self.team_enrolled(&team_id, &program_id).await? })
    }
}
