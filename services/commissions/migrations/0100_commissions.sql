-- The customers of partner teams. A domain belongs to one partner at a time.
CREATE TABLE customers (
    id                   TEXT PRIMARY KEY,
    team_id              TEXT   NOT NULL,
    org_name             TEXT   NOT NULL,
    domain               TEXT   NOT NULL,
    super_admin_email    TEXT   NOT NULL,
    plan                 TEXT   NOT NULL,
    licences             BIGINT NOT NULL,
    renewal_date         BIGINT,
    currency_code        TEXT   NOT NULL,
    monthly_price_minor  BIGINT NOT NULL,
    -- The monthly price before the last plan change (the MRR change of renewals).
    previous_price_minor BIGINT NOT NULL,
    renewal_term_months  BIGINT NOT NULL,
    txt_token            TEXT   NOT NULL,
    domain_verified      BIGINT NOT NULL,
    owner_user_id        TEXT   NOT NULL,
    -- When the customer's first commissioned payment happened: recurring plans count from it.
    first_commission_time BIGINT,
    create_time          BIGINT NOT NULL,
    update_time          BIGINT NOT NULL,
    CONSTRAINT customers_domain_unique UNIQUE (domain)
);
CREATE INDEX customers_by_team ON customers (team_id, id);
CREATE INDEX customers_by_renewal ON customers (team_id, renewal_date, id);

-- Commission plans; the newest applies. Tier multipliers as `tier_id=bps` lines.
CREATE TABLE commission_plans (
    id                TEXT PRIMARY KEY,
    name              TEXT   NOT NULL,
    rate_bps          BIGINT NOT NULL,
    recurring_months  BIGINT NOT NULL,
    hold_days         BIGINT NOT NULL,
    minimum_currency  TEXT   NOT NULL,
    minimum_minor     BIGINT NOT NULL,
    tier_multipliers  TEXT   NOT NULL,
    create_time       BIGINT NOT NULL
);
CREATE INDEX commission_plans_newest ON commission_plans (create_time, id);

CREATE TABLE payments (
    id             TEXT PRIMARY KEY,
    customer_id    TEXT   NOT NULL REFERENCES customers (id),
    team_id        TEXT   NOT NULL,
    currency_code  TEXT   NOT NULL,
    amount_minor   BIGINT NOT NULL CHECK (amount_minor > 0),
    refunded_minor BIGINT NOT NULL CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor),
    create_time    BIGINT NOT NULL
);
CREATE INDEX payments_by_customer ON payments (customer_id, create_time);
CREATE INDEX payments_by_team ON payments (team_id, customer_id);

CREATE TABLE refunds (
    id             TEXT PRIMARY KEY,
    payment_id     TEXT   NOT NULL REFERENCES payments (id),
    amount_minor   BIGINT NOT NULL CHECK (amount_minor > 0),
    clawback_minor BIGINT NOT NULL,
    reason         TEXT   NOT NULL,
    create_time    BIGINT NOT NULL
);

-- A commission accrued from a payment or a won deal, at most one per source.
CREATE TABLE commissions (
    id             TEXT PRIMARY KEY,
    team_id        TEXT   NOT NULL,
    customer_id    TEXT,
    payment_id     TEXT UNIQUE,
    deal_id        TEXT UNIQUE,
    plan_id        TEXT   NOT NULL,
    currency_code  TEXT   NOT NULL,
    base_minor     BIGINT NOT NULL,
    amount_minor   BIGINT NOT NULL,
    clawed_minor   BIGINT NOT NULL,
    multiplier_bps BIGINT NOT NULL,
    status         TEXT   NOT NULL,
    available_time BIGINT NOT NULL,
    create_time    BIGINT NOT NULL
);
CREATE INDEX commissions_by_team ON commissions (team_id, id);
CREATE INDEX commissions_due ON commissions (status, available_time);

-- The double-entry ledger. A posting is balanced per currency: its entries sum to zero, a
-- credit being positive and a debit negative. Neither postings nor entries are ever updated or
-- deleted; a balance is the sum of an account's entries.
CREATE TABLE postings (
    id            TEXT PRIMARY KEY,
    team_id       TEXT   NOT NULL,
    kind          TEXT   NOT NULL,
    reason        TEXT   NOT NULL,
    commission_id TEXT,
    payout_id     TEXT,
    create_time   BIGINT NOT NULL
);
CREATE INDEX postings_by_team ON postings (team_id, id);

CREATE TABLE ledger_entries (
    seq           {{SEQ_ID}},
    posting_id    TEXT   NOT NULL REFERENCES postings (id),
    account       TEXT   NOT NULL,
    currency_code TEXT   NOT NULL,
    amount_minor  BIGINT NOT NULL,
    create_time   BIGINT NOT NULL
);
CREATE INDEX ledger_entries_by_account ON ledger_entries (account, currency_code, amount_minor);
CREATE INDEX ledger_entries_by_posting ON ledger_entries (posting_id);

-- Serialises the withdrawals of one team.
CREATE TABLE team_locks (
    team_id TEXT PRIMARY KEY,
    touches BIGINT NOT NULL
);

CREATE TABLE payout_batches (
    id          TEXT PRIMARY KEY,
    create_time BIGINT NOT NULL
);

CREATE TABLE payouts (
    id            TEXT PRIMARY KEY,
    team_id       TEXT   NOT NULL,
    currency_code TEXT   NOT NULL,
    amount_minor  BIGINT NOT NULL CHECK (amount_minor > 0),
    status        TEXT   NOT NULL,
    batch_id      TEXT,
    requested_by  TEXT   NOT NULL,
    create_time   BIGINT NOT NULL,
    paid_time     BIGINT
);
CREATE INDEX payouts_by_team ON payouts (team_id, id);
CREATE INDEX payouts_by_status ON payouts (status, id);

-- Each team's credited tier per program, as the tiers service last announced it.
CREATE TABLE team_tiers (
    team_id     TEXT   NOT NULL,
    program_id  TEXT   NOT NULL,
    tier_id     TEXT   NOT NULL,
    update_time BIGINT NOT NULL,
    PRIMARY KEY (team_id, program_id)
);
