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
}
