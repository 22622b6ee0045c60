//! Points for won deals: the `DealClosed` handler.
//!
//! In one transaction it records the event as handled and writes the sold entry (with the USD
//! amount, rate and multiplier that applied), and, when the seller will manage the client,
//! managed entries for the seller and for each other partner managing that client, split
//! evenly: each gets floor(sold points / (1 + other managing partners)). **The other managing
//! partners of a client** are the teams whose active (earned within 12 months) managed points
//! for that client in the program add up to more than zero. Then it recomputes the credited
//! tier of every team that earned points, in the background, each in a transaction of its
//! own, writing `TierChanged` to the outbox for each change; the refreshes of one team are
//! coalesced ([`crate::refresh`]). A redelivered event that was credited before runs the
//! refreshes again, and the sweep (also at start-up) makes up for one a crash cut off. Lost
//! deals, deals without a program and malformed events change nothing. A batch of events
//! (under load) is applied in one transaction, all or none.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use async_trait::async_trait;
use rust_decimal::Decimal;
use sqlx::AnyConnection;
use tandem_platform::{
    bus::{self, EventHandler},
    db::Tx,
    ids::new_id,
    outbox,
    time::{Micros, from_timestamp, now_micros},
};
use tandem_proto::events::v1::{DealClosed, DealKind, Event, event::Payload};
use tracing::Instrument;

use crate::{
    DEALS_CONSUMER, Tiers,
    domain::{
        DealType, PointsKind, calendar,
        money::{self, Amount, format_decimal},
        points,
    },
    ledger, store,
    store::EntryRow,
};

pub(crate) struct DealPoints(pub(crate) Arc<Tiers>);

#[async_trait]
impl EventHandler for DealPoints {
    async fn handle(&self, event: &Event) -> anyhow::Result<()> {
        let Some((deal, amount)) = earning(event) else { return Ok(()) };
        let tiers = &self.0;
        let mut tx = tiers.db.begin().await?;
        let teams = apply(&mut tx, event, deal, &amount).await?;
        tiers.commit(tx).await?;
        // In transactions of their own, after the points are committed, so that the team's
        // lock is not held across this transaction's commit, and in the background, so that
        // the next events need not wait for them.
        tiers.refresh_credited_later(deal.program_id.clone(), teams);
        Ok(())
    }

    /// The events' points in one transaction; then each crediting team's refresh, once.
    async fn handle_batch(&self, events: &[Event]) -> Option<anyhow::Result<()>> {
        let tiers = &self.0;
        let applied = async {
            let earning: Vec<_> = events.iter().filter_map(|e| earning(e).map(|(d, a)| (e, d, a))).collect();
            let mut refreshes: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
            if earning.is_empty() {
                return Ok(refreshes);
            }
            let mut tx = tiers.db.begin().await?;
            for (event, deal, amount) in earning {
                let teams = apply(&mut tx, event, deal, &amount).instrument(bus::event_span(event)).await?;
                refreshes.entry(deal.program_id.as_str()).or_default().extend(teams);
            }
            tiers.commit(tx).await?;
            Ok(refreshes)
        };
        Some(applied.await.map(|refreshes| {
            for (program_id, teams) in refreshes {
                tiers.refresh_credited_later(program_id.to_owned(), teams.into_iter().collect());
            }
        }))
    }
}

/// The won deal and its amount when the event earns points; `None` for other events, lost
/// deals, deals without a program, and malformed ones (logged).
fn earning(event: &Event) -> Option<(&DealClosed, Amount)> {
    let Some(Payload::DealClosed(deal)) = &event.payload else { return None };
    if !deal.won || deal.program_id.is_empty() {
        return None;
    }
    let Some(amount) = deal_amount(deal) else {
        tracing::warn!(event_id = %event.id, deal_id = %deal.deal_id, "won deal without a valid amount, team or client: no points");
        return None;
    };
    Some((deal, amount))
}

/// Applies a won deal in `tx`, once: credits its points unless the event was handled before.
/// Returns the teams whose credited tier to refresh (again, for an event handled before: its
/// refresh may not have run, a crash).
async fn apply(
    tx: &mut Tx,
    event: &Event,
    deal: &DealClosed,
    amount: &Amount,
) -> anyhow::Result<Vec<String>> {
    if outbox::mark_handled(tx, DEALS_CONSUMER, &event.id).await? {
        credit(tx, event, deal, amount).await
    } else {
        earning_teams(tx, deal, now_micros()).await
    }
}

/// Writes the points a won deal earns; returns the teams that earned points.
async fn credit(
    tx: &mut Tx,
    event: &Event,
    deal: &DealClosed,
    amount: &Amount,
) -> anyhow::Result<Vec<String>> {
    let now = now_micros();
    let earned_at =
        deal.close_time.as_ref().or(event.occur_time.as_ref()).and_then(from_timestamp).unwrap_or(now);
    // A missing exchange rate fails the event: it is retried, then dead-lettered.
    let (rates, market_type) = ledger::rates_for(tx, &amount.currency, &deal.client_market).await?;
    let calc = points::calculate(amount, rates, false, 0)?;
    let sourced_cents = i64::try_from((calc.usd * Decimal::ONE_HUNDRED).floor()).unwrap_or(i64::MAX);
    let deal_type = DealKind::try_from(deal.deal_type).ok().and_then(DealType::from_event);
    let entry = |team_id: &str, kind: PointsKind, points: i64, sourced: Option<i64>| EntryRow {
        id: new_id("pts"),
        program_id: deal.program_id.clone(),
        team_id: team_id.to_owned(),
        client_id: deal.client_id.clone(),
        kind: kind.as_str().to_owned(),
        points,
        earned_at,
        deal_type: deal_type.map(|d| d.as_str().to_owned()),
        market_type: Some(market_type.as_str().to_owned()),
        deal_id: Some(deal.deal_id.clone()),
        reason: String::new(),
        sourced_usd_cents: sourced,
        currency_code: Some(amount.currency.clone()),
        amount_minor: Some(amount.minor),
        usd_per_unit: Some(format_decimal(rates.usd_per_unit)),
        multiplier: Some(format_decimal(rates.multiplier)),
        create_time: now,
    };
    // The sold entry is written even at zero points: its amount counts as sourced.
    store::insert_entry(tx, &entry(&deal.team_id, PointsKind::Sold, calc.sold, Some(sourced_cents))).await?;
    let teams = earning_teams(tx, deal, now).await?;
    if deal.will_manage {
        let others = u32::try_from(teams.len() - 1).unwrap_or(u32::MAX);
        let share = points::managed_points(calc.sold, others);
        if share > 0 {
            for team in &teams {
                store::insert_entry(tx, &entry(team, PointsKind::Managed, share, None)).await?;
            }
        }
    }
    Ok(teams)
}

/// The teams a won deal credits: the seller and, when it will manage the client, the client's
/// other managing partners at `now`.
async fn earning_teams(c: &mut AnyConnection, deal: &DealClosed, now: Micros) -> anyhow::Result<Vec<String>> {
    let mut teams = vec![deal.team_id.clone()];
    if deal.will_manage {
        teams.extend(
            store::managing_partners(
                c,
                &deal.program_id,
                &deal.client_id,
                calendar::active_since(now),
                &deal.team_id,
            )
            .await?,
        );
    }
    Ok(teams)
}

/// The deal's amount when the event is usable: a team, a client and a non-negative amount in
/// a well-formed currency.
fn deal_amount(deal: &DealClosed) -> Option<Amount> {
    let amount = deal.amount.as_ref()?;
    (!deal.team_id.is_empty()
        && !deal.client_id.is_empty()
        && amount.amount_minor >= 0
        && money::is_currency_code(&amount.currency_code))
    .then(|| Amount::new(amount.amount_minor, &amount.currency_code))
}
