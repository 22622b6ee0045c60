//! Resident memory of the service processes, from /proc, sampled in the background so that
//! the peak under load is seen.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

/// VmRSS of a process, in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The highest RSS seen of each named process since it started sampling.
#[derive(Clone, Default)]
pub struct Peaks(Arc<Mutex<HashMap<String, f64>>>);

impl Peaks {
    /// Samples every 100 ms until the returned handle is dropped or aborted.
    pub fn sample(&self, pids: Vec<(String, u32)>) -> tokio::task::JoinHandle<()> {
        let peaks = self.0.clone();
        tokio::spawn(async move {
            loop {
                for (name, pid) in &pids {
                    if let Some(mib) = rss_mib(*pid) {
                        let mut peaks = peaks.lock().expect("peaks");
                        let peak = peaks.entry(name.clone()).or_default();
                        *peak = peak.max(mib);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    pub fn get(&self, name: &str) -> f64 {
        self.0.lock().expect("peaks").get(name).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_its_own_rss() {
        let mib = super::rss_mib(std::process::id()).expect("this process's RSS");
        assert!(mib > 0.5 && mib < 4096.0, "{mib}");
    }
}
