//! The Prometheus text exposition format (version 0.0.4) of collected OpenTelemetry metrics:
//! counters and gauges as one sample per label set, histograms as cumulative `_bucket{le=…}`
//! samples ending with `+Inf`, then `_sum` and `_count`. Names and label names are sanitised
//! to what Prometheus accepts; a monotonic sum's name ends in `_total`.

use std::{collections::BTreeMap, fmt::Write as _};

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

pub type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    Value {
        labels: Labels,
        value: f64,
    },
    Histogram {
        labels: Labels,
        /// Upper bounds, ascending, without `+Inf`.
        bounds: Vec<f64>,
        /// Observations per bucket (not cumulative): one more than `bounds`, the last above
        /// every bound.
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

/// The samples of one metric name.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

/// `name` with every character Prometheus does not allow in a metric name replaced by `_`,
/// and a leading `_` when it would start with a digit.
pub fn metric_name(name: &str) -> String {
    sanitise(name, true)
}

/// `name` as a label name: like [`metric_name`], without colons.
pub fn label_name(name: &str) -> String {
    sanitise(name, false)
}

fn sanitise(name: &str, colons: bool) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for (i, c) in name.chars().enumerate() {
        if i == 0 && c.is_ascii_digit() {
            out.push('_');
        }
        let allowed = c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':');
        out.push(if allowed { c } else { '_' });
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        value.to_string()
    }
}

fn write_labels(out: &mut String, labels: &[(String, String)], extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let all = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(extra);
    for (i, (key, value)) in all.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        escape_label_value(value, out);
        out.push('"');
    }
    out.push('}');
}

/// The exposition text of `families`, one `# HELP` and `# TYPE` per family.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for family in families {
        let name = &family.name;
        if !family.help.is_empty() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
        }
        let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
        for sample in &family.samples {
            match sample {
                Sample::Value { labels, value } => {
                    out.push_str(name);
                    write_labels(&mut out, labels, None);
                    let _ = writeln!(out, " {}", number(*value));
                }
                Sample::Histogram { labels, bounds, counts, sum, count } => {
                    let mut cumulative = 0u64;
                    for (i, bound) in bounds.iter().enumerate() {
                        cumulative += counts.get(i).copied().unwrap_or(0);
                        let _ = write!(out, "{name}_bucket");
                        write_labels(&mut out, labels, Some(("le", &number(*bound))));
                        let _ = writeln!(out, " {cumulative}");
                    }
                    let _ = write!(out, "{name}_bucket");
                    write_labels(&mut out, labels, Some(("le", "+Inf")));
                    let _ = writeln!(out, " {count}");
                    let _ = write!(out, "{name}_sum");
                    write_labels(&mut out, labels, None);
                    let _ = writeln!(out, " {}", number(*sum));
                    let _ = write!(out, "{name}_count");
                    write_labels(&mut out, labels, None);
                    let _ = writeln!(out, " {count}");
                }
            }
        }
    }
    out
}

fn labels_of<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> Labels {
    let mut labels: Labels =
        attributes.map(|kv| (label_name(kv.key.as_str()), kv.value.as_str().into_owned())).collect();
    labels.sort();
    labels
}

/// The families of a collection, by name; metrics of the same name from several scopes are
/// joined, the first one's kind and help kept. Exponential histograms are left out.
pub fn families(collected: &ResourceMetrics) -> Vec<Family> {
    let mut by_name: BTreeMap<String, Family> = BTreeMap::new();
    for scope in collected.scope_metrics() {
        for metric in scope.metrics() {
            if let Some(family) = family(metric) {
                match by_name.get_mut(&family.name) {
                    Some(existing) if existing.kind == family.kind => existing.samples.extend(family.samples),
                    Some(_) => {}
                    None => {
                        by_name.insert(family.name.clone(), family);
                    }
                }
            }
        }
    }
    let mut families: Vec<Family> = by_name.into_values().collect();
    for family in &mut families {
        family.samples.sort_by(|a, b| sample_labels(a).cmp(sample_labels(b)));
    }
    families
}

fn sample_labels(sample: &Sample) -> &Labels {
    match sample {
        Sample::Value { labels, .. } | Sample::Histogram { labels, .. } => labels,
    }
}

fn family(metric: &Metric) -> Option<Family> {
    match metric.data() {
        AggregatedMetrics::F64(data) => family_of(metric, data, |v| v),
        AggregatedMetrics::U64(data) => family_of(metric, data, |v| v as f64),
        AggregatedMetrics::I64(data) => family_of(metric, data, |v| v as f64),
    }
}

fn family_of<T: Copy>(metric: &Metric, data: &MetricData<T>, to_f64: impl Fn(T) -> f64) -> Option<Family> {
    let mut name = metric_name(metric.name());
    let (kind, samples) = match data {
        MetricData::Gauge(gauge) => (
            Kind::Gauge,
            gauge
                .data_points()
                .map(|p| Sample::Value { labels: labels_of(p.attributes()), value: to_f64(p.value()) })
                .collect(),
        ),
        MetricData::Sum(sum) => {
            let kind = if sum.is_monotonic() {
                if !name.ends_with("_total") {
                    name.push_str("_total");
                }
                Kind::Counter
            } else {
                Kind::Gauge
            };
            let samples = sum
                .data_points()
                .map(|p| Sample::Value { labels: labels_of(p.attributes()), value: to_f64(p.value()) })
                .collect();
            (kind, samples)
        }
        MetricData::Histogram(histogram) => (
            Kind::Histogram,
            histogram
                .data_points()
                .map(|p| Sample::Histogram {
                    labels: labels_of(p.attributes()),
                    bounds: p.bounds().collect(),
                    counts: p.bucket_counts().collect(),
                    sum: to_f64(p.sum()),
                    count: p.count(),
                })
                .collect(),
        ),
        MetricData::ExponentialHistogram(_) => return None,
    };
    Some(Family { name, help: metric.description().to_owned(), kind, samples })
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider, reader::MetricReader};

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(metric_name("rpc.server.duration"), "rpc_server_duration");
        assert_eq!(metric_name("ns:requests_total"), "ns:requests_total");
        assert_eq!(metric_name("9lives"), "_9lives");
        assert_eq!(metric_name("a-b c/é"), "a_b_c__");
        assert_eq!(label_name("k8s:pod.name"), "k8s_pod_name");
        assert_eq!(label_name(""), "_");
    }

    #[test]
    fn counters_and_gauges_render_one_line_per_label_set_with_escaped_values() {
        let families = [
            Family {
                name: "jobs_total".into(),
                help: "Jobs done\\or \"not\"\nat all".into(),
                kind: Kind::Counter,
                samples: vec![
                    Sample::Value { labels: labels(&[("queue", "a\"b\\c\nd")]), value: 3.0 },
                    Sample::Value { labels: vec![], value: 0.5 },
                ],
            },
            Family { name: "temperature".into(), help: String::new(), kind: Kind::Gauge, samples: vec![] },
        ];
        assert_eq!(
            render(&families),
            "# HELP jobs_total Jobs done\\\\or \"not\"\\nat all\n\
             # TYPE jobs_total counter\n\
             jobs_total{queue=\"a\\\"b\\\\c\\nd\"} 3\n\
             jobs_total 0.5\n\
             # TYPE temperature gauge\n"
        );
    }

    #[test]
    fn histograms_render_cumulative_buckets_then_sum_and_count() {
        let families = [Family {
            name: "latency_seconds".into(),
            help: "Latency".into(),
            kind: Kind::Histogram,
            samples: vec![Sample::Histogram {
                labels: labels(&[("code", "OK"), ("method", "Get")]),
                bounds: vec![0.0005, 0.1, 1.0],
                counts: vec![1, 2, 0, 4],
                sum: 12.25,
                count: 7,
            }],
        }];
        assert_eq!(
            render(&families),
            "# HELP latency_seconds Latency\n\
             # TYPE latency_seconds histogram\n\
             latency_seconds_bucket{code=\"OK\",method=\"Get\",le=\"0.0005\"} 1\n\
             latency_seconds_bucket{code=\"OK\",method=\"Get\",le=\"0.1\"} 3\n\
             latency_seconds_bucket{code=\"OK\",method=\"Get\",le=\"1\"} 3\n\
             latency_seconds_bucket{code=\"OK\",method=\"Get\",le=\"+Inf\"} 7\n\
             latency_seconds_sum{code=\"OK\",method=\"Get\"} 12.25\n\
             latency_seconds_count{code=\"OK\",method=\"Get\"} 7\n"
        );
    }

    #[test]
    fn special_values() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(1e-7), "0.0000001");
        assert_eq!(number(10.0), "10");
    }

    /// Instruments of a real SDK pipeline, collected and rendered: counter names gain `_total`,
    /// up-down counters are gauges, labels come out sorted and sanitised.
    #[test]
    fn sdk_collections_render() {
        #[derive(Clone, Debug)]
        struct Shared(std::sync::Arc<ManualReader>);
        impl MetricReader for Shared {
            fn register_pipeline(&self, p: std::sync::Weak<opentelemetry_sdk::metrics::Pipeline>) {
                self.0.register_pipeline(p);
            }
            fn collect(&self, rm: &mut ResourceMetrics) -> opentelemetry_sdk::error::OTelSdkResult {
                self.0.collect(rm)
            }
            fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
                self.0.force_flush()
            }
            fn shutdown_with_timeout(
                &self,
                t: std::time::Duration,
            ) -> opentelemetry_sdk::error::OTelSdkResult {
                self.0.shutdown_with_timeout(t)
            }
            fn temporality(
                &self,
                k: opentelemetry_sdk::metrics::InstrumentKind,
            ) -> opentelemetry_sdk::metrics::Temporality {
                self.0.temporality(k)
            }
        }
        let reader = Shared(std::sync::Arc::new(ManualReader::builder().build()));
        let provider = SdkMeterProvider::builder().with_reader(reader.clone()).build();
        let meter = provider.meter("test");
        let counter = meter.u64_counter("http.requests").with_description("Requests").build();
        counter.add(2, &[KeyValue::new("z.key", "last"), KeyValue::new("a", "first")]);
        counter.add(1, &[KeyValue::new("z.key", "last"), KeyValue::new("a", "first")]);
        let in_flight = meter.i64_up_down_counter("in_flight").build();
        in_flight.add(-2, &[]);
        let histogram = meter.f64_histogram("wait_seconds").with_boundaries(vec![0.1, 1.0]).build();
        for v in [0.05, 0.5, 0.7, 3.0] {
            histogram.record(v, &[]);
        }

        let mut collected = ResourceMetrics::default();
        reader.collect(&mut collected).unwrap();
        let text = render(&families(&collected));
        for line in [
            "# HELP http_requests_total Requests",
            "# TYPE http_requests_total counter",
            "http_requests_total{a=\"first\",z_key=\"last\"} 3",
            "# TYPE in_flight gauge",
            "in_flight -2",
            "# TYPE wait_seconds histogram",
            "wait_seconds_bucket{le=\"0.1\"} 1",
            "wait_seconds_bucket{le=\"1\"} 3",
            "wait_seconds_bucket{le=\"+Inf\"} 4",
            "wait_seconds_sum 4.25",
            "wait_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from\n{text}");
        }
    }
}
