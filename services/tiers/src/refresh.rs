//! Coalesced refreshes of a team's credited tier, for the `DealClosed` handler, which asks for
//! them in the background once its points are committed.
//!
//! Deciding a team's tier takes the team's lock ([`ledger::refresh_credited_tier`]), so the
//! refreshes of one team run one after another. When a team wins many deals at once, each
//! would wait its turn to recompute the same answer. Instead, a request made while another
//! refresh of the team is running waits for it to end, and the next refresh covers every
//! request made before it started: one run settles a whole burst.
//!
//! A team that wins deals without pause would still keep one refresh running all the time,
//! each summing more of the team's points than the last. So a team's refreshes start at least
//! [`SPACING`] apart: a request that comes sooner waits out the rest, and the refresh then
//! covers every request made meanwhile. A team's tier thus follows its points within
//! [`SPACING`] plus one refresh, at a cost per team bounded by the spacing, not by its wins.
//!
//! What a caller may rely on: when [`Refresher::refresh`] returns `Ok`, a refresh that began
//! after the call did (and so saw everything the caller had committed) has been committed.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use tandem_platform::{db::Db, time::now_micros};

use crate::{error::Result, ledger};

/// The least time between the starts of two refreshes of one team.
pub const SPACING: Duration = Duration::from_millis(200);

/// The refreshes of one team: how many were asked for, and (behind the lock that one refresh
/// at a time holds) the last refresh: how many requests it covered once committed, and when it
/// started.
#[derive(Default)]
struct Team {
    requested: AtomicU64,
    last: tokio::sync::Mutex<Last>,
}

#[derive(Default)]
struct Last {
    covered: u64,
    start: Option<Instant>,
}

type Key = (String, String);

#[derive(Default)]
pub struct Refresher {
    teams: Mutex<HashMap<Key, Arc<Team>>>,
    /// Background requests not yet done, and a wake-up for when none are left.
    in_background: AtomicUsize,
    idle: Notify,
}

impl Refresher {
    /// Refreshes the team's credited tier (in a transaction of its own) unless a refresh that
    /// began after this call has already done so. Returns whether this call's refresh
    /// changed the tier (and so wrote `TierChanged` to the outbox).
    pub async fn refresh(&self, db: &Db, program_id: &str, team_id: &str) -> Result<bool> {
        self.coalesce(program_id, team_id, || async {
            let mut tx = db.begin().await?;
            let changed = ledger::refresh_credited_tier(&mut tx, program_id, team_id, now_micros()).await?;
            tx.commit().await?;
            Ok(changed)
        })
        .await
    }

    /// Runs `refresh` for the team unless a run that began after this call has already
    /// committed, no sooner than [`SPACING`] after the team's last run began.
    async fn coalesce<F, Fut>(&self, program_id: &str, team_id: &str, refresh: F) -> Result<bool>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let key = (program_id.to_owned(), team_id.to_owned());
        let team =
            self.teams.lock().unwrap_or_else(PoisonError::into_inner).entry(key.clone()).or_default().clone();
        let ticket = team.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let changed = async {
            let mut last = team.last.lock().await;
            if last.covered >= ticket {
                return Ok(false);
            }
            if let Some(start) = last.start {
                tokio::time::sleep_until(start + SPACING).await;
            }
            // Every request made up to here is covered by the refresh that starts now.
            let upto = team.requested.load(Ordering::Acquire);
            last.start = Some(Instant::now());
            let changed = refresh().await?;
            last.covered = upto;
            Ok(changed)
        }
        .await;
        // The last one out forgets the team (the map and this call hold the only references).
        let mut teams = self.teams.lock().unwrap_or_else(PoisonError::into_inner);
        if Arc::strong_count(&team) == 2 {
            teams.remove(&key);
        }
        changed
    }

    /// Counts a background request about to start; [`Refresher::finished`] when it is done.
    pub fn started(&self) {
        self.in_background.fetch_add(1, Ordering::AcqRel);
    }

    pub fn finished(&self) {
        if self.in_background.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no background request is left.
    pub async fn settled(&self) {
        loop {
            let idle = self.idle.notified();
            if self.in_background.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts the runs of a refresh that takes `takes`.
    async fn run(refresher: &Refresher, runs: &AtomicUsize, team: &str, takes: Duration) -> bool {
        refresher
            .coalesce("program", team, || async {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(takes).await;
                Ok(true)
            })
            .await
            .unwrap()
    }

    /// A team winning a deal every millisecond for two seconds is refreshed about once per
    /// spacing, not a thousand times, and every request is answered by a run that began after
    /// it was made.
    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_of_requests_is_refreshed_once_per_spacing() {
        let refresher = Arc::new(Refresher::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let begun = Instant::now();
        let mut requests = Vec::new();
        for _ in 0..2000 {
            let (refresher, runs) = (refresher.clone(), runs.clone());
            requests.push(tokio::spawn(async move {
                let asked = Instant::now();
                run(&refresher, &runs, "team", Duration::from_millis(5)).await;
                asked.elapsed()
            }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut slowest = Duration::ZERO;
        for request in requests {
            slowest = slowest.max(request.await.unwrap());
        }
        let spans = begun.elapsed().as_millis() / SPACING.as_millis();
        let runs = runs.load(Ordering::SeqCst) as u128;
        assert!((spans - 1..=spans + 1).contains(&runs), "{runs} runs in {spans} spacings");
        // A request waits at most the rest of a spacing and the run after it, then the run
        // it did not see begin (it came during one) with its own.
        assert!(slowest <= 2 * (SPACING + Duration::from_millis(5)), "a request waited {slowest:?}");
    }

    /// A lone request, and another team's, are refreshed at once; a request during a run is
    /// refreshed again after it (the running one may not have seen its points).
    #[tokio::test(start_paused = true)]
    async fn lone_requests_run_at_once_and_none_is_covered_by_a_run_it_did_not_precede() {
        let refresher = Arc::new(Refresher::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let begun = Instant::now();
        assert!(run(&refresher, &runs, "a", Duration::from_millis(5)).await);
        assert!(run(&refresher, &runs, "b", Duration::from_millis(5)).await);
        assert_eq!(begun.elapsed(), Duration::from_millis(10), "no spacing between teams or after a lull");

        let first = {
            let (refresher, runs) = (refresher.clone(), runs.clone());
            tokio::spawn(async move { run(&refresher, &runs, "c", Duration::from_millis(50)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let during = Instant::now();
        assert!(run(&refresher, &runs, "c", Duration::from_millis(5)).await, "its own run, not the first's");
        assert!(first.await.unwrap());
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert_eq!(during.elapsed(), SPACING - Duration::from_millis(10) + Duration::from_millis(5));
    }
}
