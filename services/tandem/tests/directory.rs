//! Deals' copy of identity's members, fed by identity's events over the in-process bus: a lead
//! a partner declines goes, by the rules run with that partner's token, to a member of another
//! team — whom identity would not show that partner — and never to a deactivated one.

use std::{sync::Arc, time::Duration};

use tandem_deals::{Deals, directory, identity::IdentityDirectory};
use tandem_identity::{Identity, Ports, Settings, domain::secrets::SigningKeyPair, ports};
use tandem_platform::{
    auth::JwtVerifier,
    bus::{EventBus, InProcessBus},
    db::{Db, DbOptions},
    peers,
    server::Shutdown,
    testing::{TestDb, TestServer},
};
use tandem_proto::{
    deals::v1::{
        self as pb, assignment_rule_service_client::AssignmentRuleServiceClient,
        create_assignment_rule_request::Target, lead_service_client::LeadServiceClient,
        queue_service_client::QueueServiceClient,
    },
    identity::v1::{
        AuthenticateRequest, DeactivateUserRequest, GetUserAccessRequest, SignUpRequest,
        access_service_client::AccessServiceClient, auth_service_client::AuthServiceClient,
        staff_service_client::StaffServiceClient,
    },
};
use tonic::transport::Channel;

fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

struct Partner {
    id: String,
    team: String,
    token: String,
}

async fn sign_up(auth: &AuthServiceClient<Channel>, email: &str) -> Partner {
    let response = auth
        .clone()
        .sign_up(SignUpRequest {
            email: email.into(),
            password: "long-enough-pw".into(),
            display_name: "Partner".into(),
            team_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let token = login(auth, email, "long-enough-pw").await;
    Partner { id: response.user.unwrap().id, team: response.team.unwrap().id, token }
}

async fn login(auth: &AuthServiceClient<Channel>, email: &str, password: &str) -> String {
    auth.clone()
        .authenticate(AuthenticateRequest { email: email.into(), password: password.into() })
        .await
        .unwrap()
        .into_inner()
        .access_token
}

/// Waits until deals' copy says `user_id` is `active` in `team_id`.
async fn copy_shows(db: &Db, user_id: &str, team_id: &str, active: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut conn = db.acquire().await.unwrap();
        let known = tandem_deals::store::directory::user(&mut conn, user_id).await.unwrap();
        if known.as_ref().is_some_and(|u| u.active == active && u.team_ids.iter().any(|t| t == team_id)) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "deals' copy never caught up: {known:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_declined_lead_goes_to_another_teams_member(identity_db: TestDb, deals_db: TestDb) {
    let bus = Arc::new(InProcessBus::default());
    let stop = Shutdown::default();

    // identity, publishing its events to the bus.
    let db = Db::connect(&identity_db.url, &DbOptions::default()).unwrap();
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
    let (identity, relay) = Identity::start(db, settings, ports, bus.clone()).await.unwrap();
    identity.bootstrap_admin("admin@vendor.example", "staff-admin-password").await.unwrap();
    let identity_server =
        TestServer::start(tandem_identity::api::services(&identity, 1 << 20), identity.authenticator()).await;
    let identity_url = format!("http://{}", identity_server.addr);

    // deals, asking identity over gRPC with the caller's token as in production, and keeping
    // its copy of identity's members from the bus.
    let db = Db::connect(&deals_db.url, &DbOptions::default()).unwrap();
    db.migrate(tandem_deals::MIGRATIONS).await.unwrap();
    let peer = peers::Identity::connect(&identity_url).unwrap();
    let keys = peer.keys().await.unwrap();
    let deals = Deals::new(
        db.clone(),
        Arc::new(peer.clone()),
        Arc::new(IdentityDirectory::new(peer.peer().clone())),
        Arc::new(tokio::sync::Notify::new()),
        tandem_deals::Settings::default(),
    );
    bus.subscribe(directory::IDENTITY_STREAM, directory::DIRECTORY_CONSUMER, deals.directory_handler())
        .await
        .unwrap();
    tokio::spawn(relay.run(stop.requested()));
    let deals_server =
        TestServer::start(tandem_deals::api::services(&deals, 1 << 20), Arc::new(JwtVerifier::new(keys)))
            .await;

    let auth = AuthServiceClient::new(identity_server.channel.clone());
    let staff = login(&auth, "admin@vendor.example", "staff-admin-password").await;
    let ann = sign_up(&auth, "ann@north.example").await;
    let bob = sign_up(&auth, "bob@south.example").await;
    copy_shows(&db, &ann.id, &ann.team, true).await;
    copy_shows(&db, &bob.id, &bob.team, true).await;
    // What production looked like without the copy: to Ann, identity does not know Bob.
    let hidden = AccessServiceClient::new(identity_server.channel.clone())
        .get_user_access(bearer(&ann.token, GetUserAccessRequest { user_id: bob.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), tonic::Code::NotFound);

    // A round-robin queue of both teams, and a rule sending every lead to it.
    let queue = QueueServiceClient::new(deals_server.channel.clone())
        .create_queue(bearer(
            &staff,
            pb::CreateQueueRequest {
                name: "EMEA".into(),
                member_user_ids: vec![ann.id.clone(), bob.id.clone()],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .queue
        .unwrap();
    AssignmentRuleServiceClient::new(deals_server.channel.clone())
        .create_assignment_rule(bearer(
            &staff,
            pb::CreateAssignmentRuleRequest {
                priority: 1,
                criteria: vec![],
                target: Some(Target::RoundRobinQueueId(queue.id.clone())),
                team_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let mut leads = LeadServiceClient::new(deals_server.channel.clone());
    let new_lead = async |leads: &mut LeadServiceClient<Channel>| {
        leads
            .create_lead(bearer(
                &staff,
                pb::CreateLeadRequest {
                    company_name: "Acme".into(),
                    contact_email: "buyer@acme.example".into(),
                    country: "FR".into(),
                    industry: "Retail".into(),
                    employee_count: 50,
                    notify: false,
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .lead
            .unwrap()
    };
    let partner = |id: &str| if id == ann.id { &ann } else { &bob };
    let decline = async |leads: &mut LeadServiceClient<Channel>, who: &Partner, lead_id: &str| {
        leads
            .decline_lead(bearer(
                &who.token,
                pb::DeclineLeadRequest { lead_id: lead_id.into(), reason: "not our market".into() },
            ))
            .await
            .unwrap()
            .into_inner()
            .lead
            .unwrap()
    };

    // The first owner declines: the rules, run with its token, give the lead to the other team.
    let lead = new_lead(&mut leads).await;
    let first = partner(&lead.owner_user_id);
    let other = if first.id == ann.id { &bob } else { &ann };
    let after = decline(&mut leads, first, &lead.id).await;
    assert_eq!(
        (after.owner_user_id.as_str(), after.team_id.as_str()),
        (other.id.as_str(), other.team.as_str())
    );

    // The other member deactivated: a lead the first declines now waits for an owner.
    StaffServiceClient::new(identity_server.channel.clone())
        .deactivate_user(bearer(&staff, DeactivateUserRequest { user_id: other.id.clone() }))
        .await
        .unwrap();
    copy_shows(&db, &other.id, &other.team, false).await;
    let lead = new_lead(&mut leads).await;
    assert_eq!(lead.owner_user_id, first.id, "the deactivated member gets no turn");
    let after = decline(&mut leads, first, &lead.id).await;
    assert_eq!((after.owner_user_id.as_str(), after.status()), ("", pb::LeadStatus::New));
    assert!(bus.dead_letters().await.is_empty());
    stop.begin();
}

mod declined_leads {
    tandem_platform::backend_tests!(a_declined_lead_goes_to_another_teams_member);

    async fn a_declined_lead_goes_to_another_teams_member(db: tandem_platform::testing::TestDb) {
        let second = if db.url.starts_with("sqlite") {
            tandem_platform::testing::TestDb::sqlite()
        } else {
            tandem_platform::testing::TestDb::postgres().await.expect("a second PostgreSQL database")
        };
        super::a_declined_lead_goes_to_another_teams_member(db, second).await;
    }
}
