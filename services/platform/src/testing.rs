//! Test support shared by every service: a fresh database per test on SQLite and, when
//! `TANDEM_TEST_POSTGRES_URL` is set, on PostgreSQL; and a macro that runs one test body on
//! both. With `TANDEM_REQUIRE_POSTGRES=1` (CI) a missing or unreachable PostgreSQL fails the
//! test instead of skipping it.

use std::sync::{Arc, Mutex, PoisonError};

use sqlx::{AssertSqlSafe, Connection};
use tracing_subscriber::fmt::MakeWriter;

/// Log output kept in memory for a test to read: the writer of a tracing layer.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The Redis of `TANDEM_TEST_REDIS_URL`, or `None` when it is unset and not required
/// (`TANDEM_REQUIRE_REDIS=1`, as in CI, makes a missing Redis fail the test).
pub fn redis_url() -> Option<String> {
    let url = std::env::var("TANDEM_TEST_REDIS_URL").ok();
    let required = std::env::var("TANDEM_REQUIRE_REDIS").is_ok_and(|v| v == "1");
    assert!(url.is_some() || !required, "TANDEM_REQUIRE_REDIS=1 but TANDEM_TEST_REDIS_URL is not set");
    if url.is_none() {
        eprintln!("skipping: TANDEM_TEST_REDIS_URL is not set");
    }
    url
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    drop_pg: Option<(String, String)>,
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        Self { url, _dir: Some(dir), drop_pg: None }
    }

    /// A new PostgreSQL database, or `None` when no server is configured (and not required).
    pub async fn postgres() -> Option<Self> {
        let required = std::env::var("TANDEM_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
        let Ok(admin) = std::env::var("TANDEM_TEST_POSTGRES_URL") else {
            assert!(!required, "TANDEM_REQUIRE_POSTGRES=1 but TANDEM_TEST_POSTGRES_URL is not set");
            return None;
        };
        Self::postgres_at(&admin, required).await
    }

    /// A new database on the PostgreSQL server of `admin` (a connection to any database).
    pub async fn postgres_at(admin: &str, required: bool) -> Option<Self> {
        let admin = admin.to_owned();
        let name = format!("tandem_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(conn) => conn,
            Err(err) if !required => {
                eprintln!("skipping PostgreSQL: {err}");
                return None;
            }
            Err(err) => panic!("PostgreSQL required but unreachable at TANDEM_TEST_POSTGRES_URL: {err}"),
        };
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let (base, query) = admin.split_once('?').map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
        let base = base.rsplit_once('/').map_or(base, |(server, _)| server);
        let url = match query {
            Some(q) => format!("{base}/{name}?{q}"),
            None => format!("{base}/{name}"),
        };
        Some(Self { url, _dir: None, drop_pg: Some((admin, name)) })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.drop_pg.take() {
            // Drop the database from a thread of its own: this may run inside a runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::query(AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// `backend_tests!(a, b)` runs the async functions `a(TestDb)` and `b(TestDb)` once on SQLite
/// (`sqlite::a`) and once on PostgreSQL (`postgres::a`).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::testing::TestDb::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = $crate::testing::TestDb::postgres().await {
                        super::$name(db).await;
                    }
                }
            )*
        }
    };
}

/// A server on a free port of 127.0.0.1, with a channel to it, that shuts down when dropped.
pub struct TestServer {
    pub channel: tonic::transport::Channel,
    pub addr: std::net::SocketAddr,
    /// The admin HTTP server's address, when the options asked for one.
    pub admin: Option<std::net::SocketAddr>,
    shutdown: crate::server::Shutdown,
}

impl TestServer {
    pub async fn start(
        services: crate::server::ServiceSet,
        authenticator: std::sync::Arc<dyn crate::auth::Authenticator>,
    ) -> Self {
        Self::start_with(crate::server::ServerOptions::default(), services, authenticator).await
    }

    /// A server with `options`: pass `admin_listen: Some(127.0.0.1:0)` for an admin server too.
    pub async fn start_with(
        options: crate::server::ServerOptions,
        services: crate::server::ServiceSet,
        authenticator: std::sync::Arc<dyn crate::auth::Authenticator>,
    ) -> Self {
        let server =
            crate::server::Server::build(options, services, authenticator).await.expect("bind a test server");
        let addr = server.local_addr();
        let admin = server.admin_addr();
        let shutdown = crate::server::Shutdown::default();
        tokio::spawn(server.run_until_stopped(shutdown.requested()));
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("test server address")
            .connect_lazy();
        Self { channel, addr, admin, shutdown }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.begin();
    }
}

/// Now, in the whole seconds tokens carry.
pub fn now_secs() -> i64 {
    crate::time::now_micros() / crate::time::MICROS_PER_SECOND
}
