//! Tandem identity & teams: users and tokens, partner teams and roles, invitations, team
//! domains, programs and enrolments, partner applications, the permission check every service
//! asks, and the notifications inbox.

pub mod allocator;
pub mod api;
pub mod cache;
pub mod domain;
pub mod error;
pub mod ports;
pub mod shared_cache;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use tandem_platform::{
    auth::{AuthError, Authenticator, Caller, JwtVerifier, KeySet},
    bus::{BusError, EventBus, EventHandler},
    db::{Db, MigrationSource, Tx},
    ids::new_id,
    outbox::{self, OutboxRelay},
    time::now_micros,
};
use tandem_proto::{
    events::v1::{Event, event::Payload},
    identity::v1::{RewardsVisibility, StaffRole, TeamRole},
};
use tokio::sync::Notify;

use crate::{
    cache::{AccessCache, TeamAccess, UserStatus},
    domain::{access::Action, secrets::SigningKeyPair},
    error::{IdentityError, Result},
    ports::{Mailer, RewardsLedger, TxtResolver},
};

pub const MIGRATIONS: &[MigrationSource] =
    &[(100, "identity", include_str!("../migrations/0100_identity.sql"))];

/// The stream identity's events go to.
pub const STREAM: &str = "tandem.identity";
const SOURCE: &str = "identity";
/// The consumer group under which identity applies other services' notification requests.
pub const NOTIFICATIONS_CONSUMER: &str = "identity-notifications";
/// The consumer group under which identity drops shared cache entries that its own
/// membership and status events make stale.
pub const ACCESS_CACHE_CONSUMER: &str = "identity-access-cache";
/// The streams that carry notification requests: identity's own, deals' and commissions'.
pub const NOTIFICATION_STREAMS: &[&str] = &[STREAM, "tandem.deals", "tandem.commissions"];

/// What identity talks to outside its database.
pub struct Ports {
    pub mailer: Arc<dyn Mailer>,
    pub txt: Arc<dyn TxtResolver>,
    pub rewards: Arc<dyn RewardsLedger>,
}

impl Ports {
    /// The system's DNS; email through the SMTP relay when one is given, else logged; and no
    /// rewards ledger, so teams cannot be deleted until one is given (see
    /// [`ports::CommissionsLedger`]).
    pub fn standard(mail: &MailSettings) -> anyhow::Result<Self> {
        let mailer: Arc<dyn Mailer> = match &mail.smtp_url {
            Some(url) => Arc::new(ports::SmtpMailer::new(url, &mail.from)?),
            None => Arc::new(ports::LogMailer),
        };
        Ok(Self {
            mailer,
            txt: Arc::new(ports::DnsResolver::from_system()?),
            rewards: Arc::new(ports::NoLedger),
        })
    }
}

/// Outgoing email settings.
#[derive(clap::Args, Debug, Clone)]
pub struct MailSettings {
    /// SMTP relay (`smtp://host:port`) for invitation and verification emails; logged when unset.
    #[arg(long = "smtp-url", env = "TANDEM_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// The sender of Tandem's emails.
    #[arg(
        long = "mail-from",
        env = "TANDEM_MAIL_FROM",
        default_value = "Tandem <no-reply@tandem.localhost>"
    )]
    pub from: String,
}

pub struct Settings {
    /// The key that signs new access tokens.
    pub signing_key: SigningKeyPair,
    /// The public halves of keys that signed before a rotation: published and trusted beside
    /// the current one, so the tokens they signed keep working until they expire.
    pub previous_keys: Vec<tandem_proto::identity::v1::Jwk>,
    /// Where invitation and verification links point, e.g. `https://partners.example.com`.
    pub link_base: String,
}

/// A user as other services see it before giving it work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAccess {
    pub active: bool,
    pub staff_role: Option<StaffRole>,
    pub team_ids: Vec<String>,
}

/// The identity service: its state, shared by every RPC handler.
pub struct Identity {
    db: Db,
    keys: SigningKeyPair,
    /// What `GetJwks` publishes: the current key first, then the previous ones.
    jwks: Vec<tandem_proto::identity::v1::Jwk>,
    verifier: JwtVerifier,
    cache: AccessCache,
    shared: std::sync::OnceLock<shared_cache::SharedAccessCache>,
    ports: Ports,
    link_base: String,
    relay: Arc<Notify>,
}

impl Identity {
    /// `relay` is woken after each commit that wrote to the outbox.
    pub fn new(db: Db, settings: Settings, ports: Ports, relay: Arc<Notify>) -> anyhow::Result<Arc<Self>> {
        let mut jwks = vec![settings.signing_key.jwk().clone()];
        for key in settings.previous_keys {
            if !jwks.iter().any(|k| k.kid == key.kid) {
                jwks.push(key);
            }
        }
        let keys = Arc::new(KeySet::from_jwks(&jwks)?);
        Ok(Arc::new(Self {
            db,
            jwks,
            verifier: JwtVerifier::new(keys),
            keys: settings.signing_key,
            cache: AccessCache::default(),
            shared: std::sync::OnceLock::new(),
            ports,
            link_base: settings.link_base.trim_end_matches('/').to_owned(),
            relay,
        }))
    }

    /// Identity with its outbox relay to `bus`. The caller runs the returned relay and, once
    /// the database is migrated, [`Self::subscribe`]s.
    pub async fn start(
        db: Db,
        settings: Settings,
        ports: Ports,
        bus: Arc<dyn EventBus>,
    ) -> anyhow::Result<(Arc<Self>, OutboxRelay)> {
        let relay = OutboxRelay::new(db.clone(), bus);
        let identity = Self::new(db, settings, ports, relay.waker())?;
        Ok((identity, relay))
    }

    /// Starts applying the events identity consumes: notification requests, and its own
    /// membership and status events for the shared access cache.
    pub async fn subscribe(self: &Arc<Self>, bus: &dyn EventBus) -> std::result::Result<(), BusError> {
        for stream in NOTIFICATION_STREAMS {
            bus.subscribe(stream, NOTIFICATIONS_CONSUMER, self.notification_handler()).await?;
        }
        bus.subscribe(STREAM, ACCESS_CACHE_CONSUMER, Arc::new(AccessInvalidation(self.clone()))).await
    }

    /// Shares the access cache with the other replicas through Redis; this replica then
    /// trusts its in-memory answers for [`shared_cache::LOCAL_TTL`] only.
    pub fn share_access_cache(&self, shared: shared_cache::SharedAccessCache) {
        if self.shared.set(shared).is_ok() {
            self.cache.expire_after(shared_cache::LOCAL_TTL);
        }
    }

    /// A membership changed: drops the answers about it here and in the shared cache.
    pub(crate) async fn forget_member(&self, user_id: &str, team_id: &str) {
        self.cache.invalidate_member(user_id, team_id);
        if let Some(shared) = self.shared.get() {
            shared.forget_member(user_id, team_id).await;
        }
    }

    /// A team's settings changed or it was deleted.
    pub(crate) async fn forget_team(&self, team_id: &str) {
        self.cache.invalidate_team(team_id);
        if let Some(shared) = self.shared.get() {
            shared.forget_team(team_id).await;
        }
    }

    /// A user's status changed.
    pub(crate) async fn forget_user(&self, user_id: &str) {
        self.cache.invalidate_user(user_id);
        if let Some(shared) = self.shared.get() {
            shared.forget_user(user_id).await;
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Writes an event to the outbox in `tx`.
    async fn emit(&self, tx: &mut Tx, aggregate_id: &str, payload: Payload) -> Result<()> {
        outbox::enqueue(tx, STREAM, SOURCE, aggregate_id, payload).await?;
        Ok(())
    }

    /// Commits and wakes the outbox relay.
    async fn commit(&self, tx: Tx) -> Result<()> {
        tx.commit().await?;
        self.relay.notify_one();
        Ok(())
    }

    /// The user's role in the team and the team's rewards visibility, from the cache when
    /// it holds them. `None` when the team does not exist.
    pub async fn team_access(&self, user_id: &str, team_id: &str) -> Result<Option<TeamAccess>> {
        if let Some(access) = self.cache.team_access(user_id, team_id) {
            return Ok(Some(access));
        }
        let generation = self.cache.generation();
        if let Some(access) = match self.shared.get() {
            Some(shared) => shared.team_access(user_id, team_id).await,
            None => None,
        } {
            self.cache.put_team_access(generation, user_id, team_id, access);
            return Ok(Some(access));
        }
        let mut conn = self.db.acquire().await.map_err(IdentityError::from)?;
        let Some((role, visibility)) = store::access_facts(&mut conn, team_id, user_id).await? else {
            return Ok(None);
        };
        let access = TeamAccess {
            role: role.as_deref().and_then(TeamRole::from_str_name),
            visibility: RewardsVisibility::from_str_name(&visibility).unwrap_or(RewardsVisibility::Hide),
        };
        self.cache.put_team_access(generation, user_id, team_id, access);
        if let Some(shared) = self.shared.get() {
            shared.put_team_access(user_id, team_id, access).await;
        }
        Ok(Some(access))
    }

    /// Whether the user is active and the tokens it was issued at `issued_at` still count.
    async fn user_status(&self, user_id: &str) -> Result<Option<UserStatus>> {
        if let Some(status) = self.cache.user_status(user_id) {
            return Ok(Some(status));
        }
        let generation = self.cache.generation();
        if let Some(status) = match self.shared.get() {
            Some(shared) => shared.user_status(user_id).await,
            None => None,
        } {
            self.cache.put_user_status(generation, user_id, status);
            return Ok(Some(status));
        }
        let mut conn = self.db.acquire().await.map_err(IdentityError::from)?;
        let Some(user) = store::user_by_id(&mut conn, user_id).await? else { return Ok(None) };
        let status = UserStatus {
            active: user.active,
            tokens_valid_after: user.tokens_valid_after,
            staff_role: user.staff_role.as_deref().and_then(StaffRole::from_str_name),
        };
        self.cache.put_user_status(generation, user_id, status);
        if let Some(shared) = self.shared.get() {
            shared.put_user_status(user_id, status).await;
        }
        Ok(Some(status))
    }

    /// The answer of `CheckPermission`: an active user, and the role's or staff role's rule.
    pub async fn is_allowed(&self, user_id: &str, team_id: &str, action: Action) -> Result<bool> {
        let staff = match self.user_status(user_id).await? {
            Some(status) if status.active => status.staff_role,
            _ => return Ok(false),
        };
        if let Some(role) = staff {
            let exists = self.team_access(user_id, team_id).await?.is_some();
            return Ok(exists && domain::access::staff_allows(role, action));
        }
        Ok(match self.team_access(user_id, team_id).await? {
            Some(TeamAccess { role: Some(role), visibility }) => {
                domain::access::role_allows(role, action, visibility)
            }
            _ => false,
        })
    }

    /// What other services need to know of a user: active, staff role, teams. `None` when the
    /// user does not exist.
    pub async fn user_access(&self, user_id: &str) -> Result<Option<UserAccess>> {
        let mut conn = self.db.acquire().await.map_err(IdentityError::from)?;
        let Some(user) = store::user_by_id(&mut conn, user_id).await? else { return Ok(None) };
        let team_ids =
            store::memberships_of(&mut conn, user_id).await?.into_iter().map(|m| m.team_id).collect();
        Ok(Some(UserAccess {
            active: user.active,
            staff_role: user.staff_role.as_deref().and_then(StaffRole::from_str_name),
            team_ids,
        }))
    }

    /// Whether the team (not one of its members alone) is enrolled in the program.
    pub async fn team_enrolled(&self, team_id: &str, program_id: &str) -> Result<bool> {
        if let Some(enrolled) = self.cache.team_enrolled(team_id, program_id) {
            return Ok(enrolled);
        }
        let generation = self.cache.generation();
        let mut conn = self.db.acquire().await.map_err(IdentityError::from)?;
        let enrolled = store::team_enrolled(&mut conn, program_id, team_id).await?;
        self.cache.put_team_enrolled(generation, team_id, program_id, enrolled);
        Ok(enrolled)
    }

    /// Verifies access tokens for every RPC of the suite when it runs in one process.
    pub fn authenticator(self: &Arc<Self>) -> Arc<dyn Authenticator> {
        self.clone()
    }

    /// Applies `NotificationRequested` events of other services to the inbox.
    pub fn notification_handler(self: &Arc<Self>) -> Arc<dyn EventHandler> {
        Arc::new(NotificationInbox(self.clone()))
    }

    /// Creates the first staff admin when it does not exist yet (idempotent).
    pub async fn bootstrap_admin(&self, email: &str, password: &str) -> Result<()> {
        api::staff::ensure_admin(self, email, password).await
    }
}

#[async_trait]
impl Authenticator for Identity {
    async fn authenticate(&self, token: &str) -> Result<Arc<Caller>, AuthError> {
        let caller = self.verifier.verify(token).await?;
        // Identity's service token is for other services; identity serves users only.
        if caller.is_service_principal() {
            return Err(AuthError::Invalid("a service token is not accepted by identity".into()));
        }
        let status =
            self.user_status(&caller.user_id).await.map_err(|e| AuthError::Unavailable(e.to_string()))?;
        match status {
            None => Err(AuthError::Invalid("unknown user".into())),
            Some(s) if !s.active => Err(AuthError::Inactive),
            Some(s) if caller.issued_at < s.tokens_valid_after => {
                Err(AuthError::Invalid("token was revoked".into()))
            }
            Some(_) => Ok(caller),
        }
    }
}

struct NotificationInbox(Arc<Identity>);

/// Drops the shared cache entries identity's own events make stale. A replica's change
/// dropped them already; this catches a read that raced with it and put the old answer back.
struct AccessInvalidation(Arc<Identity>);

#[async_trait]
impl EventHandler for AccessInvalidation {
    async fn handle(&self, event: &Event) -> anyhow::Result<()> {
        match &event.payload {
            Some(Payload::MembershipChanged(change)) => {
                self.0.forget_member(&change.user_id, &change.team_id).await
            }
            Some(Payload::TeamDeleted(team)) => self.0.forget_team(&team.team_id).await,
            Some(Payload::UserStatusChanged(user)) => self.0.forget_user(&user.user_id).await,
            _ => {}
        }
        Ok(())
    }
}

#[async_trait]
impl EventHandler for NotificationInbox {
    async fn handle(&self, event: &Event) -> anyhow::Result<()> {
        let Some(Payload::NotificationRequested(request)) = &event.payload else { return Ok(()) };
        let mut tx = self.0.db.begin().await?;
        if !outbox::mark_handled(&mut tx, NOTIFICATIONS_CONSUMER, &event.id).await? {
            return Ok(());
        }
        let now = now_micros();
        for user_id in &request.user_ids {
            store::insert_notification(
                &mut tx,
                &store::NotificationRow {
                    id: new_id("ntf"),
                    user_id: user_id.clone(),
                    kind: request.kind.clone(),
                    title: request.title.clone(),
                    body: request.body.clone(),
                    subject_id: request.subject_id.clone(),
                    read_time: None,
                    create_time: now,
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl tandem_platform::auth::Permissions for Identity {
    async fn check(
        &self,
        caller: &Caller,
        team_id: &str,
        permission: tandem_proto::identity::v1::Permission,
    ) -> Result<bool, tandem_platform::ApiError> {
        // A service principal is a member of no team.
        if caller.is_service_principal() {
            return Ok(false);
        }
        let Some(action) = Action::from_permission(permission) else { return Ok(false) };
        self.is_allowed(&caller.user_id, team_id, action).await.map_err(|e| match e {
            IdentityError::Db(tandem_platform::db::DbError::Unavailable(m)) => {
                tandem_platform::ApiError::Unavailable(m)
            }
            other => tandem_platform::ApiError::Internal(other.to_string()),
        })
    }
}
