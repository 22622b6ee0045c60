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
        rewards: Arc::new(ports::NoRewardsLedger),
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
    let claims = verifier.verify(&token).await.expect("identity's token verifies with its published keys");
    let mut caller = Caller::from_claims(&claims);
    caller.token = Some(token.as_str().into());

    assert!(peer.check(&caller, &own_team, Permission::TeamView).await.unwrap());
    assert!(peer.check(&caller, &own_team, Permission::RewardsWithdraw).await.unwrap());
    assert!(!peer.check(&caller, &other_team, Permission::TeamView).await.unwrap());

    let tokenless = Caller { token: None, ..caller.clone() };
    assert!(matches!(
        peer.check(&tokenless, &own_team, Permission::TeamView).await,
        Err(ApiError::Unauthenticated(_))
    ));
    let forged = Caller { token: Some("not-a-token".into()), ..caller };
    assert!(matches!(
        peer.check(&forged, &own_team, Permission::TeamView).await,
        Err(ApiError::Unauthenticated(_))
    ));
    // The server refuses a message above its limit (1 MiB here) and keeps serving.
    let mut auth = auth.clone();
    let huge = SignUpRequest { display_name: "x".repeat(2 << 20), ..Default::default() };
    let refused = auth.sign_up(huge).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
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
        rewards: Arc::new(ports::NoRewardsLedger),
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
        let mut caller = Caller::from_claims(&verifier.verify(&token).await.unwrap());
        caller.token = Some(token.as_str().into());
        caller
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
    let tokenless = Caller { token: None, ..ann.clone() };
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
