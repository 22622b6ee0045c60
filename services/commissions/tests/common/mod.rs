//! A commissions server on port 0 over a fresh database, with tokens signed by a test key and
//! an in-process `Permissions` that answers with identity's own permission table for each
//! member's role and the team's rewards visibility.
#![allow(dead_code)]

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use tandem_commissions::{Commissions, MIGRATIONS, StaticTxt, store};
use tandem_identity::domain::{
    access::{Action, role_allows},
    secrets::SigningKeyPair,
};
use tandem_platform::{
    ApiError,
    auth::{Caller, JwtVerifier, KeySet, Permissions},
    db::{Db, DbOptions},
    ids::new_id,
    testing::{TestDb, TestServer, now_secs},
};
use tandem_proto::{
    commissions::v1::{
        self as pb, commission_service_client::CommissionServiceClient,
        customer_service_client::CustomerServiceClient, payout_service_client::PayoutServiceClient,
        renewal_service_client::RenewalServiceClient, reward_service_client::RewardServiceClient,
    },
    common::v1::Money,
    identity::v1::{Permission, RewardsVisibility, TeamRole},
};
use tokio::sync::Notify;
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt;

/// Members' roles per team and each team's rewards visibility.
#[derive(Default)]
pub struct FakeIdentity {
    pub roles: std::sync::Mutex<HashMap<(String, String), TeamRole>>,
    pub visibility: std::sync::Mutex<HashMap<String, RewardsVisibility>>,
}

#[async_trait]
impl Permissions for FakeIdentity {
    async fn check(&self, caller: &Caller, team_id: &str, permission: Permission) -> Result<bool, ApiError> {
        let role = self.roles.lock().unwrap().get(&(caller.user_id.clone(), team_id.to_owned())).copied();
        let visibility =
            self.visibility.lock().unwrap().get(team_id).copied().unwrap_or(RewardsVisibility::Show);
        let action = Action::from_permission(permission).expect("a known permission");
        Ok(role.is_some_and(|role| role_allows(role, action, visibility)))
    }
}

/// The callers of the tests, each a signed token.
pub struct Tokens {
    pub staff: String,
    pub owner: String,
    pub admin: String,
    pub member: String,
    pub finance: String,
    /// A member of the other team only.
    pub outsider: String,
}

pub struct Harness {
    pub commissions: Arc<Commissions>,
    pub db: Db,
    pub identity: Arc<FakeIdentity>,
    pub txt: Arc<StaticTxt>,
    pub customers: CustomerServiceClient<Channel>,
    pub plans: CommissionServiceClient<Channel>,
    pub rewards: RewardServiceClient<Channel>,
    pub payouts: PayoutServiceClient<Channel>,
    pub renewals: RenewalServiceClient<Channel>,
    pub t: Tokens,
    pub team: String,
    pub other_team: String,
    pub owner_id: String,
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
        let identity = Arc::new(FakeIdentity::default());
        let txt = Arc::new(StaticTxt::default());
        let commissions =
            Commissions::new(db.clone(), identity.clone(), txt.clone(), Arc::new(Notify::new()));
        let services = tandem_commissions::api::services(&commissions, 4 * 1024 * 1024);
        let server = TestServer::start(services, Arc::new(JwtVerifier::new(key_set))).await;
        let channel = server.channel.clone();
        let team = new_id("team");
        let other_team = new_id("team");
        let sign = |user: &str| keys.sign(user, None, now_secs(), 3600).unwrap();
        let mut ids = HashMap::new();
        for (name, role, t) in [
            ("owner", TeamRole::Owner, &team),
            ("admin", TeamRole::Admin, &team),
            ("member", TeamRole::Member, &team),
            ("finance", TeamRole::Finance, &team),
            ("outsider", TeamRole::Owner, &other_team),
        ] {
            let id = new_id("user");
            identity.roles.lock().unwrap().insert((id.clone(), t.clone()), role);
            ids.insert(name, id);
        }
        let t = Tokens {
            staff: keys.sign(&new_id("user"), Some("STAFF_ROLE_FINANCE"), now_secs(), 3600).unwrap(),
            owner: sign(&ids["owner"]),
            admin: sign(&ids["admin"]),
            member: sign(&ids["member"]),
            finance: sign(&ids["finance"]),
            outsider: sign(&ids["outsider"]),
        };
        Self {
            customers: CustomerServiceClient::new(channel.clone()),
            plans: CommissionServiceClient::new(channel.clone()),
            rewards: RewardServiceClient::new(channel.clone()),
            payouts: PayoutServiceClient::new(channel.clone()),
            renewals: RenewalServiceClient::new(channel),
            t,
            owner_id: ids["owner"].clone(),
            team,
            other_team,
            commissions,
            db,
            identity,
            txt,
            keys,
            _test_db: test_db,
            _server: server,
        }
    }

    pub fn set_visibility(&self, visibility: RewardsVisibility) {
        self.identity.visibility.lock().unwrap().insert(self.team.clone(), visibility);
    }

    /// A plan: `rate_bps`, recurring for `months` (0: one-off), a hold, a minimum payout.
    pub async fn plan(&self, rate_bps: i64, months: i32, hold_days: i32, minimum: i64) -> pb::CommissionPlan {
        self.plan_with(rate_bps, months, hold_days, minimum, vec![]).await
    }

    pub async fn plan_with(
        &self,
        rate_bps: i64,
        months: i32,
        hold_days: i32,
        minimum: i64,
        tier_multipliers: Vec<pb::TierMultiplier>,
    ) -> pb::CommissionPlan {
        self.plans
            .clone()
            .create_commission_plan(req(
                &self.t.staff,
                pb::CreateCommissionPlanRequest {
                    name: "Standard".into(),
                    rate_bps,
                    recurring_months: months,
                    hold_days,
                    minimum_payout: Some(usd(minimum)),
                    tier_multipliers,
                    request_id: new_id("req"),
                },
            ))
            .await
            .expect("create plan")
            .into_inner()
            .plan
            .unwrap()
    }

    /// A customer of the team, its domain verified.
    pub async fn verified_customer(&self, domain: &str) -> pb::Customer {
        let c = self.add_customer(&self.t.owner, &self.team, domain).await.expect("add customer");
        self.txt.publish(&c.txt_record_name, &c.txt_record_value);
        self.customers
            .clone()
            .verify_customer_domain(req(
                &self.t.owner,
                pb::VerifyCustomerDomainRequest { customer_id: c.id.clone() },
            ))
            .await
            .expect("verify")
            .into_inner()
            .customer
            .unwrap()
    }

    pub async fn add_customer(&self, token: &str, team: &str, domain: &str) -> Result<pb::Customer, Status> {
        self.customers
            .clone()
            .add_customer(req(token, add_customer_request(team, domain)))
            .await
            .map(|r| r.into_inner().customer.unwrap())
    }

    pub async fn pay(
        &self,
        token: &str,
        customer_id: &str,
        minor: i64,
        request_id: &str,
    ) -> Result<pb::RecordPaymentResponse, Status> {
        self.customers
            .clone()
            .record_payment(req(
                token,
                pb::RecordPaymentRequest {
                    customer_id: customer_id.into(),
                    amount: Some(usd(minor)),
                    request_id: request_id.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn refund(
        &self,
        token: &str,
        payment_id: &str,
        minor: i64,
        request_id: &str,
    ) -> Result<pb::RecordRefundResponse, Status> {
        self.customers
            .clone()
            .record_refund(req(
                token,
                pb::RecordRefundRequest {
                    payment_id: payment_id.into(),
                    amount: Some(usd(minor)),
                    request_id: request_id.into(),
                    reason: "customer cancelled".into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn balance(&self, token: &str) -> Result<pb::GetRewardBalanceResponse, Status> {
        self.rewards
            .clone()
            .get_reward_balance(req(
                token,
                pb::GetRewardBalanceRequest { team_id: self.team.clone(), currency_code: String::new() },
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// (available, pending, paid) in USD minor units.
    pub async fn amounts(&self) -> (i64, i64, i64) {
        let b = self.balance(&self.t.owner).await.expect("balance");
        (b.available.unwrap().amount_minor, b.pending.unwrap().amount_minor, b.paid.unwrap().amount_minor)
    }

    pub async fn withdraw(&self, token: &str, request_id: &str) -> Result<pb::Payout, Status> {
        self.rewards
            .clone()
            .request_withdrawal(req(
                token,
                pb::RequestWithdrawalRequest {
                    team_id: self.team.clone(),
                    request_id: request_id.into(),
                    currency_code: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner().payout.unwrap())
    }

    /// Releases every commission whose hold has ended `days` from now.
    pub async fn release_after(&self, days: i64) -> usize {
        self.commissions
            .release_due(tandem_platform::time::now_micros() + days * tandem_platform::time::MICROS_PER_DAY)
            .await
            .expect("release")
    }

    /// The ledger balances: debits equal credits per currency and every posting sums to zero.
    pub async fn assert_books_balance(&self) {
        let mut conn = self.db.acquire().await.unwrap();
        let (totals, unbalanced) = store::trial_balance(&mut conn).await.unwrap();
        assert_eq!(unbalanced, 0, "postings whose entries do not sum to zero");
        for (currency, debits, credits) in totals {
            assert_eq!(debits, credits, "debits and credits differ in {currency}");
        }
    }
}

pub fn usd(minor: i64) -> Money {
    Money { currency_code: "USD".into(), amount_minor: minor }
}

pub fn add_customer_request(team: &str, domain: &str) -> pb::AddCustomerRequest {
    pb::AddCustomerRequest {
        team_id: team.into(),
        org_name: "Acme Corp".into(),
        domain: domain.into(),
        super_admin_email: format!("admin@{domain}"),
        plan: "Mail Standard".into(),
        licences: 25,
        renewal_date: Some(tandem_platform::time::to_timestamp(
            tandem_platform::time::now_micros() + 90 * tandem_platform::time::MICROS_PER_DAY,
        )),
        monthly_price: Some(usd(10_000)),
        renewal_term_months: 12,
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
