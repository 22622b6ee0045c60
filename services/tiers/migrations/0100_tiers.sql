-- Tier definitions per program, ordered by rank.
CREATE TABLE tiers (
    id                     TEXT PRIMARY KEY,
    program_id             TEXT   NOT NULL,
    name                   TEXT   NOT NULL,
    rank                   BIGINT NOT NULL,
    points_threshold       BIGINT NOT NULL,
    sold_points_minimum    BIGINT NOT NULL,
    managed_points_minimum BIGINT NOT NULL,
    requires_certification BIGINT NOT NULL,
    create_time            BIGINT NOT NULL,
    update_time            BIGINT NOT NULL,
    CONSTRAINT tiers_rank_unique UNIQUE (program_id, rank),
    CONSTRAINT tiers_name_unique UNIQUE (program_id, name)
);

-- Partner certifications of a team; valid while `valid_until` is in the future.
CREATE TABLE certifications (
    id          TEXT PRIMARY KEY,
    team_id     TEXT   NOT NULL,
    valid_until BIGINT NOT NULL,
    create_time BIGINT NOT NULL
);
CREATE INDEX certifications_by_team ON certifications (team_id, valid_until);

-- USD per unit of each currency and the multiplier of each market, as exact decimal strings.
CREATE TABLE exchange_rates (
    currency_code TEXT PRIMARY KEY,
    usd_per_unit  TEXT   NOT NULL,
    update_time   BIGINT NOT NULL
);

CREATE TABLE market_multipliers (
    country_code TEXT PRIMARY KEY,
    multiplier   TEXT   NOT NULL,
    update_time  BIGINT NOT NULL
);

-- The points ledger. Entries are never updated: a correction is a new entry. The rates that
-- applied are kept with each entry earned from a deal, so later rate changes leave history be.
CREATE TABLE points_entries (
    id             TEXT PRIMARY KEY,
    program_id     TEXT   NOT NULL,
    team_id        TEXT   NOT NULL,
    client_id      TEXT   NOT NULL,
    kind           TEXT   NOT NULL,
    points         BIGINT NOT NULL,
    earned_at      BIGINT NOT NULL,
    deal_type      TEXT,
    market_type    TEXT,
    deal_id        TEXT,
    reason         TEXT   NOT NULL,
    -- The sold amount in USD cents (sold entries from a deal), for the 12-month sourced amount.
    sourced_usd_cents BIGINT,
    currency_code  TEXT,
    amount_minor   BIGINT,
    usd_per_unit   TEXT,
    multiplier     TEXT,
    create_time    BIGINT NOT NULL
);
-- A team's status and every dashboard read of one team is a range on this index; it covers
-- the status sums, so PostgreSQL answers them from the index alone.
CREATE INDEX points_by_team ON points_entries (program_id, team_id, earned_at, kind, points, sourced_usd_cents);
-- Who manages a client: managed entries of a client in a program, recent first.
CREATE INDEX points_by_client ON points_entries (program_id, client_id, kind, earned_at);
-- A team's history with one client.
CREATE INDEX points_by_team_client ON points_entries (program_id, team_id, client_id, earned_at);

-- The credited tier each team was last told to have (`""` for none), to emit `TierChanged` on a
-- change. Every team with points in a program has a row.
CREATE TABLE credited_tiers (
    program_id  TEXT   NOT NULL,
    team_id     TEXT   NOT NULL,
    tier_id     TEXT   NOT NULL,
    update_time BIGINT NOT NULL,
    PRIMARY KEY (program_id, team_id)
);
CREATE INDEX credited_tiers_by_team ON credited_tiers (team_id);
