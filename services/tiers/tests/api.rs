//! The tiers API over gRPC on SQLite and PostgreSQL: tiers, status, adjustments, dashboard
//! reads, the calculator and who may do what.

mod common;

use common::{Harness, micros_ago, req, violations};
use prost_types::FieldMask;
use tandem_platform::testing::TestDb;
use tandem_proto::{common::v1::Money, tiers::v1 as pb};
use tonic::Code;

async fn create_tier(
    h: &mut Harness,
    name: &str,
    rank: i32,
    threshold: i64,
    sold: i64,
    managed: i64,
    cert: bool,
) -> pb::Tier {
    h.tier
        .create_tier(req(
            &h.staff,
            pb::CreateTierRequest {
                program_id: h.program.clone(),
                name: name.into(),
                rank,
                points_threshold: threshold,
                sold_points_minimum: sold,
                managed_points_minimum: managed,
                requires_certification: cert,
            },
        ))
        .await
        .expect("create tier")
        .into_inner()
        .tier
        .unwrap()
}

fn adjust(
    h: &Harness,
    client: &str,
    kind: pb::PointsKind,
    points: i64,
    days_ago: i64,
) -> pb::AdjustPointsRequest {
    pb::AdjustPointsRequest {
        team_id: h.team.clone(),
        program_id: h.program.clone(),
        client_id: client.into(),
        kind: kind.into(),
        points,
        reason: "import of history".into(),
        earned_at: Some(micros_ago(days_ago)),
        deal_type: pb::DealType::NewBusiness.into(),
        market_type: pb::MarketType::Standard.into(),
        request_id: tandem_platform::ids::new_id("req"),
    }
}

async fn status(h: &Harness, token: &str, target: &str) -> Result<pb::GetTierStatusResponse, tonic::Status> {
    let (team, program) = (h.team.clone(), h.program.clone());
    h.points
        .clone()
        .get_tier_status(req(
            token,
            pb::GetTierStatusRequest { team_id: team, program_id: program, target_tier_id: target.into() },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn tier_status_follows_points_expiry_and_certification(db: TestDb) {
    let mut h = Harness::start(db).await;
    // A program without tiers yet: a status all the same.
    let bare = status(&h, &h.member, "").await.unwrap();
    assert!(bare.current_tier.is_none() && bare.next_tier.is_none() && bare.credited_tier.is_none());
    assert_eq!((bare.total_points, bare.certified), (0, false));
    let gold = create_tier(&mut h, "Gold", 1, 100, 50, 0, false).await;
    let platinum = create_tier(&mut h, "Platinum", 2, 500, 100, 100, false).await;
    let diamond = create_tier(&mut h, "Diamond", 3, 1_000, 200, 200, true).await;

    let s = status(&h, &h.member, "").await.unwrap();
    assert_eq!((s.total_points, s.current_tier, s.credited_tier), (0, None, None));
    assert_eq!(s.next_tier.as_ref().map(|t| t.id.as_str()), Some(gold.id.as_str()));
    assert_eq!(s.points_to_next_tier, 100);

    for (client, kind, points, days) in [
        ("a.example", pb::PointsKind::Sold, 600, 10),
        ("b.example", pb::PointsKind::Managed, 450, 100),
        // 400 days old: expired, shown, never counted.
        ("a.example", pb::PointsKind::Sold, 5_000, 400),
    ] {
        let r = adjust(&h, client, kind, points, days);
        h.points.adjust_points(req(&h.staff, r)).await.expect("adjust");
    }
    let s = status(&h, &h.member, "").await.unwrap();
    assert_eq!((s.sold_points, s.managed_points, s.total_points, s.expired_points), (600, 450, 1_050, 5_000));
    // Diamond reached but needs certification: credited Platinum.
    assert_eq!(s.current_tier.as_ref().unwrap().id, diamond.id);
    assert_eq!(s.credited_tier.as_ref().unwrap().id, platinum.id);
    assert!(!s.certified);
    assert_eq!(s.next_tier, None);
    assert!(s.sold_minimum_met && s.managed_minimum_met);
    assert_eq!(s.sourced_amount_12m.as_ref().unwrap().amount_minor, 0);
    assert_eq!(s.sourced_mrr_12m, None);

    // A target tier reports its own gap.
    let s = status(&h, &h.staff, &gold.id).await.unwrap();
    assert_eq!((s.target_tier.unwrap().id, s.points_to_target_tier), (gold.id.clone(), 0));

    // Certified: credited Diamond.
    h.tier
        .record_certification(req(
            &h.staff,
            pb::RecordCertificationRequest { team_id: h.team.clone(), valid_until: Some(micros_ago(-30)) },
        ))
        .await
        .unwrap();
    let s = status(&h, &h.member, "").await.unwrap();
    assert!(s.certified);
    assert_eq!(s.credited_tier.unwrap().id, diamond.id);

    // A negative correction drops below Diamond's managed minimum (and threshold).
    let r = adjust(&h, "b.example", pb::PointsKind::Managed, -300, 1);
    h.points.adjust_points(req(&h.staff, r)).await.unwrap();
    let s = status(&h, &h.member, &diamond.id).await.unwrap();
    assert_eq!(s.current_tier.unwrap().id, platinum.id);
    assert_eq!(s.total_points, 750);
    assert_eq!(s.points_to_target_tier, 250);
    assert!(s.sold_minimum_met);
    assert!(!s.managed_minimum_met);
    assert_eq!(s.managed_points_to_minimum, 50);

    // An unknown target tier is not found.
    let err = status(&h, &h.member, &tandem_platform::ids::new_id("tier")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

async fn tiers_are_listed_in_rank_order_and_updated_with_a_mask(db: TestDb) {
    let mut h = Harness::start(db).await;
    let elite = create_tier(&mut h, "Elite", 4, 5_000, 0, 0, true).await;
    create_tier(&mut h, "Gold", 1, 100, 0, 0, false).await;
    create_tier(&mut h, "Diamond", 3, 2_000, 0, 0, true).await;
    let platinum = create_tier(&mut h, "Platinum", 2, 500, 0, 0, false).await;
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .tier
            .list_tiers(req(
                &h.member,
                pb::ListTiersRequest {
                    program_id: h.program.clone(),
                    page_size: 3,
                    page_token: token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        names.extend(page.tiers.into_iter().map(|t| t.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, ["Gold", "Platinum", "Diamond", "Elite"]);

    // Same rank or name in the program: ALREADY_EXISTS.
    let err = h
        .tier
        .create_tier(req(
            &h.staff,
            pb::CreateTierRequest {
                program_id: h.program.clone(),
                name: "Other".into(),
                rank: 2,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let updated = h
        .tier
        .update_tier(req(
            &h.staff,
            pb::UpdateTierRequest {
                tier: Some(pb::Tier {
                    id: platinum.id.clone(),
                    points_threshold: 750,
                    name: "ignored".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask { paths: vec!["points_threshold".into()] }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .tier
        .unwrap();
    assert_eq!((updated.points_threshold, updated.name.as_str(), updated.rank), (750, "Platinum", 2));
    let err = h
        .tier
        .update_tier(req(
            &h.staff,
            pb::UpdateTierRequest {
                tier: Some(pb::Tier { id: platinum.id.clone(), rank: elite.rank, ..Default::default() }),
                update_mask: Some(FieldMask { paths: vec!["rank".into()] }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = h
        .tier
        .update_tier(req(
            &h.staff,
            pb::UpdateTierRequest {
                tier: Some(pb::Tier { id: platinum.id.clone(), ..Default::default() }),
                update_mask: Some(FieldMask { paths: vec!["program_id".into()] }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["update_mask"]);
    let err = h
        .tier
        .update_tier(req(
            &h.staff,
            pb::UpdateTierRequest {
                tier: Some(pb::Tier { id: platinum.id.clone(), points_threshold: -1, ..Default::default() }),
                update_mask: Some(FieldMask { paths: vec!["points_threshold".into()] }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["tier.points_threshold"]);
}

async fn adjustments_are_idempotent_by_request_id(db: TestDb) {
    let mut h = Harness::start(db).await;
    let request = adjust(&h, "a.example", pb::PointsKind::Sold, 42, 3);
    let first = h.points.adjust_points(req(&h.staff, request.clone())).await.unwrap().into_inner();
    let again = h.points.adjust_points(req(&h.staff, request.clone())).await.unwrap().into_inner();
    assert_eq!(first, again);
    assert_eq!(status(&h, &h.staff, "").await.unwrap().sold_points, 42);

    let mut different = request.clone();
    different.points = 43;
    let err = h.points.adjust_points(req(&h.staff, different)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(status(&h, &h.staff, "").await.unwrap().sold_points, 42);

    let entry = first.entry.unwrap();
    assert_eq!(entry.reason, "import of history");
    assert!(!entry.expired);
    assert_eq!(entry.deal_type, i32::from(pb::DealType::NewBusiness));
}

async fn bad_input_is_refused_with_field_violations(db: TestDb) {
    let mut h = Harness::start(db).await;
    let err = h
        .points
        .adjust_points(req(
            &h.staff,
            pb::AdjustPointsRequest {
                team_id: "nope".into(),
                program_id: String::new(),
                client_id: " ".into(),
                kind: 0,
                points: 0,
                reason: String::new(),
                earned_at: Some(micros_ago(-2)),
                deal_type: 99,
                market_type: 0,
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violations(&err),
        [
            "team_id",
            "program_id",
            "client_id",
            "kind",
            "points",
            "reason",
            "request_id",
            "earned_at",
            "deal_type"
        ]
    );

    for (value, ok) in [
        ("1.10", true),
        ("-1", false),
        ("NaN", false),
        ("1e3", false),
        ("0", false),
        ("1.1234567890123", false),
        ("", false),
    ] {
        let r = h
            .rates
            .set_exchange_rate(req(
                &h.staff,
                pb::SetExchangeRateRequest { currency_code: "EUR".into(), usd_per_unit: value.into() },
            ))
            .await;
        match r {
            Ok(r) => {
                assert!(ok, "{value}");
                assert_eq!(r.into_inner().exchange_rate.unwrap().usd_per_unit, "1.1");
            }
            Err(e) => {
                assert!(!ok, "{value}");
                assert_eq!(violations(&e), ["usd_per_unit"], "{value}");
            }
        }
    }
    let err = h
        .rates
        .set_market_multiplier(req(
            &h.staff,
            pb::SetMarketMultiplierRequest { country_code: "bra".into(), multiplier: "1,5".into() },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["country_code", "multiplier"]);
    let err = h
        .rates
        .set_exchange_rate(req(
            &h.staff,
            pb::SetExchangeRateRequest { currency_code: "USD".into(), usd_per_unit: "2".into() },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["currency_code"]);

    let err = h
        .points
        .calculate_points(req(
            &h.member,
            pb::CalculatePointsRequest {
                amount: Some(Money { currency_code: "eur".into(), amount_minor: -1 }),
                client_market: "Brazil".into(),
                will_manage: true,
                other_managing_partners: -1,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violations(&err),
        ["amount.currency_code", "amount.amount_minor", "client_market", "other_managing_partners"]
    );

    let (team, program) = (h.team.clone(), h.program.clone());
    let err = h
        .points
        .list_points_changes(req(
            &h.member,
            pb::ListPointsChangesRequest {
                team_id: team.clone(),
                program_id: program.clone(),
                start_time: Some(micros_ago(1)),
                end_time: Some(micros_ago(2)),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["end_time"]);
    let err = h
        .points
        .get_progress_over_time(req(
            &h.member,
            pb::GetProgressOverTimeRequest { team_id: team, program_id: program, months: 37 },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["months"]);
}

async fn calculator_and_conversions_use_the_configured_rates(db: TestDb) {
    let mut h = Harness::start(db).await;
    let calc =
        |currency: &str, minor: i64, market: &str, manage: bool, others: i32| pb::CalculatePointsRequest {
            amount: Some(Money { currency_code: currency.into(), amount_minor: minor }),
            client_market: market.into(),
            will_manage: manage,
            other_managing_partners: others,
        };
    // No rate for EUR yet.
    let err =
        h.points.calculate_points(req(&h.member, calc("EUR", 10_000, "FR", false, 0))).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    h.rates
        .set_exchange_rate(req(
            &h.staff,
            pb::SetExchangeRateRequest { currency_code: "EUR".into(), usd_per_unit: "1.10".into() },
        ))
        .await
        .unwrap();
    h.rates
        .set_exchange_rate(req(
            &h.staff,
            pb::SetExchangeRateRequest { currency_code: "JPY".into(), usd_per_unit: "0.0067".into() },
        ))
        .await
        .unwrap();
    let m = h
        .rates
        .set_market_multiplier(req(
            &h.staff,
            pb::SetMarketMultiplierRequest { country_code: "BR".into(), multiplier: "1.50".into() },
        ))
        .await
        .unwrap()
        .into_inner()
        .market_multiplier
        .unwrap();
    assert_eq!((m.multiplier.as_str(), m.market_type), ("1.5", i32::from(pb::MarketType::Growth)));

    let r = h
        .points
        .calculate_points(req(&h.member, calc("EUR", 100_000, "FR", true, 2)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.usd_amount.as_str(), r.sold_points, r.managed_points, r.total_points),
        ("1100", 110, 36, 146)
    );
    let r = h
        .points
        .calculate_points(req(&h.outsider, calc("USD", 100_000, "BR", false, 3)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.sold_points, r.managed_points, r.market_multiplier.as_str()), (150, 0, "1.5"));
    let r = h
        .points
        .calculate_points(req(&h.member, calc("JPY", 150_000, "", false, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.usd_amount.as_str(), r.sold_points), ("1005", 100));

    let to_currency = h
        .points
        .convert_points(req(
            &h.member,
            pb::ConvertPointsRequest {
                direction: pb::ConversionDirection::PointsToCurrency.into(),
                client_market: "BR".into(),
                currency_code: "EUR".into(),
                sold_points: 2,
                managed_points: 0,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // 2 points in Brazil need 20 / 1.5 = 13.33… USD = 12.13 EUR (rounded up to earn them).
    assert_eq!(to_currency.sold_value.as_ref().unwrap().amount_minor, 1_213);
    assert_eq!(to_currency.managed_value.as_ref().unwrap().amount_minor, 0);
    let back = h
        .points
        .convert_points(req(
            &h.member,
            pb::ConvertPointsRequest {
                direction: pb::ConversionDirection::CurrencyToPoints.into(),
                client_market: "BR".into(),
                currency_code: "EUR".into(),
                sold_value: to_currency.sold_value.clone(),
                managed_value: Some(Money { currency_code: "EUR".into(), amount_minor: 1_212 }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((back.sold_points, back.managed_points), (2, 1));

    let rates = h
        .rates
        .list_exchange_rates(req(
            &h.outsider,
            pb::ListExchangeRatesRequest { page_size: 1, page_token: String::new() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rates.exchange_rates.len(), 1);
    assert_eq!(rates.exchange_rates[0].currency_code, "EUR");
    let rest = h
        .rates
        .list_exchange_rates(req(
            &h.outsider,
            pb::ListExchangeRatesRequest { page_size: 1, page_token: rates.next_page_token },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.exchange_rates[0].currency_code, "JPY");
    let multipliers = h
        .rates
        .list_market_multipliers(req(&h.member, pb::ListMarketMultipliersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(multipliers.market_multipliers.len(), 1);
}

async fn dashboard_reads_show_changes_breakdown_history_and_progress(db: TestDb) {
    let mut h = Harness::start(db).await;
    for (client, kind, points, days, deal, market) in [
        ("a.example", pb::PointsKind::Sold, 100, 5, pb::DealType::NewBusiness, pb::MarketType::Standard),
        ("a.example", pb::PointsKind::Managed, 30, 5, pb::DealType::NewBusiness, pb::MarketType::Standard),
        ("b.example", pb::PointsKind::Sold, 250, 10, pb::DealType::Upsell, pb::MarketType::Growth),
        ("c.example", pb::PointsKind::Sold, 40, 60, pb::DealType::Renewal, pb::MarketType::Standard),
        // Earned 360 days ago: its 12 months run out within the next week or so, not yet.
        ("c.example", pb::PointsKind::Managed, 7, 300, pb::DealType::Renewal, pb::MarketType::Standard),
        // Expired about 20 days ago: lost within the last month.
        ("d.example", pb::PointsKind::Managed, 11, 385, pb::DealType::Renewal, pb::MarketType::Standard),
        ("d.example", pb::PointsKind::Sold, 9, 500, pb::DealType::Renewal, pb::MarketType::Standard),
    ] {
        let mut r = adjust(&h, client, kind, points, days);
        r.deal_type = deal.into();
        r.market_type = market.into();
        h.points.adjust_points(req(&h.staff, r)).await.unwrap();
    }
    let (team, program) = (h.team.clone(), h.program.clone());
    let changes = h
        .points
        .list_points_changes(req(
            &h.member,
            pb::ListPointsChangesRequest {
                team_id: team.clone(),
                program_id: program.clone(),
                start_time: Some(micros_ago(30)),
                end_time: Some(micros_ago(0)),
                page_size: 2,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            changes.new_sold_points,
            changes.highest_sold_points,
            changes.new_managed_points,
            changes.lost_managed_points
        ),
        (350, 250, 30, 11)
    );
    let clients: Vec<_> = changes.changes.iter().map(|c| (c.client_id.as_str(), c.highest_sold)).collect();
    assert_eq!(clients, [("a.example", false), ("b.example", true)]);
    let rest = h
        .points
        .list_points_changes(req(
            &h.member,
            pb::ListPointsChangesRequest {
                team_id: team.clone(),
                program_id: program.clone(),
                start_time: Some(micros_ago(30)),
                end_time: Some(micros_ago(0)),
                page_size: 2,
                page_token: changes.next_page_token,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.changes.len(), 1);
    assert_eq!((rest.changes[0].client_id.as_str(), rest.changes[0].lost_managed_points), ("d.example", 11));
    assert!(rest.next_page_token.is_empty());

    let breakdown = |deal: pb::DealType, market: pb::MarketType| pb::ListPointsBreakdownRequest {
        team_id: team.clone(),
        program_id: program.clone(),
        deal_type: deal.into(),
        market_type: market.into(),
        ..Default::default()
    };
    let all = h
        .points
        .list_points_breakdown(req(
            &h.member,
            breakdown(pb::DealType::Unspecified, pb::MarketType::Unspecified),
        ))
        .await
        .unwrap()
        .into_inner();
    let rows: Vec<_> = all
        .client_points
        .iter()
        .map(|c| {
            (
                c.client_id.as_str(),
                c.active_sold_points,
                c.active_managed_points,
                c.expired_sold_points,
                c.expired_managed_points,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("a.example", 100, 30, 0, 0),
            ("b.example", 250, 0, 0, 0),
            ("c.example", 40, 7, 0, 0),
            ("d.example", 0, 0, 9, 11)
        ]
    );
    let growth = h
        .points
        .list_points_breakdown(req(&h.member, breakdown(pb::DealType::Unspecified, pb::MarketType::Growth)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(growth.client_points.iter().map(|c| c.client_id.as_str()).collect::<Vec<_>>(), ["b.example"]);
    let renewals = h
        .points
        .list_points_breakdown(req(&h.member, breakdown(pb::DealType::Renewal, pb::MarketType::Standard)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        renewals.client_points.iter().map(|c| c.client_id.as_str()).collect::<Vec<_>>(),
        ["c.example", "d.example"]
    );

    let client = h
        .points
        .get_client_points(req(
            &h.member,
            pb::GetClientPointsRequest {
                team_id: team.clone(),
                program_id: program.clone(),
                client_id: "d.example".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(client.client_points.unwrap().expired_managed_points, 11);
    assert_eq!(client.entries.len(), 2);
    assert!(client.entries.iter().all(|e| e.expired));
    let err = h
        .points
        .get_client_points(req(
            &h.member,
            pb::GetClientPointsRequest {
                team_id: team.clone(),
                program_id: program.clone(),
                client_id: "nobody.example".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let progress = h
        .points
        .get_progress_over_time(req(
            &h.member,
            pb::GetProgressOverTimeRequest { team_id: team, program_id: program, months: 0 },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(progress.months.len(), 12);
    let earned: i64 = progress.months.iter().map(|m| m.sold_points_earned + m.managed_points_earned).sum();
    assert_eq!(earned, 100 + 30 + 250 + 40 + 7);
    assert_eq!(progress.months.last().unwrap().active_points, 100 + 30 + 250 + 40 + 7);
}

/// Every guarded RPC for staff, a member of the team, an outsider and an anonymous caller.
async fn every_role_on_every_guarded_rpc(db: TestDb) {
    let mut h = Harness::start(db).await;
    let tier = create_tier(&mut h, "Gold", 1, 10, 0, 0, false).await;
    let r = adjust(&h, "a.example", pb::PointsKind::Sold, 5, 1);
    h.points.adjust_points(req(&h.staff, r)).await.unwrap();
    let (staff, member, outsider) = (h.staff.clone(), h.member.clone(), h.outsider.clone());
    let (team, program) = (h.team.clone(), h.program.clone());

    // Team reads: staff and member yes; outsider NOT_FOUND; a member on another team NOT_FOUND.
    for (token, team_id, expected) in [
        (&staff, &team, Code::Ok),
        (&member, &team, Code::Ok),
        (&outsider, &team, Code::NotFound),
        (&member, &h.other_team.clone(), Code::NotFound),
        (&String::new(), &team, Code::Unauthenticated),
    ] {
        let codes = [
            h.points
                .get_tier_status(req(
                    token,
                    pb::GetTierStatusRequest {
                        team_id: team_id.clone(),
                        program_id: program.clone(),
                        target_tier_id: String::new(),
                    },
                ))
                .await
                .map(|_| ()),
            h.points
                .list_points_changes(req(
                    token,
                    pb::ListPointsChangesRequest {
                        team_id: team_id.clone(),
                        program_id: program.clone(),
                        start_time: Some(micros_ago(10)),
                        end_time: Some(micros_ago(0)),
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ()),
            h.points
                .list_points_breakdown(req(
                    token,
                    pb::ListPointsBreakdownRequest {
                        team_id: team_id.clone(),
                        program_id: program.clone(),
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ()),
            h.points
                .get_progress_over_time(req(
                    token,
                    pb::GetProgressOverTimeRequest {
                        team_id: team_id.clone(),
                        program_id: program.clone(),
                        months: 3,
                    },
                ))
                .await
                .map(|_| ()),
        ];
        for (i, result) in codes.into_iter().enumerate() {
            assert_eq!(result.err().map_or(Code::Ok, |s| s.code()), expected, "read #{i} for {team_id}");
        }
        let client = h
            .points
            .get_client_points(req(
                token,
                pb::GetClientPointsRequest {
                    team_id: team_id.clone(),
                    program_id: program.clone(),
                    client_id: "a.example".into(),
                },
            ))
            .await;
        let expected_client =
            if team_id == &team || expected != Code::Ok { expected } else { Code::NotFound };
        assert_eq!(client.err().map_or(Code::Ok, |s| s.code()), expected_client);
    }

    // Staff-only writes: member and outsider PERMISSION_DENIED, anonymous UNAUTHENTICATED.
    for (token, expected) in [
        (&member, Code::PermissionDenied),
        (&outsider, Code::PermissionDenied),
        (&String::new(), Code::Unauthenticated),
    ] {
        let results = [
            h.tier
                .create_tier(req(
                    token,
                    pb::CreateTierRequest {
                        program_id: program.clone(),
                        name: "X".into(),
                        rank: 9,
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ()),
            h.tier
                .update_tier(req(
                    token,
                    pb::UpdateTierRequest {
                        tier: Some(pb::Tier { id: tier.id.clone(), name: "Y".into(), ..Default::default() }),
                        update_mask: Some(FieldMask { paths: vec!["name".into()] }),
                    },
                ))
                .await
                .map(|_| ()),
            h.tier
                .record_certification(req(
                    token,
                    pb::RecordCertificationRequest {
                        team_id: team.clone(),
                        valid_until: Some(micros_ago(-10)),
                    },
                ))
                .await
                .map(|_| ()),
            h.points
                .adjust_points(req(token, adjust(&h, "a.example", pb::PointsKind::Sold, 1, 1)))
                .await
                .map(|_| ()),
            h.rates
                .set_exchange_rate(req(
                    token,
                    pb::SetExchangeRateRequest { currency_code: "EUR".into(), usd_per_unit: "1.1".into() },
                ))
                .await
                .map(|_| ()),
            h.rates
                .set_market_multiplier(req(
                    token,
                    pb::SetMarketMultiplierRequest { country_code: "BR".into(), multiplier: "1.5".into() },
                ))
                .await
                .map(|_| ()),
        ];
        for (i, result) in results.into_iter().enumerate() {
            assert_eq!(result.err().map(|s| s.code()), Some(expected), "write #{i}");
        }
    }
    // Nothing above changed anything.
    assert_eq!(status(&h, &staff, "").await.unwrap().sold_points, 5);

    // Open reads: any signed-in caller; anonymous UNAUTHENTICATED.
    for (token, expected) in
        [(&outsider, Code::Ok), (&member, Code::Ok), (&String::new(), Code::Unauthenticated)]
    {
        let results = [
            h.tier
                .list_tiers(req(
                    token,
                    pb::ListTiersRequest { program_id: program.clone(), ..Default::default() },
                ))
                .await
                .map(|_| ()),
            h.rates
                .list_exchange_rates(req(token, pb::ListExchangeRatesRequest::default()))
                .await
                .map(|_| ()),
            h.rates
                .list_market_multipliers(req(token, pb::ListMarketMultipliersRequest::default()))
                .await
                .map(|_| ()),
            h.points
                .calculate_points(req(
                    token,
                    pb::CalculatePointsRequest {
                        amount: Some(Money { currency_code: "USD".into(), amount_minor: 100 }),
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ()),
            h.points
                .convert_points(req(
                    token,
                    pb::ConvertPointsRequest {
                        direction: pb::ConversionDirection::PointsToCurrency.into(),
                        currency_code: "USD".into(),
                        sold_points: 1,
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ()),
        ];
        for (i, result) in results.into_iter().enumerate() {
            assert_eq!(result.err().map_or(Code::Ok, |s| s.code()), expected, "open read #{i}");
        }
    }
}

tandem_platform::backend_tests!(
    tier_status_follows_points_expiry_and_certification,
    tiers_are_listed_in_rank_order_and_updated_with_a_mask,
    adjustments_are_idempotent_by_request_id,
    bad_input_is_refused_with_field_violations,
    calculator_and_conversions_use_the_configured_rates,
    dashboard_reads_show_changes_breakdown_history_and_progress,
    every_role_on_every_guarded_rpc,
);
