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
    let (applied,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut *db.acquire().await.unwrap())
        .await
        .unwrap();
    assert_eq!(applied, 4, "the platform's three migrations and the service's, once each");
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
    let (things,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM things")
        .fetch_one(&mut *db.acquire().await.unwrap())
        .await
        .unwrap();
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

/// The advisory locks of the test database's sessions: (granted, waiting), and the pid of a
/// session holding one.
async fn advisory_locks(db: &Db) -> (i64, i64, Option<i32>) {
    sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE granted), COUNT(*) FILTER (WHERE NOT granted), \
                MIN(pid) FILTER (WHERE granted) \
         FROM pg_locks WHERE locktype = 'advisory' AND database = \
           (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&mut *db.acquire().await.unwrap())
    .await
    .unwrap()
}

async fn until_locks(db: &Db, granted: i64, waiting: i64) -> Option<i32> {
    for _ in 0..1000 {
        let (g, w, holder) = advisory_locks(db).await;
        if (g, w) == (granted, waiting) {
            return holder;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("advisory locks never became {granted} granted and {waiting} waiting");
}

/// A migrated PostgreSQL database and the buses of two relays sharing one log of what they
/// published: a gated one (shut until the test adds a permit) and an open one.
async fn two_relays(test: &TestDb) -> (Db, Arc<RecordingBus>, Arc<RecordingBus>) {
    let db = connect(test).await;
    db.migrate(MIGRATIONS).await.unwrap();
    let published = Arc::new(std::sync::Mutex::new(Vec::new()));
    let gated =
        Arc::new(RecordingBus { gate: Some(tokio::sync::Semaphore::new(0)), published: published.clone() });
    let open = Arc::new(RecordingBus { gate: None, published });
    (db, gated, open)
}

/// Two relays on one PostgreSQL outbox (two replicas): while one publishes its batch, the
/// other waits for its turn instead of publishing later events first; then it publishes what
/// the first left, so every aggregate's events leave in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_take_turns() {
    let Some(test) = TestDb::postgres().await else { return };
    let (db, gated, open) = two_relays(&test).await;
    let published = gated.published.clone();
    let x1 = enqueue(&db, "x").await;
    let slow = OutboxRelay::new(db.clone(), gated.clone() as Arc<dyn EventBus>);
    let slow_batch = tokio::spawn(async move { slow.publish_batch().await.unwrap() });
    // The slow relay has its turn and waits at its gate with x1.
    until_locks(&db, 1, 0).await;
    let x2 = enqueue(&db, "x").await;
    let y1 = enqueue(&db, "y").await;

    let fast = OutboxRelay::new(db.clone(), open as Arc<dyn EventBus>);
    let fast_batch = tokio::spawn(async move { fast.publish_batch().await.unwrap() });
    until_locks(&db, 1, 1).await;
    assert!(published.lock().unwrap().is_empty(), "nothing leaves while the first relay has its turn");

    gated.gate.as_ref().unwrap().add_permits(1);
    assert_eq!(slow_batch.await.unwrap(), 1);
    assert_eq!(fast_batch.await.unwrap(), 2, "x2 and y1, not x1 again");
    assert_eq!(*published.lock().unwrap(), [x1, x2, y1]);
    assert_eq!(outbox::backlog(&db).await.unwrap(), 0);
}

/// A relay whose session dies during its turn (the process killed, the connection cut) marks
/// nothing: the next relay gets the turn at once and publishes the whole batch again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_dies_leaves_its_batch_to_the_next() {
    let Some(test) = TestDb::postgres().await else { return };
    let (db, gated, open) = two_relays(&test).await;
    let published = gated.published.clone();
    let x1 = enqueue(&db, "x").await;
    let y1 = enqueue(&db, "y").await;
    let dying = OutboxRelay::new(db.clone(), gated.clone() as Arc<dyn EventBus>);
    let dying_batch = tokio::spawn(async move { dying.publish_batch().await });
    let holder = until_locks(&db, 1, 0).await.expect("the relay's session");

    let next = OutboxRelay::new(db.clone(), open as Arc<dyn EventBus>);
    let next_batch = tokio::spawn(async move { next.publish_batch().await.unwrap() });
    until_locks(&db, 1, 1).await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(holder)
        .execute(&mut *db.acquire().await.unwrap())
        .await
        .unwrap();
    assert_eq!(next_batch.await.unwrap(), 2);
    assert_eq!(*published.lock().unwrap(), [x1.clone(), y1.clone()]);
    assert_eq!(outbox::backlog(&db).await.unwrap(), 0);

    // The dead relay's publish goes through (a duplicate consumers skip by id), but its mark
    // fails with its session.
    gated.gate.as_ref().unwrap().add_permits(1);
    assert!(dying_batch.await.unwrap().is_err());
    assert_eq!(*published.lock().unwrap(), [x1.clone(), y1.clone(), x1, y1]);
}

backend_tests!(
    concurrent_migrations_apply_once,
    idempotency_under_concurrent_retries,
    outbox_publishes_committed_events_in_order,
    handled_events_dedupe,
);
