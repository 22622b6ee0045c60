//! The outbox: events for other services are written in the same transaction as the change
//! that causes them, and a relay publishes them to the bus after commit, in order. The inbox
//! side, [`mark_handled`], lets a consumer apply each event once.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use prost::Message;
use sqlx::AnyConnection;
use tandem_proto::events::v1::{Event, event::Payload};
use tokio::sync::Notify;

use crate::{
    bus::EventBus,
    db::{self, Backend, Db, DbError, Tx},
    ids::new_id,
    telemetry,
    time::{now_micros, to_timestamp},
};

/// Writes an event to the outbox inside the caller's transaction. The event gets its id,
/// time, source and the current trace context here.
pub async fn enqueue(
    tx: &mut Tx,
    stream: &str,
    source: &str,
    aggregate_id: &str,
    payload: Payload,
) -> Result<Event, DbError> {
    let now = now_micros();
    let event = Event {
        id: new_id("evt"),
        aggregate_id: aggregate_id.to_owned(),
        occur_time: Some(to_timestamp(now)),
        source: source.to_owned(),
        headers: telemetry::current_trace_headers(),
        payload: Some(payload),
    };
    sqlx::query(
        "INSERT INTO outbox (event_id, stream, aggregate_id, payload, create_time) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&event.id)
    .bind(stream)
    .bind(aggregate_id)
    .bind(STANDARD.encode(event.encode_to_vec()))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(event)
}

/// Records that `consumer` applied `event_id`, in the transaction of the effect. Returns false
/// when it had already been applied: the caller then skips the effect and commits nothing new.
pub async fn mark_handled(tx: &mut Tx, consumer: &str, event_id: &str) -> Result<bool, DbError> {
    let inserted = sqlx::query(
        "INSERT INTO handled_events (consumer, event_id, handle_time) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(now_micros())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// How long a woken relay waits for more commits before it takes a batch. Each batch costs a
/// commit and a bus round trip whatever its size, so under load a few milliseconds' wait saves
/// most of them; alone, an event waits that much longer.
pub const LINGER: Duration = Duration::from_millis(5);

/// How long a relay may sit in its transaction (publishing to the bus) before PostgreSQL ends
/// its session, and with it the relay's turn: a relay that hangs does not stop the others.
const TURN_TIMEOUT: &str = "30s";

/// Publishes committed outbox rows to the bus, in `seq` order.
///
/// On PostgreSQL several relays (one per replica) share an outbox by taking turns: a relay
/// takes a transaction-scoped advisory lock, reads the oldest unpublished rows, publishes them
/// and marks them published in that transaction. The next relay's read starts once that
/// commit is visible, so no row is published by two relays at once, events leave in `seq`
/// order as their commits become visible (an aggregate's in order: its changes commit one
/// after another), and a relay that dies mid-batch leaves its rows unpublished for the next
/// (consumers dedupe by event id). A turn is one index range scan and
/// one update, whatever the backlog.
///
/// On SQLite (the embedded default, one process) a relay publishes outside a transaction:
/// in-process consumers write to the databases while it publishes, their own included. Run
/// one relay per SQLite database.
pub struct OutboxRelay {
    db: Db,
    bus: Arc<dyn EventBus>,
    wake: Arc<Notify>,
    batch_size: i64,
    poll_interval: Duration,
    linger: Duration,
}

struct Unpublished {
    seq: i64,
    stream: String,
    event: Event,
}

/// The advisory lock the relays of one database take turns on.
const RELAY_LOCK: &str = "tandem.outbox.relay";

impl OutboxRelay {
    pub fn new(db: Db, bus: Arc<dyn EventBus>) -> Self {
        Self {
            db,
            bus,
            wake: Arc::new(Notify::new()),
            batch_size: 256,
            poll_interval: Duration::from_millis(250),
            linger: LINGER,
        }
    }

    /// A handle to wake the relay right after a commit instead of at its next poll.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Publishes until `stop` resolves. While the bus is away the events wait in the outbox
    /// and the relay retries with a growing pause.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut failures = 0u32;
        let mut last_prune: Option<std::time::Instant> = None;
        loop {
            let pause = match self.publish_batch().await {
                Ok(n) => {
                    if failures > 0 {
                        tracing::info!(after_failures = failures, "outbox relay publishing again");
                        failures = 0;
                    }
                    if n as i64 == self.batch_size {
                        continue;
                    }
                    self.poll_interval
                }
                Err(err) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %err, "outbox relay could not publish; events wait in the outbox");
                    }
                    (self.poll_interval * 2u32.saturating_pow(failures.min(5))).min(Duration::from_secs(5))
                }
            };
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_INTERVAL) {
                last_prune = Some(std::time::Instant::now());
                if let Err(err) = prune(&self.db, RETENTION).await {
                    tracing::warn!(error = %err, "could not prune published events");
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = self.wake.notified(), if failures == 0 => {
                    // Let the commits of the next few milliseconds join this one's batch.
                    tokio::time::sleep(self.linger).await;
                }
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Publishes and marks one batch of the oldest unpublished events; returns how many it
    /// published. When the bus fails, the batch stays unpublished.
    pub async fn publish_batch(&self) -> anyhow::Result<usize> {
        match self.db.backend() {
            Backend::Postgres => {
                let mut tx = self.db.begin().await?;
                sqlx::query("SELECT set_config('idle_in_transaction_session_timeout', $1, true)")
                    .bind(TURN_TIMEOUT)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(DbError::from)?;
                db::lock(&mut tx, RELAY_LOCK).await?;
                let published = self.relay(&mut tx).await?;
                tx.commit().await.map_err(DbError::from)?;
                Ok(published)
            }
            Backend::Sqlite => {
                let mut conn = self.db.acquire().await?;
                self.relay(&mut conn).await
            }
        }
    }

    async fn relay(&self, conn: &mut AnyConnection) -> anyhow::Result<usize> {
        let batch = self.unpublished(conn).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        self.publish(&batch).await?;
        mark_published(conn, &batch).await?;
        Ok(batch.len())
    }

    /// The oldest unpublished events, in `seq` order: a range scan of the unpublished-rows
    /// index from its start.
    async fn unpublished(&self, conn: &mut AnyConnection) -> Result<Vec<Unpublished>, DbError> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT seq, stream, payload FROM outbox WHERE publish_time IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(self.batch_size)
        .fetch_all(conn)
        .await?;
        rows.into_iter()
            .map(|(seq, stream, payload)| {
                let bytes = STANDARD.decode(payload).map_err(|e| DbError::Other(e.to_string()))?;
                let event = Event::decode(bytes.as_slice()).map_err(|e| DbError::Other(e.to_string()))?;
                Ok(Unpublished { seq, stream, event })
            })
            .collect()
    }

    /// Publishes stream by stream, keeping `seq` order inside each.
    async fn publish(&self, batch: &[Unpublished]) -> Result<(), crate::bus::BusError> {
        for run in batch.chunk_by(|a, b| a.stream == b.stream) {
            let events: Vec<Event> = run.iter().map(|u| u.event.clone()).collect();
            self.bus.publish(&run[0].stream, &events).await?;
        }
        Ok(())
    }
}

/// Stamps the batch's rows published.
async fn mark_published(conn: &mut AnyConnection, batch: &[Unpublished]) -> Result<(), DbError> {
    let placeholders: Vec<String> = (2..batch.len() + 2).map(|i| format!("${i}")).collect();
    // Only placeholders are added to the fixed statement; the values are bound.
    let sql = format!("UPDATE outbox SET publish_time = $1 WHERE seq IN ({})", placeholders.join(", "));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_micros());
    for row in batch {
        query = query.bind(row.seq);
    }
    query.execute(conn).await?;
    Ok(())
}

/// How long published events are kept in the outbox (for inspection and replay by hand).
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Deletes events published more than `retention` ago. Handled-event records are kept: they
/// are what makes a late redelivery harmless, however late.
pub async fn prune(db: &Db, retention: Duration) -> Result<u64, DbError> {
    let before = now_micros() - i64::try_from(retention.as_micros()).unwrap_or(i64::MAX / 2);
    let deleted = sqlx::query("DELETE FROM outbox WHERE publish_time IS NOT NULL AND publish_time < $1")
        .bind(before)
        .execute(&mut *db.acquire().await?)
        .await?
        .rows_affected();
    Ok(deleted)
}

/// How many events wait to be published (the outbox backlog).
pub async fn backlog(db: &Db) -> Result<i64, DbError> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE publish_time IS NULL")
        .fetch_one(&mut *db.acquire().await?)
        .await?;
    Ok(n)
}
