-- The statements RecordPayment runs (services/commissions/src/api/customers.rs and
-- ledger.rs), in order: the customer read, then one transaction with the idempotency claim,
-- the payment, the plan, the customer's lock, the commission and its posting with two ledger
-- entries, and the recorded answer. Customers are cust_<n>, n in 1..customers, as the bench
-- creates them. Variables from scripts/bench: customers, team, plan.
\set r random(1, 4000000000000000000)
\set n random(1, :customers)
SELECT id, team_id, org_name, domain, super_admin_email, plan, licences, renewal_date, currency_code, monthly_price_minor, previous_price_minor, renewal_term_months, txt_token, domain_verified, owner_user_id, first_commission_time, create_time, update_time FROM customers WHERE id = 'cust_' || lpad(to_hex(:n::bigint), 32, '0');
BEGIN;
INSERT INTO idempotency_records (scope, request_id, fingerprint, response, create_time) VALUES ('commissions.RecordPayment', 'pgbench-' || :r, md5(:r::text) || md5(:n::text), NULL, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint) ON CONFLICT (scope, request_id) DO NOTHING;
INSERT INTO payments (id, customer_id, team_id, currency_code, amount_minor, refunded_minor, create_time) VALUES ('pay_' || lpad(to_hex(:r::bigint), 32, '0'), 'cust_' || lpad(to_hex(:n::bigint), 32, '0'), :team, 'USD', 10000, 0, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
SELECT id, name, rate_bps, recurring_months, hold_days, minimum_currency, minimum_minor, tier_multipliers, create_time FROM commission_plans ORDER BY create_time DESC, id DESC LIMIT 1;
UPDATE customers SET first_commission_time = first_commission_time WHERE id = 'cust_' || lpad(to_hex(:n::bigint), 32, '0') RETURNING first_commission_time;
SELECT tier_id FROM team_tiers WHERE team_id = :team;
INSERT INTO commissions (id, team_id, customer_id, payment_id, deal_id, plan_id, currency_code, base_minor, amount_minor, clawed_minor, multiplier_bps, status, available_time, create_time) VALUES ('com_' || lpad(to_hex(:r::bigint), 32, '0'), :team, 'cust_' || lpad(to_hex(:n::bigint), 32, '0'), 'pay_' || lpad(to_hex(:r::bigint), 32, '0'), NULL, :plan, 'USD', 10000, 1500, 0, 10000, 'pending', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + 2592000000000, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
INSERT INTO postings (id, team_id, kind, reason, commission_id, payout_id, create_time) VALUES ('post_' || lpad(to_hex(:r::bigint), 32, '0'), :team, 'accrual', 'commission on payment pay_' || lpad(to_hex(:r::bigint), 32, '0'), 'com_' || lpad(to_hex(:r::bigint), 32, '0'), NULL, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
INSERT INTO ledger_entries (posting_id, account, currency_code, amount_minor, create_time) VALUES ('post_' || lpad(to_hex(:r::bigint), 32, '0'), 'vendor/commission_expense', 'USD', -1500, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint), ('post_' || lpad(to_hex(:r::bigint), 32, '0'), 'team/' || :team || '/pending', 'USD', 1500, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
UPDATE idempotency_records SET response = repeat('x', 300) WHERE scope = 'commissions.RecordPayment' AND request_id = 'pgbench-' || :r;
COMMIT;
