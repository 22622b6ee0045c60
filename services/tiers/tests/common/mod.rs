//! A tiers server on port 0 over a fresh database, with tokens signed by a test key and an
//! in-process `Permissions` that knows which users may see which teams.
#![allow(dead_code)]

use std::{collections::HashSet, sync::Arc};

use async_trait::async_trait;
use tandem_identity::domain::secrets::SigningKeyPair;
use tandem_platform::{
    ApiError,
    auth::{Caller, JwtVerifier, KeySet, Permissions},
    db::{Db, DbOptions},
    ids::new_id,
    testing::{TestDb, TestServer, now_secs},
};
use tandem_proto::{
    identity::v1::Permission,
    tiers::v1::{
        points_service_client::PointsServiceClient, rates_service_client::RatesServiceClient,
        tier_service_client::TierServiceClient,
    },
};
use tandem_tiers::{MIGRATIONS, Tiers};
use tokio::sync::Notify;
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt;

/// Which (user, team) pairs may view the team.
#[derive(Default)]
pub struct FakePermissions {
    pub viewers: std::sync::Mutex<HashSet<(String, String)>>,
}

#[async_trait]
impl Permissions for FakePermissions {
    async fn check(&self, caller: &Caller, team_id: &str, permission: Permission) -> Result<bool, ApiError> {
        assert_eq!(permission, Permission::TeamView, "tiers only asks to view teams");
        Ok(self.viewers.lock().unwrap().contains(&(caller.user_id.clone(), team_id.to_owned())))
    }
}

pub struct Harness {
    pub tiers: Arc<Tiers>,
    pub db: Db,
    pub points: PointsServiceClient<Channel>,
    pub tier: TierServiceClient<Channel>,
    pub rates: RatesServiceClient<Channel>,
    pub staff: String,
    /// Token of a member of `team`.
    pub member: String,
    /// Token of a user who belongs to no team.
    pub outsider: String,
    pub team: String,
    pub other_team: String,
    pub program: String,
    keys: SigningKeyPair,
    _test_db: TestDb,
    _server: TestServer,
}

impl Harness {
    pub async fn start(test_db: TestDb) -> Self {
        let db = Db::connect(&test_db.url, &DbOptions::default()).expect("connect");
        db.migrate(MIGRATIONS).await.expect("migrate");
        let keys = SigningKeyPair::generate();
        let key_set = Arc::new(KeySet::from_jwks(&[keys.jwk().clone()]).unwrap());
        let permissions = Arc::new(FakePermissions::default());
        let tiers = Tiers::new(db.clone(), permissions.clone(), Arc::new(Notify::new()));
        let services = tandem_tiers::api::services(&tiers, 4 * 1024 * 1024);
        let server = TestServer::start(services, Arc::new(JwtVerifier::new(key_set))).await;
        let channel = server.channel.clone();
        let team = new_id("team");
        let member_id = new_id("user");
        permissions.viewers.lock().unwrap().insert((member_id.clone(), team.clone()));
        Self {
            points: PointsServiceClient::new(channel.clone()),
            tier: TierServiceClient::new(channel.clone()),
            rates: RatesServiceClient::new(channel),
            staff: keys.sign(&new_id("user"), Some("STAFF_ROLE_CHANNEL_MANAGER"), now_secs(), 3600).unwrap(),
            member: keys.sign(&member_id, None, now_secs(), 3600).unwrap(),
            outsider: keys.sign(&new_id("user"), None, now_secs(), 3600).unwrap(),
            team,
            other_team: new_id("team"),
            program: new_id("prog"),
            tiers,
            db,
            keys,
            _test_db: test_db,
            _server: server,
        }
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

pub fn micros_ago(days: i64) -> prost_types::Timestamp {
    tandem_platform::time::to_timestamp(tandem_platform::time::now_micros() - days * 86_400_000_000)
}
