//! Identity's users and enrolments over gRPC, for the production binary: `GetUserAccess` and
//! `CheckTeamEnrollment`, asked with the caller's own token through the identity [`Peer`]
//! (deadline, retries on UNAVAILABLE, the caller's trace context).

use async_trait::async_trait;
use tandem_platform::{
    ApiError,
    auth::Caller,
    peers::{self, Peer, PeerError, forwarded_token},
};
use tandem_proto::identity::v1::{
    CheckTeamEnrollmentRequest, GetUserAccessRequest, access_service_client::AccessServiceClient,
};
use tonic::Code;

use crate::{Directory, UserInfo};

/// Identity's users and enrolments over gRPC, asked with the caller's own token (a staff
/// caller may ask about anyone; a partner about itself and the members of its teams).
pub struct IdentityDirectory {
    peer: Peer,
}

impl IdentityDirectory {
    /// Connects lazily: identity may start after this service.
    pub fn connect(url: &str) -> Result<Self, PeerError> {
        Ok(Self { peer: Peer::connect("identity", url)? })
    }

    pub fn new(peer: Peer) -> Self {
        Self { peer }
    }
}

#[async_trait]
impl Directory for IdentityDirectory {
    async fn user(&self, caller: &Caller, user_id: &str) -> Result<Option<UserInfo>, ApiError> {
        let message = GetUserAccessRequest { user_id: user_id.to_owned() };
        let answer = self
            .peer
            .call(Some(forwarded_token(caller)?), message, |channel, request| async move {
                AccessServiceClient::new(channel).get_user_access(request).await
            })
            .await;
        match answer {
            Ok(r) => Ok(Some(UserInfo { active: r.active, staff: r.staff_role != 0, team_ids: r.team_ids })),
            // Unknown, or not one the caller may learn about: the same to the caller.
            Err(status) if matches!(status.code(), Code::NotFound | Code::PermissionDenied) => Ok(None),
            Err(status) if status.code() == Code::Unauthenticated => {
                Err(ApiError::Unauthenticated(status.message().to_owned()))
            }
            Err(status) => Err(peers::unavailable("identity", &status)),
        }
    }

    async fn team_enrolled(
        &self,
        caller: &Caller,
        team_id: &str,
        program_id: &str,
    ) -> Result<bool, ApiError> {
        let message =
            CheckTeamEnrollmentRequest { program_id: program_id.to_owned(), team_id: team_id.to_owned() };
        let answer = self
            .peer
            .call(Some(forwarded_token(caller)?), message, |channel, request| async move {
                AccessServiceClient::new(channel).check_team_enrollment(request).await
            })
            .await;
        match answer {
            Ok(r) => Ok(r.enrolled),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) if status.code() == Code::Unauthenticated => {
                Err(ApiError::Unauthenticated(status.message().to_owned()))
            }
            Err(status) => Err(peers::unavailable("identity", &status)),
        }
    }
}
