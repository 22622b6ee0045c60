//! The events commissions consumes: `DealClosed` (commission on won deals) and `TierChanged`
//! (the tiers whose plan multipliers apply to a team). Each event is applied once: it is
//! marked handled in the transaction of its effect; a batch of won deals (under load) is applied
//! in one transaction, all or none.

use std::sync::Arc;

use async_trait::async_trait;
use tandem_platform::{
    bus::{self, EventHandler},
    db::Tx,
    outbox,
    time::{from_timestamp, now_micros},
};
use tandem_proto::events::v1::{DealClosed, Event, event::Payload};
use tracing::Instrument;

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
        let Some((deal, base)) = commissionable(event) else { return Ok(()) };
        let commissions = &self.0;
        let mut tx = commissions.db.begin().await?;
        accrue(&mut tx, event, deal, &base).await?;
        commissions.commit(tx).await?;
        Ok(())
    }

    /// The events' commissions in one transaction.
    async fn handle_batch(&self, events: &[Event]) -> Option<anyhow::Result<()>> {
        let commissions = &self.0;
        let applied = async {
            let won: Vec<_> =
                events.iter().filter_map(|e| commissionable(e).map(|(d, b)| (e, d, b))).collect();
            if won.is_empty() {
                return Ok(());
            }
            let mut tx = commissions.db.begin().await?;
            for (event, deal, base) in won {
                accrue(&mut tx, event, deal, &base).instrument(bus::event_span(event)).await?;
            }
            commissions.commit(tx).await?;
            Ok(())
        };
        Some(applied.await)
    }
}

/// The won deal and its amount when the event earns a commission; `None` for other events,
/// lost deals and malformed ones (logged).
fn commissionable(event: &Event) -> Option<(&DealClosed, Money)> {
    let Some(Payload::DealClosed(deal)) = &event.payload else { return None };
    if !deal.won {
        return None;
    }
    let base = deal.amount.as_ref().and_then(|a| money::positive(&a.currency_code, a.amount_minor).ok());
    let (Some(base), false) = (base, deal.team_id.is_empty() || deal.deal_id.is_empty()) else {
        tracing::warn!(event_id = %event.id, deal_id = %deal.deal_id, "won deal without a positive amount or a team: no commission");
        return None;
    };
    Some((deal, base))
}

/// Accrues a won deal's commission in `tx`, once: nothing when the event was handled before,
/// or when no commission plan exists yet.
async fn accrue(tx: &mut Tx, event: &Event, deal: &DealClosed, base: &Money) -> anyhow::Result<()> {
    if !outbox::mark_handled(tx, DEALS_CONSUMER, &event.id).await? {
        return Ok(());
    }
    let Some(plan) = store::current_plan(tx).await? else {
        tracing::info!(deal_id = %deal.deal_id, "won deal before any commission plan: no commission");
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
        domain => store::customer_by_domain(tx, &domain).await?.filter(|c| c.team_id == deal.team_id),
    };
    let source =
        Source::Deal { deal_id: &deal.deal_id, customer_id: customer.as_ref().map(|c| c.id.as_str()) };
    ledger::accrue(tx, &deal.team_id, source, base, &plan, now).await?;
    Ok(())
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
