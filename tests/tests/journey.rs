//! The partner journey across the four production binaries, on PostgreSQL and Redis: a won
//! deal becomes points in tiers and a commission in commissions, each exactly once, through
//! a crash of both consumers and an outage of Redis; and one trace follows it.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as AnyValue,
};
use tandem_proto::{
    commissions::v1::{self as commissions, Commission, commission_service_client::CommissionServiceClient},
    common::v1::Money,
    deals::v1::{self as deals, deal_service_client::DealServiceClient},
    identity::v1::{
        self as identity, auth_service_client::AuthServiceClient,
        invitation_service_client::InvitationServiceClient,
        notification_service_client::NotificationServiceClient, program_service_client::ProgramServiceClient,
        team_service_client::TeamServiceClient,
    },
    tiers::v1::{
        self as tiers, points_service_client::PointsServiceClient, tier_service_client::TierServiceClient,
    },
};
use tandem_system_tests::{ADMIN_EMAIL, ADMIN_PASSWORD, Cluster, Options, authed, free_port};
use tonic::transport::Channel;

fn usd(amount_minor: i64) -> Option<Money> {
    Some(Money { currency_code: "USD".into(), amount_minor })
}

/// Polls `check` until it returns `Some`, or fails with `what` after `limit`.
async fn eventually<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The (service, span name) pairs of each trace id.
type Traces = HashMap<Vec<u8>, Vec<(String, String)>>;

/// An OTLP trace collector that keeps, per trace id, the (service, span name) pairs it got.
#[derive(Default, Clone)]
struct Collector(Arc<Mutex<Traces>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut traces = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    traces.entry(span.trace_id).or_default().push((service.clone(), span.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start(self) -> String {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        tokio::spawn(
            tonic::transport::Server::builder().add_service(TraceServiceServer::new(self)).serve(addr),
        );
        format!("http://{addr}")
    }

    /// The (service, span) pairs of the trace in which `service` recorded a span named like
    /// `span`.
    fn spans_of_trace_with(&self, service: &str, span: &str) -> Vec<(String, String)> {
        let traces = self.0.lock().unwrap();
        traces
            .values()
            .find(|spans| spans.iter().any(|(s, n)| s == service && n.contains(span)))
            .cloned()
            .unwrap_or_default()
    }

    /// The services that took part in that trace.
    fn services_in_trace_of(&self, service: &str, span: &str) -> Vec<String> {
        let mut services: Vec<String> =
            self.spans_of_trace_with(service, span).into_iter().map(|(s, _)| s).collect();
        services.sort();
        services.dedup();
        services
    }
}

struct Journey {
    identity: Channel,
    deals: Channel,
    tiers: Channel,
    commissions: Channel,
    admin: String,
    partner: String,
    team: String,
    program: String,
    deals_won: u32,
}

impl Journey {
    async fn login(channel: &Channel, email: &str, password: &str) -> String {
        eventually(&format!("{email} to sign in"), Duration::from_secs(30), async || {
            AuthServiceClient::new(channel.clone())
                .authenticate(identity::AuthenticateRequest {
                    email: email.into(),
                    password: password.into(),
                })
                .await
                .ok()
                .map(|r| r.into_inner().access_token)
        })
        .await
    }

    /// Registers a 10,000 USD deal in the program, has staff approve it and wins it.
    async fn win_deal(&mut self, will_manage: bool) -> String {
        self.deals_won += 1;
        let mut client = DealServiceClient::new(self.deals.clone());
        let deal = client
            .register_deal(authed(
                &self.partner,
                deals::RegisterDealRequest {
                    team_id: self.team.clone(),
                    program_id: self.program.clone(),
                    customer_name: format!("Customer {}", self.deals_won),
                    customer_domain: format!("customer-{}.example", self.deals_won),
                    amount: usd(1_000_000),
                    products: vec!["Sales Hub".into()],
                    client_market: "US".into(),
                    deal_type: deals::DealType::NewBusiness.into(),
                    request_id: format!("journey-deal-{}", self.deals_won),
                    will_manage,
                    ..Default::default()
                },
            ))
            .await
            .expect("register the deal")
            .into_inner()
            .deal
            .unwrap();
        client
            .approve_registration(authed(
                &self.admin,
                deals::ApproveRegistrationRequest { deal_id: deal.id.clone() },
            ))
            .await
            .expect("approve the registration");
        client
            .close_deal(authed(
                &self.partner,
                deals::CloseDealRequest { deal_id: deal.id.clone(), outcome: deals::DealOutcome::Won.into() },
            ))
            .await
            .expect("win the deal");
        deal.id
    }

    async fn tier_status(&self) -> tiers::GetTierStatusResponse {
        PointsServiceClient::new(self.tiers.clone())
            .get_tier_status(authed(
                &self.partner,
                tiers::GetTierStatusRequest {
                    team_id: self.team.clone(),
                    program_id: self.program.clone(),
                    target_tier_id: String::new(),
                },
            ))
            .await
            .expect("tier status")
            .into_inner()
    }

    async fn commissions(&self) -> Vec<Commission> {
        CommissionServiceClient::new(self.commissions.clone())
            .list_commissions(authed(
                &self.partner,
                commissions::ListCommissionsRequest {
                    team_id: self.team.clone(),
                    page_size: 100,
                    ..Default::default()
                },
            ))
            .await
            .expect("list commissions")
            .into_inner()
            .commissions
    }

    /// Waits until tiers shows `points` sold points and commissions `count` commissions, then
    /// checks that no more arrive: every won deal counted exactly once.
    async fn expect_exactly(&self, points: i64, count: usize) -> Vec<Commission> {
        eventually(&format!("{points} sold points"), Duration::from_secs(60), async || {
            (self.tier_status().await.sold_points >= points).then_some(())
        })
        .await;
        let found = eventually(&format!("{count} commissions"), Duration::from_secs(60), async || {
            let found = self.commissions().await;
            (found.len() >= count).then_some(found)
        })
        .await;
        // Redeliveries would show within the consumers' re-claim time (2 s here).
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(self.tier_status().await.sold_points, points, "points applied more than once");
        let again = self.commissions().await;
        assert_eq!(again.len(), count, "commissions accrued more than once: {again:?}");
        let mut deals: Vec<&str> = again.iter().map(|c| c.deal_id.as_str()).collect();
        deals.sort();
        deals.dedup();
        assert_eq!(deals.len(), count, "one commission per deal: {again:?}");
        found
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partner_journey_survives_crashes_and_a_redis_outage_with_every_effect_once() {
    let collector = Collector::default();
    let otlp = collector.clone().start().await;
    let options = Options { otlp_endpoint: Some(otlp), ..Options::default() };
    let Some(mut cluster) = Cluster::start(options).await.expect("start the cluster") else {
        eprintln!("skipping: TANDEM_TEST_POSTGRES_URL is not set");
        return;
    };
    let identity_channel = cluster.identity.channel();

    // A partner signs up with a team; staff set up the program, its tiers and the plan.
    let signed_up = AuthServiceClient::new(identity_channel.clone())
        .sign_up(identity::SignUpRequest {
            email: "ana@northwind.example".into(),
            password: "journey-partner-password".into(),
            display_name: "Ana".into(),
            team_name: "Northwind".into(),
        })
        .await
        .expect("sign up")
        .into_inner();
    let team = signed_up.team.unwrap().id;
    let partner =
        Journey::login(&identity_channel, "ana@northwind.example", "journey-partner-password").await;
    let admin = Journey::login(&identity_channel, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let program = ProgramServiceClient::new(identity_channel.clone())
        .create_program(authed(
            &admin,
            identity::CreateProgramRequest { name: "Solutions Partners".into(), ..Default::default() },
        ))
        .await
        .expect("create the program")
        .into_inner()
        .program
        .unwrap()
        .id;
    ProgramServiceClient::new(identity_channel.clone())
        .join_program(authed(
            &partner,
            identity::JoinProgramRequest { program_id: program.clone(), team_id: team.clone() },
        ))
        .await
        .expect("join the program");
    let tier = |name: &str, rank: i32, points_threshold: i64| tiers::CreateTierRequest {
        program_id: program.clone(),
        name: name.into(),
        rank,
        points_threshold,
        ..Default::default()
    };
    let mut tier_client = TierServiceClient::new(cluster.tiers.channel());
    let silver = tier_client.create_tier(authed(&admin, tier("Silver", 1, 1_000))).await.expect("silver");
    let silver = silver.into_inner().tier.unwrap().id;
    let gold = tier_client.create_tier(authed(&admin, tier("Gold", 2, 5_000))).await.expect("gold");
    let gold = gold.into_inner().tier.unwrap().id;
    CommissionServiceClient::new(cluster.commissions.channel())
        .create_commission_plan(authed(
            &admin,
            commissions::CreateCommissionPlanRequest {
                name: "Resale".into(),
                rate_bps: 1_500,
                recurring_months: 12,
                hold_days: 30,
                minimum_payout: usd(5_000),
                tier_multipliers: vec![commissions::TierMultiplier {
                    tier_id: gold.clone(),
                    multiplier_bps: 12_500,
                }],
                request_id: "journey-plan".into(),
            },
        ))
        .await
        .expect("create the plan");

    let mut journey = Journey {
        identity: identity_channel.clone(),
        deals: cluster.deals.channel(),
        tiers: cluster.tiers.channel(),
        commissions: cluster.commissions.channel(),
        admin,
        partner,
        team,
        program,
        deals_won: 0,
    };

    // The first deal, which the partner will also manage: 1,000 sold points (10 USD a point)
    // and the managed points the calculator gives, Silver; 15 % commission; the partner hears
    // of the approval.
    let first = journey.win_deal(true).await;
    let found = journey.expect_exactly(1_000, 1).await;
    let calculated = PointsServiceClient::new(journey.tiers.clone())
        .calculate_points(authed(
            &journey.partner,
            tiers::CalculatePointsRequest {
                amount: usd(1_000_000),
                client_market: "US".into(),
                will_manage: true,
                other_managing_partners: 0,
            },
        ))
        .await
        .expect("calculate points")
        .into_inner();
    assert_eq!(calculated.sold_points, 1_000);
    assert!(calculated.managed_points > 0);
    assert_eq!(journey.tier_status().await.managed_points, calculated.managed_points);
    assert_eq!(found[0].deal_id, first);
    assert_eq!(found[0].amount, usd(150_000));
    assert_eq!(journey.tier_status().await.current_tier.map(|t| t.id), Some(silver.clone()));
    eventually("the approval notification", Duration::from_secs(30), async || {
        let notifications = NotificationServiceClient::new(journey.identity.clone())
            .list_notifications(authed(&journey.partner, identity::ListNotificationsRequest::default()))
            .await
            .expect("notifications")
            .into_inner()
            .notifications;
        notifications
            .iter()
            .any(|n| n.kind == "deal.registration_approved" && n.subject_id == first)
            .then_some(())
    })
    .await;

    // One trace from CloseDeal through the event to the points and the commission.
    // Each service exports its spans in its own batches, so wait for both consumers' spans.
    eventually("the trace of CloseDeal in tiers and commissions", Duration::from_secs(30), async || {
        let services = collector.services_in_trace_of("tandem-deals", "CloseDeal");
        ["tandem-tiers", "tandem-commissions"]
            .iter()
            .all(|wanted| services.iter().any(|s| s == wanted))
            .then_some(())
    })
    .await;

    // A member joins by invitation and sees the team's tier status in tiers (which asks
    // identity, whose answer is now cached); once removed, tiers refuses at once.
    let invitation = InvitationServiceClient::new(journey.identity.clone())
        .create_invitation(authed(
            &journey.partner,
            identity::CreateInvitationRequest {
                team_id: journey.team.clone(),
                email: String::new(),
                role: identity::TeamRole::Member.into(),
            },
        ))
        .await
        .expect("invite")
        .into_inner()
        .invitation
        .unwrap();
    let ben = InvitationServiceClient::new(journey.identity.clone())
        .accept_invitation(identity::AcceptInvitationRequest {
            token: invitation.token,
            display_name: "Ben".into(),
            password: "journey-member-password".into(),
            email: "ben@northwind.example".into(),
        })
        .await
        .expect("accept")
        .into_inner()
        .member
        .unwrap();
    let ben_token =
        Journey::login(&journey.identity, "ben@northwind.example", "journey-member-password").await;
    let ben_status = async || {
        PointsServiceClient::new(journey.tiers.clone())
            .get_tier_status(authed(
                &ben_token,
                tiers::GetTierStatusRequest {
                    team_id: journey.team.clone(),
                    program_id: journey.program.clone(),
                    target_tier_id: String::new(),
                },
            ))
            .await
    };
    for _ in 0..3 {
        ben_status().await.expect("a member sees the tier status");
    }
    TeamServiceClient::new(journey.identity.clone())
        .remove_member(authed(
            &journey.partner,
            identity::RemoveMemberRequest { team_id: journey.team.clone(), user_id: ben.user_id.clone() },
        ))
        .await
        .expect("remove ben");
    let refused = ben_status().await.expect_err("a removed member is refused");
    assert!(matches!(refused.code(), tonic::Code::PermissionDenied | tonic::Code::NotFound), "{refused:?}");

    // Both consumers die without a goodbye; three deals are won meanwhile.
    cluster.tiers.kill();
    cluster.commissions.kill();
    for _ in 0..3 {
        journey.win_deal(false).await;
    }
    cluster.tiers.restart().await.expect("restart tiers");
    cluster.commissions.restart().await.expect("restart commissions");
    journey.expect_exactly(4_000, 4).await;

    // Redis goes away: deals keeps serving, the event waits in its outbox.
    cluster.redis.stop();
    journey.win_deal(false).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(journey.tier_status().await.sold_points, 4_000, "nothing can arrive without the bus");
    cluster.redis.restart().expect("restart redis");
    journey.expect_exactly(5_000, 5).await;
    assert_eq!(journey.tier_status().await.current_tier.map(|t| t.id), Some(gold.clone()));

    // The Gold tier reached commissions: the next deal's commission carries its multiplier.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sixth = journey.win_deal(false).await;
    let found = journey.expect_exactly(6_000, 6).await;
    let commission = found.iter().find(|c| c.deal_id == sixth).expect("the sixth commission");
    assert_eq!(commission.multiplier_bps, 12_500, "{commission:?}");
    assert_eq!(commission.amount, usd(187_500));
}
