-- Relays take turns on an advisory lock instead of leasing rows, so rows carry no lease, and
-- the index that found an aggregate's leased events is no longer read (it cost every insert).
DROP INDEX outbox_unpublished_aggregate;
ALTER TABLE outbox DROP COLUMN lease_until;
ALTER TABLE outbox DROP COLUMN attempts;
