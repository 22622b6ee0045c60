//! Tandem tiers & points: tier definitions per program, certifications, the points ledger
//! (earned from won deals and staff adjustments), tier status, the dashboard reads and the
//! points calculator.

pub mod api;
pub mod deals;
pub mod domain;
pub mod error;
pub mod ledger;
pub mod store;

use std::sync::Arc;

use tandem_platform::{
    auth::Permissions,
    bus::EventHandler,
    db::{Db, MigrationSource, Tx},
};
use tokio::sync::Notify;

use crate::error::Result;

pub const MIGRATIONS: &[MigrationSource] = &[(100, "tiers", include_str!("../migrations/0100_tiers.sql"))];

/// The stream tiers' events (`TierChanged`) go to.
pub const STREAM: &str = "tandem.tiers";
/// The stream deals publishes `DealClosed` to.
pub const DEALS_STREAM: &str = "tandem.deals";
/// The consumer group under which tiers credits points for won deals.
pub const DEALS_CONSUMER: &str = "tiers-deals";
pub(crate) const SOURCE: &str = "tiers";

/// The tiers service: its state, shared by every RPC handler and the event handler.
pub struct Tiers {
    db: Db,
    permissions: Arc<dyn Permissions>,
    relay: Arc<Notify>,
}

impl Tiers {
    /// `permissions` answers whether a caller may see a team (identity, in process or over
    /// gRPC); `relay` is woken after each commit that wrote to the outbox.
    pub fn new(db: Db, permissions: Arc<dyn Permissions>, relay: Arc<Notify>) -> Arc<Self> {
        Arc::new(Self { db, permissions, relay })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Commits and wakes the outbox relay.
    async fn commit(&self, tx: Tx) -> Result<()> {
        tx.commit().await?;
        self.relay.notify_one();
        Ok(())
    }

    /// Applies `DealClosed` events of the deals stream: points for won deals.
    pub fn deal_handler(self: &Arc<Self>) -> Arc<dyn EventHandler> {
        Arc::new(deals::DealPoints(self.clone()))
    }
}
