//! The cluster, its data, and the scenarios of issue #8, each against its baseline.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::json;
use sqlx::{AnyConnection, AssertSqlSafe, Connection};
use tandem_proto::{
    commissions::v1::{
        self as commissions, commission_service_client::CommissionServiceClient,
        customer_service_client::CustomerServiceClient,
    },
    common::v1::Money,
    deals::v1::{self as deals, deal_service_client::DealServiceClient},
    identity::v1::{
        self as identity, Permission, access_service_client::AccessServiceClient,
        auth_service_client::AuthServiceClient, program_service_client::ProgramServiceClient,
    },
    tiers::v1::{
        self as tiers, points_service_client::PointsServiceClient, tier_service_client::TierServiceClient,
    },
};
use tandem_system_tests::{ADMIN_EMAIL, ADMIN_PASSWORD, Cluster, Options, SERVICES};
use tonic::{Code, metadata::AsciiMetadataValue};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    Baseline, Memory, Report, Scenario, Timing,
    h2c::H2Channel,
    load::{self, Outcome},
    pgbench::Pgbench,
    rss::{self, Peaks, Switch, Tally},
};

/// Callers of the closed-loop runs of the in-memory path, and of the database-bound ones (the
/// services' pool size, and pgbench's clients).
const CPU_CONCURRENCY: usize = 32;
const DB_CONCURRENCY: usize = 16;
/// The program of the tier-status data.
const TEAMS: i64 = 10_000;
const ENTRIES_PER_TEAM: i64 = 100;
const CUSTOMERS: i64 = 1_000;
const EVENT_RATE: f64 = 500.0;
const YEAR_MICROS: i64 = 365 * 86_400_000_000;
/// Requests in flight a service takes before it refuses with RESOURCE_EXHAUSTED.
const MAX_CONCURRENT: usize = 64;

/// The `authorization` value of a token, made once: cloning it shares its bytes, where each
/// request's own `format!` and parse cost the load generator a copy and a check of the token.
fn bearer(token: &str) -> AsciiMetadataValue {
    format!("Bearer {token}").parse().expect("a token")
}

fn authed<T>(auth: &AsciiMetadataValue, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", auth.clone());
    request
}

fn usd(amount_minor: i64) -> Option<Money> {
    Some(Money { currency_code: "USD".into(), amount_minor })
}

fn hex_id(prefix: &str, n: i64) -> String {
    format!("{prefix}_{n:032x}")
}

/// Retries `f` until it succeeds, for up to `limit` (setup steps that wait on events).
async fn eventually<T, Fut: Future<Output = Result<T, tonic::Status>>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Fut,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(status) if Instant::now() > deadline => bail!("{what}: {status:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Connections to one service, a few on each thread that sends load, used in turn: one
/// HTTP/2 connection would serialise a thread's requests on one socket. A thread makes its own
/// on first use, so that each of the generator's event loops ([`load::Shards`]) drives
/// connections of its own, whose tasks run on that loop.
#[derive(Clone)]
struct Pool {
    id: usize,
    addr: Arc<str>,
}

/// HTTP/2 connections a pool holds on each thread.
const CONNECTIONS_PER_THREAD: usize = 2;

thread_local! {
    /// Each pool's connections made on this thread, by pool id, and the turn of the next.
    static CHANNELS: std::cell::RefCell<HashMap<usize, (Vec<H2Channel>, usize)>> =
        std::cell::RefCell::new(HashMap::new());
}

impl Pool {
    fn new(service: &tandem_system_tests::Service) -> Self {
        Self::at(&service.addr.to_string())
    }

    /// A pool of connections to `addr` (`host:port`).
    fn at(addr: &str) -> Self {
        static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
        Self { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), addr: addr.into() }
    }

    fn get(&self) -> H2Channel {
        CHANNELS.with_borrow_mut(|pools| {
            let (channels, turn) = pools.entry(self.id).or_insert_with(|| {
                let channels = (0..CONNECTIONS_PER_THREAD)
                    .map(|_| H2Channel::lazy(&self.addr).expect("a service's address"));
                (channels.collect(), 0)
            });
            *turn = turn.wrapping_add(1);
            channels[*turn % channels.len()].clone()
        })
    }
}

/// The load generator's event loops, one a core, started on first use.
fn shards() -> &'static load::Shards {
    static SHARDS: std::sync::OnceLock<load::Shards> = std::sync::OnceLock::new();
    SHARDS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        load::Shards::start(cores).expect("the load generator's threads")
    })
}

/// One event loop, started on first use: overload's generator.
///
/// Overload measures what tiers keeps serving while it refuses, and every microsecond the
/// generator spends sending and reading refusals is taken from tiers and PostgreSQL on the
/// cores they share. A single loop is the cheaper sender: each wake-up sends and reads more
/// requests at once, and no second generator thread contends for the cores. It keeps to the
/// schedule at overload's rates (the scenario checks that it sent what it offered); the
/// scenarios that need more than one core's worth of sending (check_permission's health
/// baseline) keep one loop a core.
fn one_shard() -> &'static load::Shards {
    static SHARD: std::sync::OnceLock<load::Shards> = std::sync::OnceLock::new();
    SHARD.get_or_init(|| load::Shards::start(1).expect("the load generator's thread"))
}

/// What the setup made: the staff's and a partner's `authorization` values, the partner's team
/// enrolled in a program with tiers, and a commission plan.
struct World {
    admin: AsciiMetadataValue,
    partner: AsciiMetadataValue,
    partner_id: String,
    team: String,
    program: String,
    plan: String,
}

async fn setup(cluster: &Cluster) -> anyhow::Result<World> {
    let identity = cluster.identity.channel();
    let login = |email: &'static str, password: &'static str| {
        let identity = identity.clone();
        async move {
            eventually(&format!("{email} signs in"), Duration::from_secs(30), || {
                let mut auth = AuthServiceClient::new(identity.clone());
                async move {
                    auth.authenticate(identity::AuthenticateRequest {
                        email: email.into(),
                        password: password.into(),
                    })
                    .await
                    .map(|r| r.into_inner().access_token)
                }
            })
            .await
        }
    };
    let signed_up = AuthServiceClient::new(identity.clone())
        .sign_up(identity::SignUpRequest {
            email: "bench@northwind.example".into(),
            password: "bench-partner-password".into(),
            display_name: "Bench".into(),
            team_name: "Northwind".into(),
        })
        .await
        .context("sign up")?
        .into_inner();
    let team = signed_up.team.context("a team")?.id;
    let partner_id = signed_up.user.context("a user")?.id;
    let partner = bearer(&login("bench@northwind.example", "bench-partner-password").await?);
    let admin = bearer(&login(ADMIN_EMAIL, ADMIN_PASSWORD).await?);
    let program = ProgramServiceClient::new(identity.clone())
        .create_program(authed(
            &admin,
            identity::CreateProgramRequest { name: "Solutions Partners".into(), ..Default::default() },
        ))
        .await
        .context("create the program")?
        .into_inner()
        .program
        .context("a program")?
        .id;
    ProgramServiceClient::new(identity.clone())
        .join_program(authed(
            &partner,
            identity::JoinProgramRequest { program_id: program.clone(), team_id: team.clone() },
        ))
        .await
        .context("join the program")?;
    let mut tier_client = TierServiceClient::new(cluster.tiers.channel());
    for (i, (name, threshold)) in
        [("Silver", 1_000), ("Gold", 5_000), ("Platinum", 10_000), ("Diamond", 20_000)]
            .into_iter()
            .enumerate()
    {
        tier_client
            .create_tier(authed(
                &admin,
                tiers::CreateTierRequest {
                    program_id: program.clone(),
                    name: name.into(),
                    rank: i as i32 + 1,
                    points_threshold: threshold,
                    ..Default::default()
                },
            ))
            .await
            .with_context(|| format!("create tier {name}"))?;
    }
    let plan = CommissionServiceClient::new(cluster.commissions.channel())
        .create_commission_plan(authed(
            &admin,
            commissions::CreateCommissionPlanRequest {
                name: "Resale".into(),
                rate_bps: 1_500,
                recurring_months: 12,
                hold_days: 30,
                minimum_payout: usd(5_000),
                tier_multipliers: vec![],
                request_id: "bench-plan".into(),
            },
        ))
        .await
        .context("create the plan")?
        .into_inner()
        .plan
        .context("a plan")?
        .id;
    Ok(World { admin, partner, partner_id, team, program, plan })
}

fn register_request(world: &World, domain: i64, request_id: String) -> deals::RegisterDealRequest {
    deals::RegisterDealRequest {
        team_id: world.team.clone(),
        program_id: world.program.clone(),
        customer_name: format!("Customer {domain}"),
        customer_domain: format!("c{domain}.example"),
        amount: usd(1_000_000),
        products: vec!["Sales Hub".into()],
        client_market: "US".into(),
        deal_type: deals::DealType::NewBusiness.into(),
        request_id,
        ..Default::default()
    }
}

async fn sql(url: &str) -> anyhow::Result<AnyConnection> {
    sqlx::any::install_default_drivers();
    AnyConnection::connect(url).await.with_context(|| format!("connecting to {url}"))
}

fn scenario(
    name: &str,
    outcome: &Outcome,
    baseline: Baseline,
    target: &str,
    met: impl FnOnce(f64) -> bool,
) -> Scenario {
    let ratio = if baseline.rps > 0.0 { outcome.rps() / baseline.rps } else { 0.0 };
    let mut details = serde_json::Map::new();
    if outcome.failures() > 0 {
        details.insert("errors".into(), json!(outcome.errors));
        details.insert("error_messages".into(), json!(outcome.messages));
    }
    Scenario {
        name: name.into(),
        rps: outcome.rps(),
        p50_ms: outcome.p50_ms(),
        p99_ms: outcome.p99_ms(),
        baseline,
        ratio,
        target: target.into(),
        met: met(ratio),
        details,
    }
}

fn progress(what: &str) {
    eprintln!("tandem-bench: {what}");
}

/// The prefix of the bench's own environment that sets a service's: the services start with
/// a cleared environment (the cluster harness's), so `TANDEM_BENCH_SET_TANDEM_DB_MAX_CONNECTIONS=8`
/// is how a run tries another setting without another build.
const SET_PREFIX: &str = "TANDEM_BENCH_SET_";

/// The settings `vars` names with [`SET_PREFIX`], for every service, after the bench's own so
/// that they win.
fn service_settings(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    vars.into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(SET_PREFIX).filter(|n| !n.is_empty())?.to_owned(), v)))
        .collect()
}

/// The scenarios a run is limited to (`TANDEM_BENCH_ONLY=event_lag,tier_status`); all when unset.
pub struct Only(Option<Vec<String>>);

impl Only {
    pub const NAMES: [&str; 6] =
        ["check_permission", "register_deal", "record_payment", "tier_status", "event_lag", "overload"];

    pub fn from_env() -> anyhow::Result<Self> {
        let Ok(list) = std::env::var("TANDEM_BENCH_ONLY") else { return Ok(Self(None)) };
        let names: Vec<String> =
            list.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
        if let Some(unknown) = names.iter().find(|n| !Self::NAMES.contains(&n.as_str())) {
            bail!("TANDEM_BENCH_ONLY names {unknown:?}; the scenarios are {}", Self::NAMES.join(", "));
        }
        Ok(Self(Some(names)))
    }

    fn wants(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|names| names.iter().any(|n| n == name))
    }
}

pub async fn run(timing: Timing, quick: bool, only: Only) -> anyhow::Result<Report> {
    let options = Options {
        release: true,
        env: vec![
            // The bench's few callers send far beyond one partner's fair share.
            ("TANDEM_RATE_LIMIT_PER_SECOND".into(), "0".into()),
            ("TANDEM_MAX_CONCURRENT_REQUESTS".into(), MAX_CONCURRENT.to_string()),
            // Logs as deployed (deploy/base): every RPC's span is made, as in production.
            ("TANDEM_LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), "info".into()),
        ]
        .into_iter()
        // `vars_os`: `vars` would panic on a variable that is not UTF-8, wherever it is set.
        .chain(service_settings(
            std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        ))
        .collect(),
        ..Options::default()
    };
    let started = Instant::now();
    let cluster = Cluster::start(options)
        .await?
        .context("set TANDEM_TEST_POSTGRES_URL (scripts/bench does when PostgreSQL answers locally)")?;
    progress(&format!("cluster up in {:.1?}", started.elapsed()));
    let world = Arc::new(setup(&cluster).await?);

    let pids: Vec<(String, u32)> = [&cluster.identity, &cluster.commissions, &cluster.tiers, &cluster.deals]
        .iter()
        .map(|s| (s.name.to_owned(), s.pid().expect("running")))
        .collect();
    // Idle: started, migrated and set up, before any load.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle: HashMap<String, f64> =
        pids.iter().map(|(name, pid)| (name.clone(), rss::rss_mib(*pid).unwrap_or_default())).collect();
    let peaks = Peaks::default();
    let sampler = peaks.sample(pids.clone());

    let mut scenarios = Vec::new();
    if only.wants("check_permission") {
        scenarios.push(check_permission(&cluster, &world, timing).await?);
    }
    if only.wants("register_deal") {
        scenarios.push(register_deal(&cluster, &world, timing).await?);
    }
    if only.wants("record_payment") {
        scenarios.push(record_payment(&cluster, &world, timing).await?);
    }
    // overload reads the teams tier_status loads, so it needs tier_status first.
    if only.wants("tier_status") || only.wants("overload") {
        scenarios.push(tier_status(&cluster, &world, timing).await?);
    }
    if only.wants("event_lag") {
        scenarios.push(event_lag(&cluster, &world, timing).await?);
    }
    if only.wants("overload") {
        scenarios.push(overload(&cluster, &world, timing, pids[2].1).await?);
    }
    sampler.abort();

    let memory = SERVICES
        .iter()
        .map(|name| Memory {
            service: (*name).to_owned(),
            idle_rss_mib: idle[*name],
            loaded_rss_mib: peaks.get(name).max(idle[*name]),
        })
        .collect();
    progress(&format!("done in {:.1?}", started.elapsed()));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Report { scenarios, memory, quick, cpus })
}

async fn check_permission(cluster: &Cluster, world: &Arc<World>, timing: Timing) -> anyhow::Result<Scenario> {
    progress("check_permission vs grpc.health.v1/Check");
    let pool = Pool::new(&cluster.identity);
    let health_pool = pool.clone();
    let world = world.clone();
    let (outcome, health) = load::alternating(
        shards(),
        CPU_CONCURRENCY,
        timing.warmup,
        timing.run,
        timing.slices(),
        move |_, _| {
            let mut client = AccessServiceClient::new(pool.get());
            let request = authed(
                &world.partner,
                identity::CheckPermissionRequest {
                    user_id: world.partner_id.clone(),
                    team_id: world.team.clone(),
                    permission: Permission::DealsContribute.into(),
                },
            );
            async move {
                let allowed = client.check_permission(request).await?.into_inner().allowed;
                if allowed { Ok(()) } else { Err(tonic::Status::internal("the owner was refused")) }
            }
        },
        |slice| {
            let pool = health_pool.clone();
            async move {
                let outcome =
                    load::closed_loop(shards(), CPU_CONCURRENCY, Duration::ZERO, slice, move |_, _| {
                        let mut client = HealthClient::new(pool.get());
                        async move {
                            client.check(HealthCheckRequest { service: String::new() }).await.map(|_| ())
                        }
                    })
                    .await;
                Ok(outcome.rps())
            }
        },
    )
    .await?;
    let baseline = Baseline { name: "grpc.health.v1/Check (identity)".into(), rps: health };
    Ok(scenario("check_permission", &outcome, baseline, "ratio >= 0.7", |r| r >= 0.7))
}

/// The id of the partner's first registration, registered now unless it was before (the same
/// `request_id`). Deals learns of the enrollment from identity's events: it waits for it.
async fn first_registration(cluster: &Cluster, world: &World) -> anyhow::Result<String> {
    let deals_channel = cluster.deals.channel();
    let deal = eventually("deals accepts a registration", Duration::from_secs(30), || {
        let mut client = DealServiceClient::new(deals_channel.clone());
        let request = authed(&world.partner, register_request(world, 0, "bench-first".into()));
        async move { client.register_deal(request).await }
    })
    .await?;
    Ok(deal.into_inner().deal.context("a deal")?.id)
}

async fn register_deal(cluster: &Cluster, world: &Arc<World>, timing: Timing) -> anyhow::Result<Scenario> {
    progress("register_deal vs pgbench");
    first_registration(cluster, world).await?;
    let pool = Pool::new(&cluster.deals);
    let w = world.clone();
    let pgbench = Pgbench::new(
        cluster.database_url("deals"),
        "register_deal.sql",
        DB_CONCURRENCY,
        &[("team", &world.team), ("user", &world.partner_id), ("program", &world.program)],
    );
    let (outcome, tps) = load::alternating(
        shards(),
        DB_CONCURRENCY,
        timing.warmup,
        timing.run,
        timing.slices(),
        move |_, n| {
            let mut client = DealServiceClient::new(pool.get());
            let domain = rand::thread_rng().gen_range(1..=10_000);
            let request = authed(&w.partner, register_request(&w, domain, format!("bench-{n}")));
            async move { client.register_deal(request).await.map(|_| ()) }
        },
        |slice| pgbench.tps(slice),
    )
    .await?;
    let baseline = Baseline { name: "pgbench, same SQL in one transaction".into(), rps: tps };
    Ok(scenario("register_deal", &outcome, baseline, "ratio >= 0.6", |r| r >= 0.6))
}

async fn record_payment(cluster: &Cluster, world: &Arc<World>, timing: Timing) -> anyhow::Result<Scenario> {
    progress("record_payment vs pgbench");
    // Customers of the partner's team, their domains verified, with ids pgbench can name.
    let mut db = sql(cluster.database_url("commissions")).await?;
    sqlx::query(
        "INSERT INTO customers (id, team_id, org_name, domain, super_admin_email, plan, licences, \
           renewal_date, currency_code, monthly_price_minor, previous_price_minor, renewal_term_months, \
           txt_token, domain_verified, owner_user_id, first_commission_time, create_time, update_time) \
         SELECT 'cust_' || lpad(to_hex(n), 32, '0'), $1, 'Customer ' || n, 'cust' || n || '.example', \
           'admin@cust' || n || '.example', 'Professional', 10, NULL, 'USD', 100000, 100000, 12, \
           md5(n::text), 1, $2, NULL, $3, $3 \
         FROM generate_series(1::bigint, $4::bigint) AS n",
    )
    .bind(&world.team)
    .bind(&world.partner_id)
    .bind(tandem_platform_now())
    .bind(CUSTOMERS)
    .execute(&mut db)
    .await
    .context("load customers")?;
    db.close().await?;
    let pool = Pool::new(&cluster.commissions);
    let w = world.clone();
    let customers = CUSTOMERS.to_string();
    let pgbench = Pgbench::new(
        cluster.database_url("commissions"),
        "record_payment.sql",
        DB_CONCURRENCY,
        &[("team", &world.team), ("plan", &world.plan), ("customers", &customers)],
    );
    let (outcome, tps) = load::alternating(
        shards(),
        DB_CONCURRENCY,
        timing.warmup,
        timing.run,
        timing.slices(),
        move |_, n| {
            let mut client = CustomerServiceClient::new(pool.get());
            let customer = hex_id("cust", rand::thread_rng().gen_range(1..=CUSTOMERS));
            let request = authed(
                &w.partner,
                commissions::RecordPaymentRequest {
                    customer_id: customer,
                    amount: usd(10_000),
                    request_id: format!("bench-{n}"),
                },
            );
            async move { client.record_payment(request).await.map(|_| ()) }
        },
        |slice| pgbench.tps(slice),
    )
    .await?;
    let baseline = Baseline { name: "pgbench, same SQL".into(), rps: tps };
    Ok(scenario("record_payment", &outcome, baseline, "ratio >= 0.6", |r| r >= 0.6))
}

fn tandem_platform_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_micros() as i64
}

/// GetTierStatus of a random one of the loaded teams, as staff.
fn random_status_request(world: &World) -> tonic::Request<tiers::GetTierStatusRequest> {
    authed(
        &world.admin,
        tiers::GetTierStatusRequest {
            team_id: hex_id("team", rand::thread_rng().gen_range(0..TEAMS)),
            program_id: world.program.clone(),
            target_tier_id: String::new(),
        },
    )
}

async fn tier_status(cluster: &Cluster, world: &Arc<World>, timing: Timing) -> anyhow::Result<Scenario> {
    progress("tier_status: loading 10,000 teams x 100 points entries");
    let started = Instant::now();
    let mut db = sql(cluster.database_url("tiers")).await?;
    let day = 86_400_000_000_i64;
    for batch in 0..TEAMS / 1_000 {
        sqlx::query(
            "INSERT INTO points_entries (id, program_id, team_id, client_id, kind, points, earned_at, \
               deal_type, market_type, deal_id, reason, sourced_usd_cents, create_time) \
             SELECT 'pts_' || lpad(to_hex(t), 16, '0') || lpad(to_hex(e), 16, '0'), $1, \
                    'team_' || lpad(to_hex(t), 32, '0'), 'client' || (e % 20) || '.example', \
                    CASE WHEN e % 3 = 0 THEN 'MANAGED' ELSE 'SOLD' END, 1 + (random() * 200)::bigint, \
                    $2 - (random() * 540 * $3)::bigint, 'NEW_BUSINESS', 'STANDARD', NULL, '', \
                    (random() * 200000)::bigint, $2 \
             FROM generate_series($4::bigint, $5::bigint) AS t, generate_series(1::bigint, $6::bigint) AS e",
        )
        .bind(&world.program)
        .bind(tandem_platform_now())
        .bind(day)
        .bind(batch * 1_000)
        .bind(batch * 1_000 + 999)
        .bind(ENTRIES_PER_TEAM)
        .execute(&mut db)
        .await
        .context("load points entries")?;
    }
    sqlx::query("VACUUM ANALYZE points_entries").execute(&mut db).await?;
    // Flush the load's dirty pages now: a checkpoint during the measured run (the load writes
    // several hundred MiB of WAL) would slow the service's run and not pgbench's, which follows.
    sqlx::query("CHECKPOINT").execute(&mut db).await?;
    db.close().await?;
    progress(&format!("tier_status: loaded in {:.1?}", started.elapsed()));
    // The window as the service's: its start a year before now (the service counts 12
    // calendar months; the plan and the rows read are the same).
    let now = tandem_platform_now();
    let (now, since) = (now.to_string(), (now - YEAR_MICROS).to_string());
    let pgbench = Pgbench::new(
        cluster.database_url("tiers"),
        "tier_status.sql",
        DB_CONCURRENCY,
        &[("program", &world.program), ("now", &now), ("since", &since)],
    );
    let pool = Pool::new(&cluster.tiers);
    let w = world.clone();
    let (outcome, tps) = load::alternating(
        shards(),
        DB_CONCURRENCY,
        timing.warmup,
        timing.run,
        timing.slices(),
        move |_, _| {
            let mut client = PointsServiceClient::new(pool.get());
            let request = random_status_request(&w);
            async move {
                let status = client.get_tier_status(request).await?.into_inner();
                if status.total_points > 0 {
                    Ok(())
                } else {
                    Err(tonic::Status::internal("a team without points"))
                }
            }
        },
        |slice| pgbench.tps(slice),
    )
    .await?;
    let baseline = Baseline { name: "pgbench, same statement".into(), rps: tps };
    let p99 = outcome.p99_ms();
    Ok(scenario("tier_status", &outcome, baseline, "ratio >= 0.5, p99 <= 10 ms", |r| r >= 0.5 && p99 <= 10.0))
}

async fn event_lag(cluster: &Cluster, world: &Arc<World>, timing: Timing) -> anyhow::Result<Scenario> {
    let count = (EVENT_RATE * timing.run.as_secs_f64()) as i64;
    progress(&format!("event_lag: {count} deals won at {EVENT_RATE}/s"));
    // Approved registrations to win, copied from a registered one (only the close is measured).
    let first = 1_000_000_i64;
    let mut db = sql(cluster.database_url("deals")).await?;
    let template = (first_registration(cluster, world).await?,);
    let columns = "team_id, program_id, customer_name, currency_code, amount_minor, products, \
                   expected_close_time, client_market, deal_type, pipeline_id, stage, conflicting_deal_id, \
                   will_manage, outcome, close_time, registration_expire_time, rejection_reason, create_time, \
                   update_time";
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO deals (id, customer_domain, registration_status, {columns}) \
         SELECT 'deal_' || lpad(to_hex(n), 32, '0'), 'won' || n || '.example', 'APPROVED', {columns} \
         FROM deals, generate_series($2::bigint, $3::bigint) AS n WHERE id = $1"
    )))
    .bind(&template.0)
    .bind(first)
    .bind(first + count - 1)
    .execute(&mut db)
    .await
    .context("copy approved deals")?;
    sqlx::query(
        "INSERT INTO deal_team (deal_id, user_id, side, add_time) \
         SELECT 'deal_' || lpad(to_hex(n), 32, '0'), $1, 'PARTNER', 0 \
         FROM generate_series($2::bigint, $3::bigint) AS n",
    )
    .bind(&world.partner_id)
    .bind(first)
    .bind(first + count - 1)
    .execute(&mut db)
    .await?;
    sqlx::query("ANALYZE deals").execute(&mut db).await?;

    let pool = Pool::new(&cluster.deals);
    let w = world.clone();
    let closes = load::fixed_rate(shards(), EVENT_RATE, timing.run, move |n| {
        let mut client = DealServiceClient::new(pool.get());
        let request = authed(
            &w.partner,
            deals::CloseDealRequest {
                deal_id: hex_id("deal", first + n as i64),
                outcome: deals::DealOutcome::Won.into(),
            },
        );
        async move { client.close_deal(request).await.map(|_| ()) }
    })
    .await;
    let won = closes.ok.len() as i64;

    // The lag of each: from the deal's close (its close_time, stamped in the committing
    // transaction) to when tiers applied it (its points entry's create_time).
    let mut tiers_db = sql(cluster.database_url("tiers")).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let applied: Vec<(String, i64)> = loop {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT deal_id, MIN(create_time) FROM points_entries WHERE deal_id >= $1 AND deal_id <= $2 \
             GROUP BY deal_id",
        )
        .bind(hex_id("deal", first))
        .bind(hex_id("deal", first + count - 1))
        .fetch_all(&mut tiers_db)
        .await?;
        if rows.len() as i64 >= won || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let closed: HashMap<String, i64> = sqlx::query_as(
        "SELECT id, close_time FROM deals WHERE id >= $1 AND id <= $2 AND close_time IS NOT NULL",
    )
    .bind(hex_id("deal", first))
    .bind(hex_id("deal", first + count - 1))
    .fetch_all(&mut db)
    .await?
    .into_iter()
    .collect();
    let mut lag = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for (deal, applied_at) in &applied {
        if let Some(closed_at) = closed.get(deal) {
            lag.saturating_record((applied_at - closed_at).max(1) as u64);
        }
    }
    // The first leg alone: from the close to deals' relay marking the event published (in
    // Redis), so that the details tell the relay's part from the consumer's.
    let published: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, MIN(publish_time) FROM outbox WHERE aggregate_id >= $1 AND aggregate_id <= $2 \
         AND publish_time IS NOT NULL GROUP BY aggregate_id",
    )
    .bind(hex_id("deal", first))
    .bind(hex_id("deal", first + count - 1))
    .fetch_all(&mut db)
    .await?;
    let mut relay_lag = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for (deal, published_at) in &published {
        if let Some(closed_at) = closed.get(deal) {
            relay_lag.saturating_record((published_at - closed_at).max(1) as u64);
        }
    }
    let rps = lag.len() as f64 / timing.run.as_secs_f64();
    let p99 = lag.value_at_quantile(0.99) as f64 / 1000.0;
    let mut details = serde_json::Map::new();
    details.insert("deals_won".into(), json!(won));
    details.insert("points_applied".into(), json!(lag.len()));
    details.insert("close_deal_p99_ms".into(), json!(closes.p99_ms()));
    details.insert("lag_max_ms".into(), json!(lag.max() as f64 / 1000.0));
    details.insert("published_p50_ms".into(), json!(relay_lag.value_at_quantile(0.50) as f64 / 1000.0));
    details.insert("published_p99_ms".into(), json!(relay_lag.value_at_quantile(0.99) as f64 / 1000.0));
    if closes.failures() > 0 {
        details.insert("errors".into(), json!(closes.errors));
        details.insert("error_messages".into(), json!(closes.messages));
    }
    Ok(Scenario {
        name: "event_lag".into(),
        rps,
        p50_ms: lag.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: p99,
        baseline: Baseline { name: "offered: won deals a second".into(), rps: EVENT_RATE },
        ratio: rps / EVENT_RATE,
        target: "p99 <= 200 ms at 500 events/s".into(),
        met: p99 <= 200.0 && lag.len() as i64 == won && won == count,
        details,
    })
}

async fn overload(
    cluster: &Cluster,
    world: &Arc<World>,
    timing: Timing,
    tiers_pid: u32,
) -> anyhow::Result<Scenario> {
    progress("overload: GetTierStatus's peak at the in-flight limit, then twice it at a fixed rate, in turn");
    let before = rss::rss_mib(tiers_pid).unwrap_or_default();
    let pool = Pool::new(&cluster.tiers);
    let w = world.clone();
    let me = std::process::id();
    // Whose CPU time is taken over each kind of slice; the generator and tiers come first.
    let cpu_of = [
        ("generator", Tally::Cpu(me)),
        ("tiers", Tally::Cpu(tiers_pid)),
        ("postgres", Tally::PostgresCpu),
        ("interrupts", Tally::Interrupts),
        ("idle", Tally::Idle),
    ];
    // And how often their threads gave up a core, and the machine's cores changed threads: a
    // wake-up or a preemption more a served request under overload is work the peak did not do.
    let switches_of = [
        ("generator", [Tally::Switches(me, Switch::Waited), Tally::Switches(me, Switch::Preempted)]),
        (
            "tiers",
            [Tally::Switches(tiers_pid, Switch::Waited), Tally::Switches(tiers_pid, Switch::Preempted)],
        ),
        ("postgres", [Tally::PostgresSwitches(Switch::Waited), Tally::PostgresSwitches(Switch::Preempted)]),
    ];
    let watched: Vec<Tally> = cpu_of
        .iter()
        .map(|(_, of)| *of)
        .chain(switches_of.iter().flat_map(|(_, kinds)| *kinds))
        .chain([Tally::MachineSwitches, Tally::PostgresFileReads])
        .collect();
    // The peak is taken with as many callers as the service lets in at once: with fewer (the
    // pool's 16, as tier_status compares with pgbench) the service is not saturated, serves
    // more once overload keeps its limit full than the "peak" did, and the ratio flatters it.
    let load::Overload { peak, offered: outcome, pairs, tallies } = load::peak_then_fixed_rate(
        one_shard(),
        MAX_CONCURRENT,
        timing.warmup,
        timing.run,
        timing.overload_slices(),
        2.0,
        &watched,
        move |_| {
            let mut client = PointsServiceClient::new(pool.get());
            let request = random_status_request(&w);
            async move { client.get_tier_status(request).await.map(|_| ()) }
        },
    )
    .await;
    let (cpu, rest) = tallies.split_at(cpu_of.len());
    let (switches, machine) = rest.split_at(2 * switches_of.len());
    let (machine_switches, postgres_file_reads) = (machine[0], machine[1]);
    let peak_rps = peak.rps();
    let rate = 2.0 * peak_rps;
    let after = rss::rss_mib(tiers_pid).unwrap_or_default();
    let goodput_ratio = outcome.rps() / peak_rps;
    let refused = outcome.failures_with(Code::ResourceExhausted);
    let other = outcome.failures_other_than(Code::ResourceExhausted);
    let refused_p99_ms = outcome.failed.value_at_quantile(0.99) as f64 / 1000.0;
    let mut details = serde_json::Map::new();
    details.insert("offered_rps".into(), json!(rate));
    // What the generator managed to send: below the offer when it fell behind its schedule.
    let sent = outcome.answered() as f64 / outcome.elapsed.as_secs_f64();
    details.insert("sent_rps".into(), json!(sent));
    details.insert("goodput_ratio".into(), json!(goodput_ratio));
    details.insert("slice_ratios".into(), json!(pairs.iter().copied().map(thousandths).collect::<Vec<_>>()));
    // How precisely the run knows its ratio: the pairs' mean and its standard error. The
    // ratio itself is over all the slices' requests, so it differs a little from the mean.
    if let Some((mean, standard_error)) = load::mean_and_standard_error(&pairs) {
        details.insert(
            "slice_ratio_mean".into(),
            json!({ "mean": thousandths(mean), "standard_error": thousandths(standard_error) }),
        );
    }
    // Second by second, the slices one after the other: a stretch where the machine slowed
    // shows in both, one that overload brought on only in the fixed rate's.
    details.insert("peak_per_second".into(), json!(peak.per_second.iter().map(|s| s[0]).collect::<Vec<_>>()));
    details.insert("offered_per_second".into(), json!(outcome.per_second));
    // What a request cost the generator and tiers, in CPU µs, at the peak and under overload
    // (served and refused together): refusals are paid for with CPU the served requests and
    // PostgreSQL then go without.
    let requests = [peak.answered(), outcome.answered()];
    let per_request = |[at_peak, overloaded]: [f64; 2]| {
        let us = |seconds: f64, n: u64| (seconds * 1e6 / n.max(1) as f64 * 10.0).round() / 10.0;
        json!({ "peak": us(at_peak, requests[0]), "overload": us(overloaded, requests[1]) })
    };
    details.insert(
        "cpu_us_per_request".into(),
        json!({ "generator": per_request(cpu[0]), "tiers": per_request(cpu[1]) }),
    );
    // Where the machine's cores went, on average, at the peak and under overload: what the
    // generator and tiers spend on refusals shows as PostgreSQL's loss, and so as goodput's.
    let spans = [peak.elapsed.as_secs_f64(), outcome.elapsed.as_secs_f64()];
    let cores = |[at_peak, overloaded]: [f64; 2]| {
        let share = |seconds: f64, span: f64| thousandths(seconds / span.max(f64::EPSILON));
        json!({ "peak": share(at_peak, spans[0]), "overload": share(overloaded, spans[1]) })
    };
    details.insert(
        "cores".into(),
        cpu_of.iter().zip(cpu).map(|((name, _), &seconds)| ((*name).to_owned(), cores(seconds))).collect(),
    );
    let served = [peak.ok.len(), outcome.ok.len()];
    let per_served = |[at_peak, overloaded]: [f64; 2]| {
        let each = |n: f64, of: u64| thousandths(n / of.max(1) as f64);
        json!({ "peak": each(at_peak, served[0]), "overload": each(overloaded, served[1]) })
    };
    let mut switches: serde_json::Map<String, serde_json::Value> = switches_of
        .iter()
        .zip(switches.chunks(2))
        .map(|((name, _), counts)| {
            let kinds = json!({ "waited": per_served(counts[0]), "preempted": per_served(counts[1]) });
            ((*name).to_owned(), kinds)
        })
        .collect();
    switches.insert("machine".into(), per_served(machine_switches));
    details.insert("switches_per_served".into(), switches.into());
    // What PostgreSQL read from files a served request, in KiB: a page its shared buffers did
    // not hold (8 KiB each). More of them under overload than at the peak would be work the
    // peak did not do.
    details.insert(
        "postgres_file_kib_per_served".into(),
        per_served(postgres_file_reads.map(|bytes| bytes / 1024.0)),
    );
    details.insert("refused".into(), json!(refused));
    details.insert("refused_p99_ms".into(), json!(refused_p99_ms));
    details.insert("other_errors".into(), json!(other));
    details.insert("rss_before_mib".into(), json!(before));
    details.insert("rss_after_mib".into(), json!(after));
    if outcome.failures() > 0 {
        details.insert("errors".into(), json!(outcome.errors));
        details.insert("error_messages".into(), json!(outcome.messages));
    }
    if !peak.errors.is_empty() {
        details.insert("peak_errors".into(), json!(peak.errors));
    }
    Ok(Scenario {
        name: "overload".into(),
        rps: outcome.rps(),
        p50_ms: outcome.p50_ms(),
        p99_ms: outcome.p99_ms(),
        baseline: Baseline {
            name: format!("GetTierStatus peak, {MAX_CONCURRENT} callers (closed loop, in turn)"),
            rps: peak_rps,
        },
        ratio: goodput_ratio,
        target: "goodput >= 90% of peak at 2x sent, excess RESOURCE_EXHAUSTED, RSS flat".into(),
        // A generator that fell behind its schedule did not overload the service as offered.
        met: goodput_ratio >= 0.9 && sent >= 0.98 * rate && other == 0 && after - before < 16.0,
        details,
    })
}

/// `x` rounded to three decimals, as overload's `details` give ratios and shares.
fn thousandths(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_for_the_services_are_the_prefixed_variables_without_their_prefix() {
        let vars = [
            ("TANDEM_BENCH_SET_TANDEM_DB_MAX_CONNECTIONS", "8"),
            ("TANDEM_BENCH_SET_", "no name"),
            ("TANDEM_BENCH_ONLY", "overload"),
            ("TANDEM_DB_MAX_CONNECTIONS", "32"),
            ("TANDEM_BENCH_SET_RUST_LOG", "info"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(
            service_settings(vars),
            [("TANDEM_DB_MAX_CONNECTIONS", "8"), ("RUST_LOG", "info")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn a_pool_deals_its_connections_in_turn_and_each_thread_makes_its_own() {
        let pool = Pool::at("127.0.0.1:1");
        let here: Vec<H2Channel> = (0..2 * CONNECTIONS_PER_THREAD).map(|_| pool.get()).collect();
        // In turn: each of the thread's connections once, then each again in the same order.
        for (i, channel) in here.iter().enumerate().take(CONNECTIONS_PER_THREAD) {
            assert!(channel.shares_connection_with(&here[i + CONNECTIONS_PER_THREAD]), "turn {i}");
            for other in &here[i + 1..CONNECTIONS_PER_THREAD] {
                assert!(!channel.shares_connection_with(other), "turn {i} shares a connection");
            }
        }
        // Another thread (another of the generator's event loops) makes connections of its own.
        let elsewhere = pool.clone();
        let there = std::thread::spawn(move || elsewhere.get()).join().unwrap();
        assert!(here.iter().all(|c| !c.shares_connection_with(&there)));
        // Another pool, even to the same address, shares none of them.
        let other = Pool::at("127.0.0.1:1").get();
        assert!(here.iter().all(|c| !c.shares_connection_with(&other)));
    }
}
