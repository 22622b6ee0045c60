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
use serde::ser::{SerializeMap, Serializer as _};
use serde_json::Value;
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

pub mod output;

/// Flushes and stops the exporters when dropped, then writes the log lines still buffered.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    output: output::Output,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(Err(err)) = self.provider.take().map(|p| p.shutdown()) {
            eprintln!("telemetry shutdown: {err}");
        }
        if let Some(Err(err)) = self.meter_provider.take().map(|p| p.shutdown()) {
            eprintln!("metrics shutdown: {err}");
        }
        self.output.stop();
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

/// The process's subscriber: `filter`, every span's OpenTelemetry context from `provider`
/// (for its ids, its parent and the peers it calls, exported or not), and log lines in
/// `format` to `lines`.
///
/// The OpenTelemetry layer adds no attributes of its own to a span (source location,
/// thread, busy and idle time): every RPC's span pays for them, and for an RPC's span they
/// would say `layers.rs`, a tokio worker and little more than its duration.
pub fn subscriber<W>(
    filter: EnvFilter,
    provider: &SdkTracerProvider,
    service: &str,
    format: LogFormat,
    ansi: bool,
    lines: W,
) -> tracing::Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service.to_owned()))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    // Made into a `Dispatch` from the whole subscriber, not a box of it: a boxed subscriber
    // does not pass the dispatch on to its layers, and [`JsonLog`] needs it for the ids.
    match format {
        LogFormat::Json => tracing::Dispatch::new(registry.with(JsonLog::new(lines))),
        LogFormat::Text => tracing::Dispatch::new(
            registry.with(tracing_subscriber::fmt::layer().compact().with_ansi(ansi).with_writer(lines)),
        ),
    }
}

/// Installs the global subscriber, propagator and meter provider (see [`crate::metrics`]).
/// Safe to call more than once (tests): later calls keep the first subscriber.
pub fn init(service: &str, format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn"));

    let provider = tracer_provider(service, otlp_endpoint)?;
    let exporting = otlp_endpoint.is_some_and(|e| !e.is_empty());
    if exporting {
        global::set_tracer_provider(provider.clone());
    }
    let meter_provider = crate::metrics::init(service, otlp_endpoint)?;

    // Lines leave from a thread of their own, in batches (see [`output`]).
    let output = output::Output::start(std::io::stderr(), output::WINDOW, output::LIMIT)?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let result = subscriber(filter, &provider, service, format, ansi, output.lines()).try_init();
    if result.is_err() {
        tracing::debug!("telemetry already initialised");
    }
    Ok(TelemetryGuard { provider: exporting.then_some(provider), meter_provider, output })
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

/// A span's fields, kept in the span's extensions; a field recorded again replaces its value.
struct SpanFields(Vec<(&'static str, Value)>);

/// Records a span's fields as JSON values.
struct SpanVisitor<'a>(&'a mut Vec<(&'static str, Value)>);

impl SpanVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        match self.0.iter_mut().find(|(name, _)| *name == field.name()) {
            Some((_, slot)) => *slot = value,
            None => self.0.push((field.name(), value)),
        }
    }
}

impl tracing::field::Visit for SpanVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

/// The keys a line sets itself; an event's field of the same name is left out.
const LINE_KEYS: [&str; 7] = ["timestamp", "level", "target", "span", "spans", "trace_id", "span_id"];

/// Writes an event's fields straight into its line, with nothing built in between.
struct EventVisitor<'a, M>(&'a mut M);

impl<M: SerializeMap> EventVisitor<'_, M> {
    fn put(&mut self, field: &Field, value: &(impl serde::Serialize + ?Sized)) {
        if !LINE_KEYS.contains(&field.name()) {
            let _ = self.0.serialize_entry(field.name(), value);
        }
    }
}

/// Serializes as the string its `Debug` writes, escaped on the way out.
struct AsDebug<'a>(&'a dyn std::fmt::Debug);

impl serde::Serialize for AsDebug<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:?}", self.0))
    }
}

impl<M: SerializeMap> tracing::field::Visit for EventVisitor<'_, M> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // Not a number JSON can carry (NaN, infinities) is null.
        self.put(field, &serde_json::Number::from_f64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, &value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, &value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, &value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, &AsDebug(&format_args!("{value}")));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, &AsDebug(value));
    }
}

/// A span as a line shows it: its fields and its `name`.
struct SpanJson<'a, 'r, R: LookupSpan<'r>>(&'a tracing_subscriber::registry::SpanRef<'r, R>);

impl<'r, R: LookupSpan<'r>> serde::Serialize for SpanJson<'_, 'r, R> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let extensions = self.0.extensions();
        let fields = extensions.get::<SpanFields>().map_or(&[][..], |f| &f.0[..]);
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in fields.iter().filter(|(name, _)| *name != "name") {
            map.serialize_entry(name, value)?;
        }
        map.serialize_entry("name", self.0.name())?;
        map.end()
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
            let mut fields = Vec::with_capacity(attrs.fields().len());
            attrs.record(&mut SpanVisitor(&mut fields));
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut SpanVisitor(&mut fields.0));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut line = Vec::with_capacity(512);
        if self.write_line(&mut line, event, &ctx).is_ok() {
            line.push(b'\n');
            let _ = self.make_writer.make_writer_for(event.metadata()).write_all(&line);
        }
    }
}

impl<W> JsonLog<W> {
    /// An event's line, serialized as it goes: no map of the line's fields is built first.
    fn write_line<S>(
        &self,
        line: &mut Vec<u8>,
        event: &tracing::Event<'_>,
        ctx: &Context<'_, S>,
    ) -> Result<(), serde_json::Error>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let mut serializer = serde_json::Serializer::new(line);
        let mut map = serializer.serialize_map(None)?;
        let mut timestamp = String::with_capacity(32);
        if tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp)).is_ok() {
            map.serialize_entry("timestamp", &timestamp)?;
        }
        let metadata = event.metadata();
        map.serialize_entry("level", metadata.level().as_str())?;
        map.serialize_entry("target", metadata.target())?;
        event.record(&mut EventVisitor(&mut map));

        if let Some(current) = ctx.event_span(event) {
            map.serialize_entry("span", &SpanJson(&current))?;
            let spans: Vec<_> = current.scope().from_root().collect();
            map.serialize_key("spans")?;
            map.serialize_value(&SpansJson(&spans))?;
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
                    map.serialize_entry("trace_id", &AsDebug(&format_args!("{}", ids.trace_id())))?;
                    map.serialize_entry("span_id", &AsDebug(&format_args!("{}", ids.span_id())))?;
                }
            }
        }
        map.end()
    }
}

/// The spans an event sits in, root first.
struct SpansJson<'a, 'r, R: LookupSpan<'r>>(&'a [tracing_subscriber::registry::SpanRef<'r, R>]);

impl<'r, R: LookupSpan<'r>> serde::Serialize for SpansJson<'_, 'r, R> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(SpanJson))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::CapturedLogs;

    #[test]
    fn a_json_line_holds_the_events_fields_its_span_and_the_spans_it_sits_in() {
        let logs = CapturedLogs::default();
        let subscriber = tracing_subscriber::registry().with(JsonLog::new(logs.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("outer", team = "t\"1", status = tracing::field::Empty);
            let _outer = outer.enter();
            outer.record("status", 3);
            outer.record("status", 4);
            let inner = tracing::info_span!("inner", share = 2.5);
            let _inner = inner.enter();
            tracing::warn!(level = "not the level", count = 7u64, ok = true, error = %"boom", "a \"quoted\" message");
        });
        let text = logs.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.ends_with('\n'));
        let line: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["level"], "WARN", "an event's field never replaces the line's own: {line}");
        assert_eq!(line["message"], "a \"quoted\" message");
        assert_eq!(line["count"], 7);
        assert_eq!(line["ok"], true);
        assert_eq!(line["error"], "boom");
        assert_eq!(line["target"], module_path!());
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
        assert_eq!(line["span"], serde_json::json!({"name": "inner", "share": 2.5}));
        let spans = line["spans"].as_array().expect("spans");
        assert_eq!(spans.len(), 2);
        assert_eq!(
            spans[0],
            serde_json::json!({"name": "outer", "team": "t\"1", "status": 4}),
            "recorded last wins"
        );
        assert_eq!(spans[1], line["span"]);
        assert!(line.get("trace_id").is_none(), "no OpenTelemetry layer, no ids: {line}");
    }
}
