//! The Redis Streams bus against a real Redis (`TANDEM_TEST_REDIS_URL`). Each test uses
//! streams of its own, so tests run side by side on one server.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tandem_platform::{
    bus::{EventBus, EventHandler},
    db::{Db, DbError, DbOptions},
    outbox::{self, OutboxRelay},
    redis_bus::{RedisBus, RedisBusSettings, dead_letter_stream},
    testing::{TestDb, redis_url},
};
use tandem_proto::events::v1::{Event, TeamDeleted, event::Payload};

fn stream_name(test: &str) -> String {
    format!("test.{test}.{}", uuid::Uuid::now_v7().simple())
}

fn event(id: &str) -> Event {
    Event {
        id: id.into(),
        aggregate_id: "agg".into(),
        payload: Some(Payload::TeamDeleted(TeamDeleted { team_id: id.into() })),
        ..Default::default()
    }
}

fn quick_settings(consumer: &str) -> RedisBusSettings {
    RedisBusSettings {
        consumer_name: consumer.into(),
        block: Duration::from_millis(200),
        retry_delay: Duration::from_millis(5),
        claim_idle: Duration::from_millis(300),
        claim_interval: Duration::from_millis(100),
        ..RedisBusSettings::default()
    }
}

async fn redis(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// Records what it applied; fails on the events it is told to fail, `failures` times each
/// (`u32::MAX`: always), with a database outage when `outage` is set.
#[derive(Default)]
struct Recorder {
    applied: Mutex<Vec<String>>,
    failures: Mutex<HashMap<String, u32>>,
    outage: bool,
}

impl Recorder {
    fn failing(id: &str, times: u32, outage: bool) -> Self {
        Self { failures: Mutex::new(HashMap::from([(id.to_owned(), times)])), outage, ..Self::default() }
    }

    fn applied(&self) -> Vec<String> {
        self.applied.lock().unwrap().clone()
    }
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, event: &Event) -> anyhow::Result<()> {
        if let Some(left) = self.failures.lock().unwrap().get_mut(&event.id)
            && *left > 0
        {
            *left = left.saturating_sub(1);
            if self.outage {
                return Err(DbError::Unavailable("connection refused".into()).into());
            }
            anyhow::bail!("no exchange rate for XYZ");
        }
        self.applied.lock().unwrap().push(event.id.clone());
        Ok(())
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Creates `group` on `stream` from its start, as the bus does.
async fn create_group(conn: &mut redis::aio::MultiplexedConnection, stream: &str, group: &str) {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await
        .unwrap();
}

/// Delivers the group's new entries to `consumer`, which acknowledges none of them.
async fn read_without_acknowledging(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
    consumer: &str,
) {
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(conn)
        .await
        .unwrap();
}

/// Every entry of the stream's dead letters.
async fn dead_letters(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> redis::streams::StreamRangeReply {
    redis::cmd("XRANGE").arg(dead_letter_stream(stream)).arg("-").arg("+").query_async(conn).await.unwrap()
}

async fn pending(conn: &mut redis::aio::MultiplexedConnection, stream: &str, group: &str) -> i64 {
    let summary: (i64, redis::Value, redis::Value, redis::Value) =
        redis::cmd("XPENDING").arg(stream).arg(group).query_async(conn).await.unwrap();
    summary.0
}

#[tokio::test]
async fn every_group_gets_every_event_in_order_and_acknowledges_it() {
    let Some(url) = redis_url() else { return };
    let stream = stream_name("groups");
    let bus = RedisBus::connect(&url, quick_settings("c1")).unwrap();
    let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    bus.subscribe(&stream, "a", a.clone()).await.unwrap();
    bus.subscribe(&stream, "b", b.clone()).await.unwrap();
    let ids: Vec<String> = (0..20).map(|i| format!("e{i}")).collect();
    let events: Vec<Event> = ids.iter().map(|id| event(id)).collect();
    bus.publish(&stream, &events[..10]).await.unwrap();
    bus.publish(&stream, &events[10..]).await.unwrap();

    eventually("both groups applied all", async || a.applied().len() == 20 && b.applied().len() == 20).await;
    assert_eq!(a.applied(), ids);
    assert_eq!(b.applied(), ids);
    let mut conn = redis(&url).await;
    eventually("acknowledged", async || {
        pending(&mut conn, &stream, "a").await == 0 && pending(&mut conn, &stream, "b").await == 0
    })
    .await;
    bus.close();
}

#[tokio::test]
async fn an_event_that_keeps_failing_is_dead_lettered_with_its_error() {
    let Some(url) = redis_url() else { return };
    let stream = stream_name("dead");
    let bus = RedisBus::connect(&url, quick_settings("c1")).unwrap();
    let handler = Arc::new(Recorder::failing("bad", u32::MAX, false));
    bus.subscribe(&stream, "g", handler.clone()).await.unwrap();
    bus.publish(&stream, &[event("ok-1"), event("bad"), event("ok-2")]).await.unwrap();

    eventually("the good events applied", async || handler.applied().len() == 2).await;
    assert_eq!(handler.applied(), ["ok-1", "ok-2"], "a bad event does not hold back the next");
    let mut conn = redis(&url).await;
    let dead = dead_letters(&mut conn, &stream).await;
    assert_eq!(dead.ids.len(), 1);
    let field = |name: &str| -> String { dead.ids[0].get(name).unwrap() };
    assert_eq!(field("id"), "bad");
    assert_eq!(field("group"), "g");
    assert!(field("error").contains("no exchange rate"), "{}", field("error"));
    assert_eq!(pending(&mut conn, &stream, "g").await, 0, "the dead letter is acknowledged");
    bus.close();
}

/// A [`Recorder`] that also takes batches: all or none, refused whole when one of its events
/// fails.
#[derive(Default)]
struct Batching {
    recorder: Recorder,
    batches: Mutex<Vec<usize>>,
}

#[async_trait]
impl EventHandler for Batching {
    async fn handle(&self, event: &Event) -> anyhow::Result<()> {
        self.recorder.handle(event).await
    }

    async fn handle_batch(&self, events: &[Event]) -> Option<anyhow::Result<()>> {
        let failures = self.recorder.failures.lock().unwrap();
        if let Some(bad) = events.iter().find(|e| failures.get(&e.id).is_some_and(|left| *left > 0)) {
            return Some(Err(anyhow::anyhow!("no exchange rate for {}", bad.id)));
        }
        self.recorder.applied.lock().unwrap().extend(events.iter().map(|e| e.id.clone()));
        self.batches.lock().unwrap().push(events.len());
        Some(Ok(()))
    }
}

/// Entries read together go to a batching handler at once, in order, and are acknowledged;
/// a batch that fails is applied event by event, so only its bad event is dead-lettered.
#[tokio::test]
async fn batches_are_applied_together_and_a_failed_one_event_by_event() {
    let Some(url) = redis_url() else { return };
    let stream = stream_name("batches");
    let bus = RedisBus::connect(&url, quick_settings("c1")).unwrap();
    let ids: Vec<String> = (0..20).map(|i| format!("e{i}")).collect();
    // Published before the group exists: the first read takes them all.
    bus.publish(&stream, &ids.iter().map(|id| event(id)).collect::<Vec<_>>()).await.unwrap();
    let handler = Arc::new(Batching::default());
    bus.subscribe(&stream, "g", handler.clone()).await.unwrap();
    eventually("the batch applied", async || handler.recorder.applied().len() == 20).await;
    assert_eq!(handler.recorder.applied(), ids);
    assert_eq!(*handler.batches.lock().unwrap(), [20], "one batch, one call");
    let mut conn = redis(&url).await;
    assert_eq!(pending(&mut conn, &stream, "g").await, 0);
    bus.close();

    let stream = stream_name("bad-batch");
    let bus = RedisBus::connect(&url, quick_settings("c1")).unwrap();
    bus.publish(&stream, &[event("ok-1"), event("bad"), event("ok-2")]).await.unwrap();
    let handler =
        Arc::new(Batching { recorder: Recorder::failing("bad", u32::MAX, false), ..Batching::default() });
    bus.subscribe(&stream, "g", handler.clone()).await.unwrap();
    eventually("the good events applied", async || handler.recorder.applied().len() == 2).await;
    assert_eq!(handler.recorder.applied(), ["ok-1", "ok-2"]);
    assert!(handler.batches.lock().unwrap().is_empty(), "the batch applied nothing");
    eventually("the bad event dead-lettered", async || {
        let dead = dead_letters(&mut conn, &stream).await;
        dead.ids.len() == 1 && dead.ids[0].get::<String>("id").as_deref() == Some("bad")
    })
    .await;
    eventually("everything acknowledged", async || pending(&mut conn, &stream, "g").await == 0).await;
    bus.close();
}

#[tokio::test]
async fn a_database_outage_is_waited_out_never_dead_lettered() {
    let Some(url) = redis_url() else { return };
    let stream = stream_name("outage");
    let settings = RedisBusSettings { max_attempts: 2, ..quick_settings("c1") };
    let bus = RedisBus::connect(&url, settings).unwrap();
    // More outage failures than `max_attempts`: still applied in the end.
    let handler = Arc::new(Recorder::failing("e1", 4, true));
    bus.subscribe(&stream, "g", handler.clone()).await.unwrap();
    bus.publish(&stream, &[event("e1"), event("e2")]).await.unwrap();

    eventually("applied after the outage", async || handler.applied().len() == 2).await;
    assert_eq!(handler.applied(), ["e1", "e2"]);
    let mut conn = redis(&url).await;
    let dead: i64 = redis::cmd("XLEN").arg(dead_letter_stream(&stream)).query_async(&mut conn).await.unwrap();
    assert_eq!(dead, 0);
    bus.close();
}

#[tokio::test]
async fn a_delivery_left_by_a_dead_consumer_is_reclaimed() {
    let Some(url) = redis_url() else { return };
    let stream = stream_name("reclaim");
    let mut conn = redis(&url).await;
    let publisher = RedisBus::connect(&url, quick_settings("publisher")).unwrap();
    create_group(&mut conn, &stream, "g").await;
    publisher.publish(&stream, &[event("orphan")]).await.unwrap();
    // A consumer reads it and dies before acknowledging.
    read_without_acknowledging(&mut conn, &stream, "g", "crashed").await;
    assert_eq!(pending(&mut conn, &stream, "g").await, 1);

    let bus = RedisBus::connect(&url, quick_settings("survivor")).unwrap();
    let handler = Arc::new(Recorder::default());
    bus.subscribe(&stream, "g", handler.clone()).await.unwrap();
    eventually("re-claimed and applied", async || handler.applied() == ["orphan"]).await;
    eventually("acknowledged", async || pending(&mut conn, &stream, "g").await == 0).await;
    bus.close();
}

#[tokio::test]
async fn a_restarted_consumer_applies_what_it_had_not_acknowledged() {
    let Some(url) = redis_url() else { return };
    let stream = stream_name("restart");
    let mut conn = redis(&url).await;
    create_group(&mut conn, &stream, "g").await;
    let settings = RedisBusSettings { claim_idle: Duration::from_secs(3600), ..quick_settings("pod-1") };
    let bus = RedisBus::connect(&url, settings.clone()).unwrap();
    bus.publish(&stream, &[event("in-flight")]).await.unwrap();
    // pod-1 read it, then was killed.
    read_without_acknowledging(&mut conn, &stream, "g", "pod-1").await;
    // Restarted under the same name, it starts with its own pending deliveries, without
    // waiting for the claim timeout.
    let handler = Arc::new(Recorder::default());
    bus.subscribe(&stream, "g", handler.clone()).await.unwrap();
    eventually("applied after restart", async || handler.applied() == ["in-flight"]).await;
    bus.close();
}

#[tokio::test]
async fn a_group_lost_with_redis_data_is_recreated_and_delivery_resumes() {
    let Some(url) = redis_url() else { return };
    let stream = stream_name("lost");
    let bus = RedisBus::connect(&url, quick_settings("c1")).unwrap();
    let handler = Arc::new(Recorder::default());
    bus.subscribe(&stream, "g", handler.clone()).await.unwrap();
    bus.publish(&stream, &[event("before")]).await.unwrap();
    eventually("first applied", async || handler.applied() == ["before"]).await;

    // Redis restarted without persistence: the stream and its groups are gone.
    let mut conn = redis(&url).await;
    let _: i64 = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await.unwrap();
    bus.publish(&stream, &[event("after")]).await.unwrap();
    eventually("delivery resumed", async || handler.applied() == ["before", "after"]).await;
    bus.close();
}

#[tokio::test]
async fn trimming_keeps_every_entry_some_group_still_needs() {
    let Some(url) = redis_url() else { return };
    let stream = stream_name("trim");
    let mut conn = redis(&url).await;
    let bus = RedisBus::connect(&url, quick_settings("c1")).unwrap();
    let fast = Arc::new(Recorder::default());
    bus.subscribe(&stream, "fast", fast.clone()).await.unwrap();
    // A second group exists but has read nothing yet (its service is down).
    create_group(&mut conn, &stream, "slow").await;
    let events: Vec<Event> = (0..10).map(|i| event(&format!("e{i}"))).collect();
    bus.publish(&stream, &events).await.unwrap();
    eventually("fast group done", async || fast.applied().len() == 10).await;

    bus.trim(&stream).await.unwrap();
    let len: i64 = redis::cmd("XLEN").arg(&stream).query_async(&mut conn).await.unwrap();
    assert_eq!(len, 10, "the slow group still needs everything");

    let slow = Arc::new(Recorder::default());
    bus.subscribe(&stream, "slow", slow.clone()).await.unwrap();
    eventually("slow group done", async || slow.applied().len() == 10).await;
    eventually("acknowledged", async || pending(&mut conn, &stream, "slow").await == 0).await;
    bus.trim(&stream).await.unwrap();
    let len: i64 = redis::cmd("XLEN").arg(&stream).query_async(&mut conn).await.unwrap();
    assert!(len <= 1, "acknowledged entries are trimmed (the last delivered one may stay): {len}");
    bus.close();
}

/// With Redis away the relay fails and the events stay unpublished in the outbox: the relay
/// tries them again each time, and publishes them once Redis answers.
#[tokio::test]
async fn events_wait_in_the_outbox_while_redis_is_away() {
    let Some(url) = redis_url() else { return };
    let test = TestDb::sqlite();
    let db = Db::connect(&test.url, &DbOptions::default()).unwrap();
    db.migrate(&[]).await.unwrap();
    let stream = stream_name("away");
    let mut tx = db.begin().await.unwrap();
    outbox::enqueue(
        &mut tx,
        &stream,
        "test",
        "agg",
        Payload::TeamDeleted(TeamDeleted { team_id: "t".into() }),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let away = Arc::new(RedisBus::connect("redis://127.0.0.1:1", quick_settings("c1")).unwrap());
    let relay = OutboxRelay::new(db.clone(), away as Arc<dyn EventBus>);
    assert!(relay.publish_batch().await.is_err());
    assert!(relay.publish_batch().await.is_err(), "the failed batch is tried again");
    assert_eq!(outbox::backlog(&db).await.unwrap(), 1);

    let bus = Arc::new(RedisBus::connect(&url, quick_settings("c1")).unwrap());
    let relay = OutboxRelay::new(db.clone(), bus.clone() as Arc<dyn EventBus>);
    assert_eq!(relay.publish_batch().await.unwrap(), 1);
    assert_eq!(outbox::backlog(&db).await.unwrap(), 0);
    let mut conn = redis(&url).await;
    let len: i64 = redis::cmd("XLEN").arg(&stream).query_async(&mut conn).await.unwrap();
    assert_eq!(len, 1);
}

#[tokio::test]
async fn consumers_that_left_are_removed_from_their_group() {
    let Some(url) = redis_url() else { return };
    let stream = stream_name("departed");
    let mut conn = redis(&url).await;
    create_group(&mut conn, &stream, "g").await;
    // A pod that applied an event, acknowledged it and was replaced.
    let id: String =
        redis::cmd("XADD").arg(&stream).arg("*").arg("id").arg("e").query_async(&mut conn).await.unwrap();
    read_without_acknowledging(&mut conn, &stream, "g", "replaced-pod").await;
    let _: i64 = redis::cmd("XACK").arg(&stream).arg("g").arg(&id).query_async(&mut conn).await.unwrap();
    let consumers = async |conn: &mut redis::aio::MultiplexedConnection| -> Vec<String> {
        let infos: Vec<HashMap<String, redis::Value>> =
            redis::cmd("XINFO").arg("CONSUMERS").arg(&stream).arg("g").query_async(conn).await.unwrap();
        infos
            .iter()
            .map(|i| match i.get("name") {
                Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(consumers(&mut conn).await, ["replaced-pod"]);

    let settings =
        RedisBusSettings { departed_after: Duration::from_millis(200), ..quick_settings("live-pod") };
    let bus = RedisBus::connect(&url, settings).unwrap();
    bus.subscribe(&stream, "g", Arc::new(Recorder::default())).await.unwrap();
    eventually("the replaced pod is forgotten", async || consumers(&mut conn).await == ["live-pod"]).await;
    bus.close();
}

/// Records when each event was applied, taking a while over each, and how many were being
/// applied at once.
#[derive(Default)]
struct Slow {
    applied: Mutex<Vec<(String, String)>>,
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl EventHandler for Slow {
    async fn handle(&self, event: &Event) -> anyhow::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most_in_flight.fetch_max(now, SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.applied.lock().unwrap().push((event.aggregate_id.clone(), event.id.clone()));
        self.in_flight.fetch_sub(1, SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn different_aggregates_are_applied_side_by_side_and_each_in_order() {
    let Some(url) = redis_url() else { return };
    let stream = stream_name("side-by-side");
    let settings = RedisBusSettings { concurrency: 4, ..quick_settings("c1") };
    let bus = RedisBus::connect(&url, settings).unwrap();
    let handler = Arc::new(Slow::default());
    bus.subscribe(&stream, "g", handler.clone()).await.unwrap();
    // Six aggregates, five events each, interleaved.
    let events: Vec<Event> = (0..5)
        .flat_map(|n| {
            (0..6).map(move |a| Event { aggregate_id: format!("agg-{a}"), ..event(&format!("agg-{a}/{n}")) })
        })
        .collect();
    bus.publish(&stream, &events).await.unwrap();
    eventually("all applied", async || handler.applied.lock().unwrap().len() == 30).await;

    let applied = handler.applied.lock().unwrap().clone();
    for a in 0..6 {
        let aggregate = format!("agg-{a}");
        let order: Vec<&str> =
            applied.iter().filter(|(g, _)| *g == aggregate).map(|(_, id)| id.as_str()).collect();
        let expected: Vec<String> = (0..5).map(|n| format!("{aggregate}/{n}")).collect();
        assert_eq!(order, expected, "one aggregate's events apply in order");
    }
    let most = handler.most_in_flight.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=4).contains(&most), "applied side by side, at most 4 at once: {most}");
    bus.close();
}
