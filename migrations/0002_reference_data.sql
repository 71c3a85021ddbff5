-- Migration 0002: the reference data a deployment needs before its first client, so that a database
-- built from migrations alone works (seed.sql holds only demo clients and keys). Operators change all of
-- it through the admin API afterwards (PATCH /admin/tiers/{tier}, /admin/templates, /admin/pools, ...).
-- Rows a database already has (a local D1 seeded by an earlier version) are kept as they are.

-- A tier's fair-share weight in dispatch (a client's quota may set its own), and a template's retry limit.
ALTER TABLE tiers ADD COLUMN weight INTEGER NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000);
ALTER TABLE templates ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 10);

INSERT INTO tiers (id, priority_points, max_concurrent, monthly_budget_nano) VALUES
  ('enterprise', 40, 100, NULL),
  ('premium', 30, 50, 1000000000000),
  ('standard', 20, 20, 500000000000),
  ('basic', 10, 5, 100000000000)
ON CONFLICT (id) DO NOTHING;
UPDATE tiers SET weight = CASE id WHEN 'enterprise' THEN 4 WHEN 'premium' THEN 3 WHEN 'standard' THEN 2 ELSE 1 END;

-- Prices: GPT-4 $0.03/1K tokens = 30,000 nano per token; GPT-3.5 $0.0015/1K = 1,500; e-mail $0.0001 = 100,000;
-- SMS $0.0075 = 7,500,000; D1 free; KV $0.0000005 = 500.
INSERT INTO pools (id, name, unit, capacity, refill_per_sec, cost_per_unit_nano, sharing, status, version, updated_at) VALUES
  ('openai-gpt4', 'OpenAI GPT-4', 'tokens', 10000, 166, 30000, '{"mode":"shared"}', 'active', 1, 1767225600000),
  ('openai-gpt35', 'OpenAI GPT-3.5', 'tokens', 90000, 1500, 1500, '{"mode":"shared"}', 'active', 1, 1767225600000),
  ('email-sendgrid', 'Email (SendGrid)', 'emails', 1000, 16, 100000, '{"mode":"shared"}', 'active', 1, 1767225600000),
  ('sms-twilio', 'SMS (Twilio)', 'messages', 500, 8, 7500000, '{"mode":"shared"}', 'active', 1, 1767225600000),
  ('d1-queries', 'Database (D1)', 'queries', 50000, 833, 0, '{"mode":"shared"}', 'active', 1, 1767225600000),
  ('kv-storage', 'KV Storage', 'reads', 100000, 1666, 500, '{"mode":"shared"}', 'active', 1, 1767225600000)
ON CONFLICT (id) DO NOTHING;

INSERT INTO templates (id, name, binding, requirements, alternative_id, cacheable, batchable, timeout_ms, updated_at) VALUES
  ('content-generate-lite', 'Generate content (GPT-3.5)', 'CONTENT_WORKER', '[{"pool":"openai-gpt35","amount":2000}]', NULL, 1, 1, 30000, 1767225600000),
  ('content-generate', 'Generate content (GPT-4)', 'CONTENT_WORKER', '[{"pool":"openai-gpt4","amount":2000}]', 'content-generate-lite', 1, 1, 30000, 1767225600000),
  ('notify-email', 'Send an e-mail', 'NOTIFIER', '[{"pool":"email-sendgrid","amount":1}]', NULL, 0, 1, 10000, 1767225600000),
  ('notify-sms', 'Send an SMS', 'NOTIFIER', '[{"pool":"sms-twilio","amount":1}]', NULL, 0, 1, 10000, 1767225600000),
  ('report-build', 'Build a usage report', 'CONTENT_WORKER', '[{"pool":"d1-queries","amount":50},{"pool":"kv-storage","amount":200},{"pool":"openai-gpt35","amount":1000}]', NULL, 1, 0, 60000, 1767225600000)
ON CONFLICT (id) DO NOTHING;

-- Burst policies per tier: enterprise and premium burst at will, standard needs an operator's approval, basic may not.
INSERT INTO burst_policies (tier, allowed, max_percent, max_duration_ms, cooldown_ms, max_per_day, requires_approval, updated_at) VALUES
  ('enterprise', 1, 150, 3600000, 0, 24, 0, 1767225600000),
  ('premium', 1, 150, 3600000, 600000, 6, 0, 1767225600000),
  ('standard', 1, 150, 3600000, 3600000, 2, 1, 1767225600000),
  ('basic', 0, 150, 3600000, 3600000, 1, 1, 1767225600000)
ON CONFLICT (tier) DO NOTHING;

-- Optimizer options of the default templates: cache TTL, batch size, compression threshold.
INSERT INTO template_options (template_id, cache_ttl_ms, batch_size, compress_threshold_bytes, updated_at) VALUES
  ('content-generate', 3600000, 10, 4096, 1767225600000),
  ('content-generate-lite', 3600000, 20, 4096, 1767225600000),
  ('notify-email', 3600000, 50, 4096, 1767225600000),
  ('notify-sms', 3600000, 50, 4096, 1767225600000),
  ('report-build', 900000, 1, 2048, 1767225600000)
ON CONFLICT (template_id) DO NOTHING;
