//! The gRPC surface of identity: thin handlers that validate, authorise, run the use case in
//! one transaction and convert. `IdentityApi` implements every identity service.

pub mod access;
pub mod applications;
pub mod auth;
mod convert;
pub mod domains;
pub mod invitations;
pub mod notifications;
pub mod programs;
pub mod staff;
pub mod teams;

use std::sync::Arc;

use tandem_platform::{auth::Caller, server::ServiceSet, service_set, validate::Validator};
use tandem_proto::identity::v1::{
    access_service_server::AccessServiceServer, application_service_server::ApplicationServiceServer,
    auth_service_server::AuthServiceServer, domain_service_server::DomainServiceServer,
    invitation_service_server::InvitationServiceServer,
    notification_service_server::NotificationServiceServer, program_service_server::ProgramServiceServer,
    staff_service_server::StaffServiceServer, team_service_server::TeamServiceServer,
};

use crate::{
    Identity,
    cache::TeamAccess,
    domain::access::{Action, role_allows, staff_allows},
    error::{IdentityError, Result},
};

/// The handlers of every identity service.
#[derive(Clone)]
pub struct IdentityApi(pub Arc<Identity>);

impl std::ops::Deref for IdentityApi {
    type Target = Identity;
    fn deref(&self) -> &Identity {
        &self.0
    }
}

/// Every identity service, with message size limits.
pub fn services(identity: &Arc<Identity>, max_message_bytes: usize) -> ServiceSet {
    let api = IdentityApi(identity.clone());
    service_set![
        max_message_bytes;
        AuthServiceServer::new(api.clone()),
        StaffServiceServer::new(api.clone()),
        TeamServiceServer::new(api.clone()),
        InvitationServiceServer::new(api.clone()),
        DomainServiceServer::new(api.clone()),
        ProgramServiceServer::new(api.clone()),
        ApplicationServiceServer::new(api.clone()),
        AccessServiceServer::new(api.clone()),
        NotificationServiceServer::new(api),
    ]
}

pub(crate) fn caller<T>(request: &tonic::Request<T>) -> Result<Arc<Caller>> {
    // UNAUTHENTICATED without a token; PERMISSION_DENIED for a service principal.
    tandem_platform::auth::caller(request).cloned().map_err(IdentityError::Api)
}

/// A team id from outside: validated before any lookup.
pub(crate) fn team_id(field: &str, value: &str) -> Result<()> {
    Ok(Validator::new().id(field, "team", value).finish()?)
}

impl IdentityApi {
    /// Authorises `action` on a team. A caller who may not even see the team gets NOT_FOUND;
    /// one who sees it but may not do this gets PERMISSION_DENIED.
    pub(crate) async fn authorize(
        &self,
        caller: &Caller,
        team_id: &str,
        action: Action,
    ) -> Result<TeamAccess> {
        let access =
            self.team_access(&caller.user_id, team_id).await?.ok_or(IdentityError::NotFound("team"))?;
        if let Some(staff) = caller.staff_role {
            return if staff_allows(staff, action) {
                Ok(access)
            } else if staff_allows(staff, Action::View) {
                Err(IdentityError::Denied("vendor staff do not act for partner teams"))
            } else {
                Err(IdentityError::NotFound("team"))
            };
        }
        match access.role {
            None => Err(IdentityError::NotFound("team")),
            Some(role) if role_allows(role, action, access.visibility) => Ok(access),
            Some(_) => Err(IdentityError::Denied("your role in this team does not allow this")),
        }
    }
}

/// Implements a generated service trait for [`IdentityApi`]: see `tandem_platform::grpc_service!`.
macro_rules! grpc {
    ($($body:tt)*) => {
        tandem_platform::grpc_service!($crate::api::IdentityApi; $($body)*);
    };
}
pub(crate) use grpc;
