//! `tandem dev` as a newcomer runs it: the real binary on a fresh data directory, with the
//! demo, reached over gRPC; restarted on the same directory; stopped with SIGTERM.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tandem_proto::{
    commissions::v1::{CheckTeamRewardsRequest, reward_service_client::RewardServiceClient},
    common::v1::Money,
    identity::v1::{AuthenticateRequest, auth_service_client::AuthServiceClient},
    tiers::v1::{CalculatePointsRequest, points_service_client::PointsServiceClient},
};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

struct Dev {
    child: Child,
    addr: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(data_dir: &std::path::Path, demo: bool) -> Dev {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
    cmd.args(["dev", "--listen", &addr, "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if demo {
        cmd.arg("--demo");
    }
    Dev { child: cmd.spawn().expect("start tandem dev"), addr }
}

/// Waits for SERVING on the whole server and on one identity service.
async fn wait_serving(addr: &str) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await {
            let mut health = HealthClient::new(channel.clone());
            let all = health.check(HealthCheckRequest { service: String::new() }).await;
            let teams =
                health.check(HealthCheckRequest { service: "tandem.identity.v1.TeamService".into() }).await;
            let serving =
                |r: &Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status>| {
                    r.as_ref().is_ok_and(|r| r.get_ref().status() == ServingStatus::Serving)
                };
            if serving(&all) && serving(&teams) {
                return channel;
            }
        }
        assert!(Instant::now() < deadline, "tandem dev did not report SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn demo_owner_can_sign_in(channel: Channel) {
    // The demo is loaded after SERVING; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut auth = AuthServiceClient::new(channel.clone());
    loop {
        let response = auth
            .authenticate(AuthenticateRequest {
                email: "ana@northwind.example".into(),
                password: "demo-partner-password".into(),
            })
            .await;
        match response {
            Ok(r) => {
                let token = r.into_inner().access_token;
                assert!(!token.is_empty());
                tiers_answer_with_identitys_token(channel, &token).await;
                return;
            }
            Err(status) => assert!(Instant::now() < deadline, "demo owner cannot sign in: {status}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Tiers is served beside identity and verifies identity's tokens.
async fn tiers_answer_with_identitys_token(channel: Channel, token: &str) {
    let mut request = tonic::Request::new(CalculatePointsRequest {
        amount: Some(Money { currency_code: "USD".into(), amount_minor: 123_456 }),
        client_market: "US".into(),
        will_manage: true,
        other_managing_partners: 1,
    });
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let points = PointsServiceClient::new(channel.clone())
        .calculate_points(request)
        .await
        .expect("tiers answers")
        .into_inner();
    assert_eq!((points.sold_points, points.managed_points, points.total_points), (123, 61, 184));
    commissions_answer_with_identitys_token(channel, token).await;
}

/// Commissions is served too: a partner's token is verified, and asking whether a team holds
/// rewards is for vendor staff only.
async fn commissions_answer_with_identitys_token(channel: Channel, token: &str) {
    let mut request = tonic::Request::new(CheckTeamRewardsRequest {
        team_id: "team_0190b2c4e5f67a8b9c0d1e2f3a4b5c6d".into(),
    });
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let refused = RewardServiceClient::new(channel).check_team_rewards(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
}

#[tokio::test]
async fn dev_serves_the_demo_survives_a_restart_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();

    let first = start(data.path(), true);
    let channel = wait_serving(&first.addr).await;
    demo_owner_can_sign_in(channel).await;
    drop(first);

    // Same data directory: the demo's data (and the signing key) are still there, and loading
    // the demo again is harmless.
    let mut second = start(data.path(), true);
    let channel = wait_serving(&second.addr).await;
    demo_owner_can_sign_in(channel).await;
    assert!(data.path().join("identity.db").exists());
    assert!(data.path().join("tiers.db").exists());
    assert!(data.path().join("commissions.db").exists());
    assert!(data.path().join("signing-key.pem").exists());

    let pid = second.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = second.child.try_wait().unwrap() {
            assert!(status.success(), "tandem dev exited with {status} after SIGTERM");
            break;
        }
        assert!(Instant::now() < deadline, "tandem dev did not stop after SIGTERM");
        // Yield to the runtime, which closes the client's connections so the drain can end.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn login(channel: &Channel, email: &str, password: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = AuthServiceClient::new(channel.clone())
            .authenticate(AuthenticateRequest { email: email.into(), password: password.into() })
            .await;
        match response {
            Ok(r) => return r.into_inner().access_token,
            // The demo is loaded after SERVING.
            Err(status) => assert!(Instant::now() < deadline, "{email} cannot sign in: {status}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The whole path in one process: a partner registers a deal, staff approve it, the partner
/// wins it; deals' outbox reaches tiers, whose points show it, and identity's inbox, which
/// tells the partner of the approval.
#[tokio::test]
async fn a_deal_won_in_dev_earns_points_and_a_commission_and_notifies_the_partner() {
    use tandem_proto::{
        deals::v1::{
            self as deals, deal_service_client::DealServiceClient, lead_service_client::LeadServiceClient,
        },
        identity::v1::{
            ListNotificationsRequest, ListProgramsRequest, ListTeamsRequest,
            notification_service_client::NotificationServiceClient,
            program_service_client::ProgramServiceClient, team_service_client::TeamServiceClient,
        },
        tiers::v1::GetTierStatusRequest,
    };
    let data = tempfile::tempdir().unwrap();
    let dev = start(data.path(), true);
    let channel = wait_serving(&dev.addr).await;
    let ana = login(&channel, "ana@northwind.example", "demo-partner-password").await;
    let admin = login(&channel, "admin@vendor.example", "demo-admin-password").await;
    let teams = TeamServiceClient::new(channel.clone())
        .list_teams(authed(&ana, ListTeamsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .teams;
    let team = teams.first().expect("ana's team").id.clone();
    let programs = ProgramServiceClient::new(channel.clone())
        .list_programs(authed(&ana, ListProgramsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .programs;
    let program = programs.first().expect("the demo program").id.clone();

    let mut client = DealServiceClient::new(channel.clone());
    let register = deals::RegisterDealRequest {
        team_id: team.clone(),
        program_id: program.clone(),
        customer_name: "Contoso".into(),
        customer_domain: "https://www.contoso.example/".into(),
        amount: Some(Money { currency_code: "USD".into(), amount_minor: 1_000_000 }),
        products: vec!["Sales Hub".into()],
        expected_close_date: None,
        client_market: "US".into(),
        deal_type: deals::DealType::NewBusiness.into(),
        request_id: "dev-e2e-1".into(),
        will_manage: false,
    };
    // The demo enrols the team a moment after ana can sign in.
    let deadline = Instant::now() + Duration::from_secs(30);
    let deal = loop {
        match client.register_deal(authed(&ana, register.clone())).await {
            Ok(r) => break r.into_inner().deal.unwrap(),
            Err(status) if status.code() == tonic::Code::FailedPrecondition && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("register: {status}"),
        }
    };
    client
        .approve_registration(authed(&admin, deals::ApproveRegistrationRequest { deal_id: deal.id.clone() }))
        .await
        .expect("approve");
    client
        .close_deal(authed(
            &ana,
            deals::CloseDealRequest { deal_id: deal.id.clone(), outcome: deals::DealOutcome::Won.into() },
        ))
        .await
        .expect("close won");

    // 10,000 USD at 1 point per 10 USD.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = PointsServiceClient::new(channel.clone())
            .get_tier_status(authed(
                &ana,
                GetTierStatusRequest {
                    team_id: team.clone(),
                    program_id: program.clone(),
                    target_tier_id: String::new(),
                },
            ))
            .await
            .expect("tier status")
            .into_inner();
        if status.sold_points == 1_000 {
            assert_eq!(status.total_points, 1_000);
            break;
        }
        assert!(Instant::now() < deadline, "tiers never credited the won deal: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And a commission in commissions: the demo's plan pays 15 % of 10,000 USD.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let commissions =
            tandem_proto::commissions::v1::commission_service_client::CommissionServiceClient::new(
                channel.clone(),
            )
            .list_commissions(authed(
                &ana,
                tandem_proto::commissions::v1::ListCommissionsRequest {
                    team_id: team.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list commissions")
            .into_inner()
            .commissions;
        if let Some(commission) = commissions.iter().find(|c| c.deal_id == deal.id) {
            let amount = commission.amount.clone().unwrap();
            assert_eq!((amount.currency_code.as_str(), amount.amount_minor), ("USD", 150_000));
            break;
        }
        assert!(Instant::now() < deadline, "commissions never accrued the won deal: {commissions:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The demo's leads: the French and Belgian ones went to Ben and Chloe in turn, the German
    // one waits for an owner.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leads = loop {
        let leads = LeadServiceClient::new(channel.clone())
            .list_leads(authed(&admin, deals::ListLeadsRequest::default()))
            .await
            .expect("staff list leads")
            .into_inner()
            .leads;
        if leads.len() == 3 {
            break leads;
        }
        assert!(Instant::now() < deadline, "the demo's leads never appeared: {leads:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let owners: std::collections::HashSet<_> =
        leads.iter().filter(|l| l.country != "DE").map(|l| l.owner_user_id.clone()).collect();
    assert_eq!(owners.len(), 2, "{leads:?}");
    assert!(leads.iter().any(|l| l.country == "DE" && l.owner_user_id.is_empty()));
    let notifications = NotificationServiceClient::new(channel)
        .list_notifications(authed(&ana, ListNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert!(
        notifications.iter().any(|n| n.kind == "deal.registration_approved" && n.subject_id == deal.id),
        "{notifications:?}"
    );
}
