//! The level of the access cache that every identity replica shares, in Redis.
//!
//! Each replica keeps recent answers in memory for [`LOCAL_TTL`] only, and asks Redis before
//! the database. A change drops its entries here at once, from the replica that made it; the
//! membership and status events every change emits drop them again when identity consumes its
//! own stream (group [`ACCESS_CACHE_CONSUMER`](crate::ACCESS_CACHE_CONSUMER)), which also
//! covers a read that raced with the change and put the old answer back. Entries carry their
//! own expiry ([`SHARED_TTL`]) as a last bound. When Redis does not answer, the cache is
//! skipped for a moment and answers come from the database.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use redis::{AsyncCommands, aio::ConnectionManager};
use tandem_platform::{redis_bus::lazy_connection, time::now_micros};
use tandem_proto::identity::v1::{RewardsVisibility, StaffRole, TeamRole};

use crate::cache::{TeamAccess, UserStatus};

/// How long a replica trusts its in-memory answers when replicas share the cache.
pub const LOCAL_TTL: Duration = Duration::from_secs(2);
/// How long a shared answer lives when no change drops it.
pub const SHARED_TTL: Duration = Duration::from_secs(600);
/// After Redis failed to answer, how long the cache is skipped.
const BACK_OFF: Duration = Duration::from_secs(1);

pub struct SharedAccessCache {
    conn: ConnectionManager,
    skip_until: AtomicI64,
}

fn team_key(team_id: &str) -> String {
    format!("tandem:identity:access:team:{team_id}")
}

fn user_key(user_id: &str) -> String {
    format!("tandem:identity:access:user:{user_id}")
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl SharedAccessCache {
    /// Connects lazily to `url`.
    pub fn connect(url: &str) -> redis::RedisResult<Self> {
        let conn = lazy_connection(&redis::Client::open(url)?, Duration::from_millis(250))?;
        Ok(Self { conn, skip_until: AtomicI64::new(0) })
    }

    fn available(&self) -> bool {
        now_micros() >= self.skip_until.load(Ordering::Relaxed)
    }

    fn failed(&self, err: &redis::RedisError) {
        if self.skip_until.swap(now_micros() + micros(BACK_OFF), Ordering::Relaxed) < now_micros() {
            tracing::warn!(error = %err, "shared access cache unavailable; answering from the database");
        }
    }

    async fn get(&self, key: &str, field: Option<&str>) -> Option<String> {
        if !self.available() {
            return None;
        }
        let mut conn = self.conn.clone();
        let value: redis::RedisResult<Option<String>> = match field {
            Some(field) => conn.hget(key, field).await,
            None => conn.get(key).await,
        };
        value.map_err(|e| self.failed(&e)).ok().flatten()
    }

    /// Runs a write; failures only make the cache skip Redis for a moment.
    async fn write(&self, pipe: &redis::Pipeline) {
        if !self.available() {
            return;
        }
        let mut conn = self.conn.clone();
        if let Err(err) = pipe.query_async::<()>(&mut conn).await {
            self.failed(&err);
        }
    }

    pub async fn team_access(&self, user_id: &str, team_id: &str) -> Option<TeamAccess> {
        decode_team_access(&self.get(&team_key(team_id), Some(user_id)).await?, now_micros())
    }

    pub async fn put_team_access(&self, user_id: &str, team_id: &str, access: TeamAccess) {
        let value = encode_team_access(access, now_micros() + micros(SHARED_TTL));
        let key = team_key(team_id);
        let mut pipe = redis::pipe();
        pipe.hset(&key, user_id, value).ignore().expire(&key, (SHARED_TTL.as_secs() * 2) as i64).ignore();
        self.write(&pipe).await;
    }

    pub async fn user_status(&self, user_id: &str) -> Option<UserStatus> {
        decode_user_status(&self.get(&user_key(user_id), None).await?)
    }

    pub async fn put_user_status(&self, user_id: &str, status: UserStatus) {
        let mut pipe = redis::pipe();
        pipe.set_ex(user_key(user_id), encode_user_status(status), SHARED_TTL.as_secs()).ignore();
        self.write(&pipe).await;
    }

    pub async fn forget_member(&self, user_id: &str, team_id: &str) {
        let mut pipe = redis::pipe();
        pipe.hdel(team_key(team_id), user_id).ignore();
        self.write(&pipe).await;
    }

    pub async fn forget_team(&self, team_id: &str) {
        let mut pipe = redis::pipe();
        pipe.del(team_key(team_id)).ignore();
        self.write(&pipe).await;
    }

    pub async fn forget_user(&self, user_id: &str) {
        let mut pipe = redis::pipe();
        pipe.del(user_key(user_id)).ignore();
        self.write(&pipe).await;
    }
}

/// `role:visibility:expires_at` (role 0: not a member).
fn encode_team_access(access: TeamAccess, expires_at: i64) -> String {
    format!("{}:{}:{expires_at}", access.role.map_or(0, |r| r as i32), access.visibility as i32)
}

fn decode_team_access(value: &str, now: i64) -> Option<TeamAccess> {
    let mut parts = value.split(':');
    let role: i32 = parts.next()?.parse().ok()?;
    let visibility = RewardsVisibility::try_from(parts.next()?.parse::<i32>().ok()?).ok()?;
    let expires_at: i64 = parts.next()?.parse().ok()?;
    if expires_at <= now || parts.next().is_some() {
        return None;
    }
    let role = match role {
        0 => None,
        r => Some(TeamRole::try_from(r).ok()?),
    };
    Some(TeamAccess { role, visibility })
}

/// `active:tokens_valid_after:staff_role` (staff role 0: not staff).
fn encode_user_status(status: UserStatus) -> String {
    format!(
        "{}:{}:{}",
        u8::from(status.active),
        status.tokens_valid_after,
        status.staff_role.map_or(0, |r| r as i32)
    )
}

fn decode_user_status(value: &str) -> Option<UserStatus> {
    let mut parts = value.split(':');
    let active = match parts.next()? {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    let tokens_valid_after = parts.next()?.parse().ok()?;
    let staff_role = match parts.next()?.parse::<i32>().ok()? {
        0 => None,
        r => Some(StaffRole::try_from(r).ok()?),
    };
    if parts.next().is_some() {
        return None;
    }
    Some(UserStatus { active, tokens_valid_after, staff_role })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: TeamAccess = TeamAccess { role: Some(TeamRole::Admin), visibility: RewardsVisibility::Hide };

    #[test]
    fn entries_round_trip_and_expire() {
        let encoded = encode_team_access(ADMIN, 1_000);
        assert_eq!(decode_team_access(&encoded, 999), Some(ADMIN));
        assert_eq!(decode_team_access(&encoded, 1_000), None, "expired");
        let outsider = TeamAccess { role: None, visibility: RewardsVisibility::Show };
        assert_eq!(decode_team_access(&encode_team_access(outsider, 10), 0), Some(outsider));
        let staff =
            UserStatus { active: false, tokens_valid_after: 42, staff_role: Some(StaffRole::Finance) };
        assert_eq!(decode_user_status(&encode_user_status(staff)), Some(staff));
        for garbage in ["", "1", "x:1:2", "1:1:1:1", "9:1:5", "2:1:9999999999999999999999"] {
            assert_eq!(decode_team_access(garbage, 0), None, "{garbage}");
            assert_eq!(decode_user_status(garbage), None, "{garbage}");
        }
    }

    fn unique(name: &str) -> String {
        format!("{name}-{}", uuid::Uuid::now_v7().simple())
    }

    #[tokio::test]
    async fn answers_are_shared_until_a_change_drops_them() {
        let Some(url) = tandem_platform::testing::redis_url() else { return };
        let (replica_a, replica_b) =
            (SharedAccessCache::connect(&url).unwrap(), SharedAccessCache::connect(&url).unwrap());
        let (user, other, team) = (unique("usr"), unique("usr"), unique("team"));
        replica_a.put_team_access(&user, &team, ADMIN).await;
        replica_a.put_team_access(&other, &team, ADMIN).await;
        assert_eq!(replica_b.team_access(&user, &team).await, Some(ADMIN), "another replica sees it");

        replica_b.forget_member(&user, &team).await;
        assert_eq!(replica_a.team_access(&user, &team).await, None);
        assert_eq!(replica_a.team_access(&other, &team).await, Some(ADMIN));
        replica_b.forget_team(&team).await;
        assert_eq!(replica_a.team_access(&other, &team).await, None);

        let status = UserStatus { active: true, tokens_valid_after: 7, staff_role: None };
        replica_a.put_user_status(&user, status).await;
        assert_eq!(replica_b.user_status(&user).await, Some(status));
        replica_b.forget_user(&user).await;
        assert_eq!(replica_a.user_status(&user).await, None);
    }

    #[tokio::test]
    async fn without_redis_the_cache_is_skipped_quickly() {
        let away = SharedAccessCache::connect("redis://127.0.0.1:1").unwrap();
        let started = std::time::Instant::now();
        away.put_team_access("u", "t", ADMIN).await;
        assert_eq!(away.team_access("u", "t").await, None);
        assert_eq!(away.user_status("u").await, None);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert!(!away.available(), "skipped for a moment after a failure");
    }
}
