-- The relay holds back an event while an earlier event of its aggregate is leased by another
-- relay; this finds those earlier events.
CREATE INDEX outbox_unpublished_aggregate ON outbox (aggregate_id, seq) WHERE publish_time IS NULL;

-- Pruning of published events.
CREATE INDEX outbox_published ON outbox (publish_time) WHERE publish_time IS NOT NULL;
