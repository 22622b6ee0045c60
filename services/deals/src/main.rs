//! `tandem-deals`: the deals & leads service. `serve` (the default) or `migrate`.
//!
//! Tokens are verified with identity's public keys, fetched from its `GetJwks` at
//! `TANDEM_IDENTITY_URL` at start-up and every five minutes; "may this caller see this team?"
//! is asked of identity's `AccessService/CheckPermission` over gRPC, and users (active, staff,
//! teams) and team enrolments of its `GetUserAccess` and `CheckTeamEnrollment`. A background
//! task expires deal registrations every minute.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use clap::{Parser, Subcommand};
use tandem_deals::{Deals, Directory, MIGRATIONS, Settings, UserInfo};
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
    CheckPermissionRequest, CheckTeamEnrollmentRequest, GetJwksRequest, GetUserAccessRequest, Permission,
    access_service_client::AccessServiceClient, auth_service_client::AuthServiceClient,
};
use tonic::transport::{Channel, Endpoint};

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
    #[arg(long, env = "TANDEM_REGISTRATION_EXPIRY_DAYS", default_value_t = tandem_deals::domain::registration::DEFAULT_EXPIRY_DAYS)]
    registration_expiry_days: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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

/// Identity's users and enrolments over gRPC.
struct IdentityDirectory {
    access: AccessServiceClient<Channel>,
}

fn unavailable(status: &tonic::Status) -> ApiError {
    tracing::warn!(code = ?status.code(), message = status.message(), "identity did not answer");
    ApiError::Unavailable("identity did not answer".into())
}

#[async_trait]
impl Directory for IdentityDirectory {
    async fn user(&self, user_id: &str) -> Result<Option<UserInfo>, ApiError> {
        let mut request = tonic::Request::new(GetUserAccessRequest { user_id: user_id.to_owned() });
        request.set_timeout(Duration::from_secs(2));
        match self.access.clone().get_user_access(request).await {
            Ok(r) => {
                let r = r.into_inner();
                Ok(Some(UserInfo { active: r.active, staff: r.staff_role != 0, team_ids: r.team_ids }))
            }
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(unavailable(&status)),
        }
    }

    async fn team_enrolled(&self, team_id: &str, program_id: &str) -> Result<bool, ApiError> {
        let mut request = tonic::Request::new(CheckTeamEnrollmentRequest {
            program_id: program_id.to_owned(),
            team_id: team_id.to_owned(),
        });
        request.set_timeout(Duration::from_secs(2));
        match self.access.clone().check_team_enrollment(request).await {
            Ok(r) => Ok(r.into_inner().enrolled),
            Err(status) => Err(unavailable(&status)),
        }
    }
}

async fn fetch_jwks(
    auth: &mut AuthServiceClient<Channel>,
) -> anyhow::Result<Vec<tandem_proto::identity::v1::Jwk>> {
    Ok(auth.get_jwks(GetJwksRequest {}).await?.into_inner().keys)
}

async fn serve(args: DealsArgs) -> anyhow::Result<()> {
    let common = args.common;
    let _telemetry = telemetry::init("tandem-deals", common.log_format, common.otel_endpoint.as_deref())?;
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
    let access = AccessServiceClient::new(identity);
    let deals = Deals::new(
        db.clone(),
        Arc::new(IdentityPermissions { access: access.clone() }),
        Arc::new(IdentityDirectory { access }),
        relay.waker(),
        Settings { registration_expiry_days: args.registration_expiry_days },
    );

    let migrated = MigratedDb::new(db.clone(), MIGRATIONS);
    let services =
        tandem_deals::api::services(&deals, common.server.max_message_bytes).ready_when(migrated.clone());
    let server =
        Server::build(common.server.options(common.listen), services, Arc::new(JwtVerifier::new(keys)))
            .await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn({
        let mut stop = stop_rx.clone();
        let migrated = migrated.clone();
        async move {
            migrated.migrated().await;
            deals
                .run_expiry(Duration::from_secs(60), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        }
    });
    tokio::spawn({
        let mut stop = stop_rx.clone();
        async move {
            migrated.migrated().await;
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
