//! Resident memory of the service processes, from /proc, sampled in the background so that
//! the peak under load is seen; and the CPU time and context switches processes have used.

use std::{
    cell::{OnceCell, RefCell},
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

/// VmRSS of a process, in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    Some(proc_field(&format!("/proc/{pid}/status"), "VmRSS:")? / 1024.0)
}

/// The number after `name` on its line of the /proc file at `path` (`VmRSS:   1234 kB`,
/// `ctxt 56`, `rchar: 78`); `None` when the file or the line is not there.
fn proc_field(path: &str, name: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse().ok())
}

/// The ticks a second /proc counts CPU time in (USER_HZ): Linux fixes it at 100 for /proc
/// whatever the kernel's own tick.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time (user and system) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: the fields counted are after it.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    // utime and stime are fields 14 and 15; the state (field 3) comes first after the name.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// What overload follows over each kind of slice, a count that only grows: CPU seconds of a
/// process, of PostgreSQL (every process of that name, its backends one per connection) or
/// of the machine in interrupts or idle (from /proc/stat: time no process is charged with);
/// the times threads gave up a core; or the bytes PostgreSQL read from files. A backend that
/// exits between two readings takes its counts with it, so PostgreSQL's difference is only
/// whole while the pools keep their connections, as the services' do through a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tally {
    Cpu(u32),
    PostgresCpu,
    Interrupts,
    Idle,
    /// A process's threads' context switches of one kind.
    Switches(u32, Switch),
    PostgresSwitches(Switch),
    /// Every context switch on the machine (/proc/stat's `ctxt`).
    MachineSwitches,
    /// The bytes PostgreSQL's processes read from files (`rchar` of /proc/PID/io, which
    /// counts `read` and `pread` but not a socket's `recv`): the pages a statement did not
    /// find in PostgreSQL's shared buffers, read from the kernel's page cache or the disk.
    PostgresFileReads,
}

/// Why a thread gave up its core: it waited (for a socket, a timer, a lock), or it was
/// preempted while it could have run on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Switch {
    Waited,
    Preempted,
}

impl Tally {
    /// The count so far; `None` when it cannot be read (a process that has gone).
    #[cfg(test)]
    fn read(self) -> Option<f64> {
        self.read_with(&Reading::default())
    }

    /// Each of `tallies` so far (0 for one that cannot be read), each file read once for all
    /// of them: a reading between two slices is the generator's own CPU time.
    pub fn read_all(tallies: &[Tally]) -> Vec<f64> {
        let reading = Reading::default();
        tallies.iter().map(|t| t.read_with(&reading).unwrap_or_default()).collect()
    }

    /// The count so far, from what `reading` has already read.
    fn read_with(self, reading: &Reading) -> Option<f64> {
        let postgres = || reading.postgres.get_or_init(|| processes_named("postgres")).iter().copied();
        match self {
            Tally::Cpu(pid) => cpu_seconds(pid),
            Tally::PostgresCpu => Some(postgres().filter_map(cpu_seconds).sum()),
            // The `cpu` line: user nice system idle iowait irq softirq steal …, in ticks.
            Tally::Interrupts => machine_ticks(&[5, 6]),
            Tally::Idle => machine_ticks(&[3, 4]),
            Tally::Switches(pid, kind) => reading.switches(pid, kind),
            Tally::PostgresSwitches(kind) => {
                Some(postgres().filter_map(|pid| reading.switches(pid, kind)).sum())
            }
            Tally::PostgresFileReads => Some(postgres().filter_map(file_reads).sum()),
            Tally::MachineSwitches => proc_field("/proc/stat", "ctxt "),
        }
    }
}

/// What one reading of the tallies has read so far: PostgreSQL's processes, looked for once
/// (each look reads every process's command), and each process's context switches of both
/// kinds, from one pass over its threads' `status` files.
#[derive(Default)]
struct Reading {
    postgres: OnceCell<Vec<u32>>,
    switches: RefCell<HashMap<u32, Option<Switches>>>,
}

/// A process's context switches, summed over its threads.
#[derive(Clone, Copy)]
struct Switches {
    waited: f64,
    preempted: f64,
}

impl Reading {
    fn switches(&self, pid: u32, kind: Switch) -> Option<f64> {
        let counts = *self.switches.borrow_mut().entry(pid).or_insert_with(|| switches(pid));
        counts.map(|c| match kind {
            Switch::Waited => c.waited,
            Switch::Preempted => c.preempted,
        })
    }
}

/// A process's context switches (/proc/PID/task/*/status); `None` when it has gone.
fn switches(pid: u32) -> Option<Switches> {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut counts = Switches { waited: 0.0, preempted: 0.0 };
    for status in threads.flatten().filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok()) {
        for line in status.lines() {
            let count = |field: &str| line.strip_prefix(field)?.trim().parse::<f64>().ok();
            if let Some(n) = count("voluntary_ctxt_switches:") {
                counts.waited += n;
            } else if let Some(n) = count("nonvoluntary_ctxt_switches:") {
                counts.preempted += n;
            }
        }
    }
    Some(counts)
}

/// The bytes a process has read from files (/proc/PID/io's `rchar`); `None` when it has
/// gone, or its counts are not this user's to read.
fn file_reads(pid: u32) -> Option<f64> {
    proc_field(&format!("/proc/{pid}/io"), "rchar:")
}

/// The ids of the processes whose command is `name`.
fn processes_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .collect()
}

/// The sum of the `cpu` line's fields at `fields` (counted from 0 after the label), in seconds.
fn machine_ticks(fields: &[usize]) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> =
        stat.lines().next()?.split_whitespace().skip(1).map(|v| v.parse().unwrap_or_default()).collect();
    Some(fields.iter().map(|&f| ticks.get(f).copied().unwrap_or_default()).sum::<f64>() / TICKS_PER_SECOND)
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

    #[test]
    fn finds_processes_by_command_and_reads_the_machines_time() {
        use std::time::{Duration, Instant};
        let me = std::process::id();
        let command = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert!(super::processes_named(command.trim_end()).contains(&me), "{command:?}");
        assert!(super::processes_named("no-such-command-here").is_empty());
        // The machine's idle and interrupt time: read, never going back, and never more than
        // every core could have spent between two readings.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        for of in [super::Tally::Idle, super::Tally::Interrupts] {
            let started = Instant::now();
            let before = of.read().expect("/proc/stat");
            std::thread::sleep(Duration::from_millis(200));
            let grew = of.read().unwrap() - before;
            let most = started.elapsed().as_secs_f64() * cores + 0.02;
            assert!((0.0..=most).contains(&grew), "{of:?}: {grew} s in {:?}", started.elapsed());
        }
        // A process's own is its /proc time (read again just after, a tick or two later at most).
        let own = super::Tally::Cpu(me).read().unwrap();
        let again = super::cpu_seconds(me).unwrap();
        assert!((0.0..=0.05).contains(&(again - own)), "{own} then {again}");
    }

    #[test]
    fn counts_a_processs_waits_and_the_machines_switches() {
        use std::time::{Duration, Instant};

        use super::{Switch, Tally};
        // Each of this thread's sleeps is a switch of the machine's.
        let machine = Tally::MachineSwitches.read().expect("/proc/stat's ctxt");
        (0..10).for_each(|_| std::thread::sleep(Duration::from_millis(2)));
        assert!(Tally::MachineSwitches.read().unwrap() >= machine + 10.0);
        // A process asleep has waited at least once, and one that has gone has no count.
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        let started = Instant::now();
        while Tally::Switches(child.id(), Switch::Waited).read().unwrap_or_default() < 1.0 {
            assert!(started.elapsed() < Duration::from_secs(10), "sleep never waited");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(Tally::Switches(child.id(), Switch::Preempted).read().is_some());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(Tally::Switches(child.id(), Switch::Waited).read(), None);
        assert!(Tally::PostgresSwitches(Switch::Waited).read().is_some_and(|n| n >= 0.0));
    }

    #[test]
    fn counts_the_bytes_a_process_reads_from_files() {
        let me = std::process::id();
        let before = super::file_reads(me).expect("this process's /proc/PID/io");
        let file = std::env::temp_dir().join(format!("tandem-bench-reads-{me}"));
        std::fs::write(&file, vec![7u8; 64 * 1024]).unwrap();
        let read = std::fs::read(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(read.len(), 64 * 1024);
        let grew = super::file_reads(me).unwrap() - before;
        // The file's 64 KiB, and whatever else the test process read meanwhile (/proc itself).
        assert!(grew >= 64.0 * 1024.0, "{grew} bytes");
        assert!(super::Tally::PostgresFileReads.read().is_some_and(|n| n >= 0.0));
    }
}
