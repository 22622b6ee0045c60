//! The PostgreSQL baselines: `pgbench` running a script of the same statements as the RPC, as
//! prepared statements, at the same concurrency.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, bail};

/// pgbench running `script` with `vars` at `clients` clients, against the database at `url`.
#[derive(Clone, Debug)]
pub struct Pgbench {
    url: String,
    script: PathBuf,
    clients: usize,
    vars: Vec<(String, String)>,
}

impl Pgbench {
    pub fn new(url: &str, script: &str, clients: usize, vars: &[(&str, &str)]) -> Self {
        Self {
            url: url.to_owned(),
            script: self::script(script),
            clients,
            vars: vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    /// Runs for `duration` (whole seconds, at least one) on a blocking thread, and returns the
    /// transactions (script runs) a second that pgbench reports, without connection time.
    pub async fn tps(&self, duration: Duration) -> anyhow::Result<f64> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let vars: Vec<(&str, &str)> = this.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            tps(&this.url, &this.script, this.clients, duration, &vars)
        })
        .await
        .context("the pgbench thread")?
    }
}

fn tps(
    url: &str,
    script: &Path,
    clients: usize,
    duration: Duration,
    vars: &[(&str, &str)],
) -> anyhow::Result<f64> {
    let mut cmd = Command::new("pgbench");
    cmd.args(["--no-vacuum", "--protocol=prepared", "--jobs=1"])
        .arg(format!("--client={clients}"))
        .arg(format!("--time={}", duration.as_secs().max(1)))
        .arg(format!("--file={}", script.display()));
    for (name, value) in vars {
        cmd.arg(format!("--define={name}={value}"));
    }
    cmd.arg(url);
    let output = cmd.output().context("running pgbench (is it on the PATH?)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("pgbench failed: {}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    parse_tps(&stdout).with_context(|| format!("no tps in pgbench's output:\n{stdout}"))
}

/// `tps = 1234.5 (without initial connection time)`.
fn parse_tps(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .find(|l| l.starts_with("tps = ") && l.contains("without"))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The script file shipped with the bench.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pgbench").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_rate_without_connection_time() {
        let out = "number of failed transactions: 0 (0.000%)\nlatency average = 3.1 ms\n\
                   initial connection time = 12.3 ms\ntps = 5123.456789 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(5123.456789));
        assert_eq!(parse_tps("nothing"), None);
    }

    #[test]
    fn the_scripts_exist() {
        for name in ["register_deal.sql", "record_payment.sql", "tier_status.sql"] {
            assert!(script(name).is_file(), "{name}");
        }
    }
}
