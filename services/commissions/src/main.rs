//! `tandem-commissions`: the commissions & payouts service. `serve` (the default) or `migrate`.
//!
//! Tokens are verified with identity's public keys, fetched from its `GetJwks` at
//! `TANDEM_IDENTITY_URL` at start-up and every five minutes; "may this caller see this team?"
//! is asked of identity's `AccessService/CheckPermission` over gRPC with the caller's token.

use std::sync::Arc;

use clap::{Parser, Subcommand};
use tandem_commissions::{Commissions, DnsTxt, MIGRATIONS, RELEASE_INTERVAL};
use tandem_platform::{
    auth::JwtVerifier,
    bus::EventBus,
    config::{self, DatabaseArgs, ServeArgs},
    db::Db,
    metrics,
    outbox::OutboxRelay,
    peers,
    server::{MigratedDb, Server, Shutdown},
    telemetry,
};

#[derive(Parser)]
#[command(name = "tandem-commissions", version, about = "Tandem commissions & payouts service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve(Box<CommissionsArgs>),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
}

#[derive(clap::Args)]
struct CommissionsArgs {
    #[command(flatten)]
    common: ServeArgs,
    /// Identity's gRPC address: its public keys and permission checks.
    #[arg(long, env = "TANDEM_IDENTITY_URL")]
    identity_url: String,
}

#[global_allocator]
static ALLOCATOR: tandem_platform::allocator::MiMalloc = tandem_platform::allocator::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tandem_platform::allocator::without_huge_pages();
    let cli = Cli::parse_from(config::args_with_default_subcommand("serve", &["serve", "migrate"]));
    match cli.command {
        Command::Migrate(db) => {
            let _telemetry = telemetry::init("tandem-commissions", telemetry::LogFormat::Text, None)?;
            Db::connect(&db.database_url, &db.options())?.migrate(MIGRATIONS).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve(args) => serve(*args).await,
    }
}

async fn serve(args: CommissionsArgs) -> anyhow::Result<()> {
    let common = args.common;
    let _telemetry =
        telemetry::init("tandem-commissions", common.log_format, common.otel_endpoint.as_deref())?;
    let db = Db::connect(&common.database.database_url, &common.database.options())?;
    let identity = peers::Identity::connect(&args.identity_url)?;
    let keys = identity.keys().await?;

    let bus = common.bus.connect()?;
    let relay = OutboxRelay::new(db.clone(), bus.clone() as Arc<dyn EventBus>);
    let permissions = Arc::new(identity);
    let commissions =
        Commissions::new(db.clone(), permissions, Arc::new(DnsTxt::from_system()?), relay.waker());

    let migrated = MigratedDb::new(db.clone(), MIGRATIONS);
    let services = tandem_commissions::api::services(&commissions, common.server.max_message_bytes)
        .ready_when(migrated.clone());
    let server = Server::build(common.server_options(), services, Arc::new(JwtVerifier::new(keys))).await?;

    let shutdown = Shutdown::default();
    tokio::spawn(metrics::watch_database("commissions", db.clone(), shutdown.requested()));
    tokio::spawn({
        let (relay_stopped, releases_stopped) = (shutdown.requested(), shutdown.requested());
        let bus = bus.clone();
        async move {
            migrated.migrated().await;
            if let Err(err) = commissions.subscribe(bus.as_ref()).await {
                tracing::error!(error = %err, "could not subscribe to the event bus");
            }
            tokio::spawn(commissions.run_releases(RELEASE_INTERVAL, releases_stopped));
            relay.run(relay_stopped).await;
        }
    });
    server.run_until_stopped(shutdown.on_signal()).await?;
    bus.close();
    db.close().await;
    Ok(())
}
