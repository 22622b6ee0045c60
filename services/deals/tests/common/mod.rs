//! A deals server on port 0 over a fresh database, with tokens signed by a test key, and
//! in-process fakes of identity: `Permissions` that follows the partner-team role table, and a
//! `Directory` of users (active or not, staff or partner, their teams) and enrolments.
#![allow(dead_code)]

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use tandem_deals::{Deals, Directory, MIGRATIONS, Settings, UserInfo};
use tandem_identity::domain::secrets::SigningKeyPair;
use tandem_platform::{
    ApiError,
    auth::{Caller, JwtVerifier, KeySet, Permissions},
    db::{Db, DbOptions},
    ids::new_id,
    testing::{TestDb, TestServer, now_secs},
};
use tandem_proto::{
    deals::v1::{
        self as pb, assignment_rule_service_client::AssignmentRuleServiceClient,
        deal_service_client::DealServiceClient, lead_service_client::LeadServiceClient,
        pipeline_service_client::PipelineServiceClient, queue_service_client::QueueServiceClient,
    },
    events::v1::Event,
    identity::v1::Permission,
};
use tokio::sync::Notify;
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt;

pub use tandem_platform::backend_tests;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Owner,
    Admin,
    Member,
    Finance,
}

/// Identity as deals sees it: roles in teams, users, enrolments.
#[derive(Default)]
pub struct FakeIdentity {
    pub roles: Mutex<HashMap<(String, String), Role>>,
    pub users: Mutex<HashMap<String, UserInfo>>,
    pub enrolled: Mutex<HashSet<(String, String)>>,
}

#[async_trait]
impl Permissions for FakeIdentity {
    async fn check(&self, caller: &Caller, team_id: &str, permission: Permission) -> Result<bool, ApiError> {
        if caller.is_staff() {
            return Ok(permission == Permission::TeamView);
        }
        let role = self.roles.lock().unwrap().get(&(caller.user_id.clone(), team_id.to_owned())).copied();
        Ok(match (role, permission) {
            (None, _) => false,
            (Some(_), Permission::TeamView) => true,
            (Some(Role::Owner | Role::Admin | Role::Member), Permission::DealsContribute) => true,
            (Some(Role::Owner | Role::Admin), Permission::TeamManage) => true,
            _ => false,
        })
    }
}

#[async_trait]
impl Directory for FakeIdentity {
    async fn user(&self, _caller: &Caller, user_id: &str) -> Result<Option<UserInfo>, ApiError> {
        Ok(self.users.lock().unwrap().get(user_id).cloned())
    }
    async fn team_enrolled(
        &self,
        _caller: &Caller,
        team_id: &str,
        program_id: &str,
    ) -> Result<bool, ApiError> {
        Ok(self.enrolled.lock().unwrap().contains(&(team_id.to_owned(), program_id.to_owned())))
    }
}

/// A user with its token.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub token: String,
}

impl User {
    pub fn req<T>(&self, message: T) -> Request<T> {
        req(&self.token, message)
    }
}

pub struct Harness {
    pub deals: Arc<Deals>,
    pub db: Db,
    pub identity: Arc<FakeIdentity>,
    pub leads: LeadServiceClient<Channel>,
    pub queues: QueueServiceClient<Channel>,
    pub rules: AssignmentRuleServiceClient<Channel>,
    pub deal: DealServiceClient<Channel>,
    pub pipelines: PipelineServiceClient<Channel>,
    pub staff: User,
    pub team: String,
    pub owner: User,
    pub admin: User,
    pub member: User,
    pub finance: User,
    /// A partner of another team.
    pub other: User,
    pub other_team: String,
    /// A signed-in user of no team.
    pub outsider: User,
    keys: SigningKeyPair,
    _test_db: TestDb,
    _server: TestServer,
}

impl Harness {
    pub async fn start(test_db: TestDb) -> Self {
        Self::start_with(test_db, Settings::default()).await
    }

    pub async fn start_with(test_db: TestDb, settings: Settings) -> Self {
        let db = Db::connect(&test_db.url, &DbOptions { max_connections: 40, ..DbOptions::default() })
            .expect("connect");
        db.migrate(MIGRATIONS).await.expect("migrate");
        let keys = SigningKeyPair::generate();
        let key_set = Arc::new(KeySet::from_jwks(&[keys.jwk().clone()]).unwrap());
        let identity = Arc::new(FakeIdentity::default());
        let deals =
            Deals::new(db.clone(), identity.clone(), identity.clone(), Arc::new(Notify::new()), settings);
        let services = tandem_deals::api::services(&deals, 4 * 1024 * 1024);
        let server = TestServer::start(services, Arc::new(JwtVerifier::new(key_set))).await;
        let channel = server.channel.clone();
        let staff_id = new_id("user");
        let staff = User {
            token: keys.sign(&staff_id, Some("STAFF_ROLE_CHANNEL_MANAGER"), now_secs(), 3600).unwrap(),
            id: staff_id.clone(),
        };
        identity
            .users
            .lock()
            .unwrap()
            .insert(staff_id, UserInfo { active: true, staff: true, team_ids: vec![] });
        let mut h = Self {
            deals,
            db,
            identity,
            leads: LeadServiceClient::new(channel.clone()),
            queues: QueueServiceClient::new(channel.clone()),
            rules: AssignmentRuleServiceClient::new(channel.clone()),
            deal: DealServiceClient::new(channel.clone()),
            pipelines: PipelineServiceClient::new(channel),
            staff,
            team: new_id("team"),
            owner: User { id: String::new(), token: String::new() },
            admin: User { id: String::new(), token: String::new() },
            member: User { id: String::new(), token: String::new() },
            finance: User { id: String::new(), token: String::new() },
            other: User { id: String::new(), token: String::new() },
            other_team: new_id("team"),
            outsider: User { id: String::new(), token: String::new() },
            keys,
            _test_db: test_db,
            _server: server,
        };
        let team = h.team.clone();
        let other_team = h.other_team.clone();
        h.owner = h.partner(&team, Role::Owner);
        h.admin = h.partner(&team, Role::Admin);
        h.member = h.partner(&team, Role::Member);
        h.finance = h.partner(&team, Role::Finance);
        h.other = h.partner(&other_team, Role::Owner);
        h.outsider = h.user(&[]);
        h
    }

    /// A new active user in `teams` (no role: add one with [`Self::partner`]).
    pub fn user(&self, teams: &[&str]) -> User {
        let id = new_id("user");
        self.identity.users.lock().unwrap().insert(
            id.clone(),
            UserInfo { active: true, staff: false, team_ids: teams.iter().map(|t| t.to_string()).collect() },
        );
        User { token: self.keys.sign(&id, None, now_secs(), 3600).unwrap(), id }
    }

    /// A new active partner user with `role` in `team`.
    pub fn partner(&self, team: &str, role: Role) -> User {
        let u = self.user(&[team]);
        self.identity.roles.lock().unwrap().insert((u.id.clone(), team.to_owned()), role);
        u
    }

    /// Another staff user.
    pub fn staff_user(&self) -> User {
        self.staff_with_role("STAFF_ROLE_ADMIN")
    }

    /// A staff user with this role (`STAFF_ROLE_FINANCE`, …).
    pub fn staff_with_role(&self, role: &str) -> User {
        let id = new_id("user");
        self.identity
            .users
            .lock()
            .unwrap()
            .insert(id.clone(), UserInfo { active: true, staff: true, team_ids: vec![] });
        User { token: self.keys.sign(&id, Some(role), now_secs(), 3600).unwrap(), id }
    }

    pub fn deactivate(&self, user_id: &str) {
        self.identity.users.lock().unwrap().get_mut(user_id).unwrap().active = false;
    }

    pub fn enrol(&self, team: &str, program: &str) {
        self.identity.enrolled.lock().unwrap().insert((team.to_owned(), program.to_owned()));
    }

    pub async fn create_lead(&self, country: &str, industry: &str, employees: i64) -> pb::Lead {
        self.leads
            .clone()
            .create_lead(self.staff.req(pb::CreateLeadRequest {
                company_name: "Acme".into(),
                contact_email: "buyer@acme.example".into(),
                country: country.into(),
                industry: industry.into(),
                employee_count: employees,
                notify: false,
            }))
            .await
            .expect("create lead")
            .into_inner()
            .lead
            .unwrap()
    }

    pub async fn create_queue(&self, members: &[&User]) -> pb::Queue {
        self.queues
            .clone()
            .create_queue(self.staff.req(pb::CreateQueueRequest {
                name: "Partners EMEA".into(),
                member_user_ids: members.iter().map(|u| u.id.clone()).collect(),
            }))
            .await
            .expect("create queue")
            .into_inner()
            .queue
            .unwrap()
    }

    pub fn register_request(&self, team: &str, domain: &str, request_id: &str) -> pb::RegisterDealRequest {
        pb::RegisterDealRequest {
            team_id: team.into(),
            program_id: String::new(),
            customer_name: "Acme Corp".into(),
            customer_domain: domain.into(),
            amount: Some(tandem_proto::common::v1::Money {
                currency_code: "USD".into(),
                amount_minor: 1_000_000,
            }),
            products: vec!["Sales Hub".into()],
            expected_close_date: None,
            client_market: "US".into(),
            deal_type: pb::DealType::NewBusiness.into(),
            request_id: request_id.into(),
            will_manage: false,
        }
    }

    pub async fn register(&self, by: &User, team: &str, domain: &str) -> pb::Deal {
        self.deal
            .clone()
            .register_deal(by.req(self.register_request(team, domain, &new_id("req"))))
            .await
            .expect("register deal")
            .into_inner()
            .deal
            .unwrap()
    }

    /// The events in the outbox, oldest first.
    pub async fn events(&self) -> Vec<Event> {
        use base64::Engine;
        use prost::Message;
        let rows: Vec<(String,)> = sqlx::query_as("SELECT payload FROM outbox ORDER BY seq")
            .fetch_all(&mut *self.db.acquire().await.unwrap())
            .await
            .unwrap();
        rows.into_iter()
            .map(|(p,)| {
                Event::decode(base64::engine::general_purpose::STANDARD.decode(p).unwrap().as_slice())
                    .unwrap()
            })
            .collect()
    }
}

/// A request carrying `token` (none when empty).
pub fn req<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if !token.is_empty() {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// The fields of an INVALID_ARGUMENT's field violations.
pub fn violations(status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// The `ErrorInfo` reason of a refusal.
pub fn reason(status: &Status) -> String {
    status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default()
}
