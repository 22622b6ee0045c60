//! The `DealClosed` handler, called directly with constructed events (deals and its producer
//! do not exist yet): points once per event, managed points split with the client's other
//! managing partners, and `TierChanged` in the outbox when the points change the tier.

mod common;

use common::{Harness, req};
use prost::Message;
use tandem_platform::{ids::new_id, testing::TestDb, time::to_timestamp};
use tandem_proto::{
    common::v1::Money,
    events::v1::{DealClosed, DealKind, Event, event::Payload},
    tiers::v1 as pb,
};

fn deal(h: &Harness, team: &str, client: &str, usd_cents: i64, will_manage: bool) -> Event {
    Event {
        id: new_id("evt"),
        aggregate_id: new_id("deal"),
        occur_time: Some(to_timestamp(tandem_platform::time::now_micros())),
        source: "deals".into(),
        headers: Default::default(),
        payload: Some(Payload::DealClosed(DealClosed {
            deal_id: new_id("deal"),
            team_id: team.into(),
            program_id: h.program.clone(),
            client_id: client.into(),
            client_domain: client.into(),
            amount: Some(Money { currency_code: "USD".into(), amount_minor: usd_cents }),
            client_market: "US".into(),
            deal_type: DealKind::NewBusiness.into(),
            won: true,
            close_time: Some(to_timestamp(tandem_platform::time::now_micros())),
            will_manage,
        })),
    }
}

/// A tier of the harness's program, made by staff.
async fn create_tier(h: &Harness, name: &str, rank: i32, points_threshold: i64) -> pb::Tier {
    h.tier
        .clone()
        .create_tier(req(
            &h.staff,
            pb::CreateTierRequest {
                program_id: h.program.clone(),
                name: name.into(),
                rank,
                points_threshold,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .tier
        .unwrap()
}

/// The team's status once the handler's background refreshes are done.
async fn status(h: &Harness, team: &str) -> pb::GetTierStatusResponse {
    h.tiers.refreshes_settled().await;
    h.points
        .clone()
        .get_tier_status(req(
            &h.staff,
            pb::GetTierStatusRequest {
                team_id: team.into(),
                program_id: h.program.clone(),
                target_tier_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

/// The `TierChanged` events in the outbox, oldest first, once the handler's background
/// refreshes are done.
async fn tier_changes(h: &Harness) -> Vec<tandem_proto::events::v1::TierChanged> {
    use base64::Engine;
    h.tiers.refreshes_settled().await;
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT stream, payload FROM outbox ORDER BY seq")
        .fetch_all(&mut *h.db.acquire().await.unwrap())
        .await
        .unwrap();
    rows.into_iter()
        .filter(|(stream, _)| stream == tandem_tiers::STREAM)
        .filter_map(|(_, payload)| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(payload).unwrap();
            match Event::decode(bytes.as_slice()).unwrap().payload {
                Some(Payload::TierChanged(t)) => Some(t),
                _ => None,
            }
        })
        .collect()
}

async fn a_won_deal_credits_points_once_and_changes_the_tier(db: TestDb) {
    let h = Harness::start(db).await;
    let gold = create_tier(&h, "Gold", 1, 100).await;
    let handler = h.tiers.deal_handler();
    // 1 234.56 USD → 123 sold points; will manage alone → 123 managed.
    let event = deal(&h, &h.team, "acme.example", 123_456, true);
    handler.handle(&event).await.unwrap();
    // The same event delivered again changes nothing.
    handler.handle(&event).await.unwrap();
    let s = status(&h, &h.team).await;
    assert_eq!((s.sold_points, s.managed_points), (123, 123));
    assert_eq!(s.sourced_amount_12m.unwrap().amount_minor, 123_456);
    assert_eq!(s.credited_tier.unwrap().id, gold.id);
    let changes = tier_changes(&h).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].tier_id.as_str(), changes[0].tier_name.as_str(), changes[0].previous_tier_id.as_str()),
        (gold.id.as_str(), "Gold", "")
    );
    assert_eq!(changes[0].team_id, h.team);

    // Another deal keeps the tier: no second event.
    handler.handle(&deal(&h, &h.team, "beta.example", 50_000, false)).await.unwrap();
    assert_eq!(status(&h, &h.team).await.sold_points, 173);
    assert_eq!(tier_changes(&h).await.len(), 1);

    // Lost deals and deals outside a program earn nothing.
    let mut lost = deal(&h, &h.team, "acme.example", 1_000_000, true);
    if let Some(Payload::DealClosed(d)) = &mut lost.payload {
        d.won = false;
    }
    handler.handle(&lost).await.unwrap();
    let mut no_program = deal(&h, &h.team, "acme.example", 1_000_000, true);
    if let Some(Payload::DealClosed(d)) = &mut no_program.payload {
        d.program_id.clear();
    }
    handler.handle(&no_program).await.unwrap();
    assert_eq!(status(&h, &h.team).await.total_points, 173 + 123);
}

/// Deals of one team applied at the same time (several consumers, or a staff adjustment
/// beside a deal) still announce the tier their sum reaches, once.
async fn concurrent_deals_of_one_team_announce_the_tier_they_reach_together(db: TestDb) {
    let h = Harness::start(db).await;
    let gold = create_tier(&h, "Gold", 1, 1_000).await;
    let handler = h.tiers.deal_handler();
    // Ten deals of 100 points each: only all ten together reach Gold.
    let events: Vec<Event> =
        (0..10).map(|i| deal(&h, &h.team, &format!("client-{i}.example"), 100_000, false)).collect();
    let tasks: Vec<_> = events
        .into_iter()
        .map(|e| {
            let handler = handler.clone();
            tokio::spawn(async move { handler.handle(&e).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let s = status(&h, &h.team).await;
    assert_eq!(s.sold_points, 1_000);
    assert_eq!(s.credited_tier.map(|t| t.id), Some(gold.id.clone()));
    let changes = tier_changes(&h).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].tier_id, gold.id);
}

/// A redelivered event that was credited before still brings the tier up to date: its
/// refresh may have been cut off (a crash between the points and the refresh).
async fn a_redelivered_deal_refreshes_the_tier_it_credited_before(db: TestDb) {
    let h = Harness::start(db).await;
    let handler = h.tiers.deal_handler();
    let event = deal(&h, &h.team, "acme.example", 200_000, false);
    handler.handle(&event).await.unwrap();
    // The handler's own refresh runs in the background: let it finish before the tier
    // exists, or it may find the tier itself.
    h.tiers.refreshes_settled().await;
    // A tier the team's 200 points reach, defined behind the handler's back (no sweep runs
    // in these tests): only a refresh finds it.
    let gold = create_tier(&h, "Gold", 1, 150).await;
    assert!(tier_changes(&h).await.is_empty());
    handler.handle(&event).await.unwrap();
    let s = status(&h, &h.team).await;
    assert_eq!(s.sold_points, 200, "credited once");
    let changes = tier_changes(&h).await;
    assert_eq!(changes.iter().map(|c| c.tier_id.as_str()).collect::<Vec<_>>(), [gold.id.as_str()]);
}

/// The sweep runs as soon as tiers starts, so that a refresh a crash cut off is not left
/// waiting for the next interval.
async fn the_sweeper_catches_up_at_start_up(db: TestDb) {
    let h = Harness::start(db).await;
    h.tiers.deal_handler().handle(&deal(&h, &h.team, "acme.example", 200_000, false)).await.unwrap();
    // The handler's background refresh finishes before the tier exists, as if it had run
    // before a crash; only the sweep can then find the tier.
    h.tiers.refreshes_settled().await;
    let gold = create_tier(&h, "Gold", 1, 150).await;
    assert!(tier_changes(&h).await.is_empty());
    // Tiers started again (a fresh instance: no tier edit has woken its sweeper).
    let restarted = tandem_tiers::Tiers::new(
        h.db.clone(),
        std::sync::Arc::new(common::FakePermissions::default()),
        std::sync::Arc::new(tokio::sync::Notify::new()),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sweeper = tokio::spawn(restarted.run_sweeper(std::time::Duration::from_secs(3600), async {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tier_changes(&h).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no sweep at start-up");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(tier_changes(&h).await[0].tier_id, gold.id);
    stop.send(()).unwrap();
    sweeper.await.unwrap();
}

async fn managed_points_are_split_with_the_other_managing_partners(db: TestDb) {
    let h = Harness::start(db).await;
    let handler = h.tiers.deal_handler();
    let third = new_id("team");
    // The other team manages the client first: 300 sold, 300 managed.
    handler.handle(&deal(&h, &h.other_team, "shared.example", 300_000, true)).await.unwrap();
    // A third team sells without managing: it does not become a managing partner.
    handler.handle(&deal(&h, &third, "shared.example", 100_000, false)).await.unwrap();
    // Our team sells 1 000 USD and will manage: 100 sold, managed split with one other → 50 each.
    handler.handle(&deal(&h, &h.team, "shared.example", 100_000, true)).await.unwrap();
    let ours = status(&h, &h.team).await;
    assert_eq!((ours.sold_points, ours.managed_points), (100, 50));
    let theirs = status(&h, &h.other_team).await;
    assert_eq!((theirs.sold_points, theirs.managed_points), (300, 350));
    let third_status = status(&h, &third).await;
    assert_eq!((third_status.sold_points, third_status.managed_points), (100, 0));
    // Now two others manage it: 100 sold-equivalent points, a third each, rounded down.
    handler.handle(&deal(&h, &third, "shared.example", 100_000, true)).await.unwrap();
    let third_status = status(&h, &third).await;
    assert_eq!((third_status.sold_points, third_status.managed_points), (200, 33));
    assert_eq!(status(&h, &h.team).await.managed_points, 50 + 33);
    assert_eq!(status(&h, &h.other_team).await.managed_points, 350 + 33);
}

async fn a_currency_without_a_rate_fails_the_event_and_is_applied_once_the_rate_exists(db: TestDb) {
    let h = Harness::start(db).await;
    let handler = h.tiers.deal_handler();
    let mut event = deal(&h, &h.team, "eu.example", 100_000, false);
    if let Some(Payload::DealClosed(d)) = &mut event.payload {
        d.amount = Some(Money { currency_code: "EUR".into(), amount_minor: 100_000 });
        d.client_market = "BR".into();
    }
    assert!(handler.handle(&event).await.is_err());
    assert_eq!(status(&h, &h.team).await.sold_points, 0);
    let mut rates = h.rates.clone();
    rates
        .set_exchange_rate(req(
            &h.staff,
            pb::SetExchangeRateRequest { currency_code: "EUR".into(), usd_per_unit: "1.1".into() },
        ))
        .await
        .unwrap();
    rates
        .set_market_multiplier(req(
            &h.staff,
            pb::SetMarketMultiplierRequest { country_code: "BR".into(), multiplier: "1.5".into() },
        ))
        .await
        .unwrap();
    // Redelivered: 1 000 EUR = 1 100 USD, × 1.5 → 165 points, in a growth market.
    handler.handle(&event).await.unwrap();
    let s = status(&h, &h.team).await;
    assert_eq!((s.sold_points, s.sourced_amount_12m.unwrap().amount_minor), (165, 110_000));
    let history = h
        .points
        .clone()
        .get_client_points(req(
            &h.member,
            pb::GetClientPointsRequest {
                team_id: h.team.clone(),
                program_id: h.program.clone(),
                client_id: "eu.example".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.entries.len(), 1);
    assert_eq!(history.entries[0].market_type, i32::from(pb::MarketType::Growth));
    assert_eq!(history.entries[0].deal_type, i32::from(pb::DealType::NewBusiness));
}

/// A batch is credited in one go, each event once (one already handled, a lost deal among
/// them), and the tier it reaches is announced once; a batch with an event that cannot be
/// applied (no exchange rate) credits none of its events.
async fn a_batch_of_won_deals_is_credited_all_or_none(db: TestDb) {
    let h = Harness::start(db).await;
    let gold = create_tier(&h, "Gold", 1, 100).await;
    let handler = h.tiers.deal_handler();
    let first = deal(&h, &h.team, "a.example", 40_000, false);
    handler.handle(&first).await.unwrap();
    let mut lost = deal(&h, &h.team, "b.example", 1_000_000, false);
    if let Some(Payload::DealClosed(d)) = &mut lost.payload {
        d.won = false;
    }
    let batch = [
        first,
        deal(&h, &h.team, "c.example", 30_000, false),
        lost,
        deal(&h, &h.team, "d.example", 50_000, false),
        deal(&h, &h.other_team, "e.example", 20_000, false),
    ];
    handler.handle_batch(&batch).await.expect("takes batches").unwrap();
    let s = status(&h, &h.team).await;
    assert_eq!(s.sold_points, 40 + 30 + 50);
    assert_eq!(s.credited_tier.unwrap().id, gold.id);
    assert_eq!(status(&h, &h.other_team).await.sold_points, 20);
    assert_eq!(tier_changes(&h).await.len(), 1, "one announcement for the team the batch lifted");
    // Delivered again, one by one: nothing changes.
    for event in &batch {
        handler.handle(event).await.unwrap();
    }
    assert_eq!(status(&h, &h.team).await.sold_points, 120);

    let mut unpriced = deal(&h, &h.other_team, "eu.example", 100_000, false);
    if let Some(Payload::DealClosed(d)) = &mut unpriced.payload {
        d.amount = Some(Money { currency_code: "EUR".into(), amount_minor: 100_000 });
    }
    let priced = deal(&h, &h.other_team, "f.example", 10_000, false);
    assert!(handler.handle_batch(&[priced.clone(), unpriced]).await.expect("takes batches").is_err());
    assert_eq!(status(&h, &h.other_team).await.sold_points, 20, "none of the failed batch");
    handler.handle(&priced).await.unwrap();
    assert_eq!(status(&h, &h.other_team).await.sold_points, 30);
}

/// The sweep announces what time and tier redefinitions change: expired points drop a team
/// out of its tier, a raised threshold too, each with one `TierChanged`.
async fn the_sweep_announces_tier_changes_nobody_acted_on(db: TestDb) {
    let h = Harness::start(db).await;
    let silver = create_tier(&h, "Tier 1", 1, 50).await;
    let gold = create_tier(&h, "Tier 2", 2, 100).await;
    h.tiers.deal_handler().handle(&deal(&h, &h.team, "acme.example", 150_000, false)).await.unwrap();
    assert_eq!(status(&h, &h.team).await.credited_tier.unwrap().id, gold.id);
    let now = tandem_platform::time::now_micros();
    assert_eq!(tandem_tiers::ledger::sweep(h.tiers.db(), now).await.unwrap(), 0, "nothing changed yet");

    // Gold now asks for more than the team has: it falls back to silver.
    h.tier
        .clone()
        .update_tier(req(
            &h.staff,
            pb::UpdateTierRequest {
                tier: Some(pb::Tier { id: gold.id.clone(), points_threshold: 1_000, ..Default::default() }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["points_threshold".into()] }),
            },
        ))
        .await
        .unwrap();
    assert_eq!(tandem_tiers::ledger::sweep(h.tiers.db(), now).await.unwrap(), 1);
    let last = tier_changes(&h).await.pop().unwrap();
    assert_eq!(
        (last.tier_id.as_str(), last.previous_tier_id.as_str()),
        (silver.id.as_str(), gold.id.as_str())
    );

    // Thirteen months on, the points have expired: no tier at all, announced once.
    let later = now + 400 * tandem_platform::time::MICROS_PER_DAY;
    assert_eq!(tandem_tiers::ledger::sweep(h.tiers.db(), later).await.unwrap(), 1);
    assert_eq!(tandem_tiers::ledger::sweep(h.tiers.db(), later).await.unwrap(), 0);
    let last = tier_changes(&h).await.pop().unwrap();
    assert_eq!((last.tier_id.as_str(), last.previous_tier_id.as_str()), ("", silver.id.as_str()));
}

tandem_platform::backend_tests!(
    the_sweep_announces_tier_changes_nobody_acted_on,
    a_won_deal_credits_points_once_and_changes_the_tier,
    concurrent_deals_of_one_team_announce_the_tier_they_reach_together,
    a_redelivered_deal_refreshes_the_tier_it_credited_before,
    the_sweeper_catches_up_at_start_up,
    managed_points_are_split_with_the_other_managing_partners,
    a_currency_without_a_rate_fails_the_event_and_is_applied_once_the_rate_exists,
    a_batch_of_won_deals_is_credited_all_or_none,
);
