-- The statements RegisterDeal runs in its transaction (services/deals/src/api/deals.rs), in
-- order, with the same shapes of values: a fresh request id and deal id, one of 10,000
-- customer domains. Variables from scripts/bench: team, user.
\set r random(1, 4000000000000000000)
\set c random(1, 10000)
BEGIN;
INSERT INTO idempotency_records (scope, request_id, fingerprint, response, create_time) VALUES ('deals.RegisterDeal', 'pgbench-' || :r, md5(:r::text) || md5(:c::text), NULL, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint) ON CONFLICT (scope, request_id) DO NOTHING;
SELECT default_pipeline_id FROM team_settings WHERE team_id = :team;
INSERT INTO customer_domains (domain, registrations) VALUES ('c' || :c || '.example', 1) ON CONFLICT (domain) DO UPDATE SET registrations = customer_domains.registrations + 1;
SELECT id, team_id, create_time, conflicting_deal_id FROM deals WHERE customer_domain = 'c' || :c || '.example' AND registration_status IN ('PENDING', 'APPROVED');
INSERT INTO deals (id, team_id, program_id, customer_name, customer_domain, currency_code, amount_minor, products, expected_close_time, client_market, deal_type, pipeline_id, stage, registration_status, conflicting_deal_id, will_manage, outcome, close_time, registration_expire_time, rejection_reason, create_time, update_time) VALUES ('deal_' || lpad(to_hex(:r::bigint), 32, '0'), :team, :program, 'Customer ' || :c, 'c' || :c || '.example', 'USD', 1000000, 'Sales Hub', NULL, 'US', 'NEW_BUSINESS', '', '', 'PENDING', '', 0, '', NULL, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + 7776000000000, '', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
INSERT INTO deal_team (deal_id, user_id, side, add_time) VALUES ('deal_' || lpad(to_hex(:r::bigint), 32, '0'), :user, 'PARTNER', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint) ON CONFLICT (deal_id, user_id) DO NOTHING;
SELECT id, team_id, program_id, customer_name, customer_domain, currency_code, amount_minor, products, expected_close_time, client_market, deal_type, pipeline_id, stage, registration_status, conflicting_deal_id, will_manage, outcome, close_time, registration_expire_time, rejection_reason, create_time, update_time, (SELECT COUNT(*) FROM deals o WHERE o.customer_domain = d.customer_domain AND o.registration_status IN ('PENDING', 'APPROVED')) AS active_registrations FROM deals d WHERE id = 'deal_' || lpad(to_hex(:r::bigint), 32, '0');
SELECT user_id, side FROM deal_team WHERE deal_id = 'deal_' || lpad(to_hex(:r::bigint), 32, '0') ORDER BY add_time, user_id;
UPDATE idempotency_records SET response = repeat('x', 400) WHERE scope = 'deals.RegisterDeal' AND request_id = 'pgbench-' || :r;
COMMIT;
