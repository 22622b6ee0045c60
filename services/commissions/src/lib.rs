//! Tandem commissions & payouts: the customers of partner teams (add or map, verify the
//! domain, change the plan, payments and refunds), commission plans, a double-entry rewards
//! ledger (accrual from payments and won deals, hold, release, clawback), balances, statements,
//! withdrawals and vendor payouts.

pub mod api;
pub mod domain;
pub mod error;
pub mod events;
pub mod ledger;
pub mod store;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tandem_platform::{
    auth::Permissions,
    bus::{BusError, EventBus, EventHandler},
    db::{Db, MigrationSource, Tx},
};
use tokio::sync::Notify;

use crate::error::Result;

pub const MIGRATIONS: &[MigrationSource] =
    &[(100, "commissions", include_str!("../migrations/0100_commissions.sql"))];

/// The stream commissions' events go to.
pub const STREAM: &str = "tandem.commissions";
/// The stream deals publishes `DealClosed` to.
pub const DEALS_STREAM: &str = "tandem.deals";
/// The stream tiers publishes `TierChanged` to.
pub const TIERS_STREAM: &str = "tandem.tiers";
/// The consumer group under which commissions accrues commission on won deals.
pub const DEALS_CONSUMER: &str = "commissions-deals";
/// The consumer group under which commissions follows teams' tiers.
pub const TIERS_CONSUMER: &str = "commissions-tiers";
pub(crate) const SOURCE: &str = "commissions";
/// How often the background task makes commissions whose hold ended available.
pub const RELEASE_INTERVAL: Duration = Duration::from_secs(60);

/// DNS TXT lookups, to verify that a partner controls a customer's domain.
#[async_trait]
pub trait TxtLookup: Send + Sync + 'static {
    /// The TXT strings at `name`; empty when there are none.
    async fn txt(&self, name: &str) -> anyhow::Result<Vec<String>>;
}

/// The system's DNS resolver.
pub struct DnsTxt {
    inner: hickory_resolver::TokioResolver,
}

impl DnsTxt {
    pub fn from_system() -> anyhow::Result<Self> {
        Ok(Self { inner: hickory_resolver::TokioResolver::builder_tokio()?.build() })
    }
}

#[async_trait]
impl TxtLookup for DnsTxt {
    async fn txt(&self, name: &str) -> anyhow::Result<Vec<String>> {
        match self.inner.txt_lookup(name).await {
            Ok(lookup) => Ok(lookup
                .iter()
                .map(|txt| {
                    txt.txt_data().iter().map(|part| String::from_utf8_lossy(part).into_owned()).collect()
                })
                .collect()),
            Err(err) if err.is_no_records_found() => Ok(Vec::new()),
            Err(err) => Err(err.into()),
        }
    }
}

/// A fixed set of TXT records, for tests and demos.
#[derive(Default)]
pub struct StaticTxt {
    records: std::sync::Mutex<Vec<(String, String)>>,
}

impl StaticTxt {
    pub fn publish(&self, name: &str, value: &str) {
        self.records.lock().expect("txt records").push((name.to_owned(), value.to_owned()));
    }
}

#[async_trait]
impl TxtLookup for StaticTxt {
    async fn txt(&self, name: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .records
            .lock()
            .expect("txt records")
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect())
    }
}

/// The commissions service: its state, shared by every RPC handler and the event handlers.
pub struct Commissions {
    db: Db,
    permissions: Arc<dyn Permissions>,
    txt: Arc<dyn TxtLookup>,
    relay: Arc<Notify>,
}

impl Commissions {
    /// `permissions` answers what a caller may do on a team (identity, in process or over
    /// gRPC); `txt` looks up customers' domain verification records; `relay` is woken after
    /// each commit that wrote to the outbox.
    pub fn new(
        db: Db,
        permissions: Arc<dyn Permissions>,
        txt: Arc<dyn TxtLookup>,
        relay: Arc<Notify>,
    ) -> Arc<Self> {
        Arc::new(Self { db, permissions, txt, relay })
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

    /// Applies `DealClosed` events of the deals stream: commission on won deals.
    pub fn deal_handler(self: &Arc<Self>) -> Arc<dyn EventHandler> {
        Arc::new(events::DealCommission(self.clone()))
    }

    /// Applies `TierChanged` events of the tiers stream: the tiers whose multipliers apply.
    pub fn tier_handler(self: &Arc<Self>) -> Arc<dyn EventHandler> {
        Arc::new(events::TeamTiers(self.clone()))
    }

    /// Starts applying the events commissions consumes (call once the database is migrated).
    pub async fn subscribe(self: &Arc<Self>, bus: &dyn EventBus) -> std::result::Result<(), BusError> {
        bus.subscribe(DEALS_STREAM, DEALS_CONSUMER, self.deal_handler()).await?;
        bus.subscribe(TIERS_STREAM, TIERS_CONSUMER, self.tier_handler()).await
    }

    /// Makes available every commission whose hold has ended at `now`; returns how many.
    pub async fn release_due(&self, now: tandem_platform::time::Micros) -> Result<usize> {
        ledger::release_due(&self.db, now).await
    }

    /// Releases due commissions every `every` until `stop` resolves.
    pub async fn run_releases(self: Arc<Self>, every: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            match self.release_due(tandem_platform::time::now_micros()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(released = n, "commissions released after their hold"),
                Err(err) => tracing::warn!(error = %err, "cannot release due commissions; will retry"),
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Whether the team holds rewards: identity asks before deleting a team.
    pub async fn team_holds_rewards(&self, team_id: &str) -> Result<bool> {
        ledger::team_holds_rewards(&self.db, team_id).await
    }
}

/// "Does this team hold rewards?" answered from a commissions database alone, so it can be
/// built before the service that needs it (identity is built before commissions in
/// `tandem dev`, and commissions asks identity for permissions).
#[derive(Clone)]
pub struct TeamRewards(pub Db);

impl TeamRewards {
    pub async fn holds_rewards(&self, team_id: &str) -> Result<bool> {
        ledger::team_holds_rewards(&self.0, team_id).await
    }
}
