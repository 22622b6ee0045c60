//! The outbox: events for other services are written in the same transaction as the change
//! that causes them, and a relay publishes them to the bus after commit, in order. The inbox
//! side, [`mark_handled`], lets a consumer apply each event once.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use prost::Message;
use tandem_proto::events::v1::{Event, event::Payload};
use tokio::sync::Notify;

use crate::{
    bus::EventBus,
    db::{Db, DbError, Tx},
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

/// How long a woken relay waits for more commits before it claims a batch. Each batch costs
/// two commits and a bus round trip whatever its size, so under load a few milliseconds'
/// wait saves most of them; alone, an event waits that much longer.
pub const LINGER: Duration = Duration::from_millis(5);

/// Publishes committed outbox rows to the bus. Several relays may run on one database: each
/// claims a batch with a lease before publishing it, and a batch whose relay died is claimed
/// again when its lease runs out (consumers dedupe by event id).
pub struct OutboxRelay {
    db: Db,
    bus: Arc<dyn EventBus>,
    wake: Arc<Notify>,
    batch_size: i64,
    poll_interval: Duration,
    linger: Duration,
    lease: Duration,
}

struct Claimed {
    seq: i64,
    stream: String,
    event: Event,
}

impl OutboxRelay {
    pub fn new(db: Db, bus: Arc<dyn EventBus>) -> Self {
        Self {
            db,
            bus,
            wake: Arc::new(Notify::new()),
            batch_size: 256,
            poll_interval: Duration::from_millis(250),
            linger: LINGER,
            lease: Duration::from_secs(30),
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

    /// Claims, publishes and marks one batch; returns how many events it published.
    pub async fn publish_batch(&self) -> anyhow::Result<usize> {
        let claimed = self.claim().await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let seqs: Vec<i64> = claimed.iter().map(|c| c.seq).collect();
        if let Err(err) = self.publish(&claimed).await {
            // Give the rows back at once rather than when the lease runs out.
            self.update_rows("UPDATE outbox SET lease_until = 0 WHERE seq IN", None, &seqs).await?;
            return Err(err.into());
        }
        self.update_rows(
            "UPDATE outbox SET lease_until = 0, publish_time = $1 WHERE seq IN",
            Some(now_micros()),
            &seqs,
        )
        .await?;
        Ok(claimed.len())
    }

    /// Publishes stream by stream, keeping `seq` order inside each.
    async fn publish(&self, claimed: &[Claimed]) -> Result<(), crate::bus::BusError> {
        let mut start = 0;
        while start < claimed.len() {
            let stream = &claimed[start].stream;
            let end = claimed[start..]
                .iter()
                .position(|c| &c.stream != stream)
                .map_or(claimed.len(), |p| start + p);
            let events: Vec<Event> = claimed[start..end].iter().map(|c| c.event.clone()).collect();
            self.bus.publish(stream, &events).await?;
            start = end;
        }
        Ok(())
    }

    /// Runs `sql` followed by ` (<seqs>)`, with `time` as `$1` when given.
    async fn update_rows(&self, sql: &str, time: Option<i64>, seqs: &[i64]) -> Result<(), DbError> {
        let first = if time.is_some() { 2 } else { 1 };
        let placeholders: Vec<String> = (first..first + seqs.len()).map(|i| format!("${i}")).collect();
        // Only placeholders are added to the fixed statement; the values are bound.
        let sql = format!("{sql} ({})", placeholders.join(", "));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(time) = time {
            query = query.bind(time);
        }
        for seq in seqs {
            query = query.bind(*seq);
        }
        query.execute(self.db.pool()).await?;
        Ok(())
    }

    async fn claim(&self) -> Result<Vec<Claimed>, DbError> {
        let now = now_micros();
        let lease_until = now + i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX / 2);
        // One statement, committed on its own (no BEGIN and COMMIT round trips). The outer
        // `lease_until < $2` is checked again against the row as it is when updated, so two
        // relays racing for the same rows claim each row once. A row whose aggregate has an
        // earlier row leased by another relay waits for it: events of one aggregate are
        // published in order even with several relays.
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "UPDATE outbox SET lease_until = $1, attempts = attempts + 1 \
             WHERE publish_time IS NULL AND lease_until < $2 AND seq IN ( \
               SELECT o.seq FROM outbox o WHERE o.publish_time IS NULL AND o.lease_until < $2 \
                 AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.aggregate_id = o.aggregate_id \
                   AND e.seq < o.seq AND e.publish_time IS NULL AND e.lease_until >= $2) \
               ORDER BY o.seq LIMIT $3) \
             RETURNING seq, stream, payload",
        )
        .bind(lease_until)
        .bind(now)
        .bind(self.batch_size)
        .fetch_all(self.db.pool())
        .await?;
        let mut claimed = rows
            .into_iter()
            .map(|(seq, stream, payload)| {
                let bytes = STANDARD.decode(payload).map_err(|e| DbError::Other(e.to_string()))?;
                let event = Event::decode(bytes.as_slice()).map_err(|e| DbError::Other(e.to_string()))?;
                Ok(Claimed { seq, stream, event })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        claimed.sort_by_key(|c| c.seq);
        Ok(claimed)
    }
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
        .execute(db.pool())
        .await?
        .rows_affected();
    Ok(deleted)
}

/// How many events wait to be published (the outbox backlog).
pub async fn backlog(db: &Db) -> Result<i64, DbError> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE publish_time IS NULL").fetch_one(db.pool()).await?;
    Ok(n)
}
