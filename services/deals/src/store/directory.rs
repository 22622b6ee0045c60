//! Deals' copy of identity's members and users' status (see `migrations/0101_directory.sql`).
//! Every write is conditional on the event's time, so events may arrive late or twice.

use sqlx::AnyConnection;
use tandem_platform::{db::DbError, time::Micros};

type R<T> = Result<T, DbError>;

/// What the copy knows of a user: its teams now, and whether it is active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownUser {
    pub active: bool,
    pub team_ids: Vec<String>,
}

/// Sets a membership (`role` empty and `member` false for a removal) unless a newer event
/// already did, or the team is deleted. Returns whether the row changed.
pub async fn set_membership(
    c: &mut AnyConnection,
    team_id: &str,
    user_id: &str,
    role: &str,
    member: bool,
    event_time: Micros,
) -> R<bool> {
    let deleted: Option<(String,)> =
        sqlx::query_as("SELECT team_id FROM directory_deleted_teams WHERE team_id = $1")
            .bind(team_id)
            .fetch_optional(&mut *c)
            .await?;
    if deleted.is_some() {
        return Ok(false);
    }
    let changed = sqlx::query(
        "INSERT INTO directory_members (team_id, user_id, role, member, event_time) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (team_id, user_id) DO UPDATE \
         SET role = excluded.role, member = excluded.member, event_time = excluded.event_time \
         WHERE directory_members.event_time <= excluded.event_time",
    )
    .bind(team_id)
    .bind(user_id)
    .bind(role)
    .bind(i64::from(member))
    .bind(event_time)
    .execute(&mut *c)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// Sets whether a user is active unless a newer event already did.
pub async fn set_user_active(
    c: &mut AnyConnection,
    user_id: &str,
    active: bool,
    event_time: Micros,
) -> R<bool> {
    let changed = sqlx::query(
        "INSERT INTO directory_users (user_id, active, event_time) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET active = excluded.active, event_time = excluded.event_time \
         WHERE directory_users.event_time <= excluded.event_time",
    )
    .bind(user_id)
    .bind(i64::from(active))
    .bind(event_time)
    .execute(&mut *c)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// Records a team's deletion and ends every membership of it the copy holds.
pub async fn delete_team(c: &mut AnyConnection, team_id: &str, event_time: Micros) -> R<()> {
    sqlx::query(
        "INSERT INTO directory_deleted_teams (team_id, delete_time) VALUES ($1, $2) \
         ON CONFLICT (team_id) DO NOTHING",
    )
    .bind(team_id)
    .bind(event_time)
    .execute(&mut *c)
    .await?;
    sqlx::query("UPDATE directory_members SET member = 0, role = '', event_time = $2 WHERE team_id = $1 AND event_time <= $2")
        .bind(team_id)
        .bind(event_time)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// The user as the copy knows it, or `None` when no membership of it ever reached the copy
/// (a staff user, one created before the copy began, or an unknown id). A user with no
/// status event is active: users are created active.
pub async fn user(c: &mut AnyConnection, user_id: &str) -> R<Option<KnownUser>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT team_id, member FROM directory_members WHERE user_id = $1 ORDER BY team_id")
            .bind(user_id)
            .fetch_all(&mut *c)
            .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let active: Option<(i64,)> = sqlx::query_as("SELECT active FROM directory_users WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(&mut *c)
        .await?;
    Ok(Some(KnownUser {
        active: active.is_none_or(|(a,)| a != 0),
        team_ids: rows.into_iter().filter(|(_, member)| *member != 0).map(|(team, _)| team).collect(),
    }))
}
