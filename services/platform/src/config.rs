//! The settings every service binary shares, from flags or the environment.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use crate::{
    bus::BusError,
    db::DbOptions,
    redis_bus::{RedisBus, RedisBusSettings},
    server::ServerOptions,
    telemetry::LogFormat,
};

/// Flags of `serve` common to every service.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TANDEM_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    /// OTLP/gRPC collector for traces; none when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_endpoint: Option<String>,
    #[arg(long, env = "TANDEM_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Admin HTTP address serving `/metrics` (Prometheus), `/livez` and `/readyz`; `off` for none.
    #[arg(long, env = "TANDEM_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: AdminListen,
}

impl ServeArgs {
    /// The gRPC server's options: its address, limits and admin address.
    pub fn server_options(&self) -> ServerOptions {
        ServerOptions { admin_listen: self.admin_listen.0, ..self.server.options(self.listen) }
    }
}

/// An address to listen on, or `off` (or empty) for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminListen(pub Option<SocketAddr>);

impl std::str::FromStr for AdminListen {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "off" => Ok(Self(None)),
            addr => addr.parse().map(|a| Self(Some(a))),
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// `postgres://…` or `sqlite://…`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    #[arg(long, env = "TANDEM_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
}

impl DatabaseArgs {
    pub fn options(&self) -> DbOptions {
        DbOptions { max_connections: self.db_max_connections, ..DbOptions::default() }
    }
}

/// The event bus between services.
#[derive(clap::Args, Debug, Clone)]
pub struct BusArgs {
    /// Redis (`redis://host:port`), which carries the events between services.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: String,
    /// An event delivery left unacknowledged this long (its consumer died) is taken over by
    /// another consumer, in milliseconds.
    #[arg(long, env = "TANDEM_BUS_CLAIM_IDLE_MS", default_value_t = 30_000)]
    pub bus_claim_idle_ms: u64,
}

impl BusArgs {
    /// The Redis Streams bus; it connects lazily, so Redis may still be starting.
    pub fn connect(&self) -> Result<Arc<RedisBus>, BusError> {
        let settings = RedisBusSettings {
            claim_idle: Duration::from_millis(self.bus_claim_idle_ms),
            ..RedisBusSettings::default()
        };
        Ok(Arc::new(RedisBus::connect(&self.redis_url, settings)?))
    }
}

/// Limits of the gRPC server.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Server-side deadline of every RPC, in milliseconds.
    #[arg(long, env = "TANDEM_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Requests in flight beyond which new ones are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "TANDEM_MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,
    /// Largest request or response message, in bytes.
    #[arg(long, env = "TANDEM_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// How long in-flight RPCs may take to finish after SIGTERM, in milliseconds.
    #[arg(long, env = "TANDEM_SHUTDOWN_GRACE_MS", default_value_t = 20_000)]
    pub shutdown_grace_ms: u64,
    /// Requests a second each caller (user, or address when anonymous) may send; 0 turns the
    /// limit off. Past it: RESOURCE_EXHAUSTED with a RetryInfo.
    #[arg(long, env = "TANDEM_RATE_LIMIT_PER_SECOND", default_value_t = 100.0)]
    pub rate_limit_per_second: f64,
    /// Requests a caller may send in a burst before its rate applies.
    #[arg(long, env = "TANDEM_RATE_LIMIT_BURST", default_value_t = 400)]
    pub rate_limit_burst: u32,
}

impl ServerArgs {
    pub fn options(&self, listen: SocketAddr) -> ServerOptions {
        ServerOptions {
            listen,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_concurrent_requests: self.max_concurrent_requests,
            max_message_bytes: self.max_message_bytes,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            admin_listen: None,
            rate_limit_per_second: self.rate_limit_per_second,
            rate_limit_burst: self.rate_limit_burst,
        }
    }
}

/// The process arguments with `default` inserted as the subcommand when none of `known` is
/// given, so `tandem-identity` alone means `tandem-identity serve`.
pub fn args_with_default_subcommand(default: &str, known: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let is_known = known.contains(&first) || ["help", "-h", "--help", "-V", "--version"].contains(&first);
    if !is_known {
        args.insert(1.min(args.len()), default.into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_listen_is_an_address_or_off() {
        assert_eq!("off".parse::<AdminListen>().unwrap(), AdminListen(None));
        assert_eq!("".parse::<AdminListen>().unwrap(), AdminListen(None));
        assert_eq!(
            "127.0.0.1:9090".parse::<AdminListen>().unwrap(),
            AdminListen(Some(SocketAddr::from(([127, 0, 0, 1], 9090))))
        );
        assert!("nine".parse::<AdminListen>().is_err());
    }
}
