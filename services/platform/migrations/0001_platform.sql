-- Idempotency records: the first answer to a (scope, request_id), replayed for retries.
CREATE TABLE idempotency_records (
    scope        TEXT   NOT NULL,
    request_id   TEXT   NOT NULL,
    fingerprint  TEXT   NOT NULL,
    response     TEXT,
    create_time  BIGINT NOT NULL,
    PRIMARY KEY (scope, request_id)
);

-- Events for other services, written in the same transaction as the change and published by
-- the relay in `seq` order.
CREATE TABLE outbox (
    seq            {{SEQ_ID}},
    event_id       TEXT   NOT NULL UNIQUE,
    stream         TEXT   NOT NULL,
    aggregate_id   TEXT   NOT NULL,
    payload        TEXT   NOT NULL,
    create_time    BIGINT NOT NULL,
    publish_time   BIGINT,
    attempts       BIGINT NOT NULL DEFAULT 0,
    lease_until    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE publish_time IS NULL;

-- Events a consumer has applied, recorded in the same transaction as their effect.
CREATE TABLE handled_events (
    consumer     TEXT   NOT NULL,
    event_id     TEXT   NOT NULL,
    handle_time  BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
