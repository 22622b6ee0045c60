//! Rows and domain values to messages.

use tandem_platform::time::{Micros, to_timestamp};
use tandem_proto::{common::v1::Money, tiers::v1 as pb};

use crate::{
    domain::{DealType, MarketType, PointsKind, calendar, money::parse_positive_decimal, points},
    store,
};

pub fn tier(t: &store::TierRow) -> pb::Tier {
    pb::Tier {
        id: t.id.clone(),
        program_id: t.program_id.clone(),
        name: t.name.clone(),
        rank: i32::try_from(t.rank).unwrap_or(i32::MAX),
        points_threshold: t.points_threshold,
        sold_points_minimum: t.sold_points_minimum,
        managed_points_minimum: t.managed_points_minimum,
        requires_certification: t.requires_certification,
        create_time: Some(to_timestamp(t.create_time)),
        update_time: Some(to_timestamp(t.update_time)),
    }
}

pub fn tier_def(t: &crate::domain::status::TierDef, rows: &[store::TierRow]) -> Option<pb::Tier> {
    rows.iter().find(|r| r.id == t.id).map(tier)
}

pub fn certification(c: &store::CertificationRow) -> pb::Certification {
    pb::Certification {
        id: c.id.clone(),
        team_id: c.team_id.clone(),
        valid_until: Some(to_timestamp(c.valid_until)),
        create_time: Some(to_timestamp(c.create_time)),
    }
}

pub fn usd_cents(cents: i64) -> Money {
    Money { currency_code: "USD".into(), amount_minor: cents }
}

pub fn entry(e: &store::EntryRow, now: Micros) -> pb::PointsEntry {
    pb::PointsEntry {
        id: e.id.clone(),
        team_id: e.team_id.clone(),
        program_id: e.program_id.clone(),
        client_id: e.client_id.clone(),
        kind: PointsKind::parse(&e.kind).map_or(0, |k| pb::PointsKind::from(k).into()),
        points: e.points,
        earn_time: Some(to_timestamp(e.earned_at)),
        expire_time: Some(to_timestamp(calendar::expire_time(e.earned_at))),
        expired: calendar::is_expired(e.earned_at, now),
        deal_type: e
            .deal_type
            .as_deref()
            .and_then(DealType::parse)
            .map_or(0, |d| pb::DealType::from(d).into()),
        market_type: e
            .market_type
            .as_deref()
            .and_then(MarketType::parse)
            .map_or(0, |m| pb::MarketType::from(m).into()),
        deal_id: e.deal_id.clone().unwrap_or_default(),
        reason: e.reason.clone(),
        sourced_amount: e.sourced_usd_cents.map(usd_cents),
        create_time: Some(to_timestamp(e.create_time)),
    }
}

pub fn exchange_rate(r: &store::RateRow) -> pb::ExchangeRate {
    pb::ExchangeRate {
        currency_code: r.code.clone(),
        usd_per_unit: r.value.clone(),
        update_time: Some(to_timestamp(r.update_time)),
    }
}

pub fn market_multiplier(r: &store::RateRow) -> pb::MarketMultiplier {
    let market_type =
        parse_positive_decimal(&r.value).map(points::market_type).unwrap_or(MarketType::Standard);
    pb::MarketMultiplier {
        country_code: r.code.clone(),
        multiplier: r.value.clone(),
        market_type: pb::MarketType::from(market_type).into(),
        update_time: Some(to_timestamp(r.update_time)),
    }
}

pub fn client_points(c: &store::ClientRow) -> pb::ClientPoints {
    pb::ClientPoints {
        client_id: c.client_id.clone(),
        active_sold_points: c.active_sold,
        active_managed_points: c.active_managed,
        expired_sold_points: c.expired_sold,
        expired_managed_points: c.expired_managed,
        active_points: c.active_sold.saturating_add(c.active_managed),
        last_earn_time: Some(to_timestamp(c.last_earned_at)),
    }
}
