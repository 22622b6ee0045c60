//! `AuthService`: sign-up, tokens, email verification, keys.

use tandem_platform::{
    db::DbError,
    ids::new_id,
    time::{MICROS_PER_SECOND, now_micros},
    validate::{EMAIL_MAX, NAME_MAX, Validator, normalize_email},
};
use tandem_proto::{
    common::v1::ErrorReason,
    events::v1::{MembershipChange, MembershipChanged, TeamCreated, event::Payload},
    identity::v1::{self as pb, RewardsVisibility, TeamRole, auth_service_server::AuthService},
};
use tonic::Request;

use super::{IdentityApi, caller, convert, grpc};
use crate::{
    Identity,
    domain::{
        secrets::{hash_password, hash_token, new_token, verify_password},
        teams::{ACCESS_TTL_SECS, EMAIL_VERIFICATION_TTL, REFRESH_TTL, default_team_name},
    },
    error::{IdentityError, Result},
    ports::Email,
    store::{self, TeamRow, UserRow},
};

/// Hashes off the async runtime: argon2id is deliberately slow.
pub(crate) async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| IdentityError::Internal(e.into()))?
        .map_err(IdentityError::Internal)
}

async fn verify(password: String, phc: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .map_err(|e| IdentityError::Internal(e.into()))
}

/// A PHC string that matches no password: verified against when the email is unknown, so the
/// answer takes as long as for a known one.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2jJDDwGH3h+5ZyUS2RbUhbUoWBKVYLG7UehqYVgq8zc";

pub(crate) fn new_user(
    email: &str,
    display_name: &str,
    password_hash: String,
    email_verified: bool,
    staff: Option<pb::StaffRole>,
) -> UserRow {
    UserRow {
        id: new_id("user"),
        email: email.to_owned(),
        display_name: display_name.trim().to_owned(),
        password_hash,
        active: true,
        email_verified,
        staff_role: staff.map(|r| r.as_str_name().to_owned()),
        tokens_valid_after: 0,
        create_time: now_micros(),
    }
}

/// Inserts a user, answering ALREADY_EXISTS for a taken email.
pub(crate) async fn insert_user(c: &mut sqlx::AnyConnection, user: &UserRow) -> Result<()> {
    match store::insert_user(c, user).await {
        Err(DbError::UniqueViolation) => Err(IdentityError::Duplicate(
            ErrorReason::AlreadyExists,
            "a user with this email already exists".into(),
        )),
        other => Ok(other?),
    }
}

impl Identity {
    /// Creates a team owned by `owner` in `tx`, with the owner's membership and the events.
    pub(crate) async fn create_team_in(
        &self,
        tx: &mut tandem_platform::db::Tx,
        name: &str,
        owner: &str,
    ) -> Result<TeamRow> {
        let now = now_micros();
        let team = TeamRow {
            id: new_id("team"),
            name: name.trim().to_owned(),
            owner_user_id: owner.to_owned(),
            rewards_visibility: RewardsVisibility::Show.as_str_name().to_owned(),
            channel_manager_user_id: None,
            create_time: now,
        };
        store::insert_team(tx, &team).await?;
        store::insert_member(tx, &team.id, owner, TeamRole::Owner.as_str_name(), now).await?;
        self.emit(
            tx,
            &team.id,
            Payload::TeamCreated(TeamCreated {
                team_id: team.id.clone(),
                name: team.name.clone(),
                owner_user_id: owner.to_owned(),
            }),
        )
        .await?;
        self.emit(tx, &team.id, membership_event(&team.id, owner, MembershipChange::Added, TeamRole::Owner))
            .await?;
        Ok(team)
    }

    /// Starts an email verification and sends its link (after the transaction commits).
    pub(crate) async fn start_email_verification(
        &self,
        tx: &mut tandem_platform::db::Tx,
        user: &UserRow,
    ) -> Result<Email> {
        let token = new_token();
        store::insert_email_verification(
            tx,
            &hash_token(&token),
            &user.id,
            now_micros() + EMAIL_VERIFICATION_TTL,
        )
        .await?;
        Ok(Email {
            to: user.email.clone(),
            subject: "Confirm your email address".into(),
            body: format!("Confirm your address for Tandem: {}/verify-email?token={token}", self.link_base),
        })
    }

    pub(crate) async fn send(&self, email: Email) {
        if let Err(err) = self.ports.mailer.send(email).await {
            tracing::warn!(error = %err, "could not send email");
        }
    }

    async fn issue_tokens(&self, user: &UserRow) -> Result<(String, String)> {
        let now = now_micros();
        // Never issued before the user's tokens count again (a reactivation within the second
        // of the deactivation that voided the earlier ones).
        let issued_at = (now / MICROS_PER_SECOND).max(user.tokens_valid_after);
        let access = self
            .keys
            .sign(&user.id, user.staff_role.as_deref(), issued_at, ACCESS_TTL_SECS)
            .map_err(IdentityError::Internal)?;
        let refresh = new_token();
        let mut conn = self.db.acquire().await?;
        store::insert_refresh_token(&mut conn, &hash_token(&refresh), &user.id, now + REFRESH_TTL, now)
            .await?;
        Ok((access, refresh))
    }
}

pub(crate) fn membership_event(
    team_id: &str,
    user_id: &str,
    change: MembershipChange,
    role: TeamRole,
) -> Payload {
    Payload::MembershipChanged(MembershipChanged {
        team_id: team_id.to_owned(),
        user_id: user_id.to_owned(),
        change: change.into(),
        role: if change == MembershipChange::Removed { String::new() } else { role.as_str_name().to_owned() },
    })
}

grpc! {
    AuthService {
        sign_up => sign_up_(SignUpRequest) -> SignUpResponse;
        authenticate => authenticate_(AuthenticateRequest) -> AuthenticateResponse;
        refresh_token => refresh_token_(RefreshTokenRequest) -> RefreshTokenResponse;
        verify_email => verify_email_(VerifyEmailRequest) -> VerifyEmailResponse;
        get_jwks => get_jwks_(GetJwksRequest) -> GetJwksResponse;
        get_current_user => get_current_user_(GetCurrentUserRequest) -> GetCurrentUserResponse;
    }
}

impl IdentityApi {
    async fn sign_up_(&self, request: Request<pb::SignUpRequest>) -> Result<pb::SignUpResponse> {
        let pb::SignUpRequest { email, password, display_name, team_name } = request.into_inner();
        Validator::new()
            .email("email", &email)
            .password("password", &password)
            .text("display_name", &display_name, NAME_MAX)
            .optional_text("team_name", &team_name, NAME_MAX)
            .finish()?;
        let email = normalize_email(&email);
        let user = new_user(&email, &display_name, hash(password).await?, false, None);
        let mut tx = self.db.begin().await?;
        insert_user(&mut tx, &user).await?;
        let team =
            self.create_team_in(&mut tx, &default_team_name(&display_name, &team_name), &user.id).await?;
        let verification = self.start_email_verification(&mut tx, &user).await?;
        self.commit(tx).await?;
        self.send(verification).await;
        Ok(pb::SignUpResponse { user: Some(convert::user(&user)), team: Some(convert::team(&team)) })
    }

    async fn authenticate_(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<pb::AuthenticateResponse> {
        let pb::AuthenticateRequest { email, password } = request.into_inner();
        Validator::new()
            .optional_text("email", &email, EMAIL_MAX)
            .check(!email.is_empty(), "email", "must not be empty")
            .check(!password.is_empty() && password.len() <= 1024, "password", "must be 1 to 1024 bytes")
            .finish()?;
        let mut conn = self.db.acquire().await?;
        let user = store::user_by_email(&mut conn, &normalize_email(&email)).await?;
        drop(conn);
        let phc = user.as_ref().map_or(DECOY_HASH.to_owned(), |u| u.password_hash.clone());
        let matches = verify(password, phc).await?;
        let user = match user {
            Some(user) if matches => user,
            _ => return Err(IdentityError::InvalidCredentials),
        };
        if !user.active {
            return Err(IdentityError::rule(ErrorReason::UserInactive, "this user is deactivated"));
        }
        let (access_token, refresh_token) = self.issue_tokens(&user).await?;
        Ok(pb::AuthenticateResponse {
            access_token,
            refresh_token,
            token_type: "Bearer".into(),
            expires_in: ACCESS_TTL_SECS,
            user: Some(convert::user(&user)),
        })
    }

    async fn refresh_token_(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<pb::RefreshTokenResponse> {
        let pb::RefreshTokenRequest { refresh_token } = request.into_inner();
        Validator::new().text("refresh_token", &refresh_token, 256).finish()?;
        let mut tx = self.db.begin().await?;
        let user_id = store::use_refresh_token(&mut tx, &hash_token(&refresh_token), now_micros())
            .await?
            .ok_or_else(|| {
                IdentityError::rule(
                    ErrorReason::TokenInvalid,
                    "the refresh token is unknown, used or expired",
                )
            })?;
        let user = store::user_by_id(&mut tx, &user_id).await?.ok_or(IdentityError::NotFound("user"))?;
        tx.commit().await?;
        if !user.active {
            return Err(IdentityError::rule(ErrorReason::UserInactive, "this user is deactivated"));
        }
        let (access_token, refresh_token) = self.issue_tokens(&user).await?;
        Ok(pb::RefreshTokenResponse {
            access_token,
            refresh_token,
            token_type: "Bearer".into(),
            expires_in: ACCESS_TTL_SECS,
        })
    }

    async fn verify_email_(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<pb::VerifyEmailResponse> {
        let pb::VerifyEmailRequest { token } = request.into_inner();
        Validator::new().text("token", &token, 256).finish()?;
        let mut tx = self.db.begin().await?;
        let user_id = store::use_email_verification(&mut tx, &hash_token(&token), now_micros())
            .await?
            .ok_or_else(|| {
                IdentityError::rule(
                    ErrorReason::TokenInvalid,
                    "the verification link is unknown, used or expired",
                )
            })?;
        store::set_email_verified(&mut tx, &user_id).await?;
        let user = store::user_by_id(&mut tx, &user_id).await?.ok_or(IdentityError::NotFound("user"))?;
        tx.commit().await?;
        Ok(pb::VerifyEmailResponse { user: Some(convert::user(&user)) })
    }

    async fn get_jwks_(&self, _request: Request<pb::GetJwksRequest>) -> Result<pb::GetJwksResponse> {
        Ok(pb::GetJwksResponse { keys: self.jwks.clone() })
    }

    async fn get_current_user_(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Result<pb::GetCurrentUserResponse> {
        let caller = caller(&request)?;
        let mut conn = self.db.acquire().await?;
        let user =
            store::user_by_id(&mut conn, &caller.user_id).await?.ok_or(IdentityError::NotFound("user"))?;
        let memberships = store::memberships_of(&mut conn, &caller.user_id).await?;
        Ok(pb::GetCurrentUserResponse {
            user: Some(convert::user(&user)),
            memberships: memberships.iter().map(convert::member).collect(),
        })
    }
}
