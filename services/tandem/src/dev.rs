//! The suite in one process: each service on its own SQLite file under the data directory,
//! one gRPC server on one address, the in-process event bus and one outbox relay per service.
//! Served: identity, tiers, commissions and deals.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use tandem_commissions::{Commissions, DnsTxt, TeamRewards};
use tandem_deals::{Deals, Directory, UserInfo};
use tandem_identity::{
    Identity, MailSettings, Ports, Settings,
    domain::secrets::SigningKeyPair,
    ports::{LedgerError, RewardsLedger},
};
use tandem_platform::{
    ApiError,
    auth::Caller,
    bus::{EventBus, InProcessBus},
    config::{self, AdminListen},
    db::{Db, DbOptions},
    metrics,
    outbox::OutboxRelay,
    server::{MigratedDb, Server, ServerOptions, Shutdown},
    telemetry,
};
use tandem_tiers::Tiers;

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Address every service is served on.
    #[arg(long, env = "TANDEM_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Where the SQLite files and the signing key live.
    #[arg(long, env = "TANDEM_DATA_DIR", default_value = ".tandem")]
    pub data_dir: PathBuf,
    /// Load a demo vendor with partners and print example calls.
    #[arg(long)]
    pub demo: bool,
    #[arg(long, env = "TANDEM_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: telemetry::LogFormat,
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_endpoint: Option<String>,
    /// Admin HTTP address serving `/metrics`, `/livez` and `/readyz` (e.g. `127.0.0.1:9090`);
    /// `off`, the default, for none.
    #[arg(long, env = "TANDEM_ADMIN_LISTEN", default_value = "off")]
    pub admin_listen: AdminListen,
    /// The first staff admin (idempotent); `--demo` uses its own.
    #[arg(long, env = "TANDEM_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    #[arg(long, env = "TANDEM_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    #[command(flatten)]
    pub mail: MailSettings,
    /// Deadlines, limits and the per-caller rate limit, as the production services take them.
    #[command(flatten)]
    pub server: config::ServerArgs,
}

/// Identity answering deals' questions about enrolments, and about the users deals' copy of
/// identity's members has never heard of, in process.
struct IdentityDirectory(Arc<Identity>);

fn api_error(err: tandem_identity::error::IdentityError) -> ApiError {
    match err {
        tandem_identity::error::IdentityError::Db(tandem_platform::db::DbError::Unavailable(m)) => {
            ApiError::Unavailable(m)
        }
        other => ApiError::Internal(other.to_string()),
    }
}

#[async_trait]
impl Directory for IdentityDirectory {
    async fn user(&self, _caller: &Caller, user_id: &str) -> Result<Option<UserInfo>, ApiError> {
        Ok(self.0.user_access(user_id).await.map_err(api_error)?.map(|u| UserInfo {
            active: u.active,
            staff: u.staff_role.is_some(),
            team_ids: u.team_ids,
        }))
    }

    async fn team_enrolled(
        &self,
        _caller: &Caller,
        team_id: &str,
        program_id: &str,
    ) -> Result<bool, ApiError> {
        self.0.team_enrolled(team_id, program_id).await.map_err(api_error)
    }
}

/// The signing key kept in the data directory, so tokens survive a restart.
fn signing_key(dir: &std::path::Path) -> anyhow::Result<SigningKeyPair> {
    let path = dir.join("signing-key.pem");
    if !path.exists() {
        std::fs::write(&path, SigningKeyPair::generate_pem()?)?;
        #[cfg(unix)]
        std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&path)?.permissions(), 0o600);
    }
    SigningKeyPair::from_pem(&std::fs::read_to_string(&path)?)
}

/// Identity's "does this team hold rewards?" answered by commissions in process, from its
/// database (identity is built before commissions, which asks identity for permissions).
struct CommissionsRewards(TeamRewards);

#[async_trait]
impl RewardsLedger for CommissionsRewards {
    async fn team_holds_rewards(&self, team_id: &str) -> Result<bool, LedgerError> {
        self.0.holds_rewards(team_id).await.map_err(|e| LedgerError::Unavailable(e.to_string()))
    }
}

fn sqlite(dir: &std::path::Path, service: &str) -> anyhow::Result<Db> {
    Ok(Db::connect(
        &format!("sqlite://{}", dir.join(format!("{service}.db")).display()),
        &DbOptions::default(),
    )?)
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let _telemetry = telemetry::init("tandem", args.log_format, args.otel_endpoint.as_deref())?;
    std::fs::create_dir_all(&args.data_dir)?;
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::default());
    let shutdown = Shutdown::default();
    let stopped = || shutdown.requested();

    // identity: it asks commissions whether a team holds rewards before deleting it.
    let identity_db = sqlite(&args.data_dir, "identity")?;
    let commissions_db = sqlite(&args.data_dir, "commissions")?;
    let settings = Settings {
        signing_key: signing_key(&args.data_dir)?,
        previous_keys: Vec::new(),
        link_base: format!("http://{}", args.listen),
    };
    let ports = Ports {
        rewards: Arc::new(CommissionsRewards(TeamRewards(commissions_db.clone()))),
        ..Ports::standard(&args.mail)?
    };
    let (identity, identity_relay) =
        Identity::start(identity_db.clone(), settings, ports, bus.clone()).await?;
    let identity_migrated = MigratedDb::new(identity_db.clone(), tandem_identity::MIGRATIONS);
    // Migrate before serving: on an existing data directory this is a few milliseconds.
    tandem_platform::server::Readiness::check(identity_migrated.as_ref()).await?;
    identity.subscribe(bus.as_ref()).await?;
    // Deals keeps its copy of identity's members from identity's events: subscribed before
    // identity's relay publishes anything.
    let deals_db = sqlite(&args.data_dir, "deals")?;
    let deals_migrated = MigratedDb::new(deals_db.clone(), tandem_deals::MIGRATIONS);
    tandem_platform::server::Readiness::check(deals_migrated.as_ref()).await?;
    bus.subscribe(
        tandem_deals::directory::IDENTITY_STREAM,
        tandem_deals::directory::DIRECTORY_CONSUMER,
        tandem_deals::directory::DirectoryCopy::new(deals_db.clone()),
    )
    .await?;
    tokio::spawn(identity_relay.run(stopped()));

    // tiers: identity answers its permission checks in process; won deals reach it from the
    // deals stream.
    let tiers_db = sqlite(&args.data_dir, "tiers")?;
    let tiers_relay = OutboxRelay::new(tiers_db.clone(), bus.clone());
    let tiers = Tiers::new(tiers_db.clone(), identity.clone(), tiers_relay.waker());
    let tiers_migrated = MigratedDb::new(tiers_db.clone(), tandem_tiers::MIGRATIONS);
    tandem_platform::server::Readiness::check(tiers_migrated.as_ref()).await?;
    tiers.subscribe(bus.as_ref()).await?;
    tokio::spawn(tiers_relay.run(stopped()));
    tokio::spawn(tiers.clone().run_sweeper(tandem_tiers::SWEEP_INTERVAL, stopped()));

    // commissions: identity answers its permission checks in process; won deals and tier
    // changes reach it from the bus; identity's inbox takes its notifications.
    let commissions_relay = OutboxRelay::new(commissions_db.clone(), bus.clone());
    let commissions = Commissions::new(
        commissions_db.clone(),
        identity.clone(),
        Arc::new(DnsTxt::from_system()?),
        commissions_relay.waker(),
    );
    let commissions_migrated = MigratedDb::new(commissions_db.clone(), tandem_commissions::MIGRATIONS);
    tandem_platform::server::Readiness::check(commissions_migrated.as_ref()).await?;
    commissions.subscribe(bus.as_ref()).await?;
    tokio::spawn(commissions_relay.run(stopped()));
    tokio::spawn(commissions.clone().run_releases(tandem_commissions::RELEASE_INTERVAL, stopped()));

    // deals: identity answers its permission checks in process, and the user questions its
    // copy of identity's members cannot (users it never heard of); its `DealClosed` events
    // reach tiers, its notification requests identity's inbox.
    let deals_relay = OutboxRelay::new(deals_db.clone(), bus.clone());
    let deals = Deals::new(
        deals_db.clone(),
        identity.clone(),
        Arc::new(IdentityDirectory(identity.clone())),
        deals_relay.waker(),
        tandem_deals::Settings::default(),
    );
    tokio::spawn(deals_relay.run(stopped()));
    tokio::spawn(deals.clone().run_expiry(Duration::from_secs(60), stopped()));

    let max_message_bytes = args.server.max_message_bytes;
    let services = tandem_identity::api::services(&identity, max_message_bytes)
        .ready_when(identity_migrated)
        .merge(tandem_tiers::api::services(&tiers, max_message_bytes).ready_when(tiers_migrated))
        .merge(
            tandem_commissions::api::services(&commissions, max_message_bytes)
                .ready_when(commissions_migrated),
        )
        .merge(tandem_deals::api::services(&deals, max_message_bytes).ready_when(deals_migrated));
    for (name, db) in [
        ("identity", &identity_db),
        ("tiers", &tiers_db),
        ("commissions", &commissions_db),
        ("deals", &deals_db),
    ] {
        tokio::spawn(metrics::watch_database(name, db.clone(), stopped()));
    }
    let options = ServerOptions { admin_listen: args.admin_listen.0, ..args.server.options(args.listen) };
    let server = Server::build(options, services, identity.authenticator()).await?;
    let addr = server.local_addr();

    if let (Some(email), Some(password)) = (&args.admin_email, &args.admin_password) {
        identity
            .bootstrap_admin(email, password)
            .await
            .map_err(|e| anyhow::anyhow!("{}", tonic::Status::from(e)))?;
    }
    let serving = tokio::spawn(server.run_until_stopped(shutdown.on_signal()));
    if args.demo {
        crate::demo::load(&identity, addr).await?;
    }
    serving.await??;
    for db in [identity_db, tiers_db, commissions_db, deals_db] {
        db.close().await;
    }
    Ok(())
}
