//! The events commissions consumes: `DealClosed` (commission on won deals) and `TierChanged`
//! (the tiers whose plan multipliers apply to a team). Each event is applied once: it is
//! marked handled in the transaction of its effect.

use std::sync::Arc;

use async_trait::async_trait;
use tandem_platform::{
    bus::EventHandler,
    outbox,
    time::{from_timestamp, now_micros},
};
use tandem_proto::events::v1::{Event, event::Payload};

use crate::{
    Commissions, DEALS_CONSUMER, TIERS_CONSUMER,
    domain::money::{self, Money},
    ledger::{self, Source},
    store,
};

pub(crate) struct DealCommission(pub(crate) Arc<Commissions>);

#[async_trait]
impl EventHandler for DealCommission {
    async fn handle(&self, event: &Event) -> anyhow::Result<()> {
        let Some(Payload::DealClosed(deal)) = &event.payload else { return Ok(()) };
        if !deal.won {
            return Ok(());
        }
        let base = deal.amount.as_ref().and_then(|a| money::positive(&a.currency_code, a.amount_minor).ok());
        let (Some(base), false) = (base, deal.team_id.is_empty() || deal.deal_id.is_empty()) else {
            tracing::warn!(event_id = %event.id, deal_id = %deal.deal_id, "won deal without a positive amount or a team: no commission");
            return Ok(());
        };
        let commissions = &self.0;
        let mut tx = commissions.db.begin().await?;
        if !outbox::mark_handled(&mut tx, DEALS_CONSUMER, &event.id).await? {
            return Ok(());
        }
        let Some(plan) = store::current_plan(&mut tx).await? else {
            tracing::info!(deal_id = %deal.deal_id, "won deal before any commission plan: no commission");
            commissions.commit(tx).await?;
            return Ok(());
        };
        let now = deal
            .close_time
            .as_ref()
            .and_then(from_timestamp)
            .filter(|t| *t <= now_micros())
            .unwrap_or_else(now_micros);
        // The customer, when the team holds the client's domain.
        let customer = match deal.client_domain.trim().to_ascii_lowercase() {
            domain if domain.is_empty() => None,
            domain => {
                store::customer_by_domain(&mut tx, &domain).await?.filter(|c| c.team_id == deal.team_id)
            }
        };
        let source =
            Source::Deal { deal_id: &deal.deal_id, customer_id: customer.as_ref().map(|c| c.id.as_str()) };
        let base = Money::new(&base.currency, base.minor);
        ledger::accrue(&mut tx, &deal.team_id, source, &base, &plan, now)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        commissions.commit(tx).await?;
        Ok(())
    }
}

pub(crate) struct TeamTiers(pub(crate) Arc<Commissions>);

#[async_trait]
impl EventHandler for TeamTiers {
    async fn handle(&self, event: &Event) -> anyhow::Result<()> {
        let Some(Payload::TierChanged(change)) = &event.payload else { return Ok(()) };
        if change.team_id.is_empty() || change.program_id.is_empty() {
            return Ok(());
        }
        let commissions = &self.0;
        let mut tx = commissions.db.begin().await?;
        if !outbox::mark_handled(&mut tx, TIERS_CONSUMER, &event.id).await? {
            return Ok(());
        }
        store::set_team_tier(&mut tx, &change.team_id, &change.program_id, &change.tier_id, now_micros())
            .await?;
        commissions.commit(tx).await?;
        Ok(())
    }
}
