//! Pooled connections without a round trip on release.
//!
//! sqlx's pool pings every connection when it goes back (a `Sync` to the server and a wait for
//! its answer), and does so on a task of its own. For a request that runs one statement that
//! doubles the round trips: profiled under `GetTierStatus` load, the ping was an eighth of
//! tiers' CPU, as much as sending the statement itself.
//!
//! So a connection that finished cleanly goes back to a list of our own, and the next
//! [`Db::acquire`](super::Db::acquire) takes it from there. sqlx's pool still opens, checks and
//! closes every connection: one goes back to it (and through its ping) when it has something
//! to flush (a transaction dropped without commit queues its ROLLBACK), when a connection
//! failed anywhere in the process since it was last checked, when it has waited unused for
//! [`IDLE_RECHECK_AFTER`], when [`RECHECK_EVERY`] has passed since its last check, or when the
//! pool closes.
//!
//! A connection in steady use is thus checked only every [`RECHECK_EVERY`]: each statement it
//! runs shows it alive, and a failed one (an I/O error, a session the server ended) marks every
//! connection for a check. A request that finds no other connection free waits for a check's
//! round trip, so checking busy connections once a second lengthened tiers' slowest answers.
//! One that waited unused, which the server or the network may have dropped meanwhile, is
//! checked before its next use; one the server dropped fails at most one statement. Those
//! left unused at the bottom of the list go back to sqlx on the next acquire, so that its
//! idle timeout closes the connections a burst opened. One dropped with a request's work cut
//! off (see [`drop_unfinished`]) goes back to sqlx too: its statement may still be running.

use std::{
    cell::Cell,
    ops::{Deref, DerefMut},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use sqlx::{Any, AnyConnection, Connection, pool::PoolConnection};
use sqlx_core::transaction::TransactionManager;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

use super::DbError;

/// How long a connection may wait unused and still be reused without sqlx's check.
const IDLE_RECHECK_AFTER: Duration = Duration::from_secs(1);

/// How long a connection in steady use goes between sqlx's checks: the backstop for a
/// connection broken in a way no statement's error has shown.
const RECHECK_EVERY: Duration = Duration::from_secs(30);

/// Connection failures seen in this process (sqlx's I/O and protocol errors, and
/// PostgreSQL's SQLSTATEs of classes 08 and 57P, as `DbError` classifies them): a connection
/// checked before the latest goes through the check again before it is reused.
static FAILURES: AtomicU64 = AtomicU64::new(0);

pub(super) fn note_failure() {
    FAILURES.fetch_add(1, Ordering::Relaxed);
}

thread_local! {
    /// Set while the work of a request that did not finish is being dropped.
    static CANCELLING: Cell<bool> = const { Cell::new(false) };
}

/// Drops `work` that was cut off before it finished (its request timed out, or its client went
/// away). A connection dropped with it may still be running the statement that was cut off,
/// and the next user of that connection would wait for it: it goes back to sqlx instead, whose
/// check waits for the statement to end while the next request takes another connection.
pub fn drop_unfinished<T>(work: T) {
    while_unfinished(|| drop(work));
}

/// Runs `drop_work`, which drops work cut off before it finished, as [`drop_unfinished`] does.
pub(crate) fn while_unfinished(drop_work: impl FnOnce()) {
    CANCELLING.with(|cancelling| {
        let outer = cancelling.replace(true);
        drop_work();
        cancelling.set(outer);
    });
}

/// Whether what is being dropped now belongs to unfinished work.
pub(crate) fn cancelling() -> bool {
    CANCELLING.with(Cell::get)
}

/// When a connection was last checked and last finished a use, and the process's failure
/// count at the check.
#[derive(Clone, Copy, Debug)]
struct Freshness {
    checked: Instant,
    used: Instant,
    failures: u64,
}

impl Freshness {
    fn checked_at(now: Instant, failures: u64) -> Self {
        Self { checked: now, used: now, failures }
    }

    /// Whether a connection that has just finished a use may wait for the next one here.
    fn keep(&self, now: Instant, failures: u64) -> bool {
        self.failures == failures && now.saturating_duration_since(self.checked) < RECHECK_EVERY
    }

    /// Whether a waiting connection may be taken without sqlx's check.
    fn reusable(&self, now: Instant, failures: u64) -> bool {
        self.keep(now, failures) && now.saturating_duration_since(self.used) < IDLE_RECHECK_AFTER
    }
}

/// A checked connection and when it was checked and used.
struct Checked {
    conn: PoolConnection<Any>,
    fresh: Freshness,
}

impl Checked {
    fn fresh(conn: PoolConnection<Any>) -> Self {
        Self { conn, fresh: Freshness::checked_at(Instant::now(), FAILURES.load(Ordering::Relaxed)) }
    }
}

/// The connections between two uses, and the bound on those in use.
pub(super) struct Reuse {
    idle: Mutex<Vec<Checked>>,
    permits: Arc<Semaphore>,
    closed: AtomicBool,
}

impl Reuse {
    pub(super) fn new(max_connections: u32) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max_connections as usize)),
            closed: AtomicBool::new(false),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Checked>> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Connections waiting for their next use here.
    pub(super) fn idle_count(&self) -> usize {
        self.idle().len()
    }

    /// A connection: the most recently used one that may still be reused, else one from
    /// sqlx's pool (which checks connections on their way back to it). Waits at most the
    /// pool's acquire timeout for a free slot.
    pub(super) async fn acquire(self: &Arc<Self>, pool: &sqlx::AnyPool) -> Result<Conn, DbError> {
        let deadline = Instant::now() + pool.options().get_acquire_timeout();
        let permit = match tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(sqlx::Error::PoolClosed.into()),
            Err(_) => return Err(sqlx::Error::PoolTimedOut.into()),
        };
        loop {
            let (now, failures) = (Instant::now(), FAILURES.load(Ordering::Relaxed));
            let (checked, stale) = {
                let mut idle = self.idle();
                // The list is in order of last use: those at the bottom that waited too long
                // go back to sqlx, which checks them and whose idle timeout then applies. Left
                // here, a burst's connections would stay open for as long as one stays busy.
                let waited = idle.iter().take_while(|c| !c.fresh.reusable(now, failures)).count();
                let stale: Vec<Checked> = idle.drain(..waited).collect();
                (idle.pop(), stale)
            };
            drop(stale);
            let Some(checked) = checked else { break };
            if checked.fresh.reusable(now, failures) {
                return Ok(Conn { checked: Some(checked), reuse: self.clone(), _permit: permit });
            }
            // Back to sqlx, which checks it.
            drop(checked);
        }
        let conn = match tokio::time::timeout_at(deadline, pool.acquire()).await {
            Ok(conn) => conn?,
            Err(_) => return Err(sqlx::Error::PoolTimedOut.into()),
        };
        Ok(Conn { checked: Some(Checked::fresh(conn)), reuse: self.clone(), _permit: permit })
    }

    /// Hands every idle connection back to sqlx's pool, which closes them once it closes;
    /// connections in use go back to it when they are dropped.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.permits.close();
        self.release_idle();
    }

    /// Hands the idle connections back to sqlx's pool.
    pub(super) fn release_idle(&self) {
        self.idle().clear();
    }
}

/// A connection from [`Db::acquire`](super::Db::acquire), back to the pool when dropped.
pub struct Conn {
    checked: Option<Checked>,
    reuse: Arc<Reuse>,
    // Released after `drop` has put the connection back, so that whoever it admits finds it.
    _permit: OwnedSemaphorePermit,
}

impl Deref for Conn {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.checked.as_ref().expect("a connection until dropped").conn
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.checked.as_mut().expect("a connection until dropped").conn
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(mut checked) = self.checked.take() else { return };
        let now = Instant::now();
        // A queued ROLLBACK, a half-sent statement, a statement cut off: sqlx's ping flushes
        // it and waits.
        if checked.conn.should_flush()
            || cancelling()
            || !checked.fresh.keep(now, FAILURES.load(Ordering::Relaxed))
            || self.reuse.closed.load(Ordering::Relaxed)
        {
            return;
        }
        checked.fresh.used = now;
        self.reuse.idle().push(checked);
    }
}

/// A transaction: committed by [`Tx::commit`], rolled back by [`Tx::rollback`] or when dropped
/// (the ROLLBACK is queued and flushed before the connection is used again).
pub struct Tx {
    conn: Conn,
    open: bool,
}

type Manager = sqlx::any::AnyTransactionManager;

impl Tx {
    pub(super) async fn begin(mut conn: Conn, statement: Option<&'static str>) -> Result<Self, sqlx::Error> {
        Manager::begin(&mut conn, statement.map(sqlx::SqlSafeStr::into_sql_str)).await?;
        Ok(Self { conn, open: true })
    }

    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        Manager::commit(&mut self.conn).await?;
        self.open = false;
        Ok(())
    }

    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        Manager::rollback(&mut self.conn).await?;
        self.open = false;
        Ok(())
    }
}

impl Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            Manager::start_rollback(&mut self.conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_connection_in_steady_use_is_checked_only_every_recheck_period() {
        let start = Instant::now();
        let mut fresh = Freshness::checked_at(start, 7);
        // Used again and again, a few milliseconds apart, for longer than a second.
        let mut now = start;
        while now < start + 3 * SECOND {
            assert!(fresh.reusable(now, 7), "checked again {:?} after its check", now - start);
            now += Duration::from_millis(5);
            assert!(fresh.keep(now, 7));
            fresh.used = now;
        }
        let due = start + RECHECK_EVERY;
        assert!(!fresh.keep(due, 7), "kept past the backstop");
        assert!(!fresh.reusable(due, 7), "reused past the backstop");
    }

    #[test]
    fn a_connection_that_waited_unused_is_checked_before_its_next_use() {
        let start = Instant::now();
        let fresh = Freshness::checked_at(start, 0);
        assert!(fresh.reusable(start + IDLE_RECHECK_AFTER - Duration::from_millis(1), 0));
        assert!(!fresh.reusable(start + IDLE_RECHECK_AFTER, 0));
    }

    #[test]
    fn a_failure_anywhere_marks_every_connection_checked_before_it() {
        let start = Instant::now();
        let fresh = Freshness::checked_at(start, 3);
        assert!(!fresh.keep(start, 4));
        assert!(!fresh.reusable(start, 4));
        // One checked after the failure is not affected by it.
        assert!(Freshness::checked_at(start, 4).reusable(start, 4));
    }

    #[test]
    fn io_and_protocol_errors_count_as_connection_failures_and_a_bad_statement_does_not() {
        let counted = |err: sqlx::Error| {
            let before = FAILURES.load(Ordering::Relaxed);
            let _ = DbError::from(err);
            FAILURES.load(Ordering::Relaxed) > before
        };
        assert!(counted(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())));
        assert!(counted(sqlx::Error::Protocol("unexpected message".into())));
        // The count is the process's: this holds while no other unit test of the crate
        // fails a connection (none opens one).
        let before = FAILURES.load(Ordering::Relaxed);
        let _ = DbError::from(sqlx::Error::RowNotFound);
        assert_eq!(FAILURES.load(Ordering::Relaxed), before);
    }
}
