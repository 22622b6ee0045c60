//! Tandem tiers & points: tier definitions per program, certifications, the points ledger
//! (earned from won deals and staff adjustments), tier status, the dashboard reads and the
//! points calculator.

pub mod api;
pub mod deals;
pub mod domain;
pub mod error;
pub mod ledger;
pub mod refresh;
pub mod store;

use std::{sync::Arc, time::Duration};

use tandem_platform::{
    auth::Permissions,
    bus::{BusError, EventBus, EventHandler},
    db::{Db, MigrationSource, Tx},
    time::now_micros,
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
    /// Wakes the sweeper at once (tier definitions changed).
    sweep: Notify,
    /// The won deals' refreshes of credited tiers, coalesced per team.
    credited: refresh::Refresher,
}

/// How often every team's credited tier is recomputed for the changes time makes.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

impl Tiers {
    /// `permissions` answers whether a caller may see a team (identity, in process or over
    /// gRPC); `relay` is woken after each commit that wrote to the outbox.
    pub fn new(db: Db, permissions: Arc<dyn Permissions>, relay: Arc<Notify>) -> Arc<Self> {
        Arc::new(Self {
            db,
            permissions,
            relay,
            sweep: Notify::new(),
            credited: refresh::Refresher::default(),
        })
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

    /// Brings the team's credited tier up to date with everything committed before the call
    /// (coalesced with the other refreshes of the team: see [`refresh`]).
    async fn refresh_credited(&self, program_id: &str, team_id: &str) -> Result<()> {
        if self.credited.refresh(&self.db, program_id, team_id).await? {
            self.relay.notify_one();
        }
        Ok(())
    }

    /// [`Tiers::refresh_credited`] for each team, in the background. A refresh that fails or
    /// is cut off (a crash) is made up by the sweep, which also runs at start-up.
    fn refresh_credited_later(self: &Arc<Self>, program_id: String, teams: Vec<String>) {
        self.credited.started();
        let tiers = self.clone();
        tokio::spawn(async move {
            for team_id in &teams {
                if let Err(err) = tiers.refresh_credited(&program_id, team_id).await {
                    tracing::warn!(error = %err, %program_id, %team_id, "could not refresh a credited tier; the sweep will");
                }
            }
            tiers.credited.finished();
        });
    }

    /// Waits until the credited-tier refreshes asked for in the background are done.
    pub async fn refreshes_settled(&self) {
        self.credited.settled().await;
    }

    /// Recomputes credited tiers at once, then every `interval` and whenever tier definitions
    /// change, until
    /// `stop` resolves.
    pub async fn run_sweeper(
        self: Arc<Self>,
        interval: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        // At start-up first: it makes up for the refreshes a stop or a crash cut off.
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::select! {
                    () = &mut stop => return,
                    () = self.sweep.notified() => {}
                    () = tokio::time::sleep(interval) => {}
                }
            }
            match ledger::sweep(&self.db, now_micros()).await {
                Ok(0) => {}
                Ok(changed) => {
                    tracing::info!(changed, "credited tiers changed with time or tier definitions");
                    self.relay.notify_one();
                }
                Err(err) => tracing::warn!(error = %err, "tier sweep failed; will retry"),
            }
        }
    }

    /// Applies `DealClosed` events of the deals stream: points for won deals.
    pub fn deal_handler(self: &Arc<Self>) -> Arc<dyn EventHandler> {
        Arc::new(deals::DealPoints(self.clone()))
    }

    /// Starts applying the events tiers consumes (call once the database is migrated).
    pub async fn subscribe(self: &Arc<Self>, bus: &dyn EventBus) -> std::result::Result<(), BusError> {
        bus.subscribe(DEALS_STREAM, DEALS_CONSUMER, self.deal_handler()).await
    }
}
