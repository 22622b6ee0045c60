//! The admin HTTP server of a real gRPC server: `/metrics` counts and times the RPCs it served
//! by service, method and code; `/livez` and `/readyz` follow the server's life and health.
//! And the database metrics: a watched pool and its outbox backlog, on both backends.
//!
//! The metrics are the process's, shared by the tests of this file, so each test looks at
//! label sets of its own and compares scrapes before and after.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use tandem_platform::{
    auth::{AuthError, Authenticator, Caller},
    backend_tests,
    db::{Db, DbOptions},
    metrics, outbox,
    server::{Readiness, Server, ServerOptions, Shutdown},
    testing::{TestDb, TestServer},
};
use tandem_proto::commissions::v1::{
    ListRenewalsRequest, ListRenewalsResponse,
    renewal_service_client::RenewalServiceClient,
    renewal_service_server::{RenewalService, RenewalServiceServer},
};
use tandem_proto::events::v1::{TeamDeleted, event::Payload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Refuses every token; calls without one pass anonymous.
struct NoTokens;

#[async_trait]
impl Authenticator for NoTokens {
    async fn authenticate(&self, _token: &str) -> Result<Arc<Caller>, AuthError> {
        Err(AuthError::Invalid("no tokens here".into()))
    }
}

/// Renewals of team `ok` (at once), `slow` (after 60 ms); every other team is NOT_FOUND.
struct Renewals;

#[tonic::async_trait]
impl RenewalService for Renewals {
    async fn list_renewals(
        &self,
        request: tonic::Request<ListRenewalsRequest>,
    ) -> Result<tonic::Response<ListRenewalsResponse>, tonic::Status> {
        match request.get_ref().team_id.as_str() {
            "ok" => {}
            "slow" => tokio::time::sleep(Duration::from_millis(60)).await,
            other => return Err(tonic::Status::not_found(format!("no team {other}"))),
        }
        Ok(tonic::Response::new(ListRenewalsResponse::default()))
    }
}

fn admin_options() -> ServerOptions {
    ServerOptions { admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))), ..ServerOptions::default() }
}

/// `GET path` over HTTP/1.1: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// The value of the sample `series` (name and labels, exactly as rendered) in `text`; zero
/// when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse::<f64>().expect("a number"))
        .next()
        .unwrap_or(0.0)
}

const SERVICE: &str = "tandem.commissions.v1.RenewalService";

fn rpc_series(name: &str, code: &str, le: Option<&str>) -> String {
    let le = le.map(|le| format!(",le=\"{le}\"")).unwrap_or_default();
    format!("{name}{{code=\"{code}\",method=\"ListRenewals\",service=\"{SERVICE}\"{le}}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_and_time_every_rpc_by_service_method_and_code() {
    let services = tandem_platform::service_set![1 << 20; RenewalServiceServer::new(Renewals)];
    let server = TestServer::start_with(admin_options(), services, Arc::new(NoTokens)).await;
    let admin = server.admin.expect("an admin address");

    let (status, before) = get(admin, "/metrics").await.unwrap();
    assert_eq!(status, 200);

    let mut client = RenewalServiceClient::new(server.channel.clone());
    for team in ["ok", "ok", "slow"] {
        client
            .list_renewals(ListRenewalsRequest { team_id: team.into(), ..Default::default() })
            .await
            .unwrap();
    }
    for team in ["nope", "gone"] {
        let err = client
            .list_renewals(ListRenewalsRequest { team_id: team.into(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
    // A path no service has is counted, but not under its made-up name.
    let mut raw = tonic::client::Grpc::new(server.channel.clone());
    raw.ready().await.unwrap();
    let err = raw
        .unary::<_, ListRenewalsResponse, _>(
            tonic::Request::new(ListRenewalsRequest::default()),
            http::uri::PathAndQuery::from_static("/made.up.v1.Service/Call"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    let (status, after) = get(admin, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let delta = |series: &str| sample(&after, series) - sample(&before, series);

    assert!(after.contains("# TYPE rpc_server_requests_total counter\n"), "{after}");
    assert!(after.contains("# TYPE rpc_server_duration_seconds histogram\n"), "{after}");
    assert_eq!(delta(&rpc_series("rpc_server_requests_total", "OK", None)), 3.0, "{after}");
    assert_eq!(delta(&rpc_series("rpc_server_requests_total", "NOT_FOUND", None)), 2.0, "{after}");
    assert!(
        delta("rpc_server_requests_total{code=\"UNIMPLEMENTED\",method=\"unknown\",service=\"unknown\"}")
            >= 1.0,
        "{after}"
    );
    assert!(!after.contains("made.up"), "made-up paths stay out of the labels");

    // Every bucket from half a millisecond to ten seconds, cumulative, ending with +Inf.
    let bounds = [
        "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
        "10", "+Inf",
    ];
    let mut previous = 0.0;
    for le in bounds {
        let series = rpc_series("rpc_server_duration_seconds_bucket", "OK", Some(le));
        assert!(after.contains(&format!("{series} ")), "{series} missing from\n{after}");
        let count = sample(&after, &series);
        assert!(count >= previous, "buckets are cumulative: {series}");
        previous = count;
    }
    let ok_bucket = |le: &str| delta(&rpc_series("rpc_server_duration_seconds_bucket", "OK", Some(le)));
    assert_eq!(ok_bucket("+Inf"), 3.0);
    assert_eq!(delta(&rpc_series("rpc_server_duration_seconds_count", "OK", None)), 3.0);
    assert!(
        delta(&rpc_series("rpc_server_duration_seconds_sum", "OK", None)) >= 0.06,
        "the slow call's 60 ms"
    );
    assert!(ok_bucket("0.05") <= 2.0, "the slow call lies above 50 ms");
    assert_eq!(delta(&rpc_series("rpc_server_duration_seconds_count", "NOT_FOUND", None)), 2.0);
}

/// Not ready until the flag is set.
struct Flag(Arc<AtomicBool>);

#[async_trait]
impl Readiness for Flag {
    fn name(&self) -> &str {
        "flag"
    }
    async fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.0.load(Ordering::SeqCst), "not yet");
        Ok(())
    }
}

async fn wait_for_status(admin: SocketAddr, path: &str, want: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(admin, path).await.unwrap();
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} stayed {status} ({body:?}), not {want}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_follow_health_and_shutdown_and_streams_are_measured() {
    let ready = Arc::new(AtomicBool::new(false));
    let services = tandem_platform::service_set![1 << 20; RenewalServiceServer::new(Renewals)]
        .ready_when(Arc::new(Flag(ready.clone())));
    let options = ServerOptions { shutdown_grace: Duration::from_secs(2), ..admin_options() };
    let server = Server::build(options, services, Arc::new(NoTokens)).await.unwrap();
    let addr = server.local_addr();
    let admin = server.admin_addr().expect("an admin address");
    let shutdown = Shutdown::default();
    let serving = tokio::spawn(server.run_until_stopped(shutdown.requested()));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    let mut health = HealthClient::new(channel);
    let check = |mut health: HealthClient<_>| async move {
        health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status()
    };

    // Before readiness: alive, not ready, and the gRPC health agrees.
    assert_eq!(get(admin, "/livez").await.unwrap(), (200, "ok\n".into()));
    assert_eq!(get(admin, "/readyz").await.unwrap(), (503, "not ready\n".into()));
    assert_eq!(check(health.clone()).await, ServingStatus::NotServing);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(admin, "/readyz").await.unwrap().0, 503, "still not ready while the check fails");

    ready.store(true, Ordering::SeqCst);
    assert_eq!(wait_for_status(admin, "/readyz", 200).await, "ready\n");
    assert_eq!(check(health.clone()).await, ServingStatus::Serving);

    // A stream the client abandons counts once, as CANCELLED, when its end reaches the server.
    let cancelled =
        "rpc_server_requests_total{code=\"CANCELLED\",method=\"Watch\",service=\"grpc.health.v1.Health\"}";
    let count = || sample(&metrics::render_prometheus().unwrap(), cancelled);
    let before = count();
    let mut abandoned =
        health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(abandoned.message().await.unwrap().unwrap().status(), ServingStatus::Serving);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count(), before, "not before it ends");
    drop(abandoned);
    wait_for_count(count, before + 1.0).await;

    // A stream in flight keeps the server draining after shutdown begins: alive, not ready.
    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);
    shutdown.begin();
    assert_eq!(wait_for_status(admin, "/readyz", 503).await, "shutting down\n");
    assert_eq!(get(admin, "/livez").await.unwrap().0, 200, "alive while draining");
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::NotServing);

    // The grace period ends the server, the admin server and the streams still open with it;
    // the one cut short counts once, as CANCELLED.
    tokio::time::timeout(Duration::from_secs(10), serving).await.unwrap().unwrap().unwrap();
    assert!(get(admin, "/livez").await.is_err(), "the admin server stops with the server");
    let cut = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.expect("the stream ends");
    assert!(cut.is_err(), "a stream cut at shutdown ends in an error, not cleanly: {cut:?}");
    wait_for_count(count, before + 2.0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count() - before, 2.0);
}

/// Waits up to 5 s for `count` to reach `want`.
async fn wait_for_count(count: impl Fn() -> f64, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while count() < want {
        assert!(Instant::now() < deadline, "the count stayed {}, not {want}", count());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A watched database reports its pool (idle, in use, the most it opens) and its outbox
/// backlog under its name, until the watch stops.
async fn database_pool_and_outbox_backlog_are_reported(test: TestDb) {
    let db = Db::connect(&test.url, &DbOptions { max_connections: 3, ..DbOptions::default() }).unwrap();
    db.migrate(&[]).await.unwrap();
    for team in ["t1", "t2"] {
        let mut tx = db.begin().await.unwrap();
        let payload = Payload::TeamDeleted(TeamDeleted { team_id: team.into() });
        outbox::enqueue(&mut tx, "stream", "test", team, payload).await.unwrap();
        tx.commit().await.unwrap();
    }
    let name = format!("db_{}", uuid::Uuid::now_v7().simple());
    let series = |metric: &str, extra: &str| format!("{metric}{{database=\"{name}\"{extra}}}");
    let backlog = series("outbox_backlog_events", "");

    let held = db.acquire().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watching = tokio::spawn(metrics::watch_database(name.clone(), db.clone(), async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = metrics::render_prometheus().unwrap();
    while !text.contains(&format!("{backlog} ")) {
        assert!(Instant::now() < deadline, "{backlog} never reported:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = metrics::render_prometheus().unwrap();
    }
    assert_eq!(sample(&text, &backlog), 2.0, "two events wait: {text}");
    assert_eq!(sample(&text, &series("db_pool_max_connections", "")), 3.0);
    assert!(sample(&text, &series("db_pool_connections", ",state=\"in_use\"")) >= 1.0, "{text}");
    assert!(text.contains(&format!("{} ", series("db_pool_connections", ",state=\"idle\""))), "{text}");
    assert!(text.contains("# TYPE db_pool_connections gauge\n"));

    drop(held);
    metrics::set_outbox_backlog(&name, 7);
    assert_eq!(sample(&metrics::render_prometheus().unwrap(), &backlog), 7.0);

    stop.send(()).unwrap();
    watching.await.unwrap();
    let text = metrics::render_prometheus().unwrap();
    assert!(!text.contains(&name), "an unwatched database is no longer reported:\n{text}");
    db.close().await;
}

backend_tests!(database_pool_and_outbox_backlog_are_reported);
