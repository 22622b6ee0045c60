//! `tandem-identity`: the identity & teams service. `serve` (the default) or `migrate`.
//!
//! Before deleting a team it asks commissions (`TANDEM_COMMISSIONS_URL`) whether the team holds
//! rewards, as the service principal `svc:identity` with a short-lived token it signs itself.

use std::sync::Arc;

use clap::{Parser, Subcommand};
use tandem_identity::{
    Identity, MIGRATIONS, MailSettings, Ports, Settings, domain::secrets::SigningKeyPair,
    ports::CommissionsLedger, shared_cache::SharedAccessCache,
};
use tandem_platform::{
    bus::EventBus,
    config::{self, DatabaseArgs, ServeArgs},
    db::Db,
    metrics,
    server::{MigratedDb, Server, Shutdown},
    telemetry,
};

#[derive(Parser)]
#[command(name = "tandem-identity", version, about = "Tandem identity & teams service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve(Box<IdentityArgs>),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
}

#[derive(clap::Args)]
struct IdentityArgs {
    #[command(flatten)]
    common: ServeArgs,
    /// PEM (PKCS#8) Ed25519 private key that signs access tokens; an ephemeral key when unset.
    #[arg(long, env = "TANDEM_JWT_SIGNING_KEY_FILE")]
    jwt_signing_key_file: Option<std::path::PathBuf>,
    /// PEM files (comma-separated) of keys that signed before a rotation, private or public:
    /// published and trusted beside the current key until the tokens they signed expire.
    #[arg(long, env = "TANDEM_JWT_PREVIOUS_KEY_FILES", value_delimiter = ',')]
    jwt_previous_key_files: Vec<std::path::PathBuf>,
    /// The first staff admin, created at start-up when it does not exist.
    #[arg(long, env = "TANDEM_ADMIN_EMAIL")]
    admin_email: Option<String>,
    #[arg(long, env = "TANDEM_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// The base URL of links in emails (invitations, email verification).
    #[arg(long, env = "TANDEM_PUBLIC_URL", default_value = "http://localhost:8080")]
    public_url: String,
    #[command(flatten)]
    mail: MailSettings,
    /// Commissions' gRPC address, asked whether a team holds rewards before it is deleted.
    /// Without it teams cannot be deleted (FAILED_PRECONDITION): identity never assumes a team
    /// holds none.
    #[arg(long, env = "TANDEM_COMMISSIONS_URL")]
    commissions_url: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_from(config::args_with_default_subcommand("serve", &["serve", "migrate"]));
    match cli.command {
        Command::Migrate(db) => {
            let _telemetry = telemetry::init("tandem-identity", telemetry::LogFormat::Text, None)?;
            Db::connect(&db.database_url, &db.options())?.migrate(MIGRATIONS).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve(args) => serve(*args).await,
    }
}

fn signing_key(path: Option<&std::path::Path>) -> anyhow::Result<SigningKeyPair> {
    match path {
        Some(path) => SigningKeyPair::from_pem(&std::fs::read_to_string(path)?),
        None => {
            tracing::warn!(
                "TANDEM_JWT_SIGNING_KEY_FILE is not set: signing with an ephemeral key; tokens die with this process"
            );
            Ok(SigningKeyPair::generate())
        }
    }
}

fn previous_keys(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<tandem_proto::identity::v1::Jwk>> {
    paths
        .iter()
        .map(|path| {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("previous signing key {}: {e}", path.display()))?;
            tandem_identity::domain::secrets::previous_key_from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("previous signing key {}: {e}", path.display()))
        })
        .collect()
}

async fn serve(args: IdentityArgs) -> anyhow::Result<()> {
    tandem_identity::allocator::return_hash_memory();
    let common = args.common;
    let _telemetry = telemetry::init("tandem-identity", common.log_format, common.otel_endpoint.as_deref())?;
    let db = Db::connect(&common.database.database_url, &common.database.options())?;
    let bus = common.bus.connect()?;
    let settings = Settings {
        signing_key: signing_key(args.jwt_signing_key_file.as_deref())?,
        previous_keys: previous_keys(&args.jwt_previous_key_files)?,
        link_base: args.public_url,
    };
    let mut ports = Ports::standard(&args.mail)?;
    match &args.commissions_url {
        Some(url) => ports.rewards = Arc::new(CommissionsLedger::connect(url, settings.signing_key.clone())?),
        None => tracing::warn!("TANDEM_COMMISSIONS_URL is not set: teams cannot be deleted"),
    }
    let (identity, relay) =
        Identity::start(db.clone(), settings, ports, bus.clone() as Arc<dyn EventBus>).await?;
    // Replicas share permission answers in Redis; membership events keep them current.
    identity.share_access_cache(SharedAccessCache::connect(&common.bus.redis_url)?);

    let migrated = MigratedDb::new(db.clone(), MIGRATIONS);
    let services = tandem_identity::api::services(&identity, common.server.max_message_bytes)
        .ready_when(migrated.clone());
    let server = Server::build(common.server_options(), services, identity.authenticator()).await?;

    let shutdown = Shutdown::default();
    tokio::spawn(metrics::watch_database("identity", db.clone(), shutdown.requested()));
    tokio::spawn({
        let identity = identity.clone();
        let admin = args.admin_email.zip(args.admin_password);
        let stopped = shutdown.requested();
        let bus = bus.clone();
        async move {
            migrated.migrated().await;
            if let Err(err) = identity.subscribe(bus.as_ref()).await {
                tracing::error!(error = %err, "could not subscribe to the event bus");
            }
            if let Some(Err(err)) = match admin {
                Some((email, password)) => Some(identity.bootstrap_admin(&email, &password).await),
                None => None,
            } {
                tracing::error!(error = %tonic::Status::from(err).message(), "could not create the bootstrap admin");
            }
            relay.run(stopped).await;
        }
    });
    server.run_until_stopped(shutdown.on_signal()).await?;
    bus.close();
    db.close().await;
    Ok(())
}
