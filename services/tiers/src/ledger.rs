//! The use cases the API, the deal handler and the benchmark share: a team's status inputs,
//! the rates that apply to a sale, and keeping the credited tier (and its event) up to date.

use rust_decimal::Decimal;
use sqlx::AnyConnection;
use tandem_platform::{
    db::{Db, Tx},
    outbox,
    time::Micros,
};
use tandem_proto::{
    common::v1::ErrorReason,
    events::v1::{TierChanged, event::Payload},
};

use crate::{
    SOURCE, STREAM,
    domain::{
        MarketType, calendar,
        money::parse_positive_decimal,
        points::{self, Rates},
        status::{self, Status, TierDef, Totals},
    },
    error::{Result, TiersError},
    store::{self, RateTable},
};

/// What a team's tier status is computed from.
#[derive(Debug, Clone)]
pub struct StatusInputs {
    pub rows: Vec<store::TierRow>,
    pub tiers: Vec<TierDef>,
    pub totals: Totals,
    pub sourced_usd_cents: i64,
    pub certified_until: Option<Micros>,
    pub now: Micros,
}

impl StatusInputs {
    pub fn certified(&self) -> bool {
        self.certified_until.is_some()
    }

    pub fn evaluate<'a>(&'a self, target: Option<&'a TierDef>) -> Status<'a> {
        status::evaluate(&self.tiers, self.totals, self.certified(), target)
    }

    pub fn credited(&self) -> Option<&TierDef> {
        status::credited_tier(&self.tiers, &self.totals, self.certified())
    }
}

/// A team's tiers, active totals and certification at `now`, in one statement.
pub async fn status_inputs(
    c: &mut AnyConnection,
    program_id: &str,
    team_id: &str,
    now: Micros,
) -> Result<StatusInputs> {
    let store::Standing { totals, sourced_usd_cents, certified_until, tiers: rows } =
        store::team_standing(c, program_id, team_id, calendar::active_since(now), now).await?;
    let tiers = rows.iter().map(store::TierRow::def).collect();
    Ok(StatusInputs { rows, tiers, totals, sourced_usd_cents, certified_until, now })
}

/// The exchange rate and market multiplier for a client's currency and market. USD is 1; a
/// market without a multiplier counts 1; a currency without a rate cannot be converted.
pub async fn rates_for(c: &mut AnyConnection, currency: &str, market: &str) -> Result<(Rates, MarketType)> {
    let stored = |row: Option<store::RateRow>| -> Result<Option<Decimal>> {
        row.map(|r| {
            parse_positive_decimal(&r.value)
                .map_err(|e| TiersError::Internal(anyhow::anyhow!("stored decimal {:?}: {e}", r.value)))
        })
        .transpose()
    };
    let usd_per_unit = if currency == "USD" {
        Decimal::ONE
    } else {
        stored(store::rate(c, RateTable::ExchangeRates, currency).await?)?.ok_or_else(|| {
            TiersError::rule(
                ErrorReason::ExchangeRateMissing,
                format!("no exchange rate is set for {currency}"),
            )
        })?
    };
    let multiplier = match market {
        "" => Decimal::ONE,
        market => {
            stored(store::rate(c, RateTable::MarketMultipliers, market).await?)?.unwrap_or(Decimal::ONE)
        }
    };
    Ok((Rates { usd_per_unit, multiplier }, points::market_type(multiplier)))
}

/// Recomputes the team's credited tier after a change of its points or certification; when it
/// differs from the one last recorded, records it and writes `TierChanged` to the outbox in
/// the same transaction. Returns whether it changed.
pub async fn refresh_credited_tier(
    tx: &mut Tx,
    program_id: &str,
    team_id: &str,
    now: Micros,
) -> Result<bool> {
    // Two transactions adding points to one team at once must not both decide from the
    // points they see without the other's: the second waits and then sees both.
    tandem_platform::db::lock(tx, &format!("tiers:credited:{program_id}:{team_id}")).await?;
    let inputs = status_inputs(tx, program_id, team_id, now).await?;
    let credited = inputs.credited();
    let tier_id = credited.map_or("", |t| t.id.as_str());
    let previous = store::recorded_credited_tier(tx, program_id, team_id).await?;
    if previous.as_deref() == Some(tier_id) {
        return Ok(false);
    }
    store::set_credited_tier(tx, program_id, team_id, tier_id, now).await?;
    let previous = previous.unwrap_or_default();
    if previous == tier_id {
        // First record of a team without a tier: nothing changed for anyone.
        return Ok(false);
    }
    let event = TierChanged {
        team_id: team_id.to_owned(),
        program_id: program_id.to_owned(),
        tier_id: tier_id.to_owned(),
        tier_name: credited.map(|t| t.name.clone()).unwrap_or_default(),
        rank: credited.map_or(0, |t| t.rank),
        previous_tier_id: previous,
    };
    outbox::enqueue(tx, STREAM, SOURCE, team_id, Payload::TierChanged(event)).await?;
    Ok(true)
}

/// Recomputes every tracked team's credited tier at `now`, so that changes nobody acted on —
/// points that expired, certifications that lapsed, tiers redefined — are recorded and
/// announced with `TierChanged` like any other. One short transaction per team. Returns how
/// many teams changed tier.
pub async fn sweep(db: &Db, now: Micros) -> Result<usize> {
    const BATCH: i64 = 500;
    let (mut program, mut team) = (String::new(), String::new());
    let mut changed = 0;
    loop {
        let mut conn = db.acquire().await?;
        let batch = store::standings_after(&mut conn, &program, &team, BATCH).await?;
        drop(conn);
        for (program_id, team_id) in &batch {
            let mut tx = db.begin().await?;
            if refresh_credited_tier(&mut tx, program_id, team_id, now).await? {
                changed += 1;
            }
            tx.commit().await?;
        }
        match batch.last() {
            Some((p, t)) if batch.len() as i64 == BATCH => (program, team) = (p.clone(), t.clone()),
            _ => return Ok(changed),
        }
    }
}
