//! The server bootstrap: `Server::build(options, …) → port() → run_until_stopped(signal)`.
//! Serves the given routes with `grpc.health.v1` (NOT_SERVING until every readiness check
//! passes, NOT_SERVING again on shutdown), reflection `v1` and `v1alpha`, and the tower layers;
//! and, when configured, the [admin HTTP server](crate::admin) with the same readiness.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    accept,
    admin::{AdminServer, Probes},
    auth::Authenticator,
    db::Db,
    layers::{authenticate, deadline, invalid_bodies, meter, rate_limit, shed, trace},
};

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    pub max_message_bytes: usize,
    pub shutdown_grace: Duration,
    /// Where the admin HTTP server (`/metrics`, `/livez`, `/readyz`) listens; none when unset.
    pub admin_listen: Option<SocketAddr>,
    /// Requests a second per caller (user, or address when anonymous); 0 turns it off.
    pub rate_limit_per_second: f64,
    /// Requests a caller may send at once before the rate applies.
    pub rate_limit_burst: u32,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 512,
            max_message_bytes: 4 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(20),
            admin_listen: None,
            rate_limit_per_second: 100.0,
            rate_limit_burst: 400,
        }
    }
}

/// Something that must answer before the server reports SERVING (a database, Redis).
#[async_trait]
pub trait Readiness: Send + Sync + 'static {
    fn name(&self) -> &str;
    async fn check(&self) -> anyhow::Result<()>;
}

#[async_trait]
impl Readiness for Db {
    fn name(&self) -> &str {
        "database"
    }
    async fn check(&self) -> anyhow::Result<()> {
        Ok(self.ping().await?)
    }
}

/// What a service contributes to a server: its routes, the names it reports health under,
/// and its readiness checks. Build one with [`service_set!`](crate::service_set).
pub struct ServiceSet {
    pub routes: Routes,
    pub names: Vec<&'static str>,
    pub readiness: Vec<Arc<dyn Readiness>>,
}

/// `service_set![max_message_bytes; a, b, …]`: the routes and health names of generated tonic
/// servers, each limited to messages of `max_message_bytes` both ways.
#[macro_export]
macro_rules! service_set {
    ($max:expr; $first:expr $(, $rest:expr)* $(,)?) => {{
        fn name_of<S: ::tonic::server::NamedService>(_: &S) -> &'static str { S::NAME }
        let max: usize = $max;
        let first = $first.max_decoding_message_size(max).max_encoding_message_size(max);
        #[allow(unused_mut)]
        let mut names = vec![name_of(&first)];
        #[allow(unused_mut)]
        let mut routes = ::tonic::service::Routes::new(first);
        $(
            let next = $rest.max_decoding_message_size(max).max_encoding_message_size(max);
            names.push(name_of(&next));
            routes = routes.add_service(next);
        )*
        $crate::server::ServiceSet { routes, names, readiness: Vec::new() }
    }};
}

/// Implements a generated tonic service trait for an API type by delegating each RPC to an
/// inherent method that returns `Result<Response, E>` where `E: Into<Status>`: the one place
/// a service's error becomes a `Status`. The messages are named relative to a `pb` module in
/// scope at the call site.
///
/// ```text
/// tandem_platform::grpc_service!(TiersApi; TierService {
///     create_tier => create_tier_(CreateTierRequest) -> CreateTierResponse;
/// });
/// ```
#[macro_export]
macro_rules! grpc_service {
    ($api:ty; $service:ident { $($rpc:ident => $inner:ident($req:ident) -> $resp:ident;)* }) => {
        #[::tonic::async_trait]
        impl $service for $api {
            $(
                async fn $rpc(
                    &self,
                    request: ::tonic::Request<pb::$req>,
                ) -> ::std::result::Result<::tonic::Response<pb::$resp>, ::tonic::Status> {
                    Ok(::tonic::Response::new(self.$inner(request).await?))
                }
            )*
        }
    };
}

impl ServiceSet {
    pub fn ready_when(mut self, check: Arc<dyn Readiness>) -> Self {
        self.readiness.push(check);
        self
    }

    /// Joins another service's set into this one (`tandem dev` serves all on one address).
    pub fn merge(mut self, other: ServiceSet) -> Self {
        // Both routers carry tonic's UNIMPLEMENTED fallback, and `Router::merge` refuses two
        // fallbacks: the joined set drops its copy, so the routes of every set, however the
        // merges nest, sit side by side in one router.
        let router = self.routes.into_axum_router().merge(other.routes.into_axum_router().reset_fallback());
        self.routes = Routes::from(router);
        self.names.extend(other.names);
        self.readiness.extend(other.readiness);
        self
    }
}

pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    options: ServerOptions,
    services: ServiceSet,
    authenticator: Arc<dyn Authenticator>,
    admin: Option<AdminServer>,
}

impl Server {
    /// Binds the listeners, gRPC and admin (port 0 picks a free port), without serving yet.
    pub async fn build(
        options: ServerOptions,
        services: ServiceSet,
        authenticator: Arc<dyn Authenticator>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        let admin = match options.admin_listen {
            Some(admin) => Some(
                AdminServer::bind(admin)
                    .await
                    .map_err(|e| anyhow::anyhow!("admin listener on {admin}: {e}"))?,
            ),
            None => None,
        };
        Ok(Self { listener, addr, options, services, authenticator, admin })
    }

    /// The admin HTTP server's address, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `stop` resolves, then reports NOT_SERVING, stops accepting, and lets
    /// in-flight RPCs finish within the grace period.
    pub async fn run_until_stopped(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Server { listener, addr, options, services, authenticator, admin } = self;
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health =
            Health { reporter, names: services.names.clone(), serving: tokio::sync::watch::channel(false).0 };
        health.set(ServingStatus::NotServing).await;

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tandem_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tandem_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let routes = services
            .routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
        let admin = admin.map(|admin| {
            tokio::spawn(admin.serve(Probes::new(health.serving.subscribe(), stopping_rx.clone())))
        });
        let readiness =
            tokio::spawn(watch_readiness(health.clone(), services.readiness, stopping_rx.clone()));

        let layers = tower::ServiceBuilder::new()
            .layer(meter())
            // Shedding comes before anything that costs per request but the count: a refusal
            // is the cheapest answer there is.
            .layer(shed(options.max_concurrent_requests))
            .layer(trace())
            .layer(invalid_bodies())
            .layer(deadline(options.request_timeout))
            .layer(authenticate(authenticator))
            .layer(rate_limit(options.rate_limit_per_second, options.rate_limit_burst));

        let shutdown = {
            let health = health.clone();
            async move {
                stop.await;
                tracing::info!("shutting down: draining in-flight requests");
                let _ = stopping_tx.send(true);
                health.set(ServingStatus::NotServing).await;
            }
        };
        let mut stopping = stopping_rx;
        tracing::info!(%addr, "serving");
        let service = layers.service(routes.prepare());
        // HTTP/2 keep-alive pings every 30 s, as tonic's server sent them.
        let serve = accept::serve(listener, service, Duration::from_secs(30), shutdown);
        tokio::select! {
            () = serve => {}
            () = async {
                let _ = stopping.wait_for(|s| *s).await;
                tokio::time::sleep(options.shutdown_grace).await;
            } => {
                tracing::warn!("grace period over; dropping the requests still in flight");
            }
        }
        readiness.abort();
        if let Some(admin) = admin {
            admin.abort();
        }
        Ok(())
    }
}

/// The health a server reports: over gRPC for the whole server and each service, and as a
/// flag for the admin server's `/readyz`.
#[derive(Clone)]
struct Health {
    reporter: HealthReporter,
    names: Vec<&'static str>,
    serving: tokio::sync::watch::Sender<bool>,
}

impl Health {
    async fn set(&self, status: ServingStatus) {
        self.serving.send_replace(status == ServingStatus::Serving);
        self.reporter.set_service_status("", status).await;
        for name in &self.names {
            self.reporter.set_service_status(*name, status).await;
        }
    }
}

/// SERVING while every check passes, NOT_SERVING while one fails, until shutdown.
async fn watch_readiness(
    health: Health,
    checks: Vec<Arc<dyn Readiness>>,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut serving = false;
    let mut interval = Duration::from_millis(50);
    loop {
        if *stopping.borrow() {
            return;
        }
        let mut ok = true;
        for check in &checks {
            if let Err(err) = check.check().await {
                if serving {
                    tracing::warn!(dependency = check.name(), error = %err, "dependency down; NOT_SERVING");
                }
                ok = false;
                break;
            }
        }
        if *stopping.borrow() {
            return;
        }
        if ok != serving {
            serving = ok;
            let status = if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
            health.set(status).await;
            if ok {
                tracing::info!("dependencies answer; SERVING");
            }
        }
        tokio::time::sleep(interval).await;
        interval = if serving { Duration::from_secs(2) } else { (interval * 2).min(Duration::from_secs(1)) };
    }
}

/// The process's shutdown, shared by the server and its background tasks (outbox relays,
/// sweepers): [`Shutdown::on_signal`] begins it on SIGTERM or SIGINT, and every
/// [`Shutdown::requested`] future resolves then.
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Sender<bool>);

impl Default for Shutdown {
    fn default() -> Self {
        Self(tokio::sync::watch::channel(false).0)
    }
}

impl Shutdown {
    /// Resolves once shutdown has begun: pass it to a background task's `run`.
    pub fn requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    }

    /// Begins shutdown.
    pub fn begin(&self) {
        self.0.send_replace(true);
    }

    /// Resolves on SIGTERM or SIGINT, having begun shutdown: pass it to
    /// [`Server::run_until_stopped`].
    pub fn on_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            shutdown_signal().await;
            this.begin();
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// The database as a readiness check that first applies the migrations: the service starts
/// serving health at once, applies its migrations as soon as the database answers, and
/// reports SERVING only after. Work that needs the schema waits on [`Self::migrated`].
pub struct MigratedDb {
    db: Db,
    migrations: &'static [crate::db::MigrationSource],
    done: tokio::sync::watch::Sender<bool>,
}

impl MigratedDb {
    pub fn new(db: Db, migrations: &'static [crate::db::MigrationSource]) -> Arc<Self> {
        Arc::new(Self { db, migrations, done: tokio::sync::watch::channel(false).0 })
    }

    /// Resolves once the migrations are applied.
    pub async fn migrated(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }
}

#[async_trait]
impl Readiness for MigratedDb {
    fn name(&self) -> &str {
        "database"
    }
    async fn check(&self) -> anyhow::Result<()> {
        if !*self.done.borrow() {
            self.db.migrate(self.migrations).await?;
            self.done.send_replace(true);
            tracing::info!("database migrations applied");
        }
        Ok(self.db.ping().await?)
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    #[tokio::test]
    async fn merged_sets_route_to_every_service() {
        let (_, health) = tonic_health::server::health_reporter();
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tandem_proto::FILE_DESCRIPTOR_SET)
        };
        let (_, health_again) = tonic_health::server::health_reporter();
        let left = crate::service_set![1 << 20; health]
            .merge(crate::service_set![1 << 20; reflection().build_v1().unwrap()])
            .merge(crate::service_set![1 << 20; reflection().build_v1alpha().unwrap()]);
        let right = crate::service_set![1 << 20; health_again].merge(
            crate::service_set![1 << 20; reflection().build_v1().unwrap()]
                .merge(crate::service_set![1 << 20; reflection().build_v1alpha().unwrap()]),
        );
        for set in [left, right] {
            assert_eq!(set.names.len(), 3);
            for (path, exists) in [
                ("/grpc.health.v1.Health/Check", true),
                ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", true),
                ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", true),
                ("/tandem.nope.v1.NoService/Nothing", false),
            ] {
                let request = http::Request::post(path)
                    .header("content-type", "application/grpc")
                    .body(tonic::body::Body::empty())
                    .unwrap();
                let response = set.routes.clone().oneshot(request).await.unwrap();
                let unimplemented = response.headers().get("grpc-status").is_some_and(|v| v == "12");
                assert_eq!(unimplemented, !exists, "{path}");
            }
        }
    }
}
