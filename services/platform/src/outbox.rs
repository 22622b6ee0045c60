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

/// Publishes committed outbox rows to the bus. Several relays may run on one database: each
/// claims a batch with a lease before publishing it, and a batch whose relay died is claimed
/// again when its lease runs out (consumers dedupe by event id).
pub struct OutboxRelay {
    db: Db,
    bus: Arc<dyn EventBus>,
    wake: Arc<Notify>,
    batch_size: i64,
    poll_interval: Duration,
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
            lease: Duration::from_secs(30),
        }
    }

    /// A handle to wake the relay right after a commit instead of at its next poll.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Publishes until `stop` resolves.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            match self.publish_batch().await {
                Ok(n) if n as i64 == self.batch_size => continue,
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "outbox relay could not publish; will retry"),
            }
            tokio::select! {
                () = &mut stop => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Claims, publishes and marks one batch; returns how many events it published.
    pub async fn publish_batch(&self) -> anyhow::Result<usize> {
        let claimed = self.claim().await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        // Publish stream by stream, keeping `seq` order inside each.
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
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        for c in &claimed {
            sqlx::query("UPDATE outbox SET publish_time = $1 WHERE seq = $2")
                .bind(now)
                .bind(c.seq)
                .execute(&mut *tx)
                .await
                .map_err(DbError::from)?;
        }
        tx.commit().await.map_err(DbError::from)?;
        Ok(claimed.len())
    }

    async fn claim(&self) -> Result<Vec<Claimed>, DbError> {
        let now = now_micros();
        let lease_until = now + i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX / 2);
        let mut tx = self.db.begin().await?;
        // The outer `lease_until < $2` is checked again against the row as it is when updated,
        // so two relays racing for the same rows claim each row once.
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "UPDATE outbox SET lease_until = $1, attempts = attempts + 1 \
             WHERE publish_time IS NULL AND lease_until < $2 AND seq IN ( \
               SELECT seq FROM outbox WHERE publish_time IS NULL AND lease_until < $2 ORDER BY seq LIMIT $3) \
             RETURNING seq, stream, payload",
        )
        .bind(lease_until)
        .bind(now)
        .bind(self.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
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

/// How many events wait to be published (the outbox backlog).
pub async fn backlog(db: &Db) -> Result<i64, DbError> {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE publish_time IS NULL").fetch_one(db.pool()).await?;
    Ok(n)
}
