//! Tier status latency on a large program: 10,000 teams × 100 points entries (a million rows)
//! in PostgreSQL, then the status of random teams (tiers, the active-window sums and the
//! certification: one statement, then the pure rules), with latency percentiles.
//!
//! `TANDEM_TEST_POSTGRES_URL=postgres://… cargo bench -p tandem-tiers` (without the variable it
//! says so and does nothing). Not a timed test: it reports, it does not assert a budget.

use std::time::{Duration, Instant};

use rand::Rng;
use tandem_platform::{
    db::{Db, DbOptions},
    testing::TestDb,
    time::now_micros,
};
use tandem_tiers::{MIGRATIONS, ledger};

const TEAMS: i64 = 10_000;
const ENTRIES_PER_TEAM: i64 = 100;
const SAMPLES: usize = 5_000;
const PROGRAM: &str = "prog_0000000000000000000000000000bench";

fn team_id(n: i64) -> String {
    format!("team_{n:032x}")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var("TANDEM_TEST_POSTGRES_URL").is_err() {
        println!("tier_status: set TANDEM_TEST_POSTGRES_URL to run this benchmark on PostgreSQL");
        return Ok(());
    }
    let Some(test_db) = TestDb::postgres().await else {
        println!("tier_status: PostgreSQL unreachable; nothing measured");
        return Ok(());
    };
    let db = Db::connect(&test_db.url, &DbOptions::default())?;
    db.migrate(MIGRATIONS).await?;
    let now = now_micros();

    // Tiers of the program, and the ledger: set-based inserts in batches of 1,000 teams.
    let started = Instant::now();
    for (i, (name, threshold)) in
        [("Gold", 1_000), ("Platinum", 5_000), ("Diamond", 10_000), ("Elite", 20_000)].into_iter().enumerate()
    {
        sqlx::query(
            "INSERT INTO tiers (id, program_id, name, rank, points_threshold, sold_points_minimum, \
             managed_points_minimum, requires_certification, create_time, update_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $8)",
        )
        .bind(format!("tier_{i:032x}"))
        .bind(PROGRAM)
        .bind(name)
        .bind(i as i64 + 1)
        .bind(threshold)
        .bind(threshold / 10)
        .bind(i64::from(i >= 2))
        .bind(now)
        .execute(&mut *db.acquire().await?)
        .await?;
    }
    let day = 86_400_000_000_i64;
    for batch in 0..TEAMS / 1_000 {
        sqlx::query(
            "INSERT INTO points_entries (id, program_id, team_id, client_id, kind, points, earned_at, \
               deal_type, market_type, deal_id, reason, sourced_usd_cents, create_time) \
             SELECT 'pts_' || lpad(to_hex(t), 16, '0') || lpad(to_hex(e), 16, '0'), $1, \
                    'team_' || lpad(to_hex(t), 32, '0'), 'client' || (e % 20) || '.example', \
                    CASE WHEN e % 3 = 0 THEN 'MANAGED' ELSE 'SOLD' END, 1 + (random() * 200)::bigint, \
                    $2 - (random() * 540 * $3)::bigint, 'NEW_BUSINESS', 'STANDARD', NULL, '', \
                    (random() * 200000)::bigint, $2 \
             FROM generate_series($4::bigint, $5::bigint) AS t, generate_series(1::bigint, $6::bigint) AS e",
        )
        .bind(PROGRAM)
        .bind(now)
        .bind(day)
        .bind(batch * 1_000)
        .bind(batch * 1_000 + 999)
        .bind(ENTRIES_PER_TEAM)
        .execute(&mut *db.acquire().await?)
        .await?;
    }
    sqlx::query("ANALYZE points_entries").execute(&mut *db.acquire().await?).await?;
    let (rows,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM points_entries").fetch_one(&mut *db.acquire().await?).await?;
    println!("tier_status: loaded {rows} entries for {TEAMS} teams in {:.1?}", started.elapsed());

    // Warm the pool and the caches, then measure.
    let mut conn = db.acquire().await?;
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        let team = team_id(rng.gen_range(0..TEAMS));
        ledger::status_inputs(&mut conn, PROGRAM, &team, now).await?;
    }
    let mut latencies = Vec::with_capacity(SAMPLES);
    let mut tiered = 0;
    for _ in 0..SAMPLES {
        let team = team_id(rng.gen_range(0..TEAMS));
        let start = Instant::now();
        let inputs = ledger::status_inputs(&mut conn, PROGRAM, &team, now_micros()).await?;
        let status = inputs.evaluate(None);
        latencies.push(start.elapsed());
        tiered += usize::from(status.current.is_some());
        assert!(inputs.totals.total() > 0, "every team has active points");
    }
    latencies.sort();
    println!(
        "tier_status: {SAMPLES} random teams ({tiered} with a tier): p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    drop(conn);
    db.close().await;
    Ok(())
}
