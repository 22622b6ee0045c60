CREATE TABLE users (
    id                 TEXT PRIMARY KEY,
    email              TEXT NOT NULL UNIQUE,
    display_name       TEXT NOT NULL,
    password_hash      TEXT NOT NULL,
    active             BIGINT NOT NULL,
    email_verified     BIGINT NOT NULL,
    staff_role         TEXT,
    -- Tokens issued before this instant (seconds) are refused: set on deactivation.
    tokens_valid_after BIGINT NOT NULL DEFAULT 0,
    create_time        BIGINT NOT NULL
);

CREATE TABLE teams (
    id                      TEXT PRIMARY KEY,
    name                    TEXT NOT NULL,
    owner_user_id           TEXT NOT NULL REFERENCES users (id),
    rewards_visibility      TEXT NOT NULL,
    channel_manager_user_id TEXT REFERENCES users (id),
    create_time             BIGINT NOT NULL
);

CREATE TABLE members (
    team_id   TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL REFERENCES users (id),
    role      TEXT NOT NULL,
    join_time BIGINT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id, team_id);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id),
    expire_time BIGINT NOT NULL,
    use_time    BIGINT,
    create_time BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_by_user ON refresh_tokens (user_id);

CREATE TABLE email_verifications (
    token_hash  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id),
    expire_time BIGINT NOT NULL,
    use_time    BIGINT
);

CREATE TABLE invitations (
    id                  TEXT PRIMARY KEY,
    team_id             TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    email               TEXT NOT NULL,
    role                TEXT NOT NULL,
    token_hash          TEXT NOT NULL UNIQUE,
    invited_by_user_id  TEXT NOT NULL,
    create_time         BIGINT NOT NULL,
    expire_time         BIGINT NOT NULL,
    accept_time         BIGINT,
    accepted_by_user_id TEXT,
    revoke_time         BIGINT
);
CREATE INDEX invitations_by_team ON invitations (team_id, id);

CREATE TABLE team_domains (
    domain      TEXT PRIMARY KEY,
    team_id     TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    txt_value   TEXT NOT NULL,
    verify_time BIGINT,
    create_time BIGINT NOT NULL
);
CREATE INDEX team_domains_by_team ON team_domains (team_id, domain);

CREATE TABLE programs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    create_time BIGINT NOT NULL
);

-- A team enrolment has team_id set and user_id ''; an individual one the reverse.
CREATE TABLE enrollments (
    program_id  TEXT NOT NULL REFERENCES programs (id),
    team_id     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    PRIMARY KEY (program_id, team_id, user_id)
);
CREATE INDEX enrollments_by_team ON enrollments (team_id, program_id);
CREATE INDEX enrollments_by_user ON enrollments (user_id, program_id);

CREATE TABLE applications (
    id                TEXT PRIMARY KEY,
    status            TEXT NOT NULL,
    applicant_user_id TEXT NOT NULL REFERENCES users (id),
    program_id        TEXT NOT NULL REFERENCES programs (id),
    company_name      TEXT NOT NULL,
    contact_email     TEXT NOT NULL,
    address           TEXT NOT NULL,
    primary_expertise TEXT NOT NULL,
    experience        TEXT NOT NULL,
    plan              TEXT NOT NULL,
    terms_accepted    BIGINT NOT NULL,
    review_note       TEXT NOT NULL DEFAULT '',
    reviewer_user_id  TEXT NOT NULL DEFAULT '',
    team_id           TEXT NOT NULL DEFAULT '',
    create_time       BIGINT NOT NULL,
    review_time       BIGINT
);
CREATE INDEX applications_by_applicant ON applications (applicant_user_id, id);

CREATE TABLE notifications (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    subject_id  TEXT NOT NULL,
    read_time   BIGINT,
    create_time BIGINT NOT NULL
);
CREATE INDEX notifications_by_user ON notifications (user_id, id);
