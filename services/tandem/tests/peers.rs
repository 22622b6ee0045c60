//! How a service other than identity reaches identity in production: the published keys
//! verify identity's tokens, and the permission check is asked with the caller's own token.

use std::sync::Arc;

use tandem_identity::{Identity, Ports, Settings, domain::secrets::SigningKeyPair, ports};
use tandem_platform::{
    ApiError,
    auth::{Caller, JwtVerifier, Permissions},
    bus::InProcessBus,
    db::{Db, DbOptions},
    peers,
    server::{MigratedDb, Readiness, Server, ServerOptions},
    testing::TestDb,
};
use tandem_proto::identity::v1::{
    AuthenticateRequest, Permission, SignUpRequest, auth_service_client::AuthServiceClient,
};

#[tokio::test]
async fn a_peer_verifies_identity_tokens_and_asks_permissions_with_the_callers_token() {
    let test = TestDb::sqlite();
    let db = Db::connect(&test.url, &DbOptions::default()).unwrap();
    let ports = Ports {
        mailer: Arc::new(ports::LogMailer),
        txt: Arc::new(ports::StaticTxt::default()),
        rewards: Arc::new(ports::NoLedger),
    };
    let settings = Settings {
        signing_key: SigningKeyPair::generate(),
        previous_keys: Vec::new(),
        link_base: "http://localhost".into(),
    };
    let (identity, _relay) =
        Identity::start(db.clone(), settings, ports, Arc::new(InProcessBus::default())).await.unwrap();
    let migrated = MigratedDb::new(db, tandem_identity::MIGRATIONS);
    migrated.check().await.unwrap();
    let services = tandem_identity::api::services(&identity, 1 << 20).ready_when(migrated);
    let server = Server::build(ServerOptions::default(), services, identity.authenticator()).await.unwrap();
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let auth = AuthServiceClient::connect(url.clone()).await.unwrap().max_encoding_message_size(8 << 20);
    let sign_in = async |email: &str| {
        let mut auth = auth.clone();
        let team = auth
            .sign_up(SignUpRequest {
                email: email.into(),
                password: "long-enough-pw".into(),
                display_name: "Peer Test".into(),
                team_name: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .team
            .unwrap();
        let token = auth
            .authenticate(AuthenticateRequest { email: email.into(), password: "long-enough-pw".into() })
            .await
            .unwrap()
            .into_inner()
            .access_token;
        (team.id, token)
    };
    let (own_team, token) = sign_in("ann@peer.example").await;
    let (other_team, _) = sign_in("bob@peer.example").await;

    let peer = peers::Identity::connect(&url).unwrap();
    let verifier = JwtVerifier::new(peer.keys().await.unwrap());
    let caller = verifier.verify(&token).await.expect("identity's token verifies with its published keys");
    assert_eq!(caller.token.as_deref(), Some(token.as_str()), "the caller carries its token");

    assert!(peer.check(&caller, &own_team, Permission::TeamView).await.unwrap());
    assert!(peer.check(&caller, &own_team, Permission::RewardsWithdraw).await.unwrap());
    assert!(!peer.check(&caller, &other_team, Permission::TeamView).await.unwrap());

    let tokenless = Caller { token: None, ..(*caller).clone() };
    assert!(matches!(
        peer.check(&tokenless, &own_team, Permission::TeamView).await,
        Err(ApiError::Unauthenticated(_))
    ));
    let forged = Caller { token: Some("not-a-token".into()), ..(*caller).clone() };
    assert!(matches!(
        peer.check(&forged, &own_team, Permission::TeamView).await,
        Err(ApiError::Unauthenticated(_))
    ));
    // The server refuses a message above its limit (1 MiB here) and keeps serving.
    let mut auth = auth.clone();
    let huge = SignUpRequest { display_name: "x".repeat(2 << 20), ..Default::default() };
    let refused = auth.sign_up(huge).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(auth.get_jwks(tandem_proto::identity::v1::GetJwksRequest {}).await.is_ok());
    let _ = stop.send(());
}

/// How deals learns about users and enrolments in production: identity's `GetUserAccess` and
/// `CheckTeamEnrollment`, asked with the caller's own token.
#[tokio::test]
async fn deals_learns_users_and_enrolments_from_identity_with_the_callers_token() {
    use tandem_deals::{Directory, UserInfo, identity::IdentityDirectory};
    use tandem_proto::identity::v1::{
        CreateProgramRequest, JoinProgramRequest, program_service_client::ProgramServiceClient,
    };

    let test = TestDb::sqlite();
    let db = Db::connect(&test.url, &DbOptions::default()).unwrap();
    let ports = Ports {
        mailer: Arc::new(ports::LogMailer),
        txt: Arc::new(ports::StaticTxt::default()),
        rewards: Arc::new(ports::NoLedger),
    };
    let settings = Settings {
        signing_key: SigningKeyPair::generate(),
        previous_keys: Vec::new(),
        link_base: "http://localhost".into(),
    };
    let (identity, _relay) =
        Identity::start(db.clone(), settings, ports, Arc::new(InProcessBus::default())).await.unwrap();
    let migrated = MigratedDb::new(db, tandem_identity::MIGRATIONS);
    migrated.check().await.unwrap();
    identity.bootstrap_admin("admin@vendor.example", "staff-admin-password").await.unwrap();
    let services = tandem_identity::api::services(&identity, 1 << 20).ready_when(migrated);
    let server = Server::build(ServerOptions::default(), services, identity.authenticator()).await.unwrap();
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let auth = AuthServiceClient::connect(url.clone()).await.unwrap();
    let login = async |email: &str, password: &str| {
        let token = auth
            .clone()
            .authenticate(AuthenticateRequest { email: email.into(), password: password.into() })
            .await
            .unwrap()
            .into_inner()
            .access_token;
        let verifier = JwtVerifier::new(peers::Identity::connect(&url).unwrap().keys().await.unwrap());
        verifier.verify(&token).await.unwrap()
    };
    let sign_up = async |email: &str| {
        auth.clone()
            .sign_up(SignUpRequest {
                email: email.into(),
                password: "long-enough-pw".into(),
                display_name: "Peer Test".into(),
                team_name: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .team
            .unwrap()
            .id
    };
    let team = sign_up("ann@peer.example").await;
    sign_up("bob@peer.example").await;
    let ann = login("ann@peer.example", "long-enough-pw").await;
    let bob = login("bob@peer.example", "long-enough-pw").await;
    let staff = login("admin@vendor.example", "staff-admin-password").await;

    let directory = IdentityDirectory::connect(&url).unwrap();
    let ann_info = UserInfo { active: true, staff: false, team_ids: vec![team.clone()] };
    assert_eq!(directory.user(&ann, &ann.user_id).await.unwrap(), Some(ann_info.clone()));
    assert_eq!(directory.user(&staff, &ann.user_id).await.unwrap(), Some(ann_info));
    // Bob shares no team with Ann: to him she is unknown.
    assert_eq!(directory.user(&bob, &ann.user_id).await.unwrap(), None);
    let staff_info = directory.user(&staff, &staff.user_id).await.unwrap().unwrap();
    assert!(staff_info.staff && staff_info.active);
    let tokenless = Caller { token: None, ..(*ann).clone() };
    assert!(matches!(directory.user(&tokenless, &ann.user_id).await, Err(ApiError::Unauthenticated(_))));

    let mut programs = ProgramServiceClient::connect(url.clone()).await.unwrap();
    let bearer = |caller: &Caller, message| {
        let mut request = tonic::Request::new(message);
        let token = caller.token.as_deref().unwrap();
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    let program = programs
        .create_program(bearer(
            &staff,
            CreateProgramRequest { name: "Resellers".into(), description: String::new() },
        ))
        .await
        .unwrap()
        .into_inner()
        .program
        .unwrap()
        .id;
    assert!(!directory.team_enrolled(&ann, &team, &program).await.unwrap());
    let mut request =
        tonic::Request::new(JoinProgramRequest { program_id: program.clone(), team_id: team.clone() });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {}", ann.token.as_deref().unwrap()).parse().unwrap());
    programs.join_program(request).await.unwrap();
    assert!(directory.team_enrolled(&ann, &team, &program).await.unwrap());
    assert!(directory.team_enrolled(&staff, &team, &program).await.unwrap());
    // Another team's enrolment is not Bob's to learn.
    assert!(!directory.team_enrolled(&bob, &team, &program).await.unwrap());
    let _ = stop.send(());
}

/// Identity's rewards ledger, wired once commissions (which needs identity's keys first) is up.
#[derive(Default)]
struct LateLedger(std::sync::OnceLock<ports::CommissionsLedger>);

#[async_trait::async_trait]
impl ports::RewardsLedger for LateLedger {
    async fn team_holds_rewards(&self, team_id: &str) -> Result<bool, ports::LedgerError> {
        self.0.get().expect("commissions is wired").team_holds_rewards(team_id).await
    }
}

/// Identity asks commissions, over gRPC as its own service principal, whether a team holds
/// rewards before deleting it; no partner, forged or other service token gets that answer.
async fn identity_asks_commissions_before_deleting_a_team(identity_db: TestDb, commissions_db: TestDb) {
    use tandem_platform::testing::TestServer;
    use tandem_proto::{
        commissions::v1::{
            CheckTeamRewardsRequest, CreateCommissionPlanRequest,
            commission_service_client::CommissionServiceClient, reward_service_client::RewardServiceClient,
        },
        common::v1::Money,
        events::v1::{DealClosed, Event, event::Payload},
        identity::v1::{DeleteTeamRequest, ListTeamsRequest, team_service_client::TeamServiceClient},
    };
    use tonic::Code;
    use tonic_types::StatusExt;

    let reason = |status: &tonic::Status| status.get_error_details().error_info().map(|i| i.reason.clone());
    fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    // identity, with a ledger that will ask commissions.
    let ledger = Arc::new(LateLedger::default());
    let ports = Ports {
        mailer: Arc::new(ports::LogMailer),
        txt: Arc::new(ports::StaticTxt::default()),
        rewards: ledger.clone(),
    };
    let signing_key = SigningKeyPair::generate();
    let settings = Settings {
        signing_key: signing_key.clone(),
        previous_keys: Vec::new(),
        link_base: "http://localhost".into(),
    };
    let db = Db::connect(&identity_db.url, &DbOptions::default()).unwrap();
    db.migrate(tandem_identity::MIGRATIONS).await.unwrap();
    let (identity, _relay) =
        Identity::start(db, settings, ports, Arc::new(InProcessBus::default())).await.unwrap();
    identity.bootstrap_admin("admin@vendor.example", "staff-admin-password").await.unwrap();
    let identity_server =
        TestServer::start(tandem_identity::api::services(&identity, 1 << 20), identity.authenticator()).await;
    let identity_url = format!("http://{}", identity_server.addr);

    // commissions, trusting identity's published keys and asking it for permissions.
    let peer = peers::Identity::connect(&identity_url).unwrap();
    let keys = peer.keys().await.unwrap();
    let db = Db::connect(&commissions_db.url, &DbOptions::default()).unwrap();
    db.migrate(tandem_commissions::MIGRATIONS).await.unwrap();
    let commissions = tandem_commissions::Commissions::new(
        db,
        Arc::new(peer),
        Arc::new(tandem_commissions::StaticTxt::default()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let commissions_server = TestServer::start(
        tandem_commissions::api::services(&commissions, 1 << 20),
        Arc::new(JwtVerifier::new(keys)),
    )
    .await;
    let commissions_url = format!("http://{}", commissions_server.addr);
    assert!(
        ledger
            .0
            .set(ports::CommissionsLedger::connect(&commissions_url, signing_key.clone()).unwrap())
            .is_ok()
    );

    let auth = AuthServiceClient::new(identity_server.channel.clone());
    let sign_up = async |email: &str| {
        let mut auth = auth.clone();
        let team = auth
            .sign_up(SignUpRequest {
                email: email.into(),
                password: "long-enough-pw".into(),
                display_name: "Peer Test".into(),
                team_name: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .team
            .unwrap()
            .id;
        let token = auth
            .authenticate(AuthenticateRequest { email: email.into(), password: "long-enough-pw".into() })
            .await
            .unwrap()
            .into_inner()
            .access_token;
        (team, token)
    };
    let (rich_team, ann) = sign_up("ann@peer.example").await;
    let (poor_team, bob) = sign_up("bob@peer.example").await;
    let staff = auth
        .clone()
        .authenticate(AuthenticateRequest {
            email: "admin@vendor.example".into(),
            password: "staff-admin-password".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;

    // Ann's team earns a commission on a won deal.
    let usd = |minor| Money { currency_code: "USD".into(), amount_minor: minor };
    CommissionServiceClient::new(commissions_server.channel.clone())
        .create_commission_plan(bearer(
            &staff,
            CreateCommissionPlanRequest {
                name: "Standard".into(),
                rate_bps: 1_000,
                recurring_months: 12,
                hold_days: 30,
                minimum_payout: Some(usd(0)),
                tier_multipliers: vec![],
                request_id: "plan-1".into(),
            },
        ))
        .await
        .unwrap();
    let won = Event {
        id: "evt_won_1".into(),
        aggregate_id: "deal_1".into(),
        source: "deals".into(),
        payload: Some(Payload::DealClosed(DealClosed {
            deal_id: "deal_1".into(),
            team_id: rich_team.clone(),
            client_id: "acme.example.com".into(),
            client_domain: "acme.example.com".into(),
            amount: Some(usd(100_000)),
            client_market: "FR".into(),
            deal_type: 1,
            won: true,
            ..Default::default()
        })),
        ..Default::default()
    };
    commissions.deal_handler().handle(&won).await.unwrap();

    // Deleting the team that holds rewards is refused; the one without any goes.
    let mut teams = TeamServiceClient::new(identity_server.channel.clone());
    let refused =
        teams.delete_team(bearer(&ann, DeleteTeamRequest { team_id: rich_team.clone() })).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(reason(&refused).as_deref(), Some("TEAM_HOLDS_REWARDS"));
    teams.delete_team(bearer(&bob, DeleteTeamRequest { team_id: poor_team.clone() })).await.unwrap();

    // Only staff and identity's service principal get the answer.
    let mut rewards = RewardServiceClient::new(commissions_server.channel.clone());
    let ask = |token: &str| bearer(token, CheckTeamRewardsRequest { team_id: rich_team.clone() });
    assert!(rewards.check_team_rewards(ask(&staff)).await.unwrap().into_inner().holds_rewards);
    let now = tandem_platform::testing::now_secs();
    let service = signing_key.sign_service("identity", now, 60).unwrap();
    assert!(rewards.check_team_rewards(ask(&service)).await.unwrap().into_inner().holds_rewards);
    let partner = rewards.check_team_rewards(ask(&ann)).await.unwrap_err();
    assert_eq!(partner.code(), Code::PermissionDenied, "{partner:?}");
    let other_service = signing_key.sign_service("deals", now, 60).unwrap();
    let refused = rewards.check_team_rewards(ask(&other_service)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "another service: {refused:?}");
    let forged = SigningKeyPair::generate().sign_service("identity", now, 60).unwrap();
    let refused = rewards.check_team_rewards(ask(&forged)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "a key identity does not publish: {refused:?}");
    // A service token is good for nothing else: not on commissions' other RPCs, not on identity.
    let refused = rewards
        .get_reward_balance(bearer(
            &service,
            tandem_proto::commissions::v1::GetRewardBalanceRequest {
                team_id: rich_team.clone(),
                currency_code: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = teams.list_teams(bearer(&service, ListTeamsRequest::default())).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // Commissions gone: deletion waits (UNAVAILABLE), never assumes there are no rewards.
    drop(commissions_server);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (lonely_team, cid) = sign_up("cid@peer.example").await;
    let refused =
        teams.delete_team(bearer(&cid, DeleteTeamRequest { team_id: lonely_team })).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
}

/// Without a commissions service identity refuses to delete teams rather than guess.
#[tokio::test]
async fn without_a_rewards_ledger_teams_are_not_deleted() {
    use tandem_proto::identity::v1::{DeleteTeamRequest, team_service_client::TeamServiceClient};
    use tonic_types::StatusExt;

    let test = TestDb::sqlite();
    let db = Db::connect(&test.url, &DbOptions::default()).unwrap();
    db.migrate(tandem_identity::MIGRATIONS).await.unwrap();
    let ports = Ports {
        mailer: Arc::new(ports::LogMailer),
        txt: Arc::new(ports::StaticTxt::default()),
        rewards: Arc::new(ports::NoLedger),
    };
    let settings = Settings {
        signing_key: SigningKeyPair::generate(),
        previous_keys: Vec::new(),
        link_base: "http://localhost".into(),
    };
    let (identity, _relay) =
        Identity::start(db, settings, ports, Arc::new(InProcessBus::default())).await.unwrap();
    let server = tandem_platform::testing::TestServer::start(
        tandem_identity::api::services(&identity, 1 << 20),
        identity.authenticator(),
    )
    .await;
    let mut auth = AuthServiceClient::new(server.channel.clone());
    let team = auth
        .sign_up(SignUpRequest {
            email: "ann@peer.example".into(),
            password: "long-enough-pw".into(),
            display_name: "Ann".into(),
            team_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .team
        .unwrap()
        .id;
    let token = auth
        .authenticate(AuthenticateRequest {
            email: "ann@peer.example".into(),
            password: "long-enough-pw".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let mut request = tonic::Request::new(DeleteTeamRequest { team_id: team });
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let refused = TeamServiceClient::new(server.channel.clone()).delete_team(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert_eq!(
        refused.get_error_details().error_info().map(|i| i.reason.as_str()),
        Some("REWARDS_LEDGER_UNCONFIGURED")
    );
}

mod rewards_ledger {
    tandem_platform::backend_tests!(identity_asks_commissions_before_deleting_a_team);

    async fn identity_asks_commissions_before_deleting_a_team(db: tandem_platform::testing::TestDb) {
        // One database each, on the same backend.
        let second = if db.url.starts_with("sqlite") {
            tandem_platform::testing::TestDb::sqlite()
        } else {
            tandem_platform::testing::TestDb::postgres().await.expect("a second PostgreSQL database")
        };
        super::identity_asks_commissions_before_deleting_a_team(db, second).await;
    }
}
