//! Resident memory of the service processes, from /proc, sampled in the background so that
//! the peak under load is seen; and the CPU time processes have used.

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

/// CPU time (user and system) a process has used, in seconds: /proc counts it in ticks of
/// USER_HZ, which Linux fixes at 100 a second for /proc whatever the kernel's own tick.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: the fields counted are after it.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    // utime and stime are fields 14 and 15; the state (field 3) comes first after the name.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
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

    #[test]
    fn counts_the_cpu_time_it_spends() {
        let before = super::cpu_seconds(std::process::id()).expect("this process's CPU time");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let spent = super::cpu_seconds(std::process::id()).unwrap() - before;
        // 300 ms of spinning, read in ticks of 10 ms (and the test threads beside it).
        assert!((0.2..2.0).contains(&spent), "{spent} s");
    }
}
