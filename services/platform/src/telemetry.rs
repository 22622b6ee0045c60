//! Telemetry, initialised once per process: `tracing` with text or JSON logs (each JSON line
//! with the `trace_id` and `span_id` of its span), OTLP trace and metric exporters when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C trace context carried in gRPC metadata and
//! in event headers.

use std::{collections::HashMap, io::Write as _, sync::OnceLock};

use opentelemetry::{
    global,
    propagation::{Extractor, Injector},
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_sdk::{
    metrics::SdkMeterProvider, propagation::TraceContextPropagator, trace::SdkTracerProvider,
};
use serde_json::{Map, Value};
use tracing::{Subscriber, field::Field};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    fmt::{MakeWriter, format::Writer, time::FormatTime},
    layer::{Context, SubscriberExt},
    registry::LookupSpan,
    util::SubscriberInitExt,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Flushes and stops the exporters when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(Err(err)) = self.provider.take().map(|p| p.shutdown()) {
            eprintln!("telemetry shutdown: {err}");
        }
        if let Some(Err(err)) = self.meter_provider.take().map(|p| p.shutdown()) {
            eprintln!("metrics shutdown: {err}");
        }
    }
}

/// The tracer provider spans get their ids from: exporting to `otlp_endpoint` when given,
/// exporting nothing otherwise — the ids still join log lines to a trace and travel to peers.
pub fn tracer_provider(service: &str, otlp_endpoint: Option<&str>) -> anyhow::Result<SdkTracerProvider> {
    let builder = SdkTracerProvider::builder();
    Ok(match otlp_endpoint.filter(|e| !e.is_empty()) {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter =
                opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
            let resource =
                opentelemetry_sdk::Resource::builder().with_service_name(service.to_owned()).build();
            builder.with_batch_exporter(exporter).with_resource(resource).build()
        }
        None => builder.build(),
    })
}

/// Installs the global subscriber, propagator and meter provider (see [`crate::metrics`]).
/// Safe to call more than once (tests): later calls keep the first subscriber.
pub fn init(service: &str, format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn"));

    let provider = tracer_provider(service, otlp_endpoint)?;
    let otel_layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_owned()));
    let exporting = otlp_endpoint.is_some_and(|e| !e.is_empty());
    if exporting {
        global::set_tracer_provider(provider.clone());
    }
    let meter_provider = crate::metrics::init(service, otlp_endpoint)?;

    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let result = match format {
        LogFormat::Json => registry.with(JsonLog::new(std::io::stderr)).try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if result.is_err() {
        tracing::debug!("telemetry already initialised");
    }
    Ok(TelemetryGuard { provider: exporting.then_some(provider), meter_provider })
}

// --- JSON logs ---------------------------------------------------------------------------

/// JSON log lines: `timestamp`, `level`, `target`, the event's fields (`message`, …), the
/// current span with its fields (`span`) and the spans it sits in, root first (`spans`), and
/// the OpenTelemetry `trace_id` and `span_id` of the current span, so a line can be found
/// from its trace and the other way round. Needs the `tracing_opentelemetry` layer below it
/// in the same subscriber for the ids.
pub struct JsonLog<W> {
    make_writer: W,
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl<W> JsonLog<W> {
    pub fn new(make_writer: W) -> Self {
        Self { make_writer, dispatch: OnceLock::new() }
    }
}

/// A span's fields as JSON, kept in the span's extensions.
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(
            field.name().into(),
            serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number),
        );
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

impl<S, W> Layer<S> for JsonLog<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            let mut fields = Map::new();
            attrs.record(&mut JsonVisitor(&mut fields));
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonVisitor(&mut fields.0));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        let mut timestamp = String::new();
        if tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp)).is_ok() {
            line.insert("timestamp".into(), timestamp.into());
        }
        let metadata = event.metadata();
        line.insert("level".into(), metadata.level().as_str().into());
        line.insert("target".into(), metadata.target().into());
        event.record(&mut JsonVisitor(&mut line));

        if let Some(current) = ctx.event_span(event) {
            let spans: Vec<Value> = current
                .scope()
                .from_root()
                .map(|span| {
                    let mut fields =
                        span.extensions().get::<SpanFields>().map(|f| f.0.clone()).unwrap_or_default();
                    fields.insert("name".into(), span.name().into());
                    Value::Object(fields)
                })
                .collect();
            if let Some(last) = spans.last() {
                line.insert("span".into(), last.clone());
            }
            line.insert("spans".into(), spans.into());
            // The span's OpenTelemetry context, with no extensions of it borrowed here.
            let context = self
                .dispatch
                .get()
                .and_then(tracing::dispatcher::WeakDispatch::upgrade)
                .and_then(|dispatch| tracing_opentelemetry::get_otel_context(&current.id(), &dispatch));
            if let Some(context) = context {
                let span = context.span();
                let ids = span.span_context();
                if ids.is_valid() {
                    line.insert("trace_id".into(), ids.trace_id().to_string().into());
                    line.insert("span_id".into(), ids.span_id().to_string().into());
                }
            }
        }

        let Ok(mut text) = serde_json::to_vec(&Value::Object(line)) else { return };
        text.push(b'\n');
        let _ = self.make_writer.make_writer_for(metadata).write_all(&text);
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MapCarrier<'a>(&'a mut HashMap<String, String>);

impl Injector for MapCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl Extractor for MapCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Makes `span` a child of the trace context in incoming request headers, if any.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let cx = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(cx);
}

/// Makes `span` a child of the trace context carried in an event's headers.
pub fn set_parent_from_map(span: &tracing::Span, headers: &HashMap<String, String>) {
    let mut headers = headers.clone();
    let cx = global::get_text_map_propagator(|p| p.extract(&MapCarrier(&mut headers)));
    let _ = span.set_parent(cx);
}

/// The current span's trace context (`traceparent`, `tracestate`) for an event's headers.
pub fn current_trace_headers() -> HashMap<String, String> {
    let mut headers = HashMap::new();
    let cx = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MapCarrier(&mut headers)));
    headers
}

/// Puts the current span's trace context into outgoing gRPC metadata.
pub fn inject_into_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MetadataInjector(metadata)));
}
