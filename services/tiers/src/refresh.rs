//! Coalesced refreshes of a team's credited tier, for the `DealClosed` handler, which asks for
//! them in the background once its points are committed.
//!
//! Deciding a team's tier takes the team's lock ([`ledger::refresh_credited_tier`]), so the
//! refreshes of one team run one after another. When a team wins many deals at once, each
//! would wait its turn to recompute the same answer. Instead, a request made while another
//! refresh of the team is running waits for it to end, and the next refresh covers every
//! request made before it started: one run settles a whole burst.
//!
//! What a caller may rely on: when [`Refresher::refresh`] returns `Ok`, a refresh that began
//! after the call did (and so saw everything the caller had committed) has been committed.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use tokio::sync::Notify;

use tandem_platform::{db::Db, time::now_micros};

use crate::{error::Result, ledger};

/// The refreshes of one team: how many were asked for, and (behind the lock that one refresh
/// at a time holds) how many of those the last committed refresh covered.
#[derive(Default)]
struct Team {
    requested: AtomicU64,
    covered: tokio::sync::Mutex<u64>,
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
        let key = (program_id.to_owned(), team_id.to_owned());
        let team =
            self.teams.lock().unwrap_or_else(PoisonError::into_inner).entry(key.clone()).or_default().clone();
        let ticket = team.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let changed = async {
            let mut covered = team.covered.lock().await;
            if *covered >= ticket {
                return Ok(false);
            }
            // Every request made up to here is covered by the refresh that starts now.
            let upto = team.requested.load(Ordering::Acquire);
            let mut tx = db.begin().await?;
            let changed = ledger::refresh_credited_tier(&mut tx, program_id, team_id, now_micros()).await?;
            tx.commit().await?;
            *covered = upto;
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
