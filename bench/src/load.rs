//! The load generator: closed-loop (N callers, each sending its next request when the last
//! one answered) and fixed-rate (requests sent on a schedule whatever the answers, each
//! timed from when the schedule meant to send it, so that a server falling behind shows as
//! latency instead of as fewer samples). Latencies go into HDR histograms.
//!
//! The load runs on [`Shards`]: event loops of the generator's own, one single-threaded runtime
//! on each of a few threads, each with its own connections. Within one event loop the requests
//! a loop turn makes are all queued before the connection's task writes, so they leave in one
//! write; on a shared multi-threaded runtime the connection's task ran on the other thread as
//! soon as the first was queued, and nearly every request went out in writes of its own, the
//! system calls and wake-ups of which the services then went without.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use tokio::{runtime::Handle, time::Instant};
use tonic::Code;

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Latency of the successful requests, in microseconds.
    pub ok: Histogram<u64>,
    /// Latency of the refused or failed ones, in microseconds.
    pub failed: Histogram<u64>,
    /// Failures by gRPC code.
    pub errors: BTreeMap<String, u64>,
    /// The first message of each code's failures, to tell what went wrong.
    pub messages: BTreeMap<String, String>,
    pub elapsed: Duration,
    /// Successes and failures answered in each second of the run, counted from its start;
    /// answers that came after the run's last second are counted in it. Slices run one after
    /// another follow each other here, so a stretch where the machine slowed can be told from
    /// a run that was slow throughout.
    pub per_second: Vec<[u64; 2]>,
}

impl Outcome {
    fn new() -> Self {
        Self {
            ok: histogram(),
            failed: histogram(),
            errors: BTreeMap::new(),
            messages: BTreeMap::new(),
            elapsed: Duration::ZERO,
            per_second: Vec::new(),
        }
    }

    /// Records a request answered `at` after the run's start, `latency` after it was meant
    /// to be sent.
    fn record(&mut self, at: Duration, latency: Duration, result: Result<(), tonic::Status>) {
        let micros = (latency.as_micros() as u64).max(1);
        let second = at.as_secs() as usize;
        if self.per_second.len() <= second {
            self.per_second.resize(second + 1, [0, 0]);
        }
        self.per_second[second][usize::from(result.is_err())] += 1;
        match result {
            Ok(()) => self.ok.saturating_record(micros),
            Err(status) => {
                self.failed.saturating_record(micros);
                // Under overload most requests are refused: a code seen before is counted
                // without allocating its name again.
                let name = code_name(status.code());
                match self.errors.get_mut(name) {
                    Some(n) => *n += 1,
                    None => {
                        self.errors.insert(name.to_owned(), 1);
                        self.messages.insert(name.to_owned(), status.message().to_owned());
                    }
                }
            }
        }
    }

    /// Adds the requests of `later`, a run made after this one: its time follows this one's.
    fn merge(&mut self, later: &Outcome) {
        self.elapsed += later.elapsed;
        self.per_second.extend_from_slice(&later.per_second);
        self.add_requests(later);
    }

    /// Adds the requests of `other`, a run made over the same span as this one.
    fn beside(&mut self, other: &Outcome) {
        self.elapsed = self.elapsed.max(other.elapsed);
        if self.per_second.len() < other.per_second.len() {
            self.per_second.resize(other.per_second.len(), [0, 0]);
        }
        for (mine, theirs) in self.per_second.iter_mut().zip(&other.per_second) {
            add_second(mine, theirs);
        }
        self.add_requests(other);
    }

    /// The run took `elapsed`: answers counted after its last whole second are moved into it,
    /// so that slices of whole seconds keep to their seconds when they follow each other.
    fn settle(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
        let seconds = (elapsed.as_secs() as usize).max(1);
        if self.per_second.len() > seconds {
            let late = self.per_second.split_off(seconds);
            let last = &mut self.per_second[seconds - 1];
            for second in &late {
                add_second(last, second);
            }
        } else {
            self.per_second.resize(seconds, [0, 0]);
        }
    }

    fn add_requests(&mut self, other: &Outcome) {
        self.ok.add(&other.ok).expect("same histogram bounds");
        self.failed.add(&other.failed).expect("same histogram bounds");
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
        for (code, message) in &other.messages {
            self.messages.entry(code.clone()).or_insert_with(|| message.clone());
        }
    }

    /// The outcomes of shards that ran side by side over the same span: their requests added,
    /// the span the longest of theirs.
    fn side_by_side(parts: Vec<Outcome>) -> Outcome {
        let mut total = Outcome::new();
        for part in &parts {
            total.beside(part);
        }
        total
    }

    /// The requests answered, successes and failures.
    pub fn answered(&self) -> u64 {
        self.ok.len() + self.failures()
    }

    /// Successful requests a second.
    pub fn rps(&self) -> f64 {
        self.ok.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn p50_ms(&self) -> f64 {
        self.ok.value_at_quantile(0.50) as f64 / 1000.0
    }

    pub fn p99_ms(&self) -> f64 {
        self.ok.value_at_quantile(0.99) as f64 / 1000.0
    }

    pub fn failures(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Failures with `code`.
    pub fn failures_with(&self, code: Code) -> u64 {
        self.errors.get(code_name(code)).copied().unwrap_or_default()
    }

    /// Failures with another code than `code`.
    pub fn failures_other_than(&self, code: Code) -> u64 {
        self.failures() - self.failures_with(code)
    }
}

/// Adds one second's successes and failures to another's.
fn add_second(to: &mut [u64; 2], from: &[u64; 2]) {
    to[0] += from[0];
    to[1] += from[1];
}

/// `code`'s name as [`Code`]'s `Debug` spells it, made once for each of the 17 codes.
fn code_name(code: Code) -> &'static str {
    static NAMES: LazyLock<Vec<String>> =
        LazyLock::new(|| (0..17).map(|n| format!("{:?}", Code::from_i32(n))).collect());
    NAMES.get(code as usize).map_or("Unknown", String::as_str)
}

/// Where the load runs: the generator's own event loops (see the module's notes), or, for
/// tests under tokio's paused clock, the runtime of the caller ([`Shards::here`]).
pub struct Shards {
    loops: Vec<Handle>,
}

impl Shards {
    /// `n` event loops, each a single-threaded runtime on a thread of its own, running until
    /// the process ends.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let mut loops = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let (handle_tx, handle_rx) = std::sync::mpsc::channel();
            std::thread::Builder::new().name(format!("load-{i}")).spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a load generator's runtime");
                handle_tx.send(runtime.handle().clone()).expect("the starting thread waits");
                runtime.block_on(std::future::pending::<()>());
            })?;
            loops.push(handle_rx.recv().map_err(std::io::Error::other)?);
        }
        Ok(Self { loops })
    }

    /// The caller's own runtime, as one shard.
    #[cfg(test)]
    pub fn here() -> Self {
        Self { loops: Vec::new() }
    }

    /// `work(shard, shards)` on every shard at once; the results in shard order.
    async fn each<W, Fut, R>(&self, work: W) -> Vec<R>
    where
        W: Fn(usize, usize) -> Fut,
        Fut: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        if self.loops.is_empty() {
            return vec![work(0, 1).await];
        }
        let n = self.loops.len();
        let running: Vec<_> = self.loops.iter().enumerate().map(|(i, l)| l.spawn(work(i, n))).collect();
        let mut results = Vec::with_capacity(n);
        for shard in running {
            results.push(shard.await.expect("a shard's load"));
        }
        results
    }
}

/// 1 µs to 60 s at three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// `concurrency` callers, each calling `call(caller, n)` (its n-th request) back to back, for
/// `warmup` (not recorded) and then `duration`; the callers are dealt out over the shards.
pub async fn closed_loop<F, Fut>(
    shards: &Shards,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    call: F,
) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let call = Arc::new(call);
    let parts = shards
        .each(|shard, n| {
            // Shard s of n runs callers s, s + n, s + 2n, …
            closed_loop_here((shard..concurrency).step_by(n), warmup, duration, call.clone())
        })
        .await;
    Outcome::side_by_side(parts)
}

/// The closed loop of `callers` on the runtime it runs on.
async fn closed_loop_here<F, Fut>(
    callers: impl Iterator<Item = usize>,
    warmup: Duration,
    duration: Duration,
    call: Arc<F>,
) -> Outcome
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for caller in callers {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::new();
            let mut n = 0;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let result = call(caller, n).await;
                n += 1;
                if sent >= measure_from {
                    outcome.record(measure_from.elapsed(), sent.elapsed(), result);
                }
            }
            outcome
        }));
    }
    let mut total = Outcome::new();
    for task in tasks {
        total.beside(&task.await.expect("a load task"));
    }
    total.settle(duration);
    total
}

/// The service and its baseline measured in turn, `slices` times each: `concurrency` callers
/// of `call` for a slice of `run` (after `warmup`, before the first slice only), then
/// `baseline` for as long, then the service again. A machine whose speed drifts during the run
/// then slows both alike, where one run after the other would lay the drift on one of them.
/// `call(caller, n)` makes the run's n-th request, n unique across callers and slices. Returns
/// the service's outcome over all its slices and the baseline's mean rate.
pub async fn alternating<F, Fut, B, BFut>(
    shards: &Shards,
    concurrency: usize,
    warmup: Duration,
    run: Duration,
    slices: u32,
    call: F,
    mut baseline: B,
) -> anyhow::Result<(Outcome, f64)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
    B: FnMut(Duration) -> BFut,
    BFut: Future<Output = anyhow::Result<f64>>,
{
    let slices = slices.max(1);
    let slice = run / slices;
    let call = Arc::new(call);
    let sequence = Arc::new(AtomicU64::new(0));
    let mut total = Outcome::new();
    let mut baseline_sum = 0.0;
    for i in 0..slices {
        let (call, sequence) = (call.clone(), sequence.clone());
        let warmup = if i == 0 { warmup } else { Duration::ZERO };
        let part = closed_loop(shards, concurrency, warmup, slice, move |caller, _| {
            call(caller, sequence.fetch_add(1, Ordering::Relaxed))
        })
        .await;
        total.merge(&part);
        baseline_sum += baseline(slice).await?;
    }
    Ok((total, baseline_sum / f64::from(slices)))
}

/// Overload measured against the peak it multiplies, in turn, `slices` times: `concurrency`
/// closed-loop callers for a slice of `run` (after `warmup`, before the first slice only,
/// measured by nothing), the peak; then `factor` times that slice's rate offered at a fixed
/// rate for as long. Each fixed-rate slice then follows the peak it is compared with, on a
/// machine whose speed drifts within minutes. `call(n)` makes the run's n-th request, n unique
/// across slices. What each of `watch` counted is taken over each kind of slice.
#[allow(clippy::too_many_arguments)]
pub async fn peak_then_fixed_rate<F, Fut>(
    shards: &Shards,
    concurrency: usize,
    warmup: Duration,
    run: Duration,
    slices: u32,
    factor: f64,
    watch: &[crate::rss::Tally],
    call: F,
) -> Overload
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let slices = slices.max(1);
    let slice = run / slices;
    let call = Arc::new(call);
    let sequence = Arc::new(AtomicU64::new(0));
    let mut overload = Overload {
        peak: Outcome::new(),
        offered: Outcome::new(),
        pairs: Vec::new(),
        tallies: vec![[0.0; 2]; watch.len()],
    };
    let now = || crate::rss::Tally::read_all(watch);
    if !warmup.is_zero() {
        // A run of its own, so that the slices' CPU time is of their own requests only.
        let (c, seq) = (call.clone(), sequence.clone());
        closed_loop(shards, concurrency, Duration::ZERO, warmup, move |_, _| {
            c(seq.fetch_add(1, Ordering::Relaxed))
        })
        .await;
    }
    for _ in 0..slices {
        let (c, seq) = (call.clone(), sequence.clone());
        let before = now();
        let part = closed_loop(shards, concurrency, Duration::ZERO, slice, move |_, _| {
            c(seq.fetch_add(1, Ordering::Relaxed))
        })
        .await;
        let between = now();
        let rate = factor * part.rps();
        overload.peak.merge(&part);
        if rate > 0.0 {
            let (c, seq) = (call.clone(), sequence.clone());
            let offered =
                fixed_rate(shards, rate, slice, move |_| c(seq.fetch_add(1, Ordering::Relaxed))).await;
            overload.pairs.push(offered.rps() / part.rps());
            overload.offered.merge(&offered);
        }
        for (tally, ((b, m), a)) in overload.tallies.iter_mut().zip(before.iter().zip(&between).zip(now())) {
            tally[0] += m - b;
            tally[1] += a - m;
        }
    }
    overload
}

/// What [`peak_then_fixed_rate`] measured.
#[derive(Debug)]
pub struct Overload {
    /// The closed loop's outcome over all its slices.
    pub peak: Outcome,
    /// The fixed rate's outcome over all its slices.
    pub offered: Outcome,
    /// Each fixed-rate slice's successes a second over the rate of the peak slice before it.
    pub pairs: Vec<f64>,
    /// What each of `watch` counted over the peak's slices and over the fixed rate's.
    pub tallies: Vec<[f64; 2]>,
}

/// The mean of `samples` and its standard error (the samples' standard deviation over the
/// square root of their number); `None` for fewer than two samples, which tell no spread.
///
/// Overload's pairs of slices read from about 0.65 to 1.25 within one run on this machine,
/// whose speed swings from one second to the next: a run's ratio is then known to a few
/// hundredths at best, and the standard error says how many.
pub fn mean_and_standard_error(samples: &[f64]) -> Option<(f64, f64)> {
    if samples.len() < 2 {
        return None;
    }
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let variance = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, (variance / n).sqrt()))
}

/// `rate` requests a second for `duration`, each sent at its scheduled time whether or not the
/// earlier ones answered, and timed from that scheduled time. `call(n)` makes the n-th. The
/// shards take the schedule's requests in turn: with two, one sends the even ones, the other
/// the odd ones.
pub async fn fixed_rate<F, Fut>(shards: &Shards, rate: f64, duration: Duration, call: F) -> Outcome
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let parts = shards
        .each(|shard, n| {
            let schedule = Schedule { start, interval, first: shard as u64, stride: n as u64, total };
            schedule.run(duration, call.clone())
        })
        .await;
    Outcome::side_by_side(parts)
}

/// One shard's share of a fixed-rate schedule: requests `first`, `first + stride`, … below
/// `total`, the i-th meant for `start + i × interval`.
struct Schedule {
    start: Instant,
    interval: Duration,
    first: u64,
    stride: u64,
    total: u64,
}

impl Schedule {
    async fn run<F, Fut>(self, duration: Duration, call: Arc<F>) -> Outcome
    where
        F: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
    {
        // The requests in flight are futures of this task's own, not tasks: under overload
        // the generator sends twice the rate the services can serve, and a task per request
        // (its spawn, its join handle's bookkeeping, a lock on an outcome shared by all) is
        // work on the machine the services share. Completions are recorded as they come.
        let mut outcome = Outcome::new();
        let mut in_flight = FuturesUnordered::new();
        let mut schedule = (self.first..self.total).step_by(self.stride.max(1) as usize).peekable();
        let at = |n: u64| self.start + self.interval.mul_f64(n as f64);
        let mut sent_over = None;
        let next_send = tokio::time::sleep_until(self.start);
        tokio::pin!(next_send);
        loop {
            let now = Instant::now();
            while let Some(&n) = schedule.peek() {
                let intended = at(n);
                if intended > now {
                    if next_send.deadline() != intended {
                        next_send.as_mut().reset(intended);
                    }
                    break;
                }
                schedule.next();
                let call = call(n);
                in_flight.push(async move {
                    let result = call.await;
                    (intended.elapsed(), result)
                });
            }
            let sending = schedule.peek().is_some();
            if !sending {
                // A generator short of CPU sends late; the requests then span more than
                // `duration`, and the rates are taken over that span rather than the one planned.
                sent_over.get_or_insert_with(|| self.start.elapsed());
                if in_flight.is_empty() {
                    break;
                }
            }
            tokio::select! {
                Some((latency, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    outcome.record(self.start.elapsed(), latency, result);
                }
                () = &mut next_send, if sending => {}
            }
        }
        outcome.settle(duration.max(sent_over.unwrap_or_default()));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Mutex};

    use crate::rss::Tally;

    use super::*;

    #[test]
    fn code_names_are_the_codes_debug_spelling() {
        for n in 0..17 {
            let code = Code::from_i32(n);
            assert_eq!(code_name(code), format!("{code:?}"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_rate_counts_queueing_from_the_intended_start() {
        // A server that answers one request at a time in 20 ms, offered 100 a second: each
        // request waits behind the ones before it, and the histogram must show that wait.
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let outcome = fixed_rate(&Shards::here(), 100.0, Duration::from_secs(1), move |_| {
            let lock = lock.clone();
            async move {
                let _one_at_a_time = lock.lock().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(())
            }
        })
        .await;
        assert_eq!(outcome.ok.len(), 100);
        // The last one was meant for 990 ms and finished at 100 × 20 ms = 2 s.
        assert!(outcome.ok.max() >= 990_000, "max {} µs", outcome.ok.max());
    }

    /// The name of the thread a request was made on.
    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn fixed_rate_deals_the_schedule_out_over_the_shards_each_request_once() {
        let shards = Shards::start(2).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        // 400 a second for half a second: requests 0..200, the even ones on one shard and the
        // odd ones on the other, both on the generator's threads.
        let outcome = fixed_rate(&shards, 400.0, Duration::from_millis(500), move |n| {
            log.lock().unwrap().push((n, thread_name()));
            async move { if n % 10 == 0 { Err(tonic::Status::resource_exhausted("busy")) } else { Ok(()) } }
        })
        .await;
        let mut seen = std::mem::take(&mut *seen.lock().unwrap());
        seen.sort();
        assert_eq!(seen.iter().map(|(n, _)| *n).collect::<Vec<_>>(), (0..200).collect::<Vec<_>>());
        for (n, thread) in &seen {
            assert!(thread.starts_with("load-"), "request {n} made on {thread:?}");
        }
        let even: std::collections::HashSet<_> =
            seen.iter().filter(|(n, _)| n % 2 == 0).map(|(_, t)| t).collect();
        let odd: std::collections::HashSet<_> =
            seen.iter().filter(|(n, _)| n % 2 == 1).map(|(_, t)| t).collect();
        assert_eq!((even.len(), odd.len()), (1, 1), "each parity on one shard");
        assert_ne!(even, odd, "the parities on different shards");
        assert_eq!(outcome.ok.len(), 180);
        assert_eq!(outcome.failures(), 20);
        // Side by side, not one after the other: the span is the schedule's, not the sum of
        // the shards' (a second).
        assert!(outcome.elapsed >= Duration::from_millis(500), "{:?}", outcome.elapsed);
        assert!(outcome.elapsed < Duration::from_millis(1000), "{:?}", outcome.elapsed);
    }

    #[tokio::test]
    async fn closed_loop_deals_the_callers_out_over_the_shards() {
        let shards = Shards::start(2).unwrap();
        let callers = Arc::new(Mutex::new(HashMap::new()));
        let calls = Arc::new(AtomicU64::new(0));
        let (log, count) = (callers.clone(), calls.clone());
        let outcome =
            closed_loop(&shards, 5, Duration::ZERO, Duration::from_millis(300), move |caller, _| {
                log.lock().unwrap().entry(caller).or_insert_with(thread_name);
                count.fetch_add(1, Ordering::Relaxed);
                async {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok(())
                }
            })
            .await;
        let callers = callers.lock().unwrap();
        let mut ids: Vec<_> = callers.keys().copied().collect();
        ids.sort();
        assert_eq!(ids, vec![0, 1, 2, 3, 4], "five callers, each its own index");
        let threads: std::collections::HashSet<_> = callers.values().collect();
        assert_eq!(threads.len(), 2, "callers on both shards: {threads:?}");
        // Side by side: the span is the run's, and every shard's requests are counted.
        assert_eq!(outcome.elapsed, Duration::from_millis(300));
        assert_eq!(outcome.ok.len(), calls.load(Ordering::Relaxed));
    }

    #[test]
    fn the_standard_error_is_the_spread_of_the_mean() {
        // Mean 1.0; squared deviations 0.04, 0, 0.04, 0 sum to 0.08; over n − 1 = 3, a
        // variance of 0.08 / 3; over n = 4 and rooted, the standard error.
        let (mean, standard_error) = mean_and_standard_error(&[0.8, 1.0, 1.2, 1.0]).unwrap();
        assert!((mean - 1.0).abs() < 1e-12, "{mean}");
        assert!((standard_error - (0.08_f64 / 3.0 / 4.0).sqrt()).abs() < 1e-12, "{standard_error}");
        // Pairs that all agree leave no doubt; one pair, or none, says nothing of the spread.
        let (mean, standard_error) = mean_and_standard_error(&[0.9, 0.9, 0.9]).unwrap();
        assert!((mean - 0.9).abs() < 1e-12 && standard_error < 1e-12, "{mean} ± {standard_error}");
        assert_eq!(mean_and_standard_error(&[0.9]), None);
        assert_eq!(mean_and_standard_error(&[]), None);
    }

    #[tokio::test(start_paused = true)]
    async fn overload_slices_follow_the_peak_they_double() {
        // A server that serves two requests at a time in 10 ms and refuses the rest: its peak
        // with two callers is 200 a second, and offered 400 it still serves about 200.
        let permits = Arc::new(tokio::sync::Semaphore::new(2));
        let seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let unique = seen.clone();
        let Overload { peak, offered, pairs, tallies: cpu } = peak_then_fixed_rate(
            &Shards::here(),
            2,
            Duration::from_millis(500),
            Duration::from_secs(4),
            2,
            2.0,
            &[Tally::Cpu(std::process::id()), Tally::Cpu(u32::MAX)],
            move |n| {
                let (permits, seen) = (permits.clone(), seen.clone());
                async move {
                    assert!(seen.lock().unwrap().insert(n), "request {n} made twice");
                    let Ok(_serving) = permits.try_acquire() else {
                        return Err(tonic::Status::resource_exhausted("busy"));
                    };
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok(())
                }
            },
        )
        .await;
        assert_eq!(peak.elapsed, Duration::from_secs(4));
        assert_eq!(offered.elapsed, Duration::from_secs(4));
        let (peak_rps, goodput) = (peak.rps(), offered.rps());
        assert!((190.0..=210.0).contains(&peak_rps), "peak {peak_rps}");
        assert!((180.0..=210.0).contains(&goodput), "goodput {goodput}");
        // Twice the peak offered: about as many refused as served.
        let refused = offered.errors.get("ResourceExhausted").copied().unwrap_or_default() as f64;
        assert!((0.8..=1.2).contains(&(refused / offered.ok.len() as f64)), "refused {refused}");
        assert!(unique.lock().unwrap().len() as u64 >= peak.ok.len() + offered.ok.len() + refused as u64);
        assert_eq!(pairs.len(), 2, "one ratio a pair of slices: {pairs:?}");
        assert!(pairs.iter().all(|r| (0.85..=1.1).contains(r)), "pairs {pairs:?}");
        // Second by second, the two slices of each one after the other: every second served
        // about 200, and under overload refused about as many again.
        assert_eq!(peak.per_second.len(), 4, "{:?}", peak.per_second);
        assert_eq!(offered.per_second.len(), 4, "{:?}", offered.per_second);
        assert!(
            peak.per_second.iter().all(|[ok, failed]| (180..=210).contains(ok) && *failed == 0),
            "{:?}",
            peak.per_second
        );
        assert!(
            offered
                .per_second
                .iter()
                .all(|[ok, refused]| (170..=210).contains(ok) && (160..=240).contains(refused)),
            "{:?}",
            offered.per_second
        );
        let sum = |seconds: &[[u64; 2]], i: usize| seconds.iter().map(|s| s[i]).sum::<u64>();
        assert_eq!(sum(&peak.per_second, 0), peak.ok.len());
        assert_eq!(sum(&offered.per_second, 0), offered.ok.len());
        assert_eq!(sum(&offered.per_second, 1), offered.failures());
        // This process's CPU over each kind of slice (little: the clock is paused, though tests
        // beside this one spend theirs too), and none for a process that is not there.
        assert_eq!(cpu.len(), 2);
        assert!(cpu[0].iter().all(|s| (0.0..60.0).contains(s)), "{cpu:?}");
        assert_eq!(cpu[1], [0.0, 0.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn alternating_interleaves_the_baseline_between_the_services_slices() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (calls, baselines) = (log.clone(), log.clone());
        let seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let unique = seen.clone();
        let (outcome, baseline) = alternating(
            &Shards::here(),
            2,
            Duration::from_secs(1),
            Duration::from_secs(3),
            3,
            move |_, n| {
                let (log, seen) = (calls.clone(), seen.clone());
                async move {
                    assert!(seen.lock().unwrap().insert(n), "request {n} made twice");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let mut log = log.lock().unwrap();
                    if log.last() != Some(&'s') {
                        log.push('s');
                    }
                    Ok(())
                }
            },
            move |slice| {
                let log = baselines.clone();
                async move {
                    assert_eq!(slice, Duration::from_secs(1));
                    tokio::time::sleep(slice).await;
                    let mut log = log.lock().unwrap();
                    let rate = 100.0 * log.len() as f64;
                    log.push('b');
                    Ok(rate)
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(log.lock().unwrap().iter().collect::<String>(), "sbsbsb");
        // The rates the baseline reported (100, 300, 500), averaged.
        assert_eq!(baseline, 300.0);
        // Three measured seconds of two callers at 10 ms each; the warm-up's not counted.
        assert_eq!(outcome.elapsed, Duration::from_secs(3));
        assert!((590..=606).contains(&outcome.ok.len()), "{}", outcome.ok.len());
        assert!(unique.lock().unwrap().len() >= outcome.ok.len() as usize + 200);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_records_only_after_the_warmup_and_counts_errors_by_code() {
        let outcome = closed_loop(
            &Shards::here(),
            2,
            Duration::from_secs(1),
            Duration::from_secs(1),
            |_, n| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if n % 2 == 0 { Ok(()) } else { Err(tonic::Status::resource_exhausted("busy")) }
            },
        )
        .await;
        let total = outcome.answered();
        assert!((190..=202).contains(&total), "{total} requests in the measured second");
        assert_eq!(outcome.failures_other_than(Code::ResourceExhausted), 0);
        assert_eq!(outcome.failures_with(Code::ResourceExhausted), outcome.failures());
        assert_eq!(outcome.failures_with(Code::Unavailable), 0);
        assert!((outcome.rps() - 100.0).abs() <= 2.0, "{}", outcome.rps());
    }
}
