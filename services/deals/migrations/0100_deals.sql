-- Leads and their owner, team (the owner's partner team) and queue. Empty text means none.
CREATE TABLE leads (
    id             TEXT PRIMARY KEY,
    company_name   TEXT   NOT NULL,
    contact_email  TEXT   NOT NULL,
    country        TEXT   NOT NULL,
    industry       TEXT   NOT NULL,
    employee_count BIGINT NOT NULL,
    owner_user_id  TEXT   NOT NULL,
    team_id        TEXT   NOT NULL,
    queue_id       TEXT   NOT NULL,
    status         TEXT   NOT NULL,
    create_time    BIGINT NOT NULL,
    update_time    BIGINT NOT NULL
);
CREATE INDEX leads_by_team ON leads (team_id, id);
CREATE INDEX leads_by_queue ON leads (queue_id, id);
CREATE INDEX leads_by_owner ON leads (owner_user_id, id);

-- Teams that declined a lead: it never goes back to them.
CREATE TABLE lead_declines (
    lead_id     TEXT   NOT NULL REFERENCES leads (id),
    team_id     TEXT   NOT NULL,
    user_id     TEXT   NOT NULL,
    reason      TEXT   NOT NULL,
    create_time BIGINT NOT NULL,
    PRIMARY KEY (lead_id, team_id)
);

-- Queues; `rr_next` is the round-robin cursor, advanced with UPDATE … RETURNING in the
-- transaction of the lead it assigns, so concurrent leads take turns exactly.
CREATE TABLE queues (
    id          TEXT PRIMARY KEY,
    name        TEXT   NOT NULL,
    rr_next     BIGINT NOT NULL,
    create_time BIGINT NOT NULL
);

CREATE TABLE queue_members (
    queue_id  TEXT   NOT NULL REFERENCES queues (id),
    user_id   TEXT   NOT NULL,
    team_id   TEXT   NOT NULL,
    join_time BIGINT NOT NULL,
    PRIMARY KEY (queue_id, user_id)
);
CREATE INDEX queue_members_by_user ON queue_members (user_id);

-- Assignment rules; `target_kind` is USER, QUEUE or ROUND_ROBIN.
CREATE TABLE assignment_rules (
    id          TEXT PRIMARY KEY,
    priority    BIGINT NOT NULL,
    target_kind TEXT   NOT NULL,
    target_id   TEXT   NOT NULL,
    team_id     TEXT   NOT NULL,
    create_time BIGINT NOT NULL
);
CREATE INDEX assignment_rules_in_order ON assignment_rules (priority, id);

CREATE TABLE rule_criteria (
    rule_id  TEXT   NOT NULL REFERENCES assignment_rules (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    field    TEXT   NOT NULL,
    operator TEXT   NOT NULL,
    value    TEXT   NOT NULL,
    PRIMARY KEY (rule_id, position)
);

CREATE TABLE pipelines (
    id          TEXT PRIMARY KEY,
    name        TEXT   NOT NULL,
    create_time BIGINT NOT NULL
);

CREATE TABLE pipeline_stages (
    pipeline_id TEXT   NOT NULL REFERENCES pipelines (id),
    position    BIGINT NOT NULL,
    name        TEXT   NOT NULL,
    PRIMARY KEY (pipeline_id, position),
    CONSTRAINT pipeline_stages_name_unique UNIQUE (pipeline_id, name)
);

-- A partner team's settings: the pipeline its new shared deals go to.
CREATE TABLE team_settings (
    team_id             TEXT PRIMARY KEY,
    default_pipeline_id TEXT   NOT NULL,
    update_time         BIGINT NOT NULL
);

-- Deals: the registration and the shared deal it becomes. Products are newline-separated.
CREATE TABLE deals (
    id                       TEXT PRIMARY KEY,
    team_id                  TEXT   NOT NULL,
    program_id               TEXT   NOT NULL,
    customer_name            TEXT   NOT NULL,
    customer_domain          TEXT   NOT NULL,
    currency_code            TEXT   NOT NULL,
    amount_minor             BIGINT NOT NULL,
    products                 TEXT   NOT NULL,
    expected_close_time      BIGINT,
    client_market            TEXT   NOT NULL,
    deal_type                TEXT   NOT NULL,
    pipeline_id              TEXT   NOT NULL,
    stage                    TEXT   NOT NULL,
    registration_status      TEXT   NOT NULL,
    conflicting_deal_id      TEXT   NOT NULL,
    will_manage              BIGINT NOT NULL,
    outcome                  TEXT   NOT NULL,
    close_time               BIGINT,
    registration_expire_time BIGINT NOT NULL,
    rejection_reason         TEXT   NOT NULL,
    create_time              BIGINT NOT NULL,
    update_time              BIGINT NOT NULL
);
CREATE INDEX deals_by_team ON deals (team_id, id);
CREATE INDEX deals_by_domain ON deals (customer_domain, registration_status);
CREATE INDEX deals_expiring ON deals (registration_expire_time) WHERE outcome = '';

-- One row per customer domain ever registered. Registering updates it first: its row lock
-- queues registrations of one domain, so the first wins even when two arrive at once.
CREATE TABLE customer_domains (
    domain        TEXT PRIMARY KEY,
    registrations BIGINT NOT NULL
);

CREATE TABLE deal_team (
    deal_id  TEXT   NOT NULL REFERENCES deals (id),
    user_id  TEXT   NOT NULL,
    side     TEXT   NOT NULL,
    add_time BIGINT NOT NULL,
    PRIMARY KEY (deal_id, user_id)
);
