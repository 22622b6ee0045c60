//! Where log lines go: a thread of their own writes them out in batches, so that code that
//! logs pays for copying its line into a buffer, not for a system call (and, on a pipe a
//! container runtime reads, for waiting on that reader).
//!
//! The first line into an empty buffer wakes the writer, which lets the batch grow for a
//! short window (or until the buffer holds [`Output::start`]'s `limit`) and writes it in one
//! go. Past the limit, a logging thread waits for the writer: lines are never dropped, and a
//! sink that stops taking them slows the process down, as a direct write would. Stopping
//! (the telemetry guard's drop) writes what is left; lines logged after that are written
//! directly. A line still in the buffer when the process is killed is lost.

use std::{
    io::Write,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// How long a batch may grow once its first line is in.
pub const WINDOW: Duration = Duration::from_millis(5);

/// Buffered lines, beyond which a logging thread waits for the writer.
pub const LIMIT: usize = 1 << 20;

/// The writing thread, stopped and joined by [`Output::stop`] or when dropped.
pub struct Output {
    lines: Lines,
    thread: Option<JoinHandle<()>>,
}

/// Where log layers write: each `write` call appends its bytes whole, so a layer that writes
/// a line in one call never has it interleaved with another thread's.
#[derive(Clone)]
pub struct Lines {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for lines, and for the window to pass.
    wake: Condvar,
    /// Logging threads wait here for room below the limit.
    room: Condvar,
    sink: Mutex<Box<dyn Write + Send>>,
    window: Duration,
    limit: usize,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    stopping: bool,
    /// The writer is gone: lines are written directly.
    stopped: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Output {
    /// Starts the writing thread for `sink`.
    pub fn start(sink: impl Write + Send + 'static, window: Duration, limit: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            room: Condvar::new(),
            sink: Mutex::new(Box::new(sink)),
            window,
            limit: limit.max(1),
        });
        let writer = shared.clone();
        let thread = std::thread::Builder::new().name("log-writer".into()).spawn(move || writer.run())?;
        Ok(Self { lines: Lines { shared }, thread: Some(thread) })
    }

    /// A handle to write lines through.
    pub fn lines(&self) -> Lines {
        self.lines.clone()
    }

    /// Writes what is buffered and stops the thread; later lines are written directly.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            lock(&self.lines.shared.state).stopping = true;
            self.lines.shared.wake.notify_one();
            let _ = thread.join();
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn run(&self) {
        let mut batch = Vec::new();
        loop {
            let mut state = lock(&self.state);
            state = self
                .wake
                .wait_while(state, |s| s.pending.is_empty() && !s.stopping)
                .unwrap_or_else(PoisonError::into_inner);
            if !state.stopping {
                state = self
                    .wake
                    .wait_timeout_while(state, self.window, |s| !s.stopping && s.pending.len() < self.limit)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut state.pending, &mut batch);
            if batch.is_empty() {
                // Stopping, with everything written: from now on lines go straight out.
                state.stopped = true;
                drop(state);
                self.room.notify_all();
                let _ = lock(&self.sink).flush();
                return;
            }
            drop(state);
            self.room.notify_all();
            let mut sink = lock(&self.sink);
            let _ = sink.write_all(&batch).and_then(|()| sink.flush());
            drop(sink);
            batch.clear();
        }
    }
}

impl Lines {
    fn append(&self, line: &[u8]) {
        let shared = &*self.shared;
        let mut state = lock(&shared.state);
        state = shared
            .room
            .wait_while(state, |s| !s.stopped && s.pending.len() >= shared.limit)
            .unwrap_or_else(PoisonError::into_inner);
        if state.stopped {
            drop(state);
            let mut sink = lock(&shared.sink);
            let _ = sink.write_all(line).and_then(|()| sink.flush());
            return;
        }
        let first = state.pending.is_empty();
        state.pending.extend_from_slice(line);
        let full = state.pending.len() >= shared.limit;
        drop(state);
        if first || full {
            shared.wake.notify_one();
        }
    }
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// What reached the sink, write by write.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn writes(&self) -> usize {
            lock(&self.0).len()
        }
        fn text(&self) -> String {
            String::from_utf8(lock(&self.0).concat()).unwrap()
        }
    }

    #[test]
    fn lines_logged_together_leave_in_one_write_soon_after() {
        let sink = Sink::default();
        let output = Output::start(sink.clone(), Duration::from_millis(200), LIMIT).unwrap();
        let mut lines = output.lines();
        for n in 0..100 {
            writeln!(lines, "line {n}").unwrap();
        }
        assert_eq!(sink.writes(), 0, "held for the window");
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.writes() == 0 {
            assert!(Instant::now() < deadline, "the batch was never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.writes(), 1, "one write for the batch");
        let expected: String = (0..100).map(|n| format!("line {n}\n")).collect();
        assert_eq!(sink.text(), expected);
    }

    #[test]
    fn stopping_writes_what_is_buffered_and_later_lines_go_straight_out() {
        let sink = Sink::default();
        let mut output = Output::start(sink.clone(), Duration::from_secs(60), LIMIT).unwrap();
        let mut lines = output.lines();
        lines.write_all(b"before\n").unwrap();
        output.stop();
        assert_eq!(sink.text(), "before\n", "written at the stop, not after the window");
        lines.write_all(b"after\n").unwrap();
        assert_eq!(sink.text(), "before\nafter\n");
    }

    #[test]
    fn past_the_limit_threads_wait_for_the_writer_and_no_line_is_lost() {
        let sink = Sink::default();
        let mut output = Output::start(sink.clone(), Duration::from_millis(1), 64).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut lines = output.lines();
                std::thread::spawn(move || {
                    for n in 0..500 {
                        lines.write_all(format!("thread {t} line {n}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        output.stop();
        let text = sink.text();
        let written: Vec<&str> = text.lines().collect();
        assert_eq!(written.len(), 2000, "every line, whole");
        for t in 0..4 {
            let own: Vec<&str> =
                written.iter().copied().filter(|l| l.starts_with(&format!("thread {t} "))).collect();
            let expected: Vec<String> = (0..500).map(|n| format!("thread {t} line {n}")).collect();
            assert_eq!(own, expected, "each thread's lines in order");
        }
        assert!(sink.writes() > 1, "the limit made the writer write more than once");
    }
}
