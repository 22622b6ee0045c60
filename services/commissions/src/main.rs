//! `tandem-commissions`: the commissions & payouts service. `serve` (the default) or `migrate`.
//!
//! Tokens are verified with identity's public keys, fetched from its `GetJwks` at
//! `TANDEM_IDENTITY_URL` at start-up and every five minutes; "may this caller see this team?"
//! is asked of identity's `AccessService/CheckPermission` over gRPC.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use clap::{Parser, Subcommand};
use tandem_commissions::{Commissions, DnsTxt, MIGRATIONS};
use tandem_platform::{
    ApiError,
    auth::{Caller, JwtVerifier, KeySet, Permissions},
    bus::{EventBus, InProcessBus},
    config::{self, DatabaseArgs, ServeArgs},
    db::Db,
    outbox::OutboxRelay,
    server::{MigratedDb, Server, shutdown_signal},
    telemetry,
};
use tandem_proto::identity::v1::{
    CheckPermissionRequest, GetJwksRequest, Permission, access_service_client::AccessServiceClient,
    auth_service_client::AuthServiceClient,
};
use tonic::transport::{Channel, Endpoint};

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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

/// Identity's permission check over gRPC. Only the caller's user id goes to identity.
struct IdentityPermissions {
    access: AccessServiceClient<Channel>,
}

#[async_trait]
impl Permissions for IdentityPermissions {
    async fn check(&self, caller: &Caller, team_id: &str, permission: Permission) -> Result<bool, ApiError> {
        let mut request = tonic::Request::new(CheckPermissionRequest {
            user_id: caller.user_id.clone(),
            team_id: team_id.to_owned(),
            permission: permission.into(),
        });
        request.set_timeout(Duration::from_secs(2));
        match self.access.clone().check_permission(request).await {
            Ok(response) => Ok(response.into_inner().allowed),
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "identity permission check failed");
                Err(ApiError::Unavailable("identity did not answer the permission check".into()))
            }
        }
    }
}

async fn fetch_jwks(
    auth: &mut AuthServiceClient<Channel>,
) -> anyhow::Result<Vec<tandem_proto::identity::v1::Jwk>> {
    Ok(auth.get_jwks(GetJwksRequest {}).await?.into_inner().keys)
}

async fn serve(args: CommissionsArgs) -> anyhow::Result<()> {
    let common = args.common;
    let _telemetry =
        telemetry::init("tandem-commissions", common.log_format, common.otel_endpoint.as_deref())?;
    let db = Db::connect(&common.database.database_url, &common.database.options())?;
    let identity = Endpoint::from_shared(args.identity_url)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut auth = AuthServiceClient::new(identity.clone());
    // Identity may start after us: retry until its keys arrive.
    let keys = loop {
        match fetch_jwks(&mut auth).await {
            Ok(keys) => break Arc::new(KeySet::from_jwks(&keys)?),
            Err(err) => {
                tracing::warn!(error = %err, "cannot fetch identity's public keys yet; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    tokio::spawn({
        let keys = keys.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(300)).await;
                match fetch_jwks(&mut auth).await {
                    Ok(jwks) => {
                        if let Err(err) = keys.replace(&jwks).await {
                            tracing::warn!(error = %err, "identity published unusable keys; keeping the previous ones");
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot refresh identity's public keys"),
                }
            }
        }
    });

    // The production bus is Redis Streams; until it lands the outbox relays in process.
    let bus: Arc<dyn EventBus> = Arc::new(InProcessBus::default());
    let relay = OutboxRelay::new(db.clone(), bus.clone());
    let permissions = Arc::new(IdentityPermissions { access: AccessServiceClient::new(identity) });
    let commissions =
        Commissions::new(db.clone(), permissions, Arc::new(DnsTxt::from_system()?), relay.waker());
    bus.subscribe(
        tandem_commissions::DEALS_STREAM,
        tandem_commissions::DEALS_CONSUMER,
        commissions.deal_handler(),
    )
    .await?;
    bus.subscribe(
        tandem_commissions::TIERS_STREAM,
        tandem_commissions::TIERS_CONSUMER,
        commissions.tier_handler(),
    )
    .await?;

    let migrated = MigratedDb::new(db.clone(), MIGRATIONS);
    let services = tandem_commissions::api::services(&commissions, common.server.max_message_bytes)
        .ready_when(migrated.clone());
    let server =
        Server::build(common.server.options(common.listen), services, Arc::new(JwtVerifier::new(keys)))
            .await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn({
        let mut stop = stop_rx.clone();
        async move {
            migrated.migrated().await;
            tokio::spawn(commissions.run_releases(Duration::from_secs(60), {
                let mut stop = stop.clone();
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                }
            }));
            relay
                .run(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        }
    });
    server
        .run_until_stopped(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        })
        .await?;
    db.close().await;
    Ok(())
}
