//! Identity's persistence: one SQL text for PostgreSQL and SQLite. Functions take a
//! connection (a transaction derefs to one) so the use case decides the transaction.

use sqlx::{AnyConnection, FromRow};
use tandem_platform::{
    db::{DbError, Flag},
    time::Micros,
};

type Conn = AnyConnection;
type R<T> = Result<T, DbError>;

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    #[sqlx(try_from = "Flag")]
    pub active: bool,
    #[sqlx(try_from = "Flag")]
    pub email_verified: bool,
    pub staff_role: Option<String>,
    pub tokens_valid_after: i64,
    pub create_time: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct TeamRow {
    pub id: String,
    pub name: String,
    pub owner_user_id: String,
    pub rewards_visibility: String,
    pub channel_manager_user_id: Option<String>,
    pub create_time: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct MemberRow {
    pub team_id: String,
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    #[sqlx(try_from = "Flag")]
    pub active: bool,
    pub role: String,
    pub join_time: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct InvitationRow {
    pub id: String,
    pub team_id: String,
    pub email: String,
    pub role: String,
    pub invited_by_user_id: String,
    pub create_time: i64,
    pub expire_time: i64,
    pub accept_time: Option<i64>,
    pub accepted_by_user_id: Option<String>,
    pub revoke_time: Option<i64>,
}

#[derive(Debug, Clone, FromRow)]
pub struct DomainRow {
    pub domain: String,
    pub team_id: String,
    pub txt_value: String,
    pub verify_time: Option<i64>,
}

#[derive(Debug, Clone, FromRow)]
pub struct ProgramRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub create_time: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct EnrollmentRow {
    pub program_id: String,
    pub team_id: String,
    pub user_id: String,
    pub create_time: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct ApplicationRow {
    pub id: String,
    pub status: String,
    pub applicant_user_id: String,
    pub program_id: String,
    pub company_name: String,
    pub contact_email: String,
    pub address: String,
    pub primary_expertise: String,
    pub experience: String,
    pub plan: String,
    #[sqlx(try_from = "Flag")]
    pub terms_accepted: bool,
    pub review_note: String,
    pub reviewer_user_id: String,
    pub team_id: String,
    pub create_time: i64,
    pub review_time: Option<i64>,
}

#[derive(Debug, Clone, FromRow)]
pub struct NotificationRow {
    pub id: String,
    pub user_id: String,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub subject_id: String,
    pub read_time: Option<i64>,
    pub create_time: i64,
}

const USER_COLS: &str = "id, email, display_name, password_hash, active, email_verified, staff_role, tokens_valid_after, create_time";
const MEMBER_SELECT: &str = "SELECT m.team_id, m.user_id, u.email, u.display_name, u.active, m.role, m.join_time \
     FROM members m JOIN users u ON u.id = m.user_id";
const INVITATION_COLS: &str = "id, team_id, email, role, invited_by_user_id, create_time, expire_time, accept_time, \
     accepted_by_user_id, revoke_time";
const APPLICATION_COLS: &str = "id, status, applicant_user_id, program_id, company_name, contact_email, address, \
     primary_expertise, experience, plan, terms_accepted, review_note, reviewer_user_id, team_id, create_time, review_time";

fn sql(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text)
}

// --- users --------------------------------------------------------------------------------

pub async fn insert_user(c: &mut Conn, u: &UserRow) -> R<()> {
    sqlx::query(
        "INSERT INTO users (id, email, display_name, password_hash, active, email_verified, staff_role, \
         tokens_valid_after, create_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&u.id)
    .bind(&u.email)
    .bind(&u.display_name)
    .bind(&u.password_hash)
    .bind(i64::from(u.active))
    .bind(i64::from(u.email_verified))
    .bind(&u.staff_role)
    .bind(u.tokens_valid_after)
    .bind(u.create_time)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn user_by_id(c: &mut Conn, id: &str) -> R<Option<UserRow>> {
    Ok(sqlx::query_as(sql(format!("SELECT {USER_COLS} FROM users WHERE id = $1")))
        .bind(id)
        .fetch_optional(c)
        .await?)
}

pub async fn user_by_email(c: &mut Conn, email: &str) -> R<Option<UserRow>> {
    Ok(sqlx::query_as(sql(format!("SELECT {USER_COLS} FROM users WHERE email = $1")))
        .bind(email)
        .fetch_optional(c)
        .await?)
}

pub async fn list_users(c: &mut Conn, after: &str, limit: i64) -> R<Vec<UserRow>> {
    Ok(sqlx::query_as(sql(format!("SELECT {USER_COLS} FROM users WHERE id > $1 ORDER BY id LIMIT $2")))
        .bind(after)
        .bind(limit)
        .fetch_all(c)
        .await?)
}

/// Activates or deactivates; deactivation also voids every token issued before
/// `tokens_valid_after` (seconds).
pub async fn set_user_active(c: &mut Conn, id: &str, active: bool, tokens_valid_after: i64) -> R<bool> {
    let q = if active {
        sqlx::query("UPDATE users SET active = 1 WHERE id = $1").bind(id)
    } else {
        sqlx::query("UPDATE users SET active = 0, tokens_valid_after = $2 WHERE id = $1")
            .bind(id)
            .bind(tokens_valid_after)
    };
    Ok(q.execute(c).await?.rows_affected() == 1)
}

pub async fn set_email_verified(c: &mut Conn, id: &str) -> R<()> {
    sqlx::query("UPDATE users SET email_verified = 1 WHERE id = $1").bind(id).execute(c).await?;
    Ok(())
}

// --- tokens -------------------------------------------------------------------------------

pub async fn insert_refresh_token(
    c: &mut Conn,
    hash: &str,
    user_id: &str,
    expire: Micros,
    now: Micros,
) -> R<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, user_id, expire_time, create_time) VALUES ($1, $2, $3, $4)",
    )
    .bind(hash)
    .bind(user_id)
    .bind(expire)
    .bind(now)
    .execute(c)
    .await?;
    Ok(())
}

/// Uses up a live refresh token; returns its user, or `None` when unknown, used or expired.
pub async fn use_refresh_token(c: &mut Conn, hash: &str, now: Micros) -> R<Option<String>> {
    Ok(sqlx::query_scalar(
        "UPDATE refresh_tokens SET use_time = $1 WHERE token_hash = $2 AND use_time IS NULL AND expire_time > $1 \
         RETURNING user_id",
    )
    .bind(now)
    .bind(hash)
    .fetch_optional(c)
    .await?)
}

pub async fn revoke_refresh_tokens(c: &mut Conn, user_id: &str, now: Micros) -> R<()> {
    sqlx::query("UPDATE refresh_tokens SET use_time = $1 WHERE user_id = $2 AND use_time IS NULL")
        .bind(now)
        .bind(user_id)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn insert_email_verification(c: &mut Conn, hash: &str, user_id: &str, expire: Micros) -> R<()> {
    sqlx::query("INSERT INTO email_verifications (token_hash, user_id, expire_time) VALUES ($1, $2, $3)")
        .bind(hash)
        .bind(user_id)
        .bind(expire)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn use_email_verification(c: &mut Conn, hash: &str, now: Micros) -> R<Option<String>> {
    Ok(sqlx::query_scalar(
        "UPDATE email_verifications SET use_time = $1 WHERE token_hash = $2 AND use_time IS NULL \
         AND expire_time > $1 RETURNING user_id",
    )
    .bind(now)
    .bind(hash)
    .fetch_optional(c)
    .await?)
}

// --- teams and members ----------------------------------------------------------------------

pub async fn insert_team(c: &mut Conn, t: &TeamRow) -> R<()> {
    sqlx::query(
        "INSERT INTO teams (id, name, owner_user_id, rewards_visibility, channel_manager_user_id, create_time) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&t.id)
    .bind(&t.name)
    .bind(&t.owner_user_id)
    .bind(&t.rewards_visibility)
    .bind(&t.channel_manager_user_id)
    .bind(t.create_time)
    .execute(c)
    .await?;
    Ok(())
}

const TEAM_COLS: &str = "id, name, owner_user_id, rewards_visibility, channel_manager_user_id, create_time";

pub async fn team(c: &mut Conn, id: &str) -> R<Option<TeamRow>> {
    Ok(sqlx::query_as(sql(format!("SELECT {TEAM_COLS} FROM teams WHERE id = $1")))
        .bind(id)
        .fetch_optional(c)
        .await?)
}

pub async fn list_all_teams(c: &mut Conn, after: &str, limit: i64) -> R<Vec<TeamRow>> {
    Ok(sqlx::query_as(sql(format!("SELECT {TEAM_COLS} FROM teams WHERE id > $1 ORDER BY id LIMIT $2")))
        .bind(after)
        .bind(limit)
        .fetch_all(c)
        .await?)
}

pub async fn list_teams_of_user(c: &mut Conn, user_id: &str, after: &str, limit: i64) -> R<Vec<TeamRow>> {
    Ok(sqlx::query_as(
        "SELECT t.id, t.name, t.owner_user_id, t.rewards_visibility, t.channel_manager_user_id, t.create_time \
         FROM members m JOIN teams t ON t.id = m.team_id WHERE m.user_id = $1 AND m.team_id > $2 \
         ORDER BY m.team_id LIMIT $3",
    )
    .bind(user_id)
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

pub async fn update_team(c: &mut Conn, t: &TeamRow) -> R<()> {
    sqlx::query(
        "UPDATE teams SET name = $1, rewards_visibility = $2, channel_manager_user_id = $3 WHERE id = $4",
    )
    .bind(&t.name)
    .bind(&t.rewards_visibility)
    .bind(&t.channel_manager_user_id)
    .bind(&t.id)
    .execute(c)
    .await?;
    Ok(())
}

/// Deletes a team with its memberships, invitations, domains and enrolments.
pub async fn delete_team(c: &mut Conn, id: &str) -> R<()> {
    for statement in [
        "DELETE FROM members WHERE team_id = $1",
        "DELETE FROM invitations WHERE team_id = $1",
        "DELETE FROM team_domains WHERE team_id = $1",
        "DELETE FROM enrollments WHERE team_id = $1",
        "DELETE FROM teams WHERE id = $1",
    ] {
        sqlx::query(statement).bind(id).execute(&mut *c).await?;
    }
    Ok(())
}

/// Adds a membership; `false` when the user already is a member.
pub async fn insert_member(c: &mut Conn, team_id: &str, user_id: &str, role: &str, now: Micros) -> R<bool> {
    Ok(sqlx::query(
        "INSERT INTO members (team_id, user_id, role, join_time) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (team_id, user_id) DO NOTHING",
    )
    .bind(team_id)
    .bind(user_id)
    .bind(role)
    .bind(now)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

pub async fn member(c: &mut Conn, team_id: &str, user_id: &str) -> R<Option<MemberRow>> {
    Ok(sqlx::query_as(sql(format!("{MEMBER_SELECT} WHERE m.team_id = $1 AND m.user_id = $2")))
        .bind(team_id)
        .bind(user_id)
        .fetch_optional(c)
        .await?)
}

pub async fn list_members(c: &mut Conn, team_id: &str, after: &str, limit: i64) -> R<Vec<MemberRow>> {
    Ok(sqlx::query_as(sql(format!(
        "{MEMBER_SELECT} WHERE m.team_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3"
    )))
    .bind(team_id)
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

pub async fn memberships_of(c: &mut Conn, user_id: &str) -> R<Vec<MemberRow>> {
    Ok(sqlx::query_as(sql(format!("{MEMBER_SELECT} WHERE m.user_id = $1 ORDER BY m.team_id LIMIT 1000")))
        .bind(user_id)
        .fetch_all(c)
        .await?)
}

pub async fn count_other_members(c: &mut Conn, team_id: &str, owner_id: &str) -> R<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM members WHERE team_id = $1 AND user_id <> $2")
        .bind(team_id)
        .bind(owner_id)
        .fetch_one(c)
        .await?)
}

pub async fn set_member_role(c: &mut Conn, team_id: &str, user_id: &str, role: &str) -> R<()> {
    sqlx::query("UPDATE members SET role = $1 WHERE team_id = $2 AND user_id = $3")
        .bind(role)
        .bind(team_id)
        .bind(user_id)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn delete_member(c: &mut Conn, team_id: &str, user_id: &str) -> R<bool> {
    Ok(sqlx::query("DELETE FROM members WHERE team_id = $1 AND user_id = $2")
        .bind(team_id)
        .bind(user_id)
        .execute(c)
        .await?
        .rows_affected()
        == 1)
}

/// The member's role and the team's rewards visibility in one read (the access check).
pub async fn access_facts(c: &mut Conn, team_id: &str, user_id: &str) -> R<Option<(Option<String>, String)>> {
    Ok(sqlx::query_as(
        "SELECT m.role, t.rewards_visibility FROM teams t \
         LEFT JOIN members m ON m.team_id = t.id AND m.user_id = $2 WHERE t.id = $1",
    )
    .bind(team_id)
    .bind(user_id)
    .fetch_optional(c)
    .await?)
}

// --- invitations ----------------------------------------------------------------------------

pub async fn insert_invitation(c: &mut Conn, i: &InvitationRow, token_hash: &str) -> R<()> {
    sqlx::query(
        "INSERT INTO invitations (id, team_id, email, role, token_hash, invited_by_user_id, create_time, expire_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&i.id)
    .bind(&i.team_id)
    .bind(&i.email)
    .bind(&i.role)
    .bind(token_hash)
    .bind(&i.invited_by_user_id)
    .bind(i.create_time)
    .bind(i.expire_time)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn invitation(c: &mut Conn, id: &str) -> R<Option<InvitationRow>> {
    Ok(sqlx::query_as(sql(format!("SELECT {INVITATION_COLS} FROM invitations WHERE id = $1")))
        .bind(id)
        .fetch_optional(c)
        .await?)
}

pub async fn invitation_by_token(c: &mut Conn, token_hash: &str) -> R<Option<InvitationRow>> {
    Ok(sqlx::query_as(sql(format!("SELECT {INVITATION_COLS} FROM invitations WHERE token_hash = $1")))
        .bind(token_hash)
        .fetch_optional(c)
        .await?)
}

pub async fn list_invitations(c: &mut Conn, team_id: &str, after: &str, limit: i64) -> R<Vec<InvitationRow>> {
    Ok(sqlx::query_as(sql(format!(
        "SELECT {INVITATION_COLS} FROM invitations WHERE team_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    )))
    .bind(team_id)
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

/// A new token and expiry for a pending invitation.
pub async fn renew_invitation(c: &mut Conn, id: &str, token_hash: &str, expire: Micros) -> R<()> {
    sqlx::query("UPDATE invitations SET token_hash = $1, expire_time = $2 WHERE id = $3")
        .bind(token_hash)
        .bind(expire)
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn revoke_invitation(c: &mut Conn, id: &str, now: Micros) -> R<()> {
    sqlx::query("UPDATE invitations SET revoke_time = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(c)
        .await?;
    Ok(())
}

/// Marks an open invitation accepted; `false` if someone accepted or revoked it meanwhile.
pub async fn accept_invitation(c: &mut Conn, id: &str, user_id: &str, now: Micros) -> R<bool> {
    Ok(sqlx::query(
        "UPDATE invitations SET accept_time = $1, accepted_by_user_id = $2 \
         WHERE id = $3 AND accept_time IS NULL AND revoke_time IS NULL AND expire_time > $1",
    )
    .bind(now)
    .bind(user_id)
    .bind(id)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

// --- domains --------------------------------------------------------------------------------

pub async fn insert_domain(c: &mut Conn, d: &DomainRow, now: Micros) -> R<()> {
    sqlx::query("INSERT INTO team_domains (domain, team_id, txt_value, create_time) VALUES ($1, $2, $3, $4)")
        .bind(&d.domain)
        .bind(&d.team_id)
        .bind(&d.txt_value)
        .bind(now)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn domain(c: &mut Conn, domain: &str) -> R<Option<DomainRow>> {
    Ok(sqlx::query_as("SELECT domain, team_id, txt_value, verify_time FROM team_domains WHERE domain = $1")
        .bind(domain)
        .fetch_optional(c)
        .await?)
}

pub async fn list_domains(c: &mut Conn, team_id: &str, after: &str, limit: i64) -> R<Vec<DomainRow>> {
    Ok(sqlx::query_as(
        "SELECT domain, team_id, txt_value, verify_time FROM team_domains WHERE team_id = $1 AND domain > $2 \
         ORDER BY domain LIMIT $3",
    )
    .bind(team_id)
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

pub async fn mark_domain_verified(c: &mut Conn, domain: &str, now: Micros) -> R<()> {
    sqlx::query("UPDATE team_domains SET verify_time = $1 WHERE domain = $2")
        .bind(now)
        .bind(domain)
        .execute(c)
        .await?;
    Ok(())
}

// --- programs and enrolments -----------------------------------------------------------------

pub async fn insert_program(c: &mut Conn, p: &ProgramRow) -> R<()> {
    sqlx::query("INSERT INTO programs (id, name, description, create_time) VALUES ($1, $2, $3, $4)")
        .bind(&p.id)
        .bind(&p.name)
        .bind(&p.description)
        .bind(p.create_time)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn program(c: &mut Conn, id: &str) -> R<Option<ProgramRow>> {
    Ok(sqlx::query_as("SELECT id, name, description, create_time FROM programs WHERE id = $1")
        .bind(id)
        .fetch_optional(c)
        .await?)
}

pub async fn list_programs(c: &mut Conn, after: &str, limit: i64) -> R<Vec<ProgramRow>> {
    Ok(sqlx::query_as(
        "SELECT id, name, description, create_time FROM programs WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

/// Enrols a team (`user_id` empty) or a user (`team_id` empty); `false` if already enrolled.
pub async fn insert_enrollment(c: &mut Conn, e: &EnrollmentRow) -> R<bool> {
    Ok(sqlx::query(
        "INSERT INTO enrollments (program_id, team_id, user_id, create_time) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (program_id, team_id, user_id) DO NOTHING",
    )
    .bind(&e.program_id)
    .bind(&e.team_id)
    .bind(&e.user_id)
    .bind(e.create_time)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

pub async fn delete_enrollment(c: &mut Conn, program_id: &str, team_id: &str, user_id: &str) -> R<bool> {
    Ok(sqlx::query("DELETE FROM enrollments WHERE program_id = $1 AND team_id = $2 AND user_id = $3")
        .bind(program_id)
        .bind(team_id)
        .bind(user_id)
        .execute(c)
        .await?
        .rows_affected()
        == 1)
}

/// A program's enrolments in `(team_id, user_id)` order, after the pair `after`. The pair is
/// compared column by column, as the `ORDER BY` sorts: a concatenated key would sort otherwise
/// under collations that ignore punctuation (glibc's `en_US.UTF-8`), and pages would skip rows.
pub async fn list_enrollments(
    c: &mut Conn,
    program_id: &str,
    after: (&str, &str),
    limit: i64,
) -> R<Vec<EnrollmentRow>> {
    Ok(sqlx::query_as(
        "SELECT program_id, team_id, user_id, create_time FROM enrollments \
         WHERE program_id = $1 AND (team_id > $2 OR (team_id = $2 AND user_id > $3)) \
         ORDER BY team_id, user_id LIMIT $4",
    )
    .bind(program_id)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

/// Access = an individual enrolment or membership of an enrolled team.
pub async fn has_program_access(c: &mut Conn, program_id: &str, user_id: &str) -> R<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM enrollments e WHERE e.program_id = $1 AND ( \
           (e.team_id = '' AND e.user_id = $2) OR \
           (e.user_id = '' AND EXISTS (SELECT 1 FROM members m WHERE m.team_id = e.team_id AND m.user_id = $2)))",
    )
    .bind(program_id)
    .bind(user_id)
    .fetch_one(c)
    .await?;
    Ok(n > 0)
}

/// Whether the team itself is enrolled in the program.
pub async fn team_enrolled(c: &mut Conn, program_id: &str, team_id: &str) -> R<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM enrollments WHERE program_id = $1 AND team_id = $2 AND user_id = ''",
    )
    .bind(program_id)
    .bind(team_id)
    .fetch_one(c)
    .await?;
    Ok(n > 0)
}

// --- applications ---------------------------------------------------------------------------

pub async fn insert_application(c: &mut Conn, a: &ApplicationRow) -> R<()> {
    sqlx::query(sql(format!(
        "INSERT INTO applications ({APPLICATION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
         $14, $15, $16)"
    )))
    .bind(&a.id)
    .bind(&a.status)
    .bind(&a.applicant_user_id)
    .bind(&a.program_id)
    .bind(&a.company_name)
    .bind(&a.contact_email)
    .bind(&a.address)
    .bind(&a.primary_expertise)
    .bind(&a.experience)
    .bind(&a.plan)
    .bind(i64::from(a.terms_accepted))
    .bind(&a.review_note)
    .bind(&a.reviewer_user_id)
    .bind(&a.team_id)
    .bind(a.create_time)
    .bind(a.review_time)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn application(c: &mut Conn, id: &str) -> R<Option<ApplicationRow>> {
    Ok(sqlx::query_as(sql(format!("SELECT {APPLICATION_COLS} FROM applications WHERE id = $1")))
        .bind(id)
        .fetch_optional(c)
        .await?)
}

/// Applications, of one applicant or (`applicant` empty) of all, optionally of one status.
pub async fn list_applications(
    c: &mut Conn,
    applicant: &str,
    status: &str,
    after: &str,
    limit: i64,
) -> R<Vec<ApplicationRow>> {
    Ok(sqlx::query_as(sql(format!(
        "SELECT {APPLICATION_COLS} FROM applications WHERE ($1 = '' OR applicant_user_id = $1) \
         AND ($2 = '' OR status = $2) AND id > $3 ORDER BY id LIMIT $4"
    )))
    .bind(applicant)
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?)
}

/// Records a review if the application is still pending; `false` if reviewed meanwhile.
pub async fn review_application(c: &mut Conn, a: &ApplicationRow) -> R<bool> {
    Ok(sqlx::query(
        "UPDATE applications SET status = $1, review_note = $2, reviewer_user_id = $3, team_id = $4, review_time = $5 \
         WHERE id = $6 AND status = 'APPLICATION_STATUS_PENDING'",
    )
    .bind(&a.status)
    .bind(&a.review_note)
    .bind(&a.reviewer_user_id)
    .bind(&a.team_id)
    .bind(a.review_time)
    .bind(&a.id)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

// --- notifications --------------------------------------------------------------------------

pub async fn insert_notification(c: &mut Conn, n: &NotificationRow) -> R<()> {
    sqlx::query(
        "INSERT INTO notifications (id, user_id, kind, title, body, subject_id, create_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&n.id)
    .bind(&n.user_id)
    .bind(&n.kind)
    .bind(&n.title)
    .bind(&n.body)
    .bind(&n.subject_id)
    .bind(n.create_time)
    .execute(c)
    .await?;
    Ok(())
}

/// The newest first: `before` is the id to continue below (ids sort by time).
pub async fn list_notifications(
    c: &mut Conn,
    user_id: &str,
    unread_only: bool,
    before: &str,
    limit: i64,
) -> R<Vec<NotificationRow>> {
    Ok(sqlx::query_as(
        "SELECT id, user_id, kind, title, body, subject_id, read_time, create_time FROM notifications \
         WHERE user_id = $1 AND ($2 = '' OR id < $2) AND ($3 = 0 OR read_time IS NULL) ORDER BY id DESC LIMIT $4",
    )
    .bind(user_id)
    .bind(before)
    .bind(i64::from(unread_only))
    .bind(limit)
    .fetch_all(c)
    .await?)
}

pub async fn mark_notification_read(
    c: &mut Conn,
    id: &str,
    user_id: &str,
    now: Micros,
) -> R<Option<NotificationRow>> {
    Ok(sqlx::query_as(
        "UPDATE notifications SET read_time = COALESCE(read_time, $1) WHERE id = $2 AND user_id = $3 \
         RETURNING id, user_id, kind, title, body, subject_id, read_time, create_time",
    )
    .bind(now)
    .bind(id)
    .bind(user_id)
    .fetch_optional(c)
    .await?)
}
