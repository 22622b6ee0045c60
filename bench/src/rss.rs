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
        use std::time::{Duration, Instant};
        let me = std::process::id();
        let before = super::cpu_seconds(me).expect("this process's CPU time");
        let started = Instant::now();
        // Spin until a tenth of a second of CPU shows, however busy the machine: a misread
        // field (a constant, or a time that does not grow) never gets there.
        let mut x = 0u64;
        let spent = loop {
            let spent = super::cpu_seconds(me).unwrap() - before;
            if spent >= 0.1 {
                break spent;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no CPU time counted: {spent} s");
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        };
        // No more than every core could have spent meanwhile (and a tick of /proc's rounding).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let most = started.elapsed().as_secs_f64() * cores + 0.02;
        assert!(spent <= most, "{spent} s of CPU in {:?}", started.elapsed());
    }
}
