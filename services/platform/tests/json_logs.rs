//! JSON log lines carry the trace and span ids of their span: the log line of an RPC that
//! arrived with a W3C `traceparent` names the caller's trace and the server's own span.
//!
//! Installs the process's global subscriber, so it is the only test of this binary.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tandem_platform::{
    auth::{AuthError, Authenticator, Caller},
    telemetry::{self, LogFormat},
    testing::{CapturedLogs, TestServer},
};
use tandem_proto::commissions::v1::{
    ListRenewalsRequest, ListRenewalsResponse,
    renewal_service_client::RenewalServiceClient,
    renewal_service_server::{RenewalService, RenewalServiceServer},
};
use tracing_subscriber::EnvFilter;

/// The captured lines, each parsed.
fn json_lines(logs: &CapturedLogs) -> Vec<Value> {
    logs.text()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}")))
        .collect()
}

struct NoTokens;

#[async_trait]
impl Authenticator for NoTokens {
    async fn authenticate(&self, _token: &str) -> Result<Arc<Caller>, AuthError> {
        Err(AuthError::Invalid("no tokens here".into()))
    }
}

/// Logs a line of its own while serving.
struct Renewals;

#[tonic::async_trait]
impl RenewalService for Renewals {
    async fn list_renewals(
        &self,
        request: tonic::Request<ListRenewalsRequest>,
    ) -> Result<tonic::Response<ListRenewalsResponse>, tonic::Status> {
        tracing::info!(team_id = %request.get_ref().team_id, "listing renewals");
        Ok(tonic::Response::new(ListRenewalsResponse::default()))
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_the_trace_and_span_ids_of_their_span() {
    let captured = CapturedLogs::default();
    let provider = telemetry::tracer_provider("json-logs-test", None).unwrap();
    // The services' own subscriber, with the RPCs' lines turned on as an operator would.
    let subscriber = telemetry::subscriber(
        EnvFilter::new("info,tandem_platform::layers=debug"),
        &provider,
        "json-logs-test",
        LogFormat::Json,
        false,
        captured.clone(),
    );
    tracing::dispatcher::set_global_default(subscriber).unwrap();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );

    tracing::info!(n = 1, "outside any span");

    let services = tandem_platform::service_set![1 << 20; RenewalServiceServer::new(Renewals)];
    let server = TestServer::start(services, Arc::new(NoTokens)).await;
    let mut request =
        tonic::Request::new(ListRenewalsRequest { team_id: "team_1".into(), ..Default::default() });
    request
        .metadata_mut()
        .insert("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01").parse().unwrap());
    RenewalServiceClient::new(server.channel.clone()).list_renewals(request).await.unwrap();
    drop(server);

    let lines = json_lines(&captured);
    let outside = lines.iter().find(|l| l["message"] == "outside any span").expect("the line outside spans");
    assert_eq!(outside["level"], "INFO");
    assert_eq!(outside["n"], 1);
    assert!(outside["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{outside}");
    assert!(outside.get("trace_id").is_none(), "no span, no trace: {outside}");

    let rpc = lines
        .iter()
        .find(|l| {
            l["message"] == "rpc" && l["method"] == "/tandem.commissions.v1.RenewalService/ListRenewals"
        })
        .unwrap_or_else(|| panic!("no rpc line in {lines:#?}"));
    assert_eq!(rpc["trace_id"], TRACE_ID, "the caller's trace: {rpc}");
    let span_id = rpc["span_id"].as_str().expect("a span id");
    assert_eq!(span_id.len(), 16);
    assert!(span_id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(span_id, PARENT_SPAN_ID, "the server's own span, a child of the caller's");
    assert_eq!(rpc["span"]["name"], "rpc");
    assert_eq!(rpc["span"]["rpc.method"], "/tandem.commissions.v1.RenewalService/ListRenewals");
    assert_eq!(rpc["span"]["rpc.grpc.status_code"], 0, "fields recorded later are there too");

    let handler = lines.iter().find(|l| l["message"] == "listing renewals").expect("the handler's line");
    assert_eq!(handler["team_id"], "team_1");
    assert_eq!(handler["trace_id"], TRACE_ID, "the handler's line joins the same trace");
    assert_eq!(handler["span_id"], span_id, "and the same span");
}
