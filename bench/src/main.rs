//! `tandem-bench`: the four production binaries (release builds) on the local PostgreSQL and a
//! Redis of their own, loaded with realistic data, and each scenario measured against its
//! baseline in the same run. Writes the results as JSON (`--out FILE`) and a table on stdout.
//! `TANDEM_BENCH_QUICK=1` shortens every run; `TANDEM_BENCH_ONLY=a,b` runs only the scenarios
//! named; `TANDEM_BENCH_SET_NAME=value` sets `NAME` for every service. See docs/PERFORMANCE.md.

mod h2c;
mod load;
mod pgbench;
mod rss;
mod scenarios;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use serde::Serialize;

/// The generator allocates and frees a request's headers, buffers and futures at twice the
/// rate tiers serves under overload, on the cores the services share: with mimalloc a request
/// cost it about 8.5 µs of CPU under overload against 9.1–9.7 with glibc's malloc (PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long each measured run lasts, and its warm-up.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub run: Duration,
}

impl Timing {
    /// The slices a scenario's run is cut into, alternating with its baseline's: about ten
    /// seconds each, and at least two.
    pub fn slices(&self) -> u32 {
        (self.run.as_secs() / 10).max(2) as u32
    }

    /// The slices overload's run is cut into, alternating with its peak's: about two seconds
    /// each, and at least two. Nothing but the two kinds of load runs in between, so the
    /// slices can be short, and the shorter they are the closer in time each pair is: this
    /// machine's speed swings by half from one second to the next.
    pub fn overload_slices(&self) -> u32 {
        (self.run.as_secs() / 2).max(2) as u32
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub name: String,
    pub rps: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub baseline: Baseline,
    pub ratio: f64,
    /// The target, as the issue states it, and whether this run met it.
    pub target: String,
    pub met: bool,
    /// Scenario-specific figures (errors by code, goodput ratio, …).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub service: String,
    pub idle_rss_mib: f64,
    pub loaded_rss_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenarios: Vec<Scenario>,
    pub memory: Vec<Memory>,
    pub quick: bool,
    pub cpus: usize,
}

fn parse_args() -> anyhow::Result<Option<PathBuf>> {
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = Some(PathBuf::from(args.next().context("--out needs a file")?)),
            "-h" | "--help" => {
                println!(
                    "usage: tandem-bench [--out FILE]   (TANDEM_BENCH_QUICK=1 for a short run, TANDEM_BENCH_ONLY=a,b for some scenarios, TANDEM_BENCH_SET_NAME=value to set NAME for the services)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; usage: tandem-bench [--out FILE]"),
        }
    }
    Ok(out)
}

fn table(report: &Report) -> String {
    let mut s = format!(
        "{:<18} {:>10} {:>9} {:>9}  {:<34} {:>10} {:>7}  {}\n",
        "scenario", "rps", "p50 ms", "p99 ms", "baseline", "base rps", "ratio", "target"
    );
    for sc in &report.scenarios {
        s += &format!(
            "{:<18} {:>10.0} {:>9.2} {:>9.2}  {:<34} {:>10.0} {:>7.2}  {} {}\n",
            sc.name,
            sc.rps,
            sc.p50_ms,
            sc.p99_ms,
            sc.baseline.name,
            sc.baseline.rps,
            sc.ratio,
            sc.target,
            if sc.met { "met" } else { "MISSED" }
        );
    }
    s += &format!("\n{:<14} {:>10} {:>12}\n", "service", "idle MiB", "loaded MiB");
    for m in &report.memory {
        s += &format!("{:<14} {:>10.1} {:>12.1}\n", m.service, m.idle_rss_mib, m.loaded_rss_mib);
    }
    s
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let out = parse_args()?;
    // h2 and tonic make spans on the generator's hot paths. With no subscriber set, tracing's
    // `log` feature (on in this workspace) checks each of them against the `log` crate; a
    // subscriber that wants none turns them off where they are made.
    tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default())
        .context("setting the bench's tracing subscriber")?;
    let quick = std::env::var("TANDEM_BENCH_QUICK").is_ok_and(|v| v == "1");
    let timing = if quick {
        Timing { warmup: Duration::from_secs(2), run: Duration::from_secs(8) }
    } else {
        Timing { warmup: Duration::from_secs(5), run: Duration::from_secs(30) }
    };
    let only = scenarios::Only::from_env()?;
    let report = scenarios::run(timing, quick, only).await?;
    print!("{}", table(&report));
    if let Some(out) = out {
        std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", out.display()))?;
        println!("\nwrote {}", out.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_alternates_in_slices_of_about_two_seconds_and_the_rest_of_about_ten() {
        let timing = |run| Timing { warmup: Duration::from_secs(5), run: Duration::from_secs(run) };
        // A full run: fifteen pairs for overload, three for the scenarios with a pgbench baseline.
        assert_eq!(timing(30).overload_slices(), 15);
        assert_eq!(timing(30).slices(), 3);
        // A quick run, and one too short to cut: at least two pairs either way.
        assert_eq!(timing(8).overload_slices(), 4);
        assert_eq!(timing(8).slices(), 2);
        assert_eq!(timing(1).overload_slices(), 2);
    }
}
