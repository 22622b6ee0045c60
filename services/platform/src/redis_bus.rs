//! The production event bus: Redis Streams.
//!
//! - One stream per event family (`tandem.deals`, `tandem.tiers`, …). The outbox relay appends
//!   each service's events in commit order, so a stream holds every aggregate's events in the
//!   order they happened. An entry carries the event's id, its aggregate and the protobuf bytes
//!   of `tandem.events.v1.Event`.
//! - Each consuming service reads in its own consumer group (created from the start of the
//!   stream, so a group that appears later, or again after Redis lost its data, misses nothing
//!   still in the stream) and acknowledges an entry only after its handler applied it. Handlers
//!   record the event id in the transaction of their effect, so a redelivery changes nothing.
//! - A handler that fails is retried; one that keeps failing sends the entry, with its error,
//!   to `<stream>.dead-letters` and acknowledges it. A failure because the database is away is
//!   not the event's fault: that entry is retried until the database returns.
//! - Deliveries left unacknowledged by a consumer that died are re-claimed by another after
//!   [`RedisBusSettings::claim_idle`]; one delivered too often without an acknowledgement (it
//!   crashes whoever applies it) is dead-lettered.
//! - Streams are trimmed only below what every consumer group has acknowledged.
//! - When Redis is away, publishing fails (the events wait in the outbox), consumers back off
//!   and reconnect, and the services keep serving.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures::StreamExt;
use prost::Message;
use redis::{
    RedisError, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
    streams::{StreamClaimReply, StreamId, StreamReadReply},
};
use tandem_proto::events::v1::Event;
use tokio::sync::{Mutex, watch};
use tracing::Instrument;

use crate::{
    bus::{self, BusError, EventBus, EventHandler},
    metrics,
};

/// How the bus reads, retries and re-claims.
#[derive(Debug, Clone)]
pub struct RedisBusSettings {
    /// This process's name inside its consumer groups.
    pub consumer_name: String,
    /// Entries read at a time.
    pub batch: usize,
    /// How long a read waits for new entries.
    pub block: Duration,
    /// Failed attempts of a handler before the entry is dead-lettered.
    pub max_attempts: u32,
    /// The pause after a failed attempt, times the attempt number.
    pub retry_delay: Duration,
    /// A delivery unacknowledged this long belongs to a consumer that died: it is re-claimed.
    pub claim_idle: Duration,
    /// How often each consumer looks for deliveries to re-claim.
    pub claim_interval: Duration,
    /// Deliveries without an acknowledgement after which an entry is dead-lettered.
    pub max_deliveries: u64,
    /// How often a stream is trimmed below what every group acknowledged.
    pub trim_interval: Duration,
    /// A consumer idle this long with nothing pending has left for good (a replaced pod) and
    /// is removed from its group.
    pub departed_after: Duration,
    /// How many aggregates' events a consumer applies at once; each aggregate's events are
    /// applied one after the other, in order.
    pub concurrency: usize,
}

impl Default for RedisBusSettings {
    fn default() -> Self {
        Self {
            consumer_name: default_consumer_name(),
            batch: 64,
            block: Duration::from_secs(1),
            max_attempts: 5,
            retry_delay: Duration::from_millis(50),
            claim_idle: Duration::from_secs(30),
            claim_interval: Duration::from_secs(5),
            max_deliveries: 10,
            trim_interval: Duration::from_secs(60),
            departed_after: Duration::from_secs(3600),
            concurrency: 8,
        }
    }
}

/// The host's name (a pod's name on Kubernetes), so a restarted process finds the deliveries
/// it had not acknowledged.
fn default_consumer_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("tandem-{}", std::process::id()))
}

/// Where an event that keeps failing goes, with its error.
pub fn dead_letter_stream(stream: &str) -> String {
    format!("{stream}.dead-letters")
}

const DEAD_LETTER_MAX_LEN: u64 = 100_000;

pub struct RedisBus {
    client: redis::Client,
    publisher: ConnectionManager,
    settings: RedisBusSettings,
    last_trim: Mutex<HashMap<String, Instant>>,
    stop: watch::Sender<bool>,
}

fn unavailable(err: RedisError) -> BusError {
    BusError::Unavailable(err.to_string())
}

impl RedisBus {
    /// Connects lazily: Redis may be away at start-up; calls fail until it answers.
    pub fn connect(url: &str, settings: RedisBusSettings) -> Result<Self, BusError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let publisher = connection(&client, Duration::from_secs(2))?;
        Ok(Self { client, publisher, settings, last_trim: Mutex::default(), stop: watch::Sender::new(false) })
    }

    /// Stops the consumers after the entry each is applying.
    pub fn close(&self) {
        self.stop.send_replace(true);
    }

    /// Trims `stream` below the oldest entry some consumer group still needs (exactly: it
    /// runs once a minute, so the cost of an exact trim does not matter).
    pub async fn trim(&self, stream: &str) -> Result<(), BusError> {
        let mut conn = self.publisher.clone();
        let groups: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut keep_from: Option<EntryId> = None;
        for group in &groups {
            let name = string(group.get("name"));
            let pending = match group.get("pending") {
                Some(Value::Int(n)) => *n,
                _ => 0,
            };
            let needed = if pending > 0 {
                let summary: (i64, Option<String>, Option<String>, Value) = redis::cmd("XPENDING")
                    .arg(stream)
                    .arg(&name)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                summary.1.as_deref().and_then(EntryId::parse)
            } else {
                EntryId::parse(&string(group.get("last-delivered-id")))
            };
            let Some(needed) = needed else { return Ok(()) };
            keep_from = Some(keep_from.map_or(needed, |k| k.min(needed)));
        }
        // No group yet: nobody has said what it needs, so nothing is trimmed.
        let Some(keep_from) = keep_from else { return Ok(()) };
        let _: i64 = redis::cmd("XTRIM")
            .arg(stream)
            .arg("MINID")
            .arg(keep_from.to_string())
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn trim_if_due(&self, stream: &str) {
        {
            let mut last = self.last_trim.lock().await;
            let due = last.get(stream).is_none_or(|t| t.elapsed() >= self.settings.trim_interval);
            if !due {
                return;
            }
            last.insert(stream.to_owned(), Instant::now());
        }
        if let Err(err) = self.trim(stream).await {
            tracing::warn!(stream, error = %err, "could not trim the stream");
        }
    }
}

fn connection(client: &redis::Client, response_timeout: Duration) -> Result<ConnectionManager, BusError> {
    lazy_connection(client, response_timeout).map_err(unavailable)
}

/// A connection to Redis that opens on first use and reconnects by itself, giving up on a
/// call after `response_timeout`: how every Tandem service talks to Redis.
pub fn lazy_connection(
    client: &redis::Client,
    response_timeout: Duration,
) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

fn string(value: Option<&Value>) -> String {
    match value {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    }
}

/// A stream entry id, `<milliseconds>-<sequence>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EntryId(u64, u64);

impl EntryId {
    fn parse(id: &str) -> Option<Self> {
        let (ms, seq) = id.split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

#[async_trait]
impl EventBus for RedisBus {
    async fn publish(&self, stream: &str, events: &[Event]) -> Result<(), BusError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for event in events {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("id")
                .arg(&event.id)
                .arg("aggregate")
                .arg(&event.aggregate_id)
                .arg("event")
                .arg(event.encode_to_vec())
                .ignore();
        }
        let mut conn = self.publisher.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)?;
        self.trim_if_due(stream).await;
        Ok(())
    }

    async fn subscribe(
        &self,
        stream: &str,
        group: &str,
        handler: Arc<dyn EventHandler>,
    ) -> Result<(), BusError> {
        // Reads block, so each consumer has its own connection.
        let conn = connection(&self.client, self.settings.block + Duration::from_secs(5))?;
        let consumer = Consumer {
            conn,
            stream: stream.to_owned(),
            group: group.to_owned(),
            dead_letters: dead_letter_stream(stream),
            handler,
            settings: self.settings.clone(),
            stop: self.stop.subscribe(),
        };
        tokio::spawn(consumer.run());
        Ok(())
    }
}

struct Consumer {
    conn: ConnectionManager,
    stream: String,
    group: String,
    dead_letters: String,
    handler: Arc<dyn EventHandler>,
    settings: RedisBusSettings,
    stop: watch::Receiver<bool>,
}

/// What became of one entry.
enum Outcome {
    Done,
    /// Stopping: the entry stays pending for the next consumer.
    Stopped,
}

impl Consumer {
    async fn run(mut self) {
        let mut group_ready = false;
        // First this consumer's own unacknowledged deliveries (from before a restart), from
        // the start of its pending list; then new entries.
        let mut own_pending: Option<String> = Some("0".into());
        let mut last_claim = Instant::now();
        let mut failures = 0u32;
        while !*self.stop.borrow() {
            if !group_ready {
                match self.create_group().await {
                    Ok(()) => {
                        group_ready = true;
                        own_pending = Some("0".into());
                    }
                    Err(err) => {
                        self.back_off(&mut failures, &err).await;
                        continue;
                    }
                }
            }
            if last_claim.elapsed() >= self.settings.claim_interval {
                last_claim = Instant::now();
                match self.reclaim().await {
                    Ok(Outcome::Stopped) => return,
                    Ok(Outcome::Done) => {}
                    Err(err) if is_no_group(&err) => {
                        group_ready = false;
                        continue;
                    }
                    Err(err) => {
                        self.back_off(&mut failures, &err).await;
                        continue;
                    }
                }
            }
            match self.read(own_pending.as_deref()).await {
                Ok(entries) => {
                    if failures > 0 {
                        tracing::info!(stream = %self.stream, group = %self.group, "event bus reachable again");
                        failures = 0;
                    }
                    match entries.last() {
                        None => own_pending = None,
                        Some(last) if own_pending.is_some() => own_pending = Some(last.id.clone()),
                        Some(_) => {}
                    }
                    if let Outcome::Stopped = self.process_batch(&entries).await {
                        return;
                    }
                }
                Err(err) if is_no_group(&err) => group_ready = false,
                Err(err) => self.back_off(&mut failures, &err).await,
            }
        }
    }

    async fn create_group(&mut self) -> Result<(), RedisError> {
        let created: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn)
            .await;
        match created {
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Reads new entries, or this consumer's pending ones after `pending_after`.
    async fn read(&mut self, pending_after: Option<&str>) -> Result<Vec<StreamId>, RedisError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.settings.consumer_name)
            .arg("COUNT")
            .arg(self.settings.batch);
        if pending_after.is_none() {
            cmd.arg("BLOCK").arg(millis(self.settings.block));
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(pending_after.unwrap_or(">"));
        let reply: Option<StreamReadReply> = cmd.query_async(&mut self.conn).await?;
        Ok(reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect()).unwrap_or_default())
    }

    /// Takes over deliveries that another consumer left unacknowledged too long, and reports
    /// how many deliveries of the group wait for an acknowledgement.
    async fn reclaim(&mut self) -> Result<Outcome, RedisError> {
        let summary: (u64, Value, Value, Value) =
            redis::cmd("XPENDING").arg(&self.stream).arg(&self.group).query_async(&mut self.conn).await?;
        metrics::set_consumer_pending(&self.stream, &self.group, summary.0);
        self.forget_departed_consumers().await?;
        let idle = millis(self.settings.claim_idle);
        let stale: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(&self.group)
            .arg("IDLE")
            .arg(idle)
            .arg("-")
            .arg("+")
            .arg(self.settings.batch)
            .query_async(&mut self.conn)
            .await?;
        for (id, previous_consumer, _, deliveries) in stale {
            let claimed: StreamClaimReply = redis::cmd("XCLAIM")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&self.settings.consumer_name)
                .arg(idle)
                .arg(&id)
                .query_async(&mut self.conn)
                .await?;
            for entry in claimed.ids {
                tracing::warn!(stream = %self.stream, group = %self.group, entry = %entry.id, previous_consumer, deliveries, "re-claimed an unacknowledged delivery");
                if deliveries >= self.settings.max_deliveries {
                    let error = format!("delivered {deliveries} times without being acknowledged");
                    self.dead_letter(&entry, &error).await;
                    self.ack(&[entry.id.as_str()]).await;
                } else if let Outcome::Stopped = self.process(&entry).await {
                    return Ok(Outcome::Stopped);
                }
            }
        }
        Ok(Outcome::Done)
    }

    /// Removes from the group the consumers that left long ago with nothing pending (pods
    /// that were replaced), so the group lists only live ones.
    async fn forget_departed_consumers(&mut self) -> Result<(), RedisError> {
        let consumers: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&self.stream)
            .arg(&self.group)
            .query_async(&mut self.conn)
            .await?;
        for consumer in consumers {
            let name = string(consumer.get("name"));
            let number = |field: &str| match consumer.get(field) {
                Some(Value::Int(n)) => *n,
                _ => 0,
            };
            let idle = Duration::from_millis(u64::try_from(number("idle")).unwrap_or(0));
            if number("pending") == 0
                && idle >= self.settings.departed_after
                && name != self.settings.consumer_name
            {
                let _: i64 = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&self.stream)
                    .arg(&self.group)
                    .arg(&name)
                    .query_async(&mut self.conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// Applies a batch: in one [`EventHandler::handle_batch`] when the handler takes batches;
    /// otherwise (or when that fails) the entries of one aggregate in order, different
    /// aggregates side by side (at most [`RedisBusSettings::concurrency`] at once).
    async fn process_batch(&self, entries: &[StreamId]) -> Outcome {
        if entries.len() > 1 && self.apply_together(entries).await {
            self.ack(&entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>()).await;
            return Outcome::Done;
        }
        let mut chains: Vec<Vec<&StreamId>> = Vec::new();
        let mut chain_of: HashMap<&[u8], usize> = HashMap::new();
        for entry in entries {
            match entry.map.get("aggregate") {
                Some(Value::BulkString(aggregate)) if !aggregate.is_empty() => {
                    let i = *chain_of.entry(aggregate.as_slice()).or_insert_with(|| {
                        chains.push(Vec::new());
                        chains.len() - 1
                    });
                    chains[i].push(entry);
                }
                _ => chains.push(vec![entry]),
            }
        }
        let chains: Vec<_> = chains.into_iter().map(|chain| self.process_chain(chain)).collect();
        let outcomes: Vec<(Outcome, Vec<&str>)> =
            futures::stream::iter(chains).buffer_unordered(self.settings.concurrency.max(1)).collect().await;
        // What was applied is acknowledged in one command; a crash before it only means
        // deliveries again, which the handlers recognise.
        let finished: Vec<&str> = outcomes.iter().flat_map(|(_, ids)| ids.iter().copied()).collect();
        self.ack(&finished).await;
        if outcomes.iter().any(|(o, _)| matches!(o, Outcome::Stopped)) {
            Outcome::Stopped
        } else {
            Outcome::Done
        }
    }

    /// Applies the entries in one [`EventHandler::handle_batch`] when the handler takes
    /// batches and every entry decodes; false when they are still to be applied one by one.
    async fn apply_together(&self, entries: &[StreamId]) -> bool {
        let Ok(events) = entries.iter().map(decode).collect::<Result<Vec<Event>, String>>() else {
            return false;
        };
        let span = tracing::info_span!("event.apply_batch", stream = %self.stream, group = %self.group, events = events.len());
        match self.handler.handle_batch(&events).instrument(span).await {
            None => false,
            Some(Ok(())) => {
                for event in &events {
                    bus::applied(&self.stream, &self.group, event);
                }
                true
            }
            Some(Err(err)) => {
                tracing::info!(stream = %self.stream, group = %self.group, events = events.len(), error = %format!("{err:#}"), "a batch failed; applying its events one by one");
                false
            }
        }
    }

    /// One aggregate's entries, in order; returns the ids of those finished with.
    async fn process_chain<'a>(&self, chain: Vec<&'a StreamId>) -> (Outcome, Vec<&'a str>) {
        let mut finished = Vec::with_capacity(chain.len());
        for entry in chain {
            if let Outcome::Stopped = self.finish(entry).await {
                return (Outcome::Stopped, finished);
            }
            finished.push(entry.id.as_str());
        }
        (Outcome::Done, finished)
    }

    /// Applies an entry and acknowledges it.
    async fn process(&self, entry: &StreamId) -> Outcome {
        let outcome = self.finish(entry).await;
        if let Outcome::Done = outcome {
            self.ack(&[entry.id.as_str()]).await;
        }
        outcome
    }

    /// Applies an entry, or dead-letters it; `Done` when it is to be acknowledged.
    async fn finish(&self, entry: &StreamId) -> Outcome {
        let event = match decode(entry) {
            Ok(event) => event,
            Err(error) => {
                self.dead_letter(entry, &error).await;
                return Outcome::Done;
            }
        };
        let (mut failures, mut waits) = (0u32, 0u32);
        loop {
            match bus::apply(self.handler.as_ref(), &self.stream, &self.group, &event).await {
                Ok(()) => return Outcome::Done,
                Err(err) if bus::is_transient(&err) => {
                    waits += 1;
                    if waits == 1 {
                        tracing::warn!(stream = %self.stream, group = %self.group, event_id = %event.id, error = %err, "database unavailable; the event waits");
                    }
                    let pause =
                        Duration::from_millis(100 * 2u64.pow(waits.min(6))).min(Duration::from_secs(5));
                    if !self.pause(pause).await {
                        return Outcome::Stopped;
                    }
                }
                Err(err) => {
                    failures += 1;
                    if failures >= self.settings.max_attempts {
                        self.dead_letter(entry, &format!("{err:#}")).await;
                        return Outcome::Done;
                    }
                    tracing::warn!(stream = %self.stream, group = %self.group, event_id = %event.id, attempt = failures, error = %err, "event handler failed; retrying");
                    if !self.pause(self.settings.retry_delay * failures).await {
                        return Outcome::Stopped;
                    }
                }
            }
        }
    }

    /// Sleeps unless asked to stop; false when stopping.
    async fn pause(&self, duration: Duration) -> bool {
        let mut stop = self.stop.clone();
        if *stop.borrow_and_update() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(duration) => !*stop.borrow(),
            _ = stop.changed() => false,
        }
    }

    async fn ack(&self, ids: &[&str]) {
        if ids.is_empty() {
            return;
        }
        let mut conn = self.conn.clone();
        let acked: Result<i64, RedisError> =
            redis::cmd("XACK").arg(&self.stream).arg(&self.group).arg(ids).query_async(&mut conn).await;
        if let Err(err) = acked {
            // Delivered again later; the handler skips what it already applied.
            tracing::warn!(stream = %self.stream, group = %self.group, entries = ids.len(), error = %err, "could not acknowledge applied events");
        }
    }

    async fn dead_letter(&self, entry: &StreamId, error: &str) {
        let mut conn = self.conn.clone();
        tracing::error!(stream = %self.stream, group = %self.group, entry = %entry.id, error, "event dead-lettered");
        metrics::event_dead_lettered(&self.stream, &self.group);
        let field = |name: &str| match entry.map.get(name) {
            Some(Value::BulkString(bytes)) => bytes.clone(),
            _ => Vec::new(),
        };
        let added: Result<String, RedisError> = redis::cmd("XADD")
            .arg(&self.dead_letters)
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_LETTER_MAX_LEN)
            .arg("*")
            .arg("id")
            .arg(field("id"))
            .arg("group")
            .arg(&self.group)
            .arg("entry")
            .arg(&entry.id)
            .arg("error")
            .arg(error)
            .arg("event")
            .arg(field("event"))
            .query_async(&mut conn)
            .await;
        if let Err(err) = added {
            tracing::error!(stream = %self.dead_letters, error = %err, "could not write the dead letter");
        }
    }

    async fn back_off(&mut self, failures: &mut u32, err: &RedisError) {
        *failures += 1;
        if *failures == 1 {
            tracing::warn!(stream = %self.stream, group = %self.group, error = %err, "event bus unreachable; retrying");
        }
        let pause = Duration::from_millis(100 * 2u64.pow((*failures).min(5))).min(Duration::from_secs(3));
        self.pause(pause).await;
    }
}

fn is_no_group(err: &RedisError) -> bool {
    err.code() == Some("NOGROUP")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn decode(entry: &StreamId) -> Result<Event, String> {
    match entry.map.get("event") {
        Some(Value::BulkString(bytes)) => {
            Event::decode(bytes.as_slice()).map_err(|e| format!("undecodable event: {e}"))
        }
        _ => Err("entry without an event".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_numerically() {
        let a = EntryId::parse("9-5").unwrap();
        let b = EntryId::parse("10-0").unwrap();
        let c = EntryId::parse("10-1").unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "10-0");
        assert_eq!(EntryId::parse("nonsense"), None);
    }
}
