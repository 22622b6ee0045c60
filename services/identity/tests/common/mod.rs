//! The harness of identity's API tests: the service started in-process as `main.rs` starts it
//! (port 0, on the test's own database), fakes for what it talks to outside, typed clients,
//! and small helpers to sign users up, build teams and read the answers.
#![allow(dead_code, unused_macros, unused_imports)] // each test binary uses a part of the harness

use std::{
    collections::HashSet,
    fmt::Debug,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tandem_identity::{
    Identity, MIGRATIONS, Ports, Settings,
    domain::secrets::SigningKeyPair,
    ports::{Email, LedgerError, RecordingMailer, RewardsLedger, StaticTxt},
};
use tandem_platform::{
    auth::Claims,
    bus::{EventBus, InProcessBus},
    db::{Db, DbOptions},
    server::{MigratedDb, Server, ServerOptions},
    testing::TestDb,
};
use tandem_proto::identity::v1::{
    self as pb, access_service_client::AccessServiceClient,
    application_service_client::ApplicationServiceClient, auth_service_client::AuthServiceClient,
    domain_service_client::DomainServiceClient, invitation_service_client::InvitationServiceClient,
    notification_service_client::NotificationServiceClient, program_service_client::ProgramServiceClient,
    staff_service_client::StaffServiceClient, team_service_client::TeamServiceClient,
};
use tonic::{
    Code, Request, Response, Status,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt;

pub use tandem_platform::backend_tests;

pub const PASSWORD: &str = "correct horse battery";
pub const ADMIN_EMAIL: &str = "admin@vendor.example";
pub const ADMIN_PASSWORD: &str = "staff admin password";

/// The rewards ledger (commissions) as a switch the test flips.
#[derive(Default)]
pub struct FakeRewards {
    holds: AtomicBool,
}

impl FakeRewards {
    pub fn set_holds_rewards(&self, holds: bool) {
        self.holds.store(holds, Ordering::SeqCst);
    }
}

#[async_trait]
impl RewardsLedger for FakeRewards {
    async fn team_holds_rewards(&self, _team_id: &str) -> Result<bool, LedgerError> {
        Ok(self.holds.load(Ordering::SeqCst))
    }
}

/// A signed-in user.
#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: String,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl Session {
    /// `msg` with this user's bearer token.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        bearer(&self.access_token, msg)
    }
}

/// `msg` with `authorization: Bearer <token>`.
pub fn bearer<T>(token: &str, msg: T) -> Request<T> {
    with_authorization(&format!("Bearer {token}"), msg)
}

/// `msg` with the raw `authorization` value given.
pub fn with_authorization<T>(value: &str, msg: T) -> Request<T> {
    let mut request = Request::new(msg);
    request
        .metadata_mut()
        .insert("authorization", MetadataValue::try_from(value).expect("ascii authorization value"));
    request
}

/// The identity service running for one test.
pub struct TestApp {
    pub channel: Channel,
    pub mailer: Arc<RecordingMailer>,
    pub txt: Arc<StaticTxt>,
    pub rewards: Arc<FakeRewards>,
    /// The service's database, for the few facts the API does not show (stored token hashes).
    pub db: Db,
    /// The key the server signs access tokens with (tests forge tokens with it).
    pub signing_key: ed25519_dalek::SigningKey,
    pub admin: Session,
    /// The service itself, for what is not an RPC (the bootstrap admin).
    pub identity: Arc<Identity>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    // Dropped last: the database outlives the server that uses it.
    _database: Option<TestDb>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestApp {
    /// Starts identity on `database` as `main.rs` does, waits for SERVING and signs the
    /// bootstrap staff admin in.
    pub async fn spawn(database: TestDb) -> Self {
        let signing_key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        Self::spawn_with_keys(database, signing_key, Vec::new()).await
    }

    /// Stops this server and starts identity again on the same database, signing with a new
    /// key and publishing the old one as a previous key: a signing-key rotation.
    pub async fn restart_with_new_key(mut self) -> Self {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let old = SigningKeyPair::from_pem(&self.signing_key.to_pkcs8_pem(Default::default()).expect("pem"))
            .expect("key")
            .jwk()
            .clone();
        let database = self._database.take().expect("the test database");
        let new_key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        Self::spawn_with_keys(database, new_key, vec![old]).await
    }

    /// Identity signing with `signing_key` and trusting `previous_keys` too.
    pub async fn spawn_with_keys(
        database: TestDb,
        signing_key: ed25519_dalek::SigningKey,
        previous_keys: Vec<pb::Jwk>,
    ) -> Self {
        let signing_pem = signing_key.to_pkcs8_pem(Default::default()).expect("pem");
        let db = Db::connect(&database.url, &DbOptions::default()).expect("database url");
        let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::default());
        let mailer = Arc::new(RecordingMailer::default());
        let txt = Arc::new(StaticTxt::default());
        let rewards = Arc::new(FakeRewards::default());
        let settings = Settings {
            signing_key: SigningKeyPair::from_pem(&signing_pem).expect("signing key"),
            previous_keys,
            link_base: "https://partners.example.com".into(),
        };
        let ports = Ports { mailer: mailer.clone(), txt: txt.clone(), rewards: rewards.clone() };
        let (identity, relay) =
            Identity::start(db.clone(), settings, ports, bus.clone()).await.expect("identity");

        let migrated = MigratedDb::new(db.clone(), MIGRATIONS);
        let options = ServerOptions { shutdown_grace: Duration::from_secs(1), ..ServerOptions::default() };
        let services =
            tandem_identity::api::services(&identity, options.max_message_bytes).ready_when(migrated.clone());
        let server = Server::build(options, services, identity.authenticator()).await.expect("bind");
        let addr = server.local_addr();

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (relay_stop_tx, mut relay_stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn({
            let (migrated, identity) = (migrated.clone(), identity.clone());
            async move {
                migrated.migrated().await;
                identity.subscribe(bus.as_ref()).await.expect("subscribe");
                relay
                    .run(async move {
                        let _ = relay_stop_rx.wait_for(|s| *s).await;
                    })
                    .await;
            }
        });
        tokio::spawn(server.run_until_stopped(async move {
            let _ = stop_rx.await;
            let _ = relay_stop_tx.send(true);
        }));

        let channel = Endpoint::from_shared(format!("http://{addr}")).expect("endpoint").connect_lazy();
        wait_until_serving(&channel).await;
        migrated.migrated().await;
        identity.bootstrap_admin(ADMIN_EMAIL, ADMIN_PASSWORD).await.map_err(Status::from).expect("admin");

        let mut app = Self {
            identity,
            channel,
            mailer,
            txt,
            rewards,
            db,
            signing_key,
            admin: Session {
                user_id: String::new(),
                email: String::new(),
                access_token: String::new(),
                refresh_token: String::new(),
            },
            stop: Some(stop_tx),
            _database: Some(database),
        };
        app.admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        app
    }

    // --- clients ------------------------------------------------------------------------

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }
    pub fn staff(&self) -> StaffServiceClient<Channel> {
        StaffServiceClient::new(self.channel.clone())
    }
    pub fn teams(&self) -> TeamServiceClient<Channel> {
        TeamServiceClient::new(self.channel.clone())
    }
    pub fn invitations(&self) -> InvitationServiceClient<Channel> {
        InvitationServiceClient::new(self.channel.clone())
    }
    pub fn domains(&self) -> DomainServiceClient<Channel> {
        DomainServiceClient::new(self.channel.clone())
    }
    pub fn programs(&self) -> ProgramServiceClient<Channel> {
        ProgramServiceClient::new(self.channel.clone())
    }
    pub fn applications(&self) -> ApplicationServiceClient<Channel> {
        ApplicationServiceClient::new(self.channel.clone())
    }
    pub fn access(&self) -> AccessServiceClient<Channel> {
        AccessServiceClient::new(self.channel.clone())
    }
    pub fn notifications(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.channel.clone())
    }
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    // --- users ----------------------------------------------------------------------------

    /// Signs a partner user up (display name: the email's local part) and signs it in.
    pub async fn sign_up(&self, email: &str) -> (pb::User, pb::Team, Session) {
        let display_name = email.split('@').next().unwrap_or(email).to_owned();
        let response = self
            .auth()
            .sign_up(pb::SignUpRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name,
                team_name: String::new(),
            })
            .await
            .must();
        let session = self.login(email, PASSWORD).await;
        (response.user.expect("user"), response.team.expect("team"), session)
    }

    pub async fn login(&self, email: &str, password: &str) -> Session {
        let response = self
            .auth()
            .authenticate(pb::AuthenticateRequest { email: email.into(), password: password.into() })
            .await
            .must();
        let user = response.user.expect("user");
        Session {
            user_id: user.id,
            email: user.email,
            access_token: response.access_token,
            refresh_token: response.refresh_token,
        }
    }

    /// Creates a vendor staff user with `role` and signs it in.
    pub async fn create_staff(&self, email: &str, role: pb::StaffRole) -> Session {
        self.staff()
            .create_staff_user(self.admin.req(pb::CreateStaffUserRequest {
                email: email.into(),
                display_name: "Staff".into(),
                password: PASSWORD.into(),
                role: role.into(),
            }))
            .await
            .must();
        self.login(email, PASSWORD).await
    }

    // --- teams and invitations --------------------------------------------------------------

    pub async fn create_invitation(
        &self,
        by: &Session,
        team_id: &str,
        email: &str,
        role: pb::TeamRole,
    ) -> pb::Invitation {
        self.invitations()
            .create_invitation(by.req(pb::CreateInvitationRequest {
                team_id: team_id.into(),
                email: email.into(),
                role: role.into(),
            }))
            .await
            .must()
            .invitation
            .expect("invitation")
    }

    /// A newcomer accepts `token` and is signed up (`email` for a direct link).
    pub async fn accept_as_newcomer(
        &self,
        token: &str,
        email: &str,
    ) -> Result<Response<pb::AcceptInvitationResponse>, Status> {
        self.invitations()
            .accept_invitation(pb::AcceptInvitationRequest {
                token: token.into(),
                display_name: "Newcomer".into(),
                password: PASSWORD.into(),
                email: email.into(),
            })
            .await
    }

    pub async fn accept_signed_in(
        &self,
        who: &Session,
        token: &str,
    ) -> Result<Response<pb::AcceptInvitationResponse>, Status> {
        self.invitations()
            .accept_invitation(
                who.req(pb::AcceptInvitationRequest { token: token.into(), ..Default::default() }),
            )
            .await
    }

    /// A new user who joins `team_id` with `role` through an emailed invitation, signed in.
    pub async fn invite_newcomer(
        &self,
        by: &Session,
        team_id: &str,
        email: &str,
        role: pb::TeamRole,
    ) -> Session {
        self.create_invitation(by, team_id, email, role).await;
        let token = self.emailed_token(email, "/invitations/accept");
        let member = self.accept_as_newcomer(&token, "").await.must().member.expect("member");
        assert_eq!(member.role(), role);
        self.login(email, PASSWORD).await
    }

    /// A new user who joins through a direct link and never signs in (a member to act on).
    pub async fn add_member(&self, by: &Session, team_id: &str, email: &str) -> pb::Member {
        let link = self.create_invitation(by, team_id, "", pb::TeamRole::Member).await;
        self.accept_as_newcomer(&link.token, email).await.must().member.expect("member")
    }

    pub async fn get_team(
        &self,
        who: &Session,
        team_id: &str,
    ) -> Result<Response<pb::GetTeamResponse>, Status> {
        self.teams().get_team(who.req(pb::GetTeamRequest { team_id: team_id.into() })).await
    }

    pub async fn members(&self, who: &Session, team_id: &str) -> Vec<pb::Member> {
        self.teams()
            .list_members(who.req(pb::ListMembersRequest { team_id: team_id.into(), ..Default::default() }))
            .await
            .must()
            .members
    }

    pub async fn check_permission(
        &self,
        asker: &Session,
        user_id: &str,
        team_id: &str,
        permission: pb::Permission,
    ) -> bool {
        self.access()
            .check_permission(asker.req(pb::CheckPermissionRequest {
                user_id: user_id.into(),
                team_id: team_id.into(),
                permission: permission.into(),
            }))
            .await
            .must()
            .allowed
    }

    pub async fn set_rewards_visibility(
        &self,
        who: &Session,
        team_id: &str,
        visibility: pb::RewardsVisibility,
    ) {
        let team = self
            .teams()
            .update_team(who.req(pb::UpdateTeamRequest {
                team: Some(pb::Team {
                    id: team_id.into(),
                    rewards_visibility: visibility.into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["rewards_visibility".into()] }),
            }))
            .await
            .must()
            .team
            .expect("team");
        assert_eq!(team.rewards_visibility(), visibility);
    }

    pub async fn create_program(&self, name: &str) -> pb::Program {
        self.programs()
            .create_program(
                self.admin.req(pb::CreateProgramRequest { name: name.into(), description: String::new() }),
            )
            .await
            .must()
            .program
            .expect("program")
    }

    // --- email ---------------------------------------------------------------------------------

    pub fn emails_to(&self, to: &str) -> Vec<Email> {
        self.mailer.sent().into_iter().filter(|e| e.to == to).collect()
    }

    /// The token of the newest email to `to` whose link goes to `path`.
    #[track_caller]
    pub fn emailed_token(&self, to: &str, path: &str) -> String {
        let email = self
            .emails_to(to)
            .into_iter()
            .rev()
            .find(|e| e.body.contains(&format!("{path}?token=")))
            .unwrap_or_else(|| panic!("no email to {to} with a {path} link"));
        token_in(&email.body)
    }

    // --- tokens ----------------------------------------------------------------------------------

    /// The key id of the server's signing key.
    pub fn kid(&self) -> String {
        let pem = self.signing_key.to_pkcs8_pem(Default::default()).expect("pem");
        SigningKeyPair::from_pem(&pem).expect("key").jwk().kid.clone()
    }

    /// A token signed with the server's own key, with the given claims.
    pub fn sign(&self, claims: &Claims) -> String {
        sign_eddsa(&self.signing_key, Some(self.kid()), claims)
    }
}

/// An EdDSA token signed with `key`, with the key id given.
pub fn sign_eddsa(key: &ed25519_dalek::SigningKey, kid: Option<String>, claims: &Claims) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid;
    let der = key.to_pkcs8_der().expect("der");
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).expect("sign")
}

/// The value of `token=` in an email body.
pub fn token_in(body: &str) -> String {
    let (_, rest) = body.split_once("token=").expect("a token in the body");
    rest.split(|c: char| c.is_whitespace() || c == '&').next().unwrap_or_default().to_owned()
}

async fn wait_until_serving(channel: &Channel) {
    let mut health = HealthClient::new(channel.clone());
    for _ in 0..500 {
        let answer = health.check(HealthCheckRequest { service: String::new() }).await;
        if answer.is_ok_and(|r| r.get_ref().status() == ServingStatus::Serving) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("identity never reported SERVING");
}

/// Assertions on an RPC's outcome.
pub trait Outcome<T> {
    /// The response, or a panic naming the status.
    fn must(self) -> T;
    /// The error status, which must have `code`.
    fn fails(self, code: Code) -> Status;
    /// The error status, which must have `code` and an `ErrorInfo` with `reason`.
    fn refused(self, code: Code, reason: &str) -> Status;
    /// INVALID_ARGUMENT with a field violation on each of `fields`.
    fn invalid(self, fields: &[&str]) -> Status;
}

impl<T: Debug> Outcome<T> for Result<Response<T>, Status> {
    #[track_caller]
    fn must(self) -> T {
        match self {
            Ok(response) => response.into_inner(),
            Err(status) => {
                panic!("expected OK, got {:?}: {} {:?}", status.code(), status.message(), reason(&status))
            }
        }
    }

    #[track_caller]
    fn fails(self, code: Code) -> Status {
        match self {
            Ok(response) => panic!("expected {code:?}, got OK: {:?}", response.get_ref()),
            Err(status) => {
                assert_eq!(status.code(), code, "{}", status.message());
                status
            }
        }
    }

    #[track_caller]
    fn refused(self, code: Code, expected: &str) -> Status {
        let status = self.fails(code);
        assert_eq!(reason(&status).as_deref(), Some(expected), "{}", status.message());
        status
    }

    #[track_caller]
    fn invalid(self, fields: &[&str]) -> Status {
        let status = self.refused(Code::InvalidArgument, "INVALID_ARGUMENT");
        let violated = violations(&status);
        for field in fields {
            assert!(violated.iter().any(|v| v == field), "no violation on `{field}` in {violated:?}");
        }
        status
    }
}

/// The `ErrorInfo` reason of a status, checking its domain.
pub fn reason(status: &Status) -> Option<String> {
    let details = status.get_error_details();
    let info = details.error_info()?;
    assert_eq!(info.domain, "tandem.dev");
    Some(info.reason.clone())
}

/// The fields named by the `BadRequest` field violations of a status.
pub fn violations(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// Walks a list page by page; returns every id, checking each page's size.
pub async fn walk<F, Fut>(page_size: usize, mut page: F) -> Vec<String>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = (Vec<String>, String)>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    for _ in 0..100 {
        let (ids, next) = page(token).await;
        assert!(ids.len() <= page_size, "a page of {} items for page_size {page_size}", ids.len());
        assert!(!ids.is_empty() || next.is_empty(), "an empty page with a next token");
        all.extend(ids);
        if next.is_empty() {
            return all;
        }
        token = next;
    }
    panic!("the list never ended");
}

/// A page fetcher for [`walk`]: calls `client.rpc` as `who` with the request built from the
/// page token, and answers the keys of the page's `items` with the next page token.
macro_rules! pages {
    ($app:expr, $client:ident . $rpc:ident, $who:expr, |$token:ident| $request:expr, $items:ident => $key:expr) => {
        |$token: String| {
            let request = $who.req($request);
            let mut client = $app.$client();
            async move {
                let response = client.$rpc(request).await.must();
                (response.$items.iter().map($key).collect::<Vec<String>>(), response.next_page_token)
            }
        }
    };
}
pub(crate) use pages;

/// On PostgreSQL, gives `columns` of `table` a collation that ignores punctuation, as glibc's
/// `en_US.UTF-8` (the default of many PostgreSQL images) does; the local test server sorts
/// bytewise. Lists must page through every item under either.
pub async fn collate_ignoring_punctuation(app: &TestApp, table: &str, columns: &[&str]) {
    if app.db.backend() != tandem_platform::db::Backend::Postgres {
        return;
    }
    let mut conn = app.db.acquire().await.expect("a connection");
    sqlx::query(
        "CREATE COLLATION IF NOT EXISTS ignore_punctuation (provider = icu, locale = 'en-u-ka-shifted')",
    )
    .execute(&mut *conn)
    .await
    .expect("create collation");
    for column in columns {
        let alter = format!("ALTER TABLE {table} ALTER COLUMN {column} TYPE TEXT COLLATE ignore_punctuation");
        sqlx::query(sqlx::AssertSqlSafe(alter)).execute(&mut *conn).await.expect("alter collation");
    }
}

/// The set of ids of a list, asserting none repeats.
#[track_caller]
pub fn distinct(ids: impl IntoIterator<Item = String>) -> HashSet<String> {
    let ids: Vec<String> = ids.into_iter().collect();
    let set: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "repeated items in {ids:?}");
    set
}
