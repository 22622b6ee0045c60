-- Deals' copy of identity's teams' members and users' status, kept from identity's events
-- (MembershipChanged, UserStatusChanged, TeamDeleted) so that assignment never depends on what
-- the caller may see of identity. Each row changes only for an event at least as new as the
-- one that wrote it (`event_time`, microseconds): an older event delivered late is ignored.
-- A removal keeps its row (member = 0) for the same reason.
CREATE TABLE directory_members (
    team_id    TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    member     BIGINT NOT NULL,
    event_time BIGINT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX directory_members_by_user ON directory_members (user_id);

CREATE TABLE directory_users (
    user_id    TEXT PRIMARY KEY,
    active     BIGINT NOT NULL,
    event_time BIGINT NOT NULL
);

-- Deleted teams: no later-delivered event gives them members again (team ids are never reused).
CREATE TABLE directory_deleted_teams (
    team_id     TEXT PRIMARY KEY,
    delete_time BIGINT NOT NULL
);
