//! Metrics: one set of OpenTelemetry instruments per process, read two ways — exported over
//! OTLP every [`EXPORT_INTERVAL`] when a collector is configured ([`init`]), and rendered in
//! the Prometheus text format for `GET /metrics` on the admin port ([`render_prometheus`]).
//!
//! What is measured:
//!
//! - every RPC, by the server's [`meter`](crate::layers::meter) layer: `rpc_server_requests_total`
//!   and `rpc_server_duration_seconds`, by `service`, `method` and `code`;
//! - each database a process [watches](watch_database): `db_pool_connections` by `state`
//!   (`idle`, `in_use`), `db_pool_max_connections`, and `outbox_backlog_events`;
//! - event consumers, as the bus reports them: [`event_applied`], [`event_dead_lettered`] and
//!   [`set_consumer_pending`].
//!
//! Instruments work before [`init`] (tests, tools): they then feed the Prometheus reader only.

pub mod prometheus;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, LazyLock, Mutex, OnceLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _, ObservableGauge},
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    metrics::{
        InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality, data::ResourceMetrics,
        reader::MetricReader,
    },
};
use prost::Message as _;

use crate::{db::Db, outbox, time::now_micros};

/// How often metrics are pushed to the OTLP collector.
pub const EXPORT_INTERVAL: Duration = Duration::from_secs(15);

/// How often a watched database's outbox backlog is counted.
pub const BACKLOG_REFRESH: Duration = Duration::from_secs(5);

/// Bucket bounds of `rpc_server_duration_seconds`: half a millisecond to ten seconds.
pub const RPC_DURATION_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Bucket bounds of `event_consumer_lag_seconds`: a millisecond to fifteen minutes.
pub const CONSUMER_LAG_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("OTLP metric exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("collecting metrics: {0}")]
    Collect(#[from] opentelemetry_sdk::error::OTelSdkError),
}

/// The process's instruments and the reader `/metrics` collects from.
struct Metrics {
    reader: SharedReader,
    provider: SdkMeterProvider,
    rpc_requests: Counter<u64>,
    rpc_duration: Histogram<f64>,
    events_applied: Counter<u64>,
    events_dead_lettered: Counter<u64>,
    consumer_lag: Histogram<f64>,
    consumer_pending: Gauge<u64>,
    databases: Arc<Mutex<BTreeMap<String, WatchedDb>>>,
    _observed: Vec<ObservableGauge<u64>>,
}

/// A database being watched: its pool, read on every collection, and the last outbox count.
struct WatchedDb {
    db: Db,
    backlog: Option<u64>,
    /// Which [`watch_database`] call owns the entry, so an older one ending removes nothing.
    owner: u64,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(None))
}

/// Sets up the process's meter provider: the Prometheus reader always, and a periodic OTLP
/// export to `otlp_endpoint` when given. Returns the provider to shut down at exit when this
/// call created it; a later call (tests) keeps the first set-up and returns `None`.
pub fn init(service: &str, otlp_endpoint: Option<&str>) -> Result<Option<SdkMeterProvider>, MetricsError> {
    let exporter = match otlp_endpoint.filter(|e| !e.is_empty()) {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            Some((
                opentelemetry_otlp::MetricExporter::builder().with_tonic().with_endpoint(endpoint).build()?,
                service.to_owned(),
            ))
        }
        None => None,
    };
    let mut created = None;
    METRICS.get_or_init(|| {
        let metrics = Metrics::new(exporter);
        created = Some(metrics.provider.clone());
        metrics
    });
    if let Some(provider) = &created {
        opentelemetry::global::set_meter_provider(provider.clone());
    }
    Ok(created)
}

impl Metrics {
    fn new(exporter: Option<(opentelemetry_otlp::MetricExporter, String)>) -> Self {
        let reader = SharedReader(Arc::new(ManualReader::builder().build()));
        let mut builder = SdkMeterProvider::builder().with_reader(reader.clone());
        if let Some((exporter, service)) = exporter {
            let periodic = opentelemetry_sdk::metrics::PeriodicReader::builder(exporter)
                .with_interval(EXPORT_INTERVAL)
                .build();
            let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
            builder = builder.with_reader(periodic).with_resource(resource);
        }
        let provider = builder.build();
        let meter = provider.meter("tandem");
        let databases: Arc<Mutex<BTreeMap<String, WatchedDb>>> = Arc::default();
        Self {
            rpc_requests: meter
                .u64_counter("rpc_server_requests_total")
                .with_description("RPCs served, by gRPC service, method and status code")
                .build(),
            rpc_duration: meter
                .f64_histogram("rpc_server_duration_seconds")
                .with_description(
                    "Time from a request's arrival to its final status, by service, method and code",
                )
                .with_unit("s")
                .with_boundaries(RPC_DURATION_BUCKETS.to_vec())
                .build(),
            events_applied: meter
                .u64_counter("events_applied_total")
                .with_description("Events a consumer group applied, by stream and group")
                .build(),
            events_dead_lettered: meter
                .u64_counter("events_dead_lettered_total")
                .with_description("Events a consumer group gave up on and dead-lettered, by stream and group")
                .build(),
            consumer_lag: meter
                .f64_histogram("event_consumer_lag_seconds")
                .with_description("Time from an event's occurrence to its application, by stream and group")
                .with_unit("s")
                .with_boundaries(CONSUMER_LAG_BUCKETS.to_vec())
                .build(),
            consumer_pending: meter
                .u64_gauge("event_consumer_pending_events")
                .with_description("Events delivered to a consumer group and not yet acknowledged")
                .build(),
            _observed: observe_databases(&meter, &databases),
            databases,
            reader,
            provider,
        }
    }
}

fn observe_databases(
    meter: &Meter,
    databases: &Arc<Mutex<BTreeMap<String, WatchedDb>>>,
) -> Vec<ObservableGauge<u64>> {
    let pools = databases.clone();
    let connections = meter
        .u64_observable_gauge("db_pool_connections")
        .with_description("Open connections of a database pool, by state (idle, in_use)")
        .with_callback(move |observer| {
            for (name, watched) in lock(&pools).iter() {
                let (open, idle) = watched.db.connections();
                let (open, idle) = (u64::from(open), idle as u64);
                let database = KeyValue::new("database", name.clone());
                observer.observe(idle, &[database.clone(), KeyValue::new("state", "idle")]);
                observer.observe(open - idle, &[database, KeyValue::new("state", "in_use")]);
            }
        })
        .build();
    let pools = databases.clone();
    let max = meter
        .u64_observable_gauge("db_pool_max_connections")
        .with_description("The most connections a database pool opens")
        .with_callback(move |observer| {
            for (name, watched) in lock(&pools).iter() {
                let max = u64::from(watched.db.max_connections());
                observer.observe(max, &[KeyValue::new("database", name.clone())]);
            }
        })
        .build();
    let backlogs = databases.clone();
    let backlog = meter
        .u64_observable_gauge("outbox_backlog_events")
        .with_description("Events written to a database's outbox and not yet published")
        .with_callback(move |observer| {
            for (name, watched) in lock(&backlogs).iter() {
                if let Some(n) = watched.backlog {
                    observer.observe(n, &[KeyValue::new("database", name.clone())]);
                }
            }
        })
        .build();
    vec![connections, max, backlog]
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The [`ManualReader`] behind `/metrics`, shared between the provider and the scrape.
#[derive(Clone, Debug)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// Every instrument's current value in the Prometheus text exposition format (0.0.4).
pub fn render_prometheus() -> Result<String, MetricsError> {
    let mut collected = ResourceMetrics::default();
    metrics().reader.collect(&mut collected)?;
    Ok(prometheus::render(&prometheus::families(&collected)))
}

// --- RPCs --------------------------------------------------------------------------------

/// The name of a gRPC status code as the `code` label shows it (`OK`, `NOT_FOUND`, …).
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// Every RPC the suite serves, as `/package.Service/Method`: Tandem's contracts, health and
/// reflection. Other paths are counted as service and method `unknown`, so a client probing
/// made-up paths cannot grow the number of series. Each maps to its `service` and `method`
/// labels, kept here for the life of the process so that recording an RPC copies no string.
static KNOWN_METHODS: LazyLock<HashMap<String, (String, String)>> = LazyLock::new(|| {
    let sets = [
        tandem_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut known = HashMap::new();
    for bytes in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(bytes) else { continue };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                let full =
                    if package.is_empty() { service_name } else { format!("{package}.{service_name}") };
                for method in service.method {
                    let method = method.name.unwrap_or_default();
                    known.insert(format!("/{full}/{method}"), (full.clone(), method));
                }
            }
        }
    }
    known
});

/// The `service` and `method` labels of a request path.
pub fn rpc_labels(path: &str) -> (&'static str, &'static str) {
    match KNOWN_METHODS.get(path) {
        Some((service, method)) => (service, method),
        None => ("unknown", "unknown"),
    }
}

/// Records one finished RPC: `labels` are its [`rpc_labels`], `code` its final gRPC status.
pub fn rpc_finished(labels: (&'static str, &'static str), code: i32, elapsed: Duration) {
    let (service, method) = labels;
    let labels = [
        KeyValue::new("service", service),
        KeyValue::new("method", method),
        KeyValue::new("code", code_name(code)),
    ];
    let m = metrics();
    m.rpc_requests.add(1, &labels);
    m.rpc_duration.record(elapsed.as_secs_f64(), &labels);
}

// --- event consumers ---------------------------------------------------------------------

fn consumer_labels(stream: &str, group: &str) -> [KeyValue; 2] {
    [KeyValue::new("stream", stream.to_owned()), KeyValue::new("group", group.to_owned())]
}

/// A consumer `group` of `stream` applied an event that occurred at `occur_time_micros` (UTC
/// microseconds, the event's `occur_time`): counts it in `events_applied_total` and records
/// now − occurrence in `event_consumer_lag_seconds` (zero when the clocks disagree).
pub fn event_applied(stream: &str, group: &str, occur_time_micros: i64) {
    let labels = consumer_labels(stream, group);
    let lag_micros = now_micros().saturating_sub(occur_time_micros).max(0);
    let m = metrics();
    m.events_applied.add(1, &labels);
    m.consumer_lag.record(lag_micros as f64 / 1_000_000.0, &labels);
}

/// A consumer `group` of `stream` gave up on an event and dead-lettered it.
pub fn event_dead_lettered(stream: &str, group: &str) {
    metrics().events_dead_lettered.add(1, &consumer_labels(stream, group));
}

/// The events delivered to consumer `group` of `stream` and not yet acknowledged (a Redis
/// Streams group's pending entries), as last seen.
pub fn set_consumer_pending(stream: &str, group: &str, pending: u64) {
    metrics().consumer_pending.record(pending, &consumer_labels(stream, group));
}

// --- databases ---------------------------------------------------------------------------

/// Sets `database`'s outbox backlog as `outbox_backlog_events` reports it. [`watch_database`]
/// does this on its own; call it where a fresher count is at hand. Ignored for a database
/// nobody watches.
pub fn set_outbox_backlog(database: &str, events: u64) {
    if let Some(watched) = lock(&metrics().databases).get_mut(database) {
        watched.backlog = Some(events);
    }
}

/// Reports `db` under the label `database="<name>"` until `stop` resolves: its pool on every
/// collection, and its outbox backlog counted every [`BACKLOG_REFRESH`] (while the outbox
/// table does not exist yet, before migrations, the backlog is not reported). Spawn it beside
/// the outbox relay.
pub async fn watch_database(name: impl Into<String>, db: Db, stop: impl std::future::Future<Output = ()>) {
    let name = name.into();
    static OWNERS: AtomicU64 = AtomicU64::new(0);
    let owner = OWNERS.fetch_add(1, Ordering::Relaxed);
    let databases = metrics().databases.clone();
    lock(&databases).insert(name.clone(), WatchedDb { db: db.clone(), backlog: None, owner });
    tokio::pin!(stop);
    loop {
        match outbox::backlog(&db).await {
            Ok(n) => set_outbox_backlog(&name, u64::try_from(n).unwrap_or(0)),
            Err(err) => tracing::debug!(database = %name, error = %err, "outbox backlog not counted"),
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(BACKLOG_REFRESH) => {}
        }
    }
    let mut databases = lock(&databases);
    if databases.get(&name).is_some_and(|w| w.owner == owner) {
        databases.remove(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_known_and_unknown_paths() {
        assert_eq!(rpc_labels("/grpc.health.v1.Health/Check"), ("grpc.health.v1.Health", "Check"));
        assert_eq!(
            rpc_labels("/tandem.identity.v1.AuthService/SignUp"),
            ("tandem.identity.v1.AuthService", "SignUp")
        );
        assert_eq!(rpc_labels("/grpc.health.v1.Health/Nope"), ("unknown", "unknown"));
        assert_eq!(rpc_labels("/made.up/Path"), ("unknown", "unknown"));
        assert_eq!(rpc_labels("/"), ("unknown", "unknown"));
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn consumers_report_applied_events_their_lag_dead_letters_and_pending() {
        let (stream, group) = ("tandem.test.consumers", "lagging");
        let labels = format!("group=\"{group}\",stream=\"{stream}\"");
        event_applied(stream, group, now_micros() - 2_000_000);
        event_applied(stream, group, now_micros() - 20_000);
        event_applied(stream, group, now_micros() + 60_000_000);
        event_dead_lettered(stream, group);
        set_consumer_pending(stream, group, 5);
        set_consumer_pending(stream, group, 3);

        let text = render_prometheus().unwrap();
        let get = |metric: &str, extra: &str| value(&text, &format!("{metric}{{{labels}{extra}}}"));
        assert_eq!(get("events_applied_total", ""), Some(3.0), "{text}");
        assert_eq!(get("events_dead_lettered_total", ""), Some(1.0));
        assert_eq!(get("event_consumer_pending_events", ""), Some(3.0), "the last count");
        assert_eq!(get("event_consumer_lag_seconds_count", ""), Some(3.0));
        // A clock ahead counts as no lag; 20 ms lies under 50 ms; 2 s under 2.5 s, above 1 s.
        assert_eq!(get("event_consumer_lag_seconds_bucket", ",le=\"0.001\""), Some(1.0));
        assert_eq!(get("event_consumer_lag_seconds_bucket", ",le=\"0.05\""), Some(2.0));
        assert_eq!(get("event_consumer_lag_seconds_bucket", ",le=\"1\""), Some(2.0));
        assert_eq!(get("event_consumer_lag_seconds_bucket", ",le=\"2.5\""), Some(3.0));
        assert!(get("event_consumer_lag_seconds_sum", "").is_some_and(|s| (2.0..3.0).contains(&s)));
        assert!(text.contains("# TYPE event_consumer_lag_seconds histogram\n"));
        assert!(text.contains("# TYPE event_consumer_pending_events gauge\n"));
    }

    #[test]
    fn code_names_follow_the_grpc_spelling() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(5), "NOT_FOUND");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(42), "UNKNOWN");
    }
}
