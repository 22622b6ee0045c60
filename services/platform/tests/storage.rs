//! The platform's storage pieces on both backends: migrations when replicas start together,
//! idempotency records under concurrent retries, the outbox relay and the handled-events inbox.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use async_trait::async_trait;
use tandem_platform::{
    backend_tests,
    bus::{EventBus, EventHandler, InProcessBus},
    db::{Db, DbOptions},
    idempotency::{self, Claim},
    outbox::{self, OutboxRelay},
    testing::TestDb,
};
use tandem_proto::{
    events::v1::{Event, TeamDeleted, event::Payload},
    identity::v1::Jwk,
};

const MIGRATIONS: &[tandem_platform::db::MigrationSource] =
    &[(100, "things", "CREATE TABLE things (id TEXT PRIMARY KEY, n BIGINT NOT NULL)")];

async fn connect(db: &TestDb) -> Db {
    Db::connect(&db.url, &DbOptions::default()).unwrap()
}

/// Four replicas migrate the same fresh database at once: all succeed, each migration once.
async fn concurrent_migrations_apply_once(test: TestDb) {
    let replicas: Vec<Db> = (0..4).map(|_| Db::connect(&test.url, &DbOptions::default()).unwrap()).collect();
    let results = futures::future::join_all(replicas.iter().map(|db| db.migrate(MIGRATIONS))).await;
    for r in results {
        r.unwrap();
    }
    let db = &replicas[0];
    let (applied,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(db.pool()).await.unwrap();
    assert_eq!(applied, 3, "the platform's two migrations and the service's, once each");
    db.migrate(MIGRATIONS).await.expect("migrating again is a no-op");
}

/// Twenty identical requests at once: one does the work, the others get its answer; the same
/// id with another request is refused.
async fn idempotency_under_concurrent_retries(test: TestDb) {
    let db = connect(&test).await;
    db.migrate(MIGRATIONS).await.unwrap();
    let request = Jwk { kid: "request".into(), ..Default::default() };
    let fingerprint = idempotency::fingerprint(&request);
    let worked = Arc::new(AtomicUsize::new(0));
    let tasks = (0..20).map(|i| {
        let db = db.clone();
        let fingerprint = fingerprint.clone();
        let worked = worked.clone();
        tokio::spawn(async move {
            let mut tx = db.begin().await.unwrap();
            match idempotency::claim::<Jwk>(&mut tx, "scope", "req-1", &fingerprint).await.unwrap() {
                Claim::New => {
                    worked.fetch_add(1, Ordering::SeqCst);
                    sqlx::query("INSERT INTO things (id, n) VALUES ($1, $2)")
                        .bind(format!("thing-{i}"))
                        .bind(i as i64)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    let answer = Jwk { kid: format!("answer-{i}"), ..Default::default() };
                    idempotency::record(&mut tx, "scope", "req-1", &answer).await.unwrap();
                    tx.commit().await.unwrap();
                    answer
                }
                Claim::Replay(answer) => answer,
                Claim::Mismatch => panic!("same request reported as a mismatch"),
            }
        })
    });
    let answers: Vec<Jwk> = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(worked.load(Ordering::SeqCst), 1, "exactly one request did the work");
    assert!(answers.iter().all(|a| a == &answers[0]), "every retry got the first answer");
    let (things,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM things").fetch_one(db.pool()).await.unwrap();
    assert_eq!(things, 1);

    let other = idempotency::fingerprint(&Jwk { kid: "another request".into(), ..Default::default() });
    let mut tx = db.begin().await.unwrap();
    assert_eq!(idempotency::claim::<Jwk>(&mut tx, "scope", "req-1", &other).await.unwrap(), Claim::Mismatch);
    assert_eq!(idempotency::claim::<Jwk>(&mut tx, "other-scope", "req-1", &other).await.unwrap(), Claim::New);
}

struct Counting {
    seen: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl EventHandler for Counting {
    async fn handle(&self, event: &Event) -> anyhow::Result<()> {
        self.seen.lock().unwrap().push(event.id.clone());
        Ok(())
    }
}

/// Committed events are published once, in order; rolled-back ones never.
async fn outbox_publishes_committed_events_in_order(test: TestDb) {
    let db = connect(&test).await;
    db.migrate(MIGRATIONS).await.unwrap();
    let bus = Arc::new(InProcessBus::default());
    let handler = Arc::new(Counting { seen: Default::default() });
    bus.subscribe("stream", "group", handler.clone()).await.unwrap();

    let mut ids = Vec::new();
    for i in 0..5 {
        let mut tx = db.begin().await.unwrap();
        let event = outbox::enqueue(
            &mut tx,
            "stream",
            "test",
            "agg",
            Payload::TeamDeleted(TeamDeleted { team_id: format!("t{i}") }),
        )
        .await
        .unwrap();
        ids.push(event.id);
        tx.commit().await.unwrap();
    }
    let mut rolled_back = db.begin().await.unwrap();
    outbox::enqueue(
        &mut rolled_back,
        "stream",
        "test",
        "agg",
        Payload::TeamDeleted(TeamDeleted { team_id: "x".into() }),
    )
    .await
    .unwrap();
    rolled_back.rollback().await.unwrap();

    assert_eq!(outbox::backlog(&db).await.unwrap(), 5);
    let relay = OutboxRelay::new(db.clone(), bus.clone() as Arc<dyn EventBus>);
    assert_eq!(relay.publish_batch().await.unwrap(), 5);
    assert_eq!(relay.publish_batch().await.unwrap(), 0, "nothing is published twice");
    assert_eq!(outbox::backlog(&db).await.unwrap(), 0);
    assert_eq!(*handler.seen.lock().unwrap(), ids);
}

/// An event is applied once per consumer, however often it is delivered.
async fn handled_events_dedupe(test: TestDb) {
    let db = connect(&test).await;
    db.migrate(MIGRATIONS).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    assert!(outbox::mark_handled(&mut tx, "consumer-a", "evt-1").await.unwrap());
    assert!(!outbox::mark_handled(&mut tx, "consumer-a", "evt-1").await.unwrap());
    assert!(outbox::mark_handled(&mut tx, "consumer-b", "evt-1").await.unwrap());
    tx.commit().await.unwrap();
}

/// A bus that records what it published, in order, into a log it may share with another;
/// a gated one waits at its gate before publishing.
struct RecordingBus {
    gate: Option<tokio::sync::Semaphore>,
    published: Arc<std::sync::Mutex<Vec<String>>>,
}

#[async_trait]
impl EventBus for RecordingBus {
    async fn publish(&self, _: &str, events: &[Event]) -> Result<(), tandem_platform::bus::BusError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate").forget();
        }
        self.published.lock().unwrap().extend(events.iter().map(|e| e.aggregate_id.clone() + "/" + &e.id));
        Ok(())
    }

    async fn subscribe(
        &self,
        _: &str,
        _: &str,
        _: Arc<dyn EventHandler>,
    ) -> Result<(), tandem_platform::bus::BusError> {
        Ok(())
    }
}

async fn enqueue(db: &Db, aggregate: &str) -> String {
    let mut tx = db.begin().await.unwrap();
    let event = outbox::enqueue(
        &mut tx,
        "stream",
        "test",
        aggregate,
        Payload::TeamDeleted(TeamDeleted { team_id: aggregate.into() }),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    format!("{aggregate}/{}", event.id)
}

/// Two relays on one outbox: while one holds an aggregate's event, the other publishes other
/// aggregates' events but not that aggregate's next one, so each aggregate stays in order.
async fn relays_keep_each_aggregate_in_order(test: TestDb) {
    let db = connect(&test).await;
    db.migrate(MIGRATIONS).await.unwrap();
    let published = Arc::new(std::sync::Mutex::new(Vec::new()));
    let gated =
        Arc::new(RecordingBus { gate: Some(tokio::sync::Semaphore::new(0)), published: published.clone() });
    let open = Arc::new(RecordingBus { gate: None, published: published.clone() });
    let x1 = enqueue(&db, "x").await;
    let slow = OutboxRelay::new(db.clone(), gated.clone() as Arc<dyn EventBus>);
    let slow_batch = tokio::spawn(async move { slow.publish_batch().await.unwrap() });
    // Wait until the slow relay has claimed x1 and waits at its gate.
    loop {
        let (leased,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE lease_until > 0")
            .fetch_one(db.pool())
            .await
            .unwrap();
        if leased == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let x2 = enqueue(&db, "x").await;
    let y1 = enqueue(&db, "y").await;

    let fast = OutboxRelay::new(db.clone(), open as Arc<dyn EventBus>);
    assert_eq!(fast.publish_batch().await.unwrap(), 1, "only y1: x2 waits for x1");
    assert_eq!(*published.lock().unwrap(), std::slice::from_ref(&y1));

    gated.gate.as_ref().unwrap().add_permits(1);
    assert_eq!(slow_batch.await.unwrap(), 1);
    assert_eq!(fast.publish_batch().await.unwrap(), 1);
    assert_eq!(*published.lock().unwrap(), [y1, x1, x2]);
    assert_eq!(outbox::backlog(&db).await.unwrap(), 0);
}

backend_tests!(
    relays_keep_each_aggregate_in_order,
    concurrent_migrations_apply_once,
    idempotency_under_concurrent_retries,
    outbox_publishes_committed_events_in_order,
    handled_events_dedupe,
);
