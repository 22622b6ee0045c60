//! Identity's users and enrolments over gRPC, for the production binary: `GetUserAccess` and
//! `CheckTeamEnrollment`, asked with the caller's own token, a deadline and the caller's trace
//! context.

use std::time::Duration;

use async_trait::async_trait;
use tandem_platform::{ApiError, auth::Caller, telemetry};
use tandem_proto::identity::v1::{
    CheckTeamEnrollmentRequest, GetUserAccessRequest, access_service_client::AccessServiceClient,
};
use tonic::transport::{Channel, Endpoint};

use crate::{Directory, UserInfo};

/// Identity's users and enrolments over gRPC, asked with the caller's own token (a staff
/// caller may ask about anyone; a partner about itself and the members of its teams).
pub struct IdentityDirectory {
    channel: Channel,
}

impl IdentityDirectory {
    /// Connects lazily: identity may start after this service.
    pub fn connect(url: &str) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Self { channel })
    }

    fn request<T>(&self, caller: &Caller, message: T) -> Result<tonic::Request<T>, ApiError> {
        let token = caller
            .token
            .as_deref()
            .ok_or_else(|| ApiError::Unauthenticated("no bearer token to forward".into()))?;
        let mut request = tonic::Request::new(message);
        request.set_timeout(Duration::from_secs(2));
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| ApiError::Unauthenticated("the bearer token is not valid metadata".into()))?;
        request.metadata_mut().insert("authorization", bearer);
        telemetry::inject_into_metadata(request.metadata_mut());
        Ok(request)
    }
}

fn unavailable(status: &tonic::Status) -> ApiError {
    tracing::warn!(code = ?status.code(), message = status.message(), "identity did not answer");
    ApiError::Unavailable("identity did not answer".into())
}

#[async_trait]
impl Directory for IdentityDirectory {
    async fn user(&self, caller: &Caller, user_id: &str) -> Result<Option<UserInfo>, ApiError> {
        let request = self.request(caller, GetUserAccessRequest { user_id: user_id.to_owned() })?;
        match AccessServiceClient::new(self.channel.clone()).get_user_access(request).await {
            Ok(r) => {
                let r = r.into_inner();
                Ok(Some(UserInfo { active: r.active, staff: r.staff_role != 0, team_ids: r.team_ids }))
            }
            // Unknown, or not one the caller may learn about: the same to the caller.
            Err(status) if matches!(status.code(), tonic::Code::NotFound | tonic::Code::PermissionDenied) => {
                Ok(None)
            }
            Err(status) => Err(unavailable(&status)),
        }
    }

    async fn team_enrolled(
        &self,
        caller: &Caller,
        team_id: &str,
        program_id: &str,
    ) -> Result<bool, ApiError> {
        let request = self.request(
            caller,
            CheckTeamEnrollmentRequest { program_id: program_id.to_owned(), team_id: team_id.to_owned() },
        )?;
        match AccessServiceClient::new(self.channel.clone()).check_team_enrollment(request).await {
            Ok(r) => Ok(r.into_inner().enrolled),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
            Err(status) => Err(unavailable(&status)),
        }
    }
}
