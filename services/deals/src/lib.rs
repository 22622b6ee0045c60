//! Tandem deals & leads: leads and their assignment to partner users (manual, queues,
//! round-robin, ordered rules, declines, bulk reassignment), deal registration with conflict
//! detection and expiry, shared deals (deal team, pipelines, product interest) and closing,
//! which tells tiers and commissions through `DealClosed`.

pub mod api;
pub mod assign;
pub mod directory;
pub mod domain;
pub mod error;
pub mod identity;
pub mod store;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tandem_platform::{
    ApiError,
    auth::{Caller, Permissions},
    db::{Db, MigrationSource, Tx},
    outbox,
    time::{Micros, now_micros},
};
use tandem_proto::events::v1::{NotificationRequested, event::Payload};
use tokio::sync::Notify;

use crate::{domain::registration::DEFAULT_EXPIRY_DAYS, error::Result};

pub const MIGRATIONS: &[MigrationSource] = &[
    (100, "deals", include_str!("../migrations/0100_deals.sql")),
    (101, "directory", include_str!("../migrations/0101_directory.sql")),
];

/// The stream deals' events go to: `DealClosed` (tiers, commissions) and
/// `NotificationRequested` (identity's inbox).
pub const STREAM: &str = "tandem.deals";
pub(crate) const SOURCE: &str = "deals";

/// A user as deals needs to know it: whether it may act and receive leads, and its teams.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub active: bool,
    pub staff: bool,
    pub team_ids: Vec<String>,
}

/// What deals asks identity about users and programs on behalf of `caller`: in-process in
/// `tandem dev`, over gRPC with the caller's token in production. Users are asked only when
/// deals' own copy of identity's members has never heard of them (see [`directory`]).
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// The user, or `None` when identity does not know it.
    async fn user(&self, caller: &Caller, user_id: &str) -> Result<Option<UserInfo>, ApiError>;
    /// Whether the team is enrolled in the program.
    async fn team_enrolled(&self, caller: &Caller, team_id: &str, program_id: &str)
    -> Result<bool, ApiError>;
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a registration lasts without progress.
    pub registration_expiry_days: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { registration_expiry_days: DEFAULT_EXPIRY_DAYS }
    }
}

/// The deals service: its state, shared by every RPC handler and the expiry task.
pub struct Deals {
    db: Db,
    permissions: Arc<dyn Permissions>,
    directory: Arc<dyn Directory>,
    relay: Arc<Notify>,
    settings: Settings,
}

impl Deals {
    /// `permissions` and `directory` are identity; `relay` is woken after each commit that
    /// wrote to the outbox.
    pub fn new(
        db: Db,
        permissions: Arc<dyn Permissions>,
        directory: Arc<dyn Directory>,
        relay: Arc<Notify>,
        settings: Settings,
    ) -> Arc<Self> {
        Arc::new(Self { db, permissions, directory, relay, settings })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Keeps deals' copy of identity's members from identity's events: subscribe it to
    /// [`directory::IDENTITY_STREAM`] as [`directory::DIRECTORY_CONSUMER`].
    pub fn directory_handler(&self) -> Arc<dyn tandem_platform::bus::EventHandler> {
        directory::DirectoryCopy::new(self.db.clone())
    }

    /// Starts applying the events deals consumes (call once the database is migrated).
    pub async fn subscribe(
        &self,
        bus: &dyn tandem_platform::bus::EventBus,
    ) -> std::result::Result<(), tandem_platform::bus::BusError> {
        bus.subscribe(directory::IDENTITY_STREAM, directory::DIRECTORY_CONSUMER, self.directory_handler())
            .await
    }

    /// Commits and wakes the outbox relay.
    async fn commit(&self, tx: Tx) -> Result<()> {
        tx.commit().await?;
        self.relay.notify_one();
        Ok(())
    }

    async fn emit(&self, tx: &mut Tx, aggregate_id: &str, payload: Payload) -> Result<()> {
        outbox::enqueue(tx, STREAM, SOURCE, aggregate_id, payload).await?;
        Ok(())
    }

    /// Asks identity's inbox to notify `user_ids` (nobody: nothing is written).
    async fn notify(
        &self,
        tx: &mut Tx,
        user_ids: Vec<String>,
        kind: &str,
        title: String,
        subject_id: &str,
    ) -> Result<()> {
        if user_ids.is_empty() {
            return Ok(());
        }
        let request = NotificationRequested {
            user_ids,
            kind: kind.to_owned(),
            title,
            body: String::new(),
            subject_id: subject_id.to_owned(),
        };
        self.emit(tx, subject_id, Payload::NotificationRequested(request)).await
    }

    /// Marks the registrations past their time as expired and notifies each deal team; returns
    /// how many expired.
    pub async fn expire_registrations(&self, now: Micros) -> Result<usize> {
        let mut total = 0;
        loop {
            let mut tx = self.db.begin().await?;
            let expired = store::expire_due(&mut tx, now, 100).await?;
            for deal in &expired {
                let team = store::deal_team(&mut tx, &deal.id).await?;
                self.notify(
                    &mut tx,
                    team.into_iter().map(|m| m.user_id).collect(),
                    "deal.registration_expired",
                    format!("The registration of {} expired", deal.customer_name),
                    &deal.id,
                )
                .await?;
            }
            self.commit(tx).await?;
            total += expired.len();
            if expired.len() < 100 {
                return Ok(total);
            }
        }
    }

    /// Runs [`Self::expire_registrations`] every `interval` until `stop` resolves.
    pub async fn run_expiry(
        self: Arc<Self>,
        interval: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            match self.expire_registrations(now_micros()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "deal registrations expired"),
                Err(err) => tracing::warn!(error = %err, "could not expire deal registrations; will retry"),
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
