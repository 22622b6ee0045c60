-- The statement GetTierStatus runs (services/tiers/src/store/mod.rs `team_standing`): the
-- team's active-window sums (answered from the covering index) and its certification, joined
-- to the program's tiers by rank, for a random one of the 10,000 teams. Variables from
-- scripts/bench: program; now and since, the clock and the start of the 12-month window, which
-- the service binds as parameters too (computed in SQL, they would be evaluated for every row
-- and keep `now` out of the index condition).
\set t random(0, 9999)
SELECT s.sold, s.managed, s.expired, s.sourced, s.certified_until, t.id, t.program_id, t.name, t.rank, t.points_threshold, t.sold_points_minimum, t.managed_points_minimum, t.requires_certification, t.create_time, t.update_time FROM (SELECT COALESCE(CAST(SUM(CASE WHEN earned_at >= :since AND kind = 'SOLD' THEN points ELSE 0 END) AS BIGINT), 0) AS sold, COALESCE(CAST(SUM(CASE WHEN earned_at >= :since AND kind = 'MANAGED' THEN points ELSE 0 END) AS BIGINT), 0) AS managed, COALESCE(CAST(SUM(CASE WHEN earned_at < :since THEN points ELSE 0 END) AS BIGINT), 0) AS expired, COALESCE(CAST(SUM(CASE WHEN earned_at >= :since THEN COALESCE(sourced_usd_cents, 0) ELSE 0 END) AS BIGINT), 0) AS sourced, (SELECT MAX(valid_until) FROM certifications WHERE team_id = 'team_' || lpad(to_hex(:t::bigint), 32, '0') AND valid_until > :now) AS certified_until FROM points_entries WHERE program_id = :program AND team_id = 'team_' || lpad(to_hex(:t::bigint), 32, '0') AND earned_at <= :now) s LEFT JOIN tiers t ON t.program_id = :program ORDER BY t.rank;
