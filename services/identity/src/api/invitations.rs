//! `InvitationService`: invitations by email or direct link; single use, expiring, stored
//! hashed.

use tandem_platform::{
    auth::optional_caller,
    ids::new_id,
    paging::Page,
    time::now_micros,
    validate::{NAME_MAX, Validator, normalize_email},
};
use tandem_proto::{
    common::v1::ErrorReason,
    events::v1::MembershipChange,
    identity::v1::{self as pb, InvitationStatus, TeamRole, invitation_service_server::InvitationService},
};
use tonic::Request;

use super::{IdentityApi, auth, caller, convert, grpc};
use crate::{
    domain::{
        access::{Action, invitable},
        secrets::{hash_token, new_token},
        teams::{INVITATION_TTL, InvitationState},
    },
    error::{IdentityError, Result},
    ports::Email,
    store::{self, InvitationRow},
};

grpc! {
    InvitationService {
        create_invitation => create_invitation_(CreateInvitationRequest) -> CreateInvitationResponse;
        list_invitations => list_invitations_(ListInvitationsRequest) -> ListInvitationsResponse;
        resend_invitation => resend_invitation_(ResendInvitationRequest) -> ResendInvitationResponse;
        revoke_invitation => revoke_invitation_(RevokeInvitationRequest) -> RevokeInvitationResponse;
        accept_invitation => accept_invitation_(AcceptInvitationRequest) -> AcceptInvitationResponse;
    }
}

fn status_of(i: &InvitationRow, now: i64) -> InvitationStatus {
    InvitationState { expire_time: i.expire_time, accept_time: i.accept_time, revoke_time: i.revoke_time }
        .status(now)
}

fn closed(status: InvitationStatus) -> IdentityError {
    match status {
        InvitationStatus::Accepted => {
            IdentityError::rule(ErrorReason::InvitationAlreadyAccepted, "the invitation was already accepted")
        }
        InvitationStatus::Revoked => {
            IdentityError::rule(ErrorReason::InvitationRevoked, "the invitation was revoked")
        }
        _ => IdentityError::rule(ErrorReason::InvitationExpired, "the invitation expired; ask for a new one"),
    }
}

impl IdentityApi {
    fn invitation_email(&self, team_name: &str, to: &str, token: &str) -> Email {
        Email {
            to: to.to_owned(),
            subject: format!("You are invited to join {team_name} on Tandem"),
            body: format!("Join {team_name}: {}/invitations/accept?token={token}", self.link_base),
        }
    }

    /// An invitation the caller manages, or NOT_FOUND.
    async fn managed_invitation(
        &self,
        caller: &tandem_platform::auth::Caller,
        id: &str,
    ) -> Result<InvitationRow> {
        Validator::new().id("invitation_id", "inv", id).finish()?;
        let mut conn = self.db.acquire().await?;
        let invitation =
            store::invitation(&mut conn, id).await?.ok_or(IdentityError::NotFound("invitation"))?;
        drop(conn);
        match self.authorize(caller, &invitation.team_id, Action::ManageMembers).await {
            Err(IdentityError::NotFound(_)) => Err(IdentityError::NotFound("invitation")),
            other => other.map(|_| invitation),
        }
    }

    async fn create_invitation_(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<pb::CreateInvitationResponse> {
        let caller = caller(&request)?;
        let pb::CreateInvitationRequest { team_id, email, role } = request.into_inner();
        let mut v = Validator::new();
        v.id("team_id", "team", &team_id);
        if !email.is_empty() {
            v.email("email", &email);
        }
        let role = if role == 0 {
            TeamRole::Member
        } else {
            TeamRole::try_from(role).unwrap_or(TeamRole::Unspecified)
        };
        v.check(invitable(role), "role", "must be admin, member or finance");
        v.finish()?;
        self.authorize(&caller, &team_id, Action::ManageMembers).await?;
        let email = normalize_email(&email);
        let now = now_micros();
        let token = new_token();
        let invitation = InvitationRow {
            id: new_id("inv"),
            team_id: team_id.clone(),
            email: email.clone(),
            role: role.as_str_name().to_owned(),
            invited_by_user_id: caller.user_id.clone(),
            create_time: now,
            expire_time: now + INVITATION_TTL,
            accept_time: None,
            accepted_by_user_id: None,
            revoke_time: None,
        };
        let mut tx = self.db.begin().await?;
        let team = store::team(&mut tx, &team_id).await?.ok_or(IdentityError::NotFound("team"))?;
        let invitee = if email.is_empty() { None } else { store::user_by_email(&mut tx, &email).await? };
        if let Some(user) = invitee {
            if store::member(&mut tx, &team_id, &user.id).await?.is_some() {
                return Err(IdentityError::Duplicate(
                    ErrorReason::AlreadyMember,
                    "this user is already a member".into(),
                ));
            }
            store::insert_notification(
                &mut tx,
                &store::NotificationRow {
                    id: new_id("ntf"),
                    user_id: user.id,
                    kind: "team.invitation".into(),
                    title: format!("You are invited to join {}", team.name),
                    body: "Open the invitation email to accept.".into(),
                    subject_id: team_id.clone(),
                    read_time: None,
                    create_time: now,
                },
            )
            .await?;
        }
        store::insert_invitation(&mut tx, &invitation, &hash_token(&token)).await?;
        self.commit(tx).await?;
        if !email.is_empty() {
            self.send(self.invitation_email(&team.name, &email, &token)).await;
        }
        Ok(pb::CreateInvitationResponse {
            invitation: Some(convert::invitation(&invitation, Some(token), now)),
        })
    }

    async fn list_invitations_(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<pb::ListInvitationsResponse> {
        let caller = caller(&request)?;
        let pb::ListInvitationsRequest { team_id, page_size, page_token } = request.into_inner();
        super::team_id("team_id", &team_id)?;
        let page = Page::parse(page_size, &page_token)?;
        self.authorize(&caller, &team_id, Action::ManageMembers).await?;
        let mut conn = self.db.acquire().await?;
        let rows = store::list_invitations(&mut conn, &team_id, page.after_key(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |i| i.id.clone());
        let now = now_micros();
        Ok(pb::ListInvitationsResponse {
            invitations: rows.iter().map(|i| convert::invitation(i, None, now)).collect(),
            next_page_token,
        })
    }

    async fn resend_invitation_(
        &self,
        request: Request<pb::ResendInvitationRequest>,
    ) -> Result<pb::ResendInvitationResponse> {
        let caller = caller(&request)?;
        let mut invitation = self.managed_invitation(&caller, &request.get_ref().invitation_id).await?;
        let now = now_micros();
        let status = status_of(&invitation, now);
        if !matches!(status, InvitationStatus::Pending | InvitationStatus::Expired) {
            return Err(closed(status));
        }
        let token = new_token();
        invitation.expire_time = now + INVITATION_TTL;
        let mut tx = self.db.begin().await?;
        store::renew_invitation(&mut tx, &invitation.id, &hash_token(&token), invitation.expire_time).await?;
        let team = store::team(&mut tx, &invitation.team_id).await?.ok_or(IdentityError::NotFound("team"))?;
        self.commit(tx).await?;
        if !invitation.email.is_empty() {
            self.send(self.invitation_email(&team.name, &invitation.email, &token)).await;
        }
        Ok(pb::ResendInvitationResponse {
            invitation: Some(convert::invitation(&invitation, Some(token), now)),
        })
    }

    async fn revoke_invitation_(
        &self,
        request: Request<pb::RevokeInvitationRequest>,
    ) -> Result<pb::RevokeInvitationResponse> {
        let caller = caller(&request)?;
        let mut invitation = self.managed_invitation(&caller, &request.get_ref().invitation_id).await?;
        let now = now_micros();
        match status_of(&invitation, now) {
            InvitationStatus::Accepted => return Err(closed(InvitationStatus::Accepted)),
            InvitationStatus::Revoked => {}
            _ => {
                let mut tx = self.db.begin().await?;
                store::revoke_invitation(&mut tx, &invitation.id, now).await?;
                self.commit(tx).await?;
                invitation.revoke_time = Some(now);
            }
        }
        Ok(pb::RevokeInvitationResponse { invitation: Some(convert::invitation(&invitation, None, now)) })
    }

    async fn accept_invitation_(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Result<pb::AcceptInvitationResponse> {
        let caller = optional_caller(&request).cloned();
        let pb::AcceptInvitationRequest { token, display_name, password, email } = request.into_inner();
        Validator::new().text("token", &token, 256).finish()?;
        let mut conn = self.db.acquire().await?;
        let invitation =
            store::invitation_by_token(&mut conn, &hash_token(&token)).await?.ok_or_else(|| {
                IdentityError::rule(ErrorReason::TokenInvalid, "the invitation link is not valid")
            })?;
        drop(conn);
        let now = now_micros();
        let status = status_of(&invitation, now);
        if status != InvitationStatus::Pending {
            return Err(closed(status));
        }

        // Who accepts: the signed-in caller, or a newcomer signed up here.
        let (user, created) = match &caller {
            Some(caller) if caller.is_staff() => {
                return Err(IdentityError::Denied("vendor staff do not join partner teams"));
            }
            Some(caller) => {
                let mut conn = self.db.acquire().await?;
                let user = store::user_by_id(&mut conn, &caller.user_id)
                    .await?
                    .ok_or(IdentityError::NotFound("user"))?;
                (user, false)
            }
            None => {
                let email = if invitation.email.is_empty() {
                    normalize_email(&email)
                } else {
                    invitation.email.clone()
                };
                let mut v = Validator::new();
                v.text("display_name", &display_name, NAME_MAX).password("password", &password);
                if invitation.email.is_empty() {
                    v.email("email", &email);
                }
                v.finish()?;
                // An address the invitation was mailed to is proven by holding the token.
                let verified = !invitation.email.is_empty();
                (auth::new_user(&email, &display_name, auth::hash(password).await?, verified, None), true)
            }
        };
        if !invitation.email.is_empty() && invitation.email != user.email {
            return Err(IdentityError::rule(
                ErrorReason::InvitationEmailMismatch,
                "this invitation was sent to another email address",
            ));
        }

        let mut tx = self.db.begin().await?;
        if created {
            match auth::insert_user(&mut tx, &user).await {
                Err(IdentityError::Duplicate(..)) => {
                    return Err(IdentityError::Duplicate(
                        ErrorReason::AlreadyExists,
                        "an account with this email exists: sign in, then accept".into(),
                    ));
                }
                other => other?,
            }
        }
        let role = convert::role(&invitation.role);
        if !store::insert_member(&mut tx, &invitation.team_id, &user.id, role.as_str_name(), now).await? {
            return Err(IdentityError::Duplicate(
                ErrorReason::AlreadyMember,
                "you are already a member of this team".into(),
            ));
        }
        if !store::accept_invitation(&mut tx, &invitation.id, &user.id, now).await? {
            return Err(closed(InvitationStatus::Accepted));
        }
        self.emit(
            &mut tx,
            &invitation.team_id,
            auth::membership_event(&invitation.team_id, &user.id, MembershipChange::Added, role),
        )
        .await?;
        let member = store::member(&mut tx, &invitation.team_id, &user.id)
            .await?
            .ok_or(IdentityError::NotFound("member"))?;
        self.commit(tx).await?;
        self.forget_member(&user.id, &invitation.team_id).await;
        Ok(pb::AcceptInvitationResponse { member: Some(convert::member(&member)) })
    }
}
