//! The in-memory cache behind `CheckPermission`, `CheckTeamEnrollment` and token checks:
//! repeated questions are answered without a database round trip, and every change of
//! membership, enrolment, team settings or user status drops what it affects. A generation counter stops a read that raced with a
//! change from caching the stale answer.

use std::{
    collections::HashMap,
    sync::{
        OnceLock, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tandem_proto::identity::v1::{RewardsVisibility, StaffRole, TeamRole};

/// What the access rules need about a user and a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TeamAccess {
    /// `None` when the user is not a member (or the team does not exist).
    pub role: Option<TeamRole>,
    pub visibility: RewardsVisibility,
}

/// What token checks need about a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserStatus {
    pub active: bool,
    pub tokens_valid_after: i64,
    pub staff_role: Option<StaffRole>,
}

const MAX_ENTRIES: usize = 200_000;

#[derive(Default)]
pub struct AccessCache {
    generation: AtomicU64,
    teams: RwLock<HashMap<(String, String), (TeamAccess, Instant)>>,
    users: RwLock<HashMap<String, (UserStatus, Instant)>>,
    /// Whether a team is enrolled in a program, by (team, program).
    enrollments: RwLock<HashMap<(String, String), (bool, Instant)>>,
    /// How long an answer counts; forever when this process makes every change (one replica).
    ttl: OnceLock<Duration>,
}

impl AccessCache {
    /// Answers count for `ttl` only: other replicas make changes this one does not see.
    pub fn expire_after(&self, ttl: Duration) {
        let _ = self.ttl.set(ttl);
    }

    fn fresh(&self, cached_at: Instant) -> bool {
        self.ttl.get().is_none_or(|ttl| cached_at.elapsed() < *ttl)
    }

    /// Take before reading the database; pass to `put_*` after.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn team_access(&self, user_id: &str, team_id: &str) -> Option<TeamAccess> {
        let teams = self.teams.read().expect("cache");
        let (access, at) = teams.get(&(user_id.to_owned(), team_id.to_owned()))?;
        self.fresh(*at).then_some(*access)
    }

    pub fn put_team_access(&self, generation: u64, user_id: &str, team_id: &str, access: TeamAccess) {
        let mut teams = self.teams.write().expect("cache");
        if self.generation() != generation {
            return;
        }
        if teams.len() >= MAX_ENTRIES {
            teams.clear();
        }
        teams.insert((user_id.to_owned(), team_id.to_owned()), (access, Instant::now()));
    }

    pub fn user_status(&self, user_id: &str) -> Option<UserStatus> {
        let users = self.users.read().expect("cache");
        let (status, at) = users.get(user_id)?;
        self.fresh(*at).then_some(*status)
    }

    pub fn put_user_status(&self, generation: u64, user_id: &str, status: UserStatus) {
        let mut users = self.users.write().expect("cache");
        if self.generation() != generation {
            return;
        }
        if users.len() >= MAX_ENTRIES {
            users.clear();
        }
        users.insert(user_id.to_owned(), (status, Instant::now()));
    }

    pub fn team_enrolled(&self, team_id: &str, program_id: &str) -> Option<bool> {
        let enrollments = self.enrollments.read().expect("cache");
        let (enrolled, at) = enrollments.get(&(team_id.to_owned(), program_id.to_owned()))?;
        self.fresh(*at).then_some(*enrolled)
    }

    pub fn put_team_enrolled(&self, generation: u64, team_id: &str, program_id: &str, enrolled: bool) {
        let mut enrollments = self.enrollments.write().expect("cache");
        if self.generation() != generation {
            return;
        }
        if enrollments.len() >= MAX_ENTRIES {
            enrollments.clear();
        }
        enrollments.insert((team_id.to_owned(), program_id.to_owned()), (enrolled, Instant::now()));
    }

    /// A team joined or left a program.
    pub fn invalidate_enrollment(&self, team_id: &str, program_id: &str) {
        let mut enrollments = self.enrollments.write().expect("cache");
        self.generation.fetch_add(1, Ordering::AcqRel);
        enrollments.remove(&(team_id.to_owned(), program_id.to_owned()));
    }

    /// A membership changed.
    pub fn invalidate_member(&self, user_id: &str, team_id: &str) {
        let mut teams = self.teams.write().expect("cache");
        self.generation.fetch_add(1, Ordering::AcqRel);
        teams.remove(&(user_id.to_owned(), team_id.to_owned()));
    }

    /// A team's settings changed or it was deleted (with its enrolments).
    pub fn invalidate_team(&self, team_id: &str) {
        let mut teams = self.teams.write().expect("cache");
        let mut enrollments = self.enrollments.write().expect("cache");
        self.generation.fetch_add(1, Ordering::AcqRel);
        teams.retain(|(_, t), _| t != team_id);
        enrollments.retain(|(t, _), _| t != team_id);
    }

    /// A user was activated or deactivated.
    pub fn invalidate_user(&self, user_id: &str) {
        let mut users = self.users.write().expect("cache");
        self.generation.fetch_add(1, Ordering::AcqRel);
        users.remove(user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBER: TeamAccess =
        TeamAccess { role: Some(TeamRole::Member), visibility: RewardsVisibility::Show };

    #[test]
    fn answers_until_invalidated() {
        let cache = AccessCache::default();
        let g = cache.generation();
        cache.put_team_access(g, "u", "t", MEMBER);
        assert_eq!(cache.team_access("u", "t"), Some(MEMBER));
        cache.invalidate_member("u", "t");
        assert_eq!(cache.team_access("u", "t"), None);

        cache.put_team_access(cache.generation(), "u", "t", MEMBER);
        cache.put_team_access(cache.generation(), "v", "t", MEMBER);
        cache.invalidate_team("t");
        assert_eq!(cache.team_access("v", "t"), None);
    }

    #[test]
    fn with_other_replicas_answers_expire() {
        let cache = AccessCache::default();
        cache.put_team_access(cache.generation(), "u", "t", MEMBER);
        cache.expire_after(Duration::from_millis(30));
        assert_eq!(cache.team_access("u", "t"), Some(MEMBER));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.team_access("u", "t"), None);
    }

    #[test]
    fn enrolment_answers_until_the_team_joins_leaves_or_is_deleted() {
        let cache = AccessCache::default();
        cache.put_team_enrolled(cache.generation(), "t", "p", false);
        assert_eq!(cache.team_enrolled("t", "p"), Some(false));
        cache.invalidate_enrollment("t", "p");
        assert_eq!(cache.team_enrolled("t", "p"), None);

        cache.put_team_enrolled(cache.generation(), "t", "p", true);
        cache.put_team_enrolled(cache.generation(), "u", "p", true);
        cache.invalidate_team("t");
        assert_eq!(cache.team_enrolled("t", "p"), None);
        assert_eq!(cache.team_enrolled("u", "p"), Some(true));

        let before = cache.generation();
        cache.invalidate_enrollment("u", "p");
        cache.put_team_enrolled(before, "u", "p", true);
        assert_eq!(cache.team_enrolled("u", "p"), None, "a read that raced with a change");
    }

    #[test]
    fn a_read_that_raced_with_a_change_is_not_cached() {
        let cache = AccessCache::default();
        let before = cache.generation();
        cache.invalidate_member("u", "t");
        cache.put_team_access(before, "u", "t", MEMBER);
        assert_eq!(cache.team_access("u", "t"), None);
        cache.invalidate_user("u");
        cache.put_user_status(
            before,
            "u",
            UserStatus { active: true, tokens_valid_after: 0, staff_role: None },
        );
        assert_eq!(cache.user_status("u"), None);
    }
}
