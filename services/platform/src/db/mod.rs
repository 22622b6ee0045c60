//! The database: one connection pool over PostgreSQL (production) or SQLite (the embedded
//! default), addressed by URL, running one set of queries through sqlx's `Any` driver. The few
//! places where the two dialects differ are isolated here.

mod conn;

use std::{
    borrow::Cow,
    str::FromStr,
    sync::{Arc, Once},
    time::Duration,
};

use sqlx::{
    AssertSqlSafe, Executor, SqlSafeStr,
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::{Migration, MigrationType, Migrator},
};

#[cfg(test)]
pub(crate) use conn::cancelling;
pub(crate) use conn::while_unfinished;
pub use conn::{Conn, Tx, drop_unfinished};

type Pool = sqlx::AnyPool;
pub type Row = sqlx::any::AnyRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A storage failure, classified by kind (SQLSTATE through sqlx), never by message text.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("unique constraint violated")]
    UniqueViolation,
    #[error("foreign key violated")]
    ForeignKeyViolation,
    #[error("database error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for DbError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) => match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => DbError::UniqueViolation,
                sqlx::error::ErrorKind::ForeignKeyViolation => DbError::ForeignKeyViolation,
                // PostgreSQL class 08 (connection exception), 57P (operator intervention:
                // shutdown, crash), 53 (insufficient resources); SQLite BUSY/LOCKED.
                _ => match db.code().as_deref() {
                    Some(code) if code.starts_with("08") || code.starts_with("57P") => {
                        // The session is gone or going: pooled connections get checked.
                        conn::note_failure();
                        DbError::Unavailable(err.to_string())
                    }
                    Some(code) if code.starts_with("53") || code == "5" || code == "6" => {
                        DbError::Unavailable(err.to_string())
                    }
                    _ => DbError::Other(err.to_string()),
                },
            },
            sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_) => {
                conn::note_failure();
                DbError::Unavailable(err.to_string())
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => DbError::Unavailable(err.to_string()),
            // The connection's exchange with the server went out of step: it cannot be trusted
            // with another statement before sqlx's check.
            sqlx::Error::Protocol(_) => {
                conn::note_failure();
                DbError::Other(err.to_string())
            }
            _ => DbError::Other(err.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for DbError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        match err {
            sqlx::migrate::MigrateError::Execute(e) => e.into(),
            other => DbError::Other(other.to_string()),
        }
    }
}

/// A migration of a service: its version, name and SQL. The SQL may use the tokens of
/// [`dialect`] where PostgreSQL and SQLite differ.
pub type MigrationSource = (i64, &'static str, &'static str);

/// Serialises, until `tx` ends, the transactions that take the same `key`: on PostgreSQL a
/// transaction-scoped advisory lock; SQLite's writers are serialised already (`BEGIN
/// IMMEDIATE`). For a read-then-write decision that two transactions must not both make from
/// the same stale read.
pub async fn lock(tx: &mut Tx, key: &str) -> Result<(), DbError> {
    if (**tx).backend_name() == "PostgreSQL" {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))::TEXT")
            .bind(key)
            .fetch_one(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The platform's own tables (idempotency records, outbox, handled events), in every
/// service's database. Service migrations use versions from 100.
pub const PLATFORM_MIGRATIONS: &[MigrationSource] = &[
    (1, "platform", include_str!("../../migrations/0001_platform.sql")),
    (2, "outbox order", include_str!("../../migrations/0002_outbox_order.sql")),
    (3, "outbox turns", include_str!("../../migrations/0003_outbox_turns.sql")),
];

/// Rewrites the dialect tokens of a migration for the backend:
/// `{{SEQ_ID}}` an auto-incrementing 64-bit primary key.
pub fn dialect(sql: &str, backend: Backend) -> String {
    let seq_id = match backend {
        Backend::Postgres => "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
    };
    sql.replace("{{SEQ_ID}}", seq_id)
}

#[derive(Clone)]
pub struct Db {
    pool: Pool,
    reuse: Arc<conn::Reuse>,
    backend: Backend,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("pool", &self.pool).field("backend", &self.backend).finish()
    }
}

/// Pool settings.
#[derive(Clone, Debug)]
pub struct DbOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// How long an open connection may go unused before the pool closes it.
    pub idle_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

impl Db {
    /// Connects lazily: the pool opens connections on first use, so a service starts (and
    /// reports NOT_SERVING) while its database is still down.
    pub fn connect(url: &str, options: &DbOptions) -> Result<Self, DbError> {
        install_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(DbError::Other("DATABASE_URL must start with postgres:// or sqlite://".into()));
        };
        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let connect = AnyConnectOptions::from_str(&url).map_err(|e| DbError::Other(e.to_string()))?;
        let max_connections = match backend {
            Backend::Postgres => options.max_connections,
            // SQLite has one writer; a few readers beside it under WAL.
            Backend::Sqlite => options.max_connections.min(4),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(options.idle_timeout)
            // sqlx pings a connection when it goes back to its pool, and by default again when
            // it is taken: a round trip to the server on every acquire, for every query. Not
            // when taken, and mostly not on release either (see `conn`): a connection goes
            // back to sqlx, and through its ping, after a failure, after waiting a second
            // unused, and every 30 s in steady use.
            .test_before_acquire(false)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(connect);
        let reuse = conn::Reuse::new(max_connections);
        Ok(Self { pool, reuse, backend })
    }

    /// The most connections the pool opens.
    pub fn max_connections(&self) -> u32 {
        self.pool.options().get_max_connections()
    }

    /// A connection, back to the pool when dropped.
    pub async fn acquire(&self) -> Result<Conn, DbError> {
        self.reuse.acquire(&self.pool).await
    }

    /// Open connections, and how many of them wait for their next use.
    pub fn connections(&self) -> (u32, usize) {
        let open = self.pool.size();
        (open, (self.pool.num_idle() + self.reuse.idle_count()).min(open as usize))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Opens a transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`) so
    /// that two writers queue instead of failing when one upgrades a read lock.
    pub async fn begin(&self) -> Result<Tx, DbError> {
        let conn = self.acquire().await?;
        let statement = match self.backend {
            Backend::Postgres => None,
            Backend::Sqlite => Some("BEGIN IMMEDIATE"),
        };
        Ok(Tx::begin(conn, statement).await?)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&mut *self.acquire().await?).await?;
        Ok(())
    }

    /// Applies the platform's and the service's migrations. On PostgreSQL the migrator holds
    /// an advisory lock, so replicas that start together apply each migration once.
    pub async fn migrate(&self, service: &[MigrationSource]) -> Result<(), DbError> {
        let migrations = PLATFORM_MIGRATIONS
            .iter()
            .chain(service)
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*name),
                    MigrationType::Simple,
                    AssertSqlSafe(dialect(sql, self.backend)).into_sql_str(),
                    false,
                )
            })
            .collect();
        let migrator = Migrator::with_migrations(migrations);
        // The migrator takes its connection from sqlx's pool: give it those waiting here.
        self.reuse.release_idle();
        match self.backend {
            Backend::Postgres => migrator.run(&self.pool).await?,
            // SQLite has no advisory lock: migrations of one process queue on a mutex, and one
            // that lost a race with another process finds the schema applied when it retries.
            Backend::Sqlite => {
                static SQLITE_MIGRATIONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
                let _one_at_a_time = SQLITE_MIGRATIONS.lock().await;
                let mut attempt = 0;
                while let Err(err) = migrator.run(&self.pool).await {
                    attempt += 1;
                    if attempt == 3 {
                        return Err(err.into());
                    }
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.reuse.close();
        self.pool.close().await;
    }
}

/// `sqlite://path` with the file created when missing (and its folder).
fn sqlite_url(url: &str) -> Result<String, DbError> {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let parent = std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent.filter(|_| path != ":memory:") {
        std::fs::create_dir_all(parent).map_err(|e| DbError::Other(format!("{}: {e}", parent.display())))?;
    }
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if !params.iter().any(|p| p.starts_with("mode=")) {
        params.push("mode=rwc");
    }
    Ok(format!("sqlite://{path}?{}", params.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_tokens() {
        assert!(dialect("id {{SEQ_ID}}", Backend::Postgres).contains("IDENTITY"));
        assert!(dialect("id {{SEQ_ID}}", Backend::Sqlite).contains("AUTOINCREMENT"));
    }

    #[test]
    fn sqlite_urls_create_the_file() {
        assert_eq!(sqlite_url("sqlite:///tmp/x/y.db").unwrap(), "sqlite:///tmp/x/y.db?mode=rwc");
        assert_eq!(sqlite_url("sqlite://a.db?mode=ro").unwrap(), "sqlite://a.db?mode=ro");
    }

    #[test]
    fn unknown_schemes_are_refused() {
        assert!(Db::connect("mysql://x", &DbOptions::default()).is_err());
    }
}

/// A boolean column. Stored as a 0/1 BIGINT, because sqlx's `Any` driver cannot decode
/// SQLite's BOOLEAN; read it with `#[sqlx(try_from = "Flag")]` on a `bool` field and bind
/// `i64::from(value)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flag(pub bool);

impl From<Flag> for bool {
    fn from(flag: Flag) -> bool {
        flag.0
    }
}

impl sqlx::Type<sqlx::Any> for Flag {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <i64 as sqlx::Type<sqlx::Any>>::type_info()
    }
    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        <i64 as sqlx::Type<sqlx::Any>>::compatible(ty) || <i32 as sqlx::Type<sqlx::Any>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for Flag {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(Flag(<i64 as sqlx::Decode<sqlx::Any>>::decode(value)? != 0))
    }
}
