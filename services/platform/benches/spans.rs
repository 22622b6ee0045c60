//! What the tracing layer costs an RPC under each logging setting: the layer around a service
//! that answers at once, called over and over on one thread, with the services' own
//! subscriber (`telemetry::subscriber`) at `warn` (no span made), at `info` as deployed (a
//! span for every RPC), and at `debug` for the layer (a line for every RPC too); and, for
//! comparison, `info` with the OpenTelemetry layer's own span attributes left on. Lines go
//! to a sink that drops them, so the figures are the CPU of making them.
//!
//! `cargo bench -p tandem-platform --bench spans` prints nanoseconds per RPC.

use std::{convert::Infallible, hint::black_box, time::Instant};

use http::{Request, Response};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tandem_platform::{
    layers::trace,
    telemetry::{self, JsonLog, LogFormat},
};
use tower::{Layer, Service, ServiceExt, service_fn};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt};

const RPCS: u32 = 200_000;

/// Nanoseconds per RPC through the tracing layer, with `subscriber` as the thread's own.
fn per_rpc(subscriber: impl Into<tracing::Dispatch>) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    let _default = tracing::dispatcher::set_default(&subscriber.into());
    let mut service =
        trace().layer(service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) }));
    runtime.block_on(async {
        let warm_up = RPCS / 10;
        let mut started = Instant::now();
        for n in 0..warm_up + RPCS {
            if n == warm_up {
                started = Instant::now();
            }
            let mut request = Request::new(());
            *request.uri_mut() = "/tandem.tiers.v1.PointsService/GetTierStatus".parse().expect("a path");
            let ready = service.ready().await.expect("ready");
            black_box(ready.call(request).await.expect("an answer"));
        }
        started.elapsed().as_nanos() as f64 / f64::from(RPCS)
    })
}

fn main() {
    // As the services set it: each RPC's span looks for the caller's `traceparent`.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = telemetry::tracer_provider("bench", None).expect("a tracer provider");
    let services = |filter: &str| {
        telemetry::subscriber(
            EnvFilter::new(filter),
            &provider,
            "bench",
            LogFormat::Json,
            false,
            std::io::sink,
        )
    };
    let otel_defaults = tracing_subscriber::registry()
        .with(EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")))
        .with(JsonLog::new(std::io::sink));
    let rows: [(&str, f64); 4] = [
        ("warn: no span", per_rpc(services("warn"))),
        ("info, as deployed: a span", per_rpc(services("info"))),
        ("info, OpenTelemetry layer's defaults", per_rpc(otel_defaults)),
        ("debug for the layer: a span and a line", per_rpc(services("info,tandem_platform::layers=debug"))),
    ];
    println!("{RPCS} RPCs through the tracing layer, one thread");
    for (setting, ns) in rows {
        println!("{setting:<42} {:>8.0} ns an RPC", ns);
    }
}
