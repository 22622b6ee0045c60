//! `tandem-deals`: the deals & leads service. `serve` (the default) or `migrate`.
//!
//! Tokens are verified with identity's public keys, fetched from its `GetJwks` at
//! `TANDEM_IDENTITY_URL` at start-up and every five minutes. "May this caller do this on this
//! team?" is asked of identity's `AccessService/CheckPermission`, and users (active, staff,
//! teams) and team enrolments of its `GetUserAccess` and `CheckTeamEnrollment`, over gRPC with
//! the caller's own token — except who may receive a lead, which deals answers from its copy of
//! identity's members, kept from identity's events (`tandem_deals::directory`). A background
//! task expires deal registrations every minute.

use std::{sync::Arc, time::Duration};

use clap::{Parser, Subcommand};
use tandem_deals::{Deals, MIGRATIONS, Settings, identity::IdentityDirectory};
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
#[command(name = "tandem-deals", version, about = "Tandem deals & leads service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (the default).
    Serve(Box<DealsArgs>),
    /// Apply the database migrations and exit.
    Migrate(DatabaseArgs),
}

#[derive(clap::Args)]
struct DealsArgs {
    #[command(flatten)]
    common: ServeArgs,
    /// Identity's gRPC address: its public keys, permission checks, users and enrolments.
    #[arg(long, env = "TANDEM_IDENTITY_URL")]
    identity_url: String,
    /// Days a deal registration lasts without progress.
    #[arg(
        long,
        env = "TANDEM_REGISTRATION_EXPIRY_DAYS",
        default_value_t = tandem_deals::domain::registration::DEFAULT_EXPIRY_DAYS
    )]
    registration_expiry_days: i64,
}

#[global_allocator]
static ALLOCATOR: tandem_platform::allocator::MiMalloc = tandem_platform::allocator::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tandem_platform::allocator::without_huge_pages();
    let cli = Cli::parse_from(config::args_with_default_subcommand("serve", &["serve", "migrate"]));
    match cli.command {
        Command::Migrate(db) => {
            let _telemetry = telemetry::init("tandem-deals", telemetry::LogFormat::Text, None)?;
            Db::connect(&db.database_url, &db.options())?.migrate(MIGRATIONS).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve(args) => serve(*args).await,
    }
}

async fn serve(args: DealsArgs) -> anyhow::Result<()> {
    let common = args.common;
    let _telemetry = telemetry::init("tandem-deals", common.log_format, common.otel_endpoint.as_deref())?;
    let db = Db::connect(&common.database.database_url, &common.database.options())?;
    let identity = peers::Identity::connect(&args.identity_url)?;
    let keys = identity.keys().await?;
    let directory = IdentityDirectory::new(identity.peer().clone());

    let bus = common.bus.connect()?;
    let relay = OutboxRelay::new(db.clone(), bus.clone() as Arc<dyn EventBus>);
    let deals = Deals::new(
        db.clone(),
        Arc::new(identity),
        Arc::new(directory),
        relay.waker(),
        Settings { registration_expiry_days: args.registration_expiry_days },
    );

    let migrated = MigratedDb::new(db.clone(), MIGRATIONS);
    let services =
        tandem_deals::api::services(&deals, common.server.max_message_bytes).ready_when(migrated.clone());
    let server = Server::build(common.server_options(), services, Arc::new(JwtVerifier::new(keys))).await?;

    let shutdown = Shutdown::default();
    tokio::spawn(metrics::watch_database("deals", db.clone(), shutdown.requested()));
    tokio::spawn({
        let (relay_stopped, expiry_stopped) = (shutdown.requested(), shutdown.requested());
        let bus = bus.clone();
        async move {
            migrated.migrated().await;
            if let Err(err) = deals.subscribe(bus.as_ref()).await {
                tracing::error!(error = %err, "could not subscribe to the event bus");
            }
            tokio::spawn(deals.run_expiry(Duration::from_secs(60), expiry_stopped));
            relay.run(relay_stopped).await;
        }
    });
    server.run_until_stopped(shutdown.on_signal()).await?;
    bus.close();
    db.close().await;
    Ok(())
}
