//! `StaffService`: vendor staff users and the activation of users.

use tandem_platform::{
    auth::Caller,
    paging::Page,
    time::{MICROS_PER_SECOND, now_micros},
    validate::{NAME_MAX, Validator, normalize_email},
};
use tandem_proto::{
    events::v1::{UserStatusChanged, event::Payload},
    identity::v1::{self as pb, StaffRole, staff_service_server::StaffService},
};
use tonic::Request;

use super::{IdentityApi, auth, caller, convert, grpc};
use crate::{
    Identity,
    error::{IdentityError, Result},
    store,
};

grpc! {
    StaffService {
        create_staff_user => create_staff_user_(CreateStaffUserRequest) -> CreateStaffUserResponse;
        activate_user => activate_user_(ActivateUserRequest) -> ActivateUserResponse;
        deactivate_user => deactivate_user_(DeactivateUserRequest) -> DeactivateUserResponse;
        list_users => list_users_(ListUsersRequest) -> ListUsersResponse;
    }
}

fn require_staff_admin(caller: &Caller) -> Result<()> {
    if caller.has_staff_role(&[StaffRole::Admin]) {
        Ok(())
    } else {
        Err(IdentityError::Denied("only vendor staff admins may do this"))
    }
}

/// The bootstrap admin from `TANDEM_ADMIN_EMAIL` / `TANDEM_ADMIN_PASSWORD`.
pub(crate) async fn ensure_admin(identity: &Identity, email: &str, password: &str) -> Result<()> {
    Validator::new()
        .email("TANDEM_ADMIN_EMAIL", email)
        .password("TANDEM_ADMIN_PASSWORD", password)
        .finish()?;
    let email = normalize_email(email);
    let mut conn = identity.db.acquire().await?;
    if store::user_by_email(&mut conn, &email).await?.is_some() {
        return Ok(());
    }
    drop(conn);
    let user = auth::new_user(
        &email,
        "Administrator",
        auth::hash(password.to_owned()).await?,
        true,
        Some(StaffRole::Admin),
    );
    let mut conn = identity.db.acquire().await?;
    match auth::insert_user(&mut conn, &user).await {
        // Another replica created it first.
        Err(IdentityError::Duplicate(..)) => Ok(()),
        other => {
            tracing::info!(user_id = %user.id, "created the bootstrap staff admin");
            other
        }
    }
}

impl IdentityApi {
    async fn create_staff_user_(
        &self,
        request: Request<pb::CreateStaffUserRequest>,
    ) -> Result<pb::CreateStaffUserResponse> {
        require_staff_admin(caller(&request)?.as_ref())?;
        let pb::CreateStaffUserRequest { email, display_name, password, role } = request.into_inner();
        Validator::new()
            .email("email", &email)
            .text("display_name", &display_name, NAME_MAX)
            .password("password", &password)
            .known_enum::<StaffRole>("role", role)
            .finish()?;
        let role = StaffRole::try_from(role).unwrap_or(StaffRole::Unspecified);
        let user = auth::new_user(
            &normalize_email(&email),
            &display_name,
            auth::hash(password).await?,
            true,
            Some(role),
        );
        let mut conn = self.db.acquire().await?;
        auth::insert_user(&mut conn, &user).await?;
        Ok(pb::CreateStaffUserResponse { user: Some(convert::user(&user)) })
    }

    async fn set_active(&self, caller: &Caller, user_id: &str, active: bool) -> Result<store::UserRow> {
        require_staff_admin(caller)?;
        Validator::new().id("user_id", "user", user_id).finish()?;
        if !active && caller.user_id == user_id {
            return Err(IdentityError::Invalid(vec![tandem_platform::FieldViolation::new(
                "user_id",
                "staff admins cannot deactivate themselves",
            )]));
        }
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        // Token times are whole seconds: void every token of the current second too (new
        // tokens are issued no earlier than this, see `issue_tokens`).
        let tokens_valid_after = now / MICROS_PER_SECOND + 1;
        if !store::set_user_active(&mut tx, user_id, active, tokens_valid_after).await? {
            return Err(IdentityError::NotFound("user"));
        }
        if !active {
            store::revoke_refresh_tokens(&mut tx, user_id, now).await?;
        }
        self.emit(
            &mut tx,
            user_id,
            Payload::UserStatusChanged(UserStatusChanged { user_id: user_id.to_owned(), active }),
        )
        .await?;
        let user = store::user_by_id(&mut tx, user_id).await?.ok_or(IdentityError::NotFound("user"))?;
        self.commit(tx).await?;
        self.forget_user(user_id).await;
        Ok(user)
    }

    async fn activate_user_(
        &self,
        request: Request<pb::ActivateUserRequest>,
    ) -> Result<pb::ActivateUserResponse> {
        let caller = caller(&request)?;
        let user = self.set_active(&caller, &request.get_ref().user_id, true).await?;
        Ok(pb::ActivateUserResponse { user: Some(convert::user(&user)) })
    }

    async fn deactivate_user_(
        &self,
        request: Request<pb::DeactivateUserRequest>,
    ) -> Result<pb::DeactivateUserResponse> {
        let caller = caller(&request)?;
        let user = self.set_active(&caller, &request.get_ref().user_id, false).await?;
        Ok(pb::DeactivateUserResponse { user: Some(convert::user(&user)) })
    }

    async fn list_users_(&self, request: Request<pb::ListUsersRequest>) -> Result<pb::ListUsersResponse> {
        let caller = caller(&request)?;
        if !caller.is_staff() {
            return Err(IdentityError::Denied("only vendor staff list users"));
        }
        let pb::ListUsersRequest { page_size, page_token } = request.into_inner();
        let page = Page::parse(page_size, &page_token)?;
        let mut conn = self.db.acquire().await?;
        let rows = store::list_users(&mut conn, page.after_key(), page.limit()).await?;
        let (rows, next_page_token) = page.finish(rows, |u| u.id.clone());
        Ok(pb::ListUsersResponse { users: rows.iter().map(convert::user).collect(), next_page_token })
    }
}
