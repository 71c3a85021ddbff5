-- Migration 0004: retention settings with the indexes their pruning needs, and retired client ids.

-- How long each kind of record is kept, in days; the minute cron deletes older rows in bounded chunks.
-- Operators read and change these with GET/PUT /admin/retention. usage_daily (rollups) is kept forever.
CREATE TABLE IF NOT EXISTS retention_settings (
  kind TEXT PRIMARY KEY,
  days INTEGER NOT NULL CHECK (days BETWEEN 1 AND 3650),
  updated_at INTEGER NOT NULL
);
INSERT INTO retention_settings (kind, days, updated_at) VALUES
  ('usage_events', 90, 1767225600000),
  ('request_log', 90, 1767225600000),
  ('alerts', 90, 1767225600000),
  ('optimizer_savings', 90, 1767225600000),
  ('scaling_events', 90, 1767225600000),
  ('pool_samples', 92, 1767225600000),
  ('burst_sessions', 90, 1767225600000),
  ('requests', 35, 1767225600000)
ON CONFLICT (kind) DO NOTHING;

-- Pruning selects old rows by time: each kind needs an index on its time column (request_log,
-- scaling_events and burst_sessions have one already).
CREATE INDEX IF NOT EXISTS usage_events_at ON usage_events (at);
CREATE INDEX IF NOT EXISTS alerts_resolved_at ON alerts (resolved_at) WHERE state = 'resolved';
CREATE INDEX IF NOT EXISTS optimizer_savings_at ON optimizer_savings (at);
CREATE INDEX IF NOT EXISTS pool_samples_at ON pool_samples (at);

-- Ids of deleted clients. An id is never used again (POST /admin/clients answers 409 client_id_retired),
-- so no later tenant can reach a deleted client's usage, requests, costs or cached results.
CREATE TABLE IF NOT EXISTS retired_client_ids (
  client_id TEXT PRIMARY KEY,
  retired_at INTEGER NOT NULL
);

-- Clients deleted before this migration left records behind under their ids: retire those ids too.
INSERT INTO retired_client_ids (client_id, retired_at)
SELECT client_id, CAST(strftime('%s', 'now') AS INTEGER) * 1000 FROM (
  SELECT client_id FROM usage_daily
  UNION SELECT client_id FROM request_log
  UNION SELECT client_id FROM optimizer_savings
  UNION SELECT client_id FROM burst_sessions
) WHERE client_id NOT IN (SELECT id FROM clients)
ON CONFLICT (client_id) DO NOTHING;
