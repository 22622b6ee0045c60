//! Deals' copy of identity's teams' members and users' status, kept from identity's events on
//! `tandem.identity` by the consumer group `deals-directory`, and read by lead assignment.
//!
//! Why a copy: assignment decides for the system, not for the caller. When a partner declines
//! a lead the rules run again with that partner's request, and identity shows a partner only
//! its teammates, so asking identity with the partner's token would leave the lead waiting for
//! anyone else. The copy knows every member. Every deployment reads it, `tandem dev` included.
//!
//! Applying: each event once (`outbox::mark_handled` in the transaction of its effect), and
//! never over a newer state (rows carry the time of the event that wrote them; see
//! `store::directory`). Events of one team keep their order on the stream; across teams and
//! users the event time orders them.
//!
//! Backfill: a new group reads the identity stream from its start (the Redis bus creates groups
//! at `0`), so a fresh replica learns every membership identity ever announced as long as the
//! stream keeps its history. For a user the copy has never seen (no membership event reached
//! it: a staff user, or history the stream no longer holds) deals asks identity with the
//! caller's token instead — the answer of before the copy existed, scoped to what the caller
//! may see.

use std::sync::Arc;

use async_trait::async_trait;
use tandem_platform::{
    bus::EventHandler,
    db::Db,
    outbox,
    time::{Micros, from_timestamp},
};
use tandem_proto::events::v1::{Event, MembershipChange, event::Payload};

use crate::{
    domain::directory::{Membership, membership},
    store,
};

/// The stream identity's events go to.
pub const IDENTITY_STREAM: &str = "tandem.identity";
/// The consumer group under which deals keeps its copy of identity's members.
pub const DIRECTORY_CONSUMER: &str = "deals-directory";

/// Applies identity's `MembershipChanged`, `UserStatusChanged` and `TeamDeleted` to the copy.
pub struct DirectoryCopy {
    db: Db,
}

impl DirectoryCopy {
    /// Needs only deals' database, so it can subscribe before anything else of deals starts.
    pub fn new(db: Db) -> Arc<Self> {
        Arc::new(Self { db })
    }
}

fn event_time(event: &Event) -> Option<Micros> {
    event.occur_time.as_ref().and_then(from_timestamp)
}

#[async_trait]
impl EventHandler for DirectoryCopy {
    async fn handle(&self, event: &Event) -> anyhow::Result<()> {
        let relevant = matches!(
            event.payload,
            Some(Payload::MembershipChanged(_) | Payload::UserStatusChanged(_) | Payload::TeamDeleted(_))
        );
        if !relevant {
            return Ok(());
        }
        let Some(time) = event_time(event) else {
            // Identity stamps every event; one without a time cannot be ordered, and applying
            // it could undo a newer state.
            tracing::warn!(event_id = %event.id, "identity event without a time: skipped");
            return Ok(());
        };
        let mut tx = self.db.begin().await?;
        if !outbox::mark_handled(&mut tx, DIRECTORY_CONSUMER, &event.id).await? {
            return Ok(());
        }
        match &event.payload {
            Some(Payload::MembershipChanged(m)) => {
                let change = MembershipChange::try_from(m.change).unwrap_or(MembershipChange::Unspecified);
                match membership(change, &m.role) {
                    Some(Membership::Member(role)) => {
                        store::directory::set_membership(&mut tx, &m.team_id, &m.user_id, &role, true, time)
                            .await?;
                    }
                    Some(Membership::Removed) => {
                        store::directory::set_membership(&mut tx, &m.team_id, &m.user_id, "", false, time)
                            .await?;
                    }
                    None => {
                        tracing::warn!(event_id = %event.id, change = m.change, "unknown membership change: skipped")
                    }
                }
            }
            Some(Payload::UserStatusChanged(s)) => {
                store::directory::set_user_active(&mut tx, &s.user_id, s.active, time).await?;
            }
            Some(Payload::TeamDeleted(t)) => store::directory::delete_team(&mut tx, &t.team_id, time).await?,
            _ => {}
        }
        tx.commit().await?;
        Ok(())
    }
}
