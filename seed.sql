-- Demo clients and API keys for local runs and tests, applied after migrations/. Idempotent.
-- Reference data (tiers, pools, templates, burst policies) comes from the migrations, not from here.
-- The demo API keys below are for local use only (README lists them); never seed keys in production.

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
