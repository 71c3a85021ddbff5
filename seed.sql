-- Demo data for local runs and tests. Idempotent: existing rows are left as they are.
-- The demo API keys below are for local use only (README lists them); never seed keys in production.

INSERT INTO tiers (id, priority_points, max_concurrent, monthly_budget_nano) VALUES
  ('enterprise', 40, 100, NULL),
  ('premium', 30, 50, 1000000000000),
  ('standard', 20, 20, 500000000000),
  ('basic', 10, 5, 100000000000)
ON CONFLICT (id) DO UPDATE SET
  priority_points = excluded.priority_points,
  max_concurrent = excluded.max_concurrent,
  monthly_budget_nano = excluded.monthly_budget_nano;

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

INSERT INTO clients (id, name, email, tier, monthly_budget_nano, status, created_at, updated_at) VALUES
  ('acme', 'Acme Corp', 'ops@acme.example', 'enterprise', 10000000000000, 'active', 1767225600000, 1767225600000),
  ('globex', 'Globex', 'billing@globex.example', 'premium', NULL, 'active', 1767225600000, 1767225600000),
  ('initech', 'Initech', 'it@initech.example', 'standard', NULL, 'active', 1767225600000, 1767225600000),
  ('hooli', 'Hooli', 'dev@hooli.example', 'basic', NULL, 'active', 1767225600000, 1767225600000)
ON CONFLICT (id) DO NOTHING;

INSERT INTO api_keys (id, client_id, key_hash, prefix, scopes, created_at, revoked_at) VALUES
  ('key_demo_acme', 'acme', 'b9ab6fc56a2111577e381bfb9490bfeed8d6f8b90e3da22cac351fb70ee660a8', 'rmk_demo_ent', '["resources:read","execute","usage:read","quota:read","burst","allocations"]', 1767225600000, NULL),
  ('key_demo_globex', 'globex', '3d31c3ac37e8d1c49e8f9c0f2fbeb9c27406f2cd273509d0f5a1660109cf2d67', 'rmk_demo_pre', '["resources:read","execute","usage:read","quota:read","burst","allocations"]', 1767225600000, NULL),
  ('key_demo_initech', 'initech', '82c7475e3e9d5988283cbab736f96ebc664bec2d8a89fcce7cdd0dd7d64a92af', 'rmk_demo_sta', '["resources:read","execute","usage:read","quota:read","burst","allocations"]', 1767225600000, NULL),
  ('key_demo_hooli', 'hooli', 'b14190f094265443af319f52b9e41a6a176f4baf97e6de249df1beee0dcde988', 'rmk_demo_bas', '["resources:read","execute","usage:read","quota:read","burst","allocations"]', 1767225600000, NULL),
  ('key_demo_hooli_ro', 'hooli', '7c1b494719111a918518c42bf1e813d3f2346361a706e06d676bab0e3be8fa21', 'rmk_demo_rea', '["usage:read"]', 1767225600000, NULL)
ON CONFLICT (id) DO UPDATE SET scopes = excluded.scopes;

-- Burst policies per tier: enterprise and premium burst at will, standard needs an operator's approval, basic may not.
INSERT INTO burst_policies (tier, allowed, max_percent, max_duration_ms, cooldown_ms, max_per_day, requires_approval, updated_at) VALUES
  ('enterprise', 1, 150, 3600000, 0, 24, 0, 1767225600000),
  ('premium', 1, 150, 3600000, 600000, 6, 0, 1767225600000),
  ('standard', 1, 150, 3600000, 3600000, 2, 1, 1767225600000),
  ('basic', 0, 150, 3600000, 3600000, 1, 1, 1767225600000)
ON CONFLICT (tier) DO NOTHING;

-- Optimizer options of the demo templates (issue 5): cache TTL, batch size, compression threshold.
INSERT INTO template_options (template_id, cache_ttl_ms, batch_size, compress_threshold_bytes, updated_at) VALUES
  ('content-generate', 3600000, 10, 4096, 1767225600000),
  ('content-generate-lite', 3600000, 20, 4096, 1767225600000),
  ('notify-email', 3600000, 50, 4096, 1767225600000),
  ('notify-sms', 3600000, 50, 4096, 1767225600000),
  ('report-build', 900000, 1, 2048, 1767225600000)
ON CONFLICT (template_id) DO NOTHING;
