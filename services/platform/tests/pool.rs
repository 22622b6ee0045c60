//! The connection pool: connections reused between requests, and what must still hold when a
//! connection goes back without a check: a dropped transaction rolled back before anyone else
//! waits on it, a cancelled statement not leaking into the next use, a connection the server
//! killed replaced after one failure, a bounded wait for a free connection, and a clean close.

use std::time::Duration;

use sqlx::{AnyConnection, Connection};
use tandem_platform::{
    backend_tests,
    db::{Db, DbError, DbOptions},
    testing::TestDb,
};

const MIGRATIONS: &[tandem_platform::db::MigrationSource] =
    &[(100, "things", "CREATE TABLE things (id TEXT PRIMARY KEY, n BIGINT NOT NULL)")];

async fn migrated(test: &TestDb, options: DbOptions) -> Db {
    let db = Db::connect(&test.url, &options).unwrap();
    db.migrate(MIGRATIONS).await.unwrap();
    db
}

async fn count(db: &Db) -> i64 {
    let mut conn = db.acquire().await.unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM things").fetch_one(&mut *conn).await.unwrap()
}

async fn backend_pid(conn: &mut AnyConnection) -> Result<i32, DbError> {
    Ok(sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(conn).await?)
}

/// A transaction dropped without a commit leaves nothing behind, and the next writer is not
/// kept waiting by it.
async fn a_dropped_transaction_is_rolled_back(test: TestDb) {
    let db = migrated(&test, DbOptions::default()).await;
    let mut tx = db.begin().await.unwrap();
    sqlx::query("INSERT INTO things (id, n) VALUES ('a', 1)").execute(&mut *tx).await.unwrap();
    drop(tx);

    let next = async {
        let mut tx = db.begin().await.unwrap();
        // The same key: it would wait for the dropped transaction's row lock, were it open.
        sqlx::query("INSERT INTO things (id, n) VALUES ('a', 2)").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(5), next).await.expect("the dropped transaction let go");
    let mut conn = db.acquire().await.unwrap();
    let n: i64 =
        sqlx::query_scalar("SELECT n FROM things WHERE id = 'a'").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(n, 2, "only the committed row");
}

/// Transactions committed and rolled back explicitly, on reused connections.
async fn commits_and_rollbacks_on_reused_connections(test: TestDb) {
    let db = migrated(&test, DbOptions { max_connections: 1, ..DbOptions::default() }).await;
    for i in 0..20 {
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO things (id, n) VALUES ($1, $2)")
            .bind(format!("t{i}"))
            .bind(i64::from(i))
            .execute(&mut *tx)
            .await
            .unwrap();
        if i % 2 == 0 { tx.commit().await.unwrap() } else { tx.rollback().await.unwrap() }
    }
    assert_eq!(count(&db).await, 10);
}

/// A connection that finished cleanly serves the next request, without a new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_serves_one_request_after_another() {
    let Some(test) = TestDb::postgres().await else { return };
    let db = migrated(&test, DbOptions::default()).await;
    let first = backend_pid(&mut db.acquire().await.unwrap()).await.unwrap();
    for _ in 0..10 {
        assert_eq!(backend_pid(&mut db.acquire().await.unwrap()).await.unwrap(), first);
    }
    // Every open connection waits for its next use, once sqlx has taken back the migrator's
    // (it pings a connection it gets back on a task of its own, which may still be running).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (open, idle) = db.connections();
        if idle == open as usize {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{open} connections open, {idle} waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A statement cancelled mid-flight (its request timed out) does not hand its result to the
/// connection's next user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_statement_does_not_leak_into_the_next_use() {
    let Some(test) = TestDb::postgres().await else { return };
    let db = migrated(&test, DbOptions { max_connections: 1, ..DbOptions::default() }).await;
    let mut conn = db.acquire().await.unwrap();
    let slow = sqlx::query_scalar::<_, i64>("SELECT 1 FROM pg_sleep(0.3)").fetch_one(&mut *conn);
    assert!(tokio::time::timeout(Duration::from_millis(50), slow).await.is_err(), "cancelled");
    drop(conn);

    let mut conn = db.acquire().await.unwrap();
    let seven: i64 = sqlx::query_scalar("SELECT 7::BIGINT").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(seven, 7);
}

/// A request cut off in the middle of a statement does not make the next request wait for
/// that statement: its connection goes back for a check, and the next takes another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_cut_off_does_not_hold_up_the_next_request() {
    let Some(test) = TestDb::postgres().await else { return };
    let db = migrated(&test, DbOptions { max_connections: 2, ..DbOptions::default() }).await;
    let mut conn = db.acquire().await.unwrap();
    let cut_off = backend_pid(&mut conn).await.unwrap();
    let slow = sqlx::query_scalar::<_, i64>("SELECT 1 FROM pg_sleep(3)").fetch_one(&mut *conn);
    assert!(tokio::time::timeout(Duration::from_millis(50), slow).await.is_err(), "cut off");
    tandem_platform::db::drop_unfinished(conn);

    let started = std::time::Instant::now();
    let next = backend_pid(&mut db.acquire().await.unwrap()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "waited {:?}", started.elapsed());
    assert_ne!(next, cut_off, "not the connection still running the statement");
}

/// A connection the server ended fails once at most; the pool then opens another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_server_ended_is_replaced() {
    let Some(test) = TestDb::postgres().await else { return };
    let db = migrated(&test, DbOptions::default()).await;
    let first = backend_pid(&mut db.acquire().await.unwrap()).await.unwrap();
    let mut admin = AnyConnection::connect(&test.url).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)").bind(first).execute(&mut admin).await.unwrap();
    // Let the server finish ending it.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut failures = 0;
    let mut answered = None;
    for _ in 0..3 {
        match backend_pid(&mut db.acquire().await.unwrap()).await {
            Ok(pid) => {
                answered = Some(pid);
                break;
            }
            Err(DbError::Unavailable(_)) => failures += 1,
            Err(other) => panic!("a dead connection should read as unavailable: {other}"),
        }
    }
    assert!(failures <= 1, "{failures} failures");
    let pid = answered.expect("a live connection after the dead one");
    assert_ne!(pid, first);
}

/// With every connection in use, a caller waits at most the acquire timeout, and gets one as
/// soon as another caller is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_connection_is_bounded() {
    let Some(test) = TestDb::postgres().await else { return };
    let options =
        DbOptions { max_connections: 2, acquire_timeout: Duration::from_millis(200), ..DbOptions::default() };
    let db = migrated(&test, options).await;
    let a = db.acquire().await.unwrap();
    let _b = db.acquire().await.unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(db.acquire().await, Err(DbError::Unavailable(_))));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    let waiting = tokio::spawn({
        let db = db.clone();
        async move { db.acquire().await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(a);
    waiting.await.unwrap().expect("the released connection");
}

/// Sessions on this test's database, other than `admin`'s own.
async fn sessions(admin: &mut AnyConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(admin)
    .await
    .unwrap()
}

/// The connections a burst opened are closed once they go unused for the idle timeout, while
/// one of them stays busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bursts_connections_close_when_unused_while_one_stays_busy() {
    let Some(test) = TestDb::postgres().await else { return };
    let options = DbOptions { idle_timeout: Duration::from_secs(2), ..DbOptions::default() };
    let db = migrated(&test, options).await;
    let mut admin = AnyConnection::connect(&test.url).await.unwrap();
    let burst: Vec<_> = futures::future::join_all((0..4).map(|_| db.acquire())).await;
    for conn in burst {
        backend_pid(&mut conn.unwrap()).await.unwrap();
    }
    assert!(sessions(&mut admin).await >= 4, "the burst's sessions are open");

    // One request after another, for longer than the idle timeout and then some.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        backend_pid(&mut db.acquire().await.unwrap()).await.unwrap();
        if sessions(&mut admin).await == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} sessions open", sessions(&mut admin).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Closing the pool ends with connections waiting for their next use, and refuses new uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_ends_idle_connections() {
    let Some(test) = TestDb::postgres().await else { return };
    let db = migrated(&test, DbOptions::default()).await;
    let (a, b) = (db.acquire().await.unwrap(), db.acquire().await.unwrap());
    drop((a, b));
    tokio::time::timeout(Duration::from_secs(5), db.close()).await.expect("close returns");
    assert!(db.acquire().await.is_err());
}

backend_tests!(a_dropped_transaction_is_rolled_back, commits_and_rollbacks_on_reused_connections);
