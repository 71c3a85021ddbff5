-- Resource Manager D1 schema: the full current schema, for reading. Databases are built and upgraded by
-- migrations/ (`wrangler d1 migrations apply`); test/api/schema.test.ts proves the two agree.
-- Money is integer nano-dollars (1e-9 USD); times are epoch milliseconds, UTC.

CREATE TABLE IF NOT EXISTS tiers (
  id TEXT PRIMARY KEY CHECK (id IN ('enterprise', 'premium', 'standard', 'basic')),
  priority_points INTEGER NOT NULL CHECK (priority_points BETWEEN 0 AND 40),
  max_concurrent INTEGER NOT NULL CHECK (max_concurrent > 0),
  -- NULL: no tier default; the client's own budget applies ("custom").
  monthly_budget_nano INTEGER CHECK (monthly_budget_nano IS NULL OR monthly_budget_nano >= 0),
  -- Fair-share weight in dispatch; a client's quota may set its own.
  weight INTEGER NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000)
);

CREATE TABLE IF NOT EXISTS clients (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  email TEXT NOT NULL,
  tier TEXT NOT NULL REFERENCES tiers (id),
  -- NULL: the tier's budget; a value overrides it.
  monthly_budget_nano INTEGER CHECK (monthly_budget_nano IS NULL OR monthly_budget_nano >= 0),
  status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY,
  client_id TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
  -- SHA-256 of the whole key, hex. The key itself is never stored.
  key_hash TEXT NOT NULL UNIQUE,
  prefix TEXT NOT NULL,
  -- JSON array of scopes, e.g. ["resources:read","execute"].
  scopes TEXT NOT NULL DEFAULT '[]',
  created_at INTEGER NOT NULL,
  revoked_at INTEGER,
  -- An operator's label for the key (issue 6), e.g. "ci" or "kam-prod"; NULL: none.
  name TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_client ON api_keys (client_id);

CREATE TABLE IF NOT EXISTS pools (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  unit TEXT NOT NULL,
  capacity INTEGER NOT NULL CHECK (capacity > 0),
  refill_per_sec REAL NOT NULL CHECK (refill_per_sec >= 0),
  cost_per_unit_nano INTEGER NOT NULL CHECK (cost_per_unit_nano >= 0),
  -- JSON: {"mode":"shared"} | {"mode":"reserved","shares":[{"tier"|"clientId":..,"fraction":0.2}]} | {"mode":"dedicated","clientId":".."}
  sharing TEXT NOT NULL DEFAULT '{"mode":"shared"}',
  status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'draining', 'disabled')),
  -- Bumped on every change; pool objects adopt a configuration only when its version is newer.
  version INTEGER NOT NULL DEFAULT 1,
  updated_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS templates (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  -- Name of the service binding of the worker that does this work.
  binding TEXT NOT NULL,
  -- JSON array of {"pool","amount"}.
  requirements TEXT NOT NULL,
  alternative_id TEXT REFERENCES templates (id),
  cacheable INTEGER NOT NULL DEFAULT 0,
  batchable INTEGER NOT NULL DEFAULT 0,
  timeout_ms INTEGER NOT NULL DEFAULT 30000 CHECK (timeout_ms > 0),
  updated_at INTEGER NOT NULL,
  -- Attempts before a request of this template fails (a worker error or timeout retries with backoff).
  max_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 10)
);

-- A client's budget as set by an operator. No row: the client's monthly_budget_nano, else its tier's.
-- A row with NULL: no limit, explicitly. Money in flight and monthly spend live in the client's object.
CREATE TABLE IF NOT EXISTS client_budgets (
  client_id TEXT PRIMARY KEY REFERENCES clients (id) ON DELETE CASCADE,
  monthly_budget_nano INTEGER CHECK (monthly_budget_nano IS NULL OR monthly_budget_nano >= 0),
  updated_at INTEGER NOT NULL
);

-- The usage ledger: append-only, delivered from the pool objects' outboxes, keyed by event id.
CREATE TABLE IF NOT EXISTS usage_events (
  event_id TEXT PRIMARY KEY,
  pool_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  request_id TEXT,
  via TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('consume', 'reservation')),
  units INTEGER NOT NULL CHECK (units >= 0),
  cost_nano INTEGER NOT NULL CHECK (cost_nano >= 0),
  at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_events_client_at ON usage_events (client_id, at);
CREATE INDEX IF NOT EXISTS usage_events_pool_at ON usage_events (pool_id, at);

-- Usage rollups: one row per client, pool and UTC day, written in the same D1 batch as the ledger rows
-- they sum, so the two always agree. Usage history reads these, never the ledger.
CREATE TABLE IF NOT EXISTS usage_daily (
  client_id TEXT NOT NULL,
  pool_id TEXT NOT NULL,
  -- 'YYYY-MM-DD', UTC.
  day TEXT NOT NULL,
  units INTEGER NOT NULL CHECK (units >= 0),
  cost_nano INTEGER NOT NULL CHECK (cost_nano >= 0),
  events INTEGER NOT NULL CHECK (events >= 0),
  PRIMARY KEY (client_id, pool_id, day)
);
CREATE INDEX IF NOT EXISTS usage_daily_client_day ON usage_daily (client_id, day);

-- Alerts: conditions an operator must see. The partial unique index keeps at most one unresolved alert
-- per dedupe key, so a re-raise while open bumps `count` instead of adding a row. budget_80 and
-- budget_95 carry the month in their dedupe key ("budget_80:acme:2026-04"): once per client per month.
CREATE TABLE IF NOT EXISTS alerts (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('pool_low', 'budget_80', 'budget_95', 'budget_exhausted', 'queue_backup', 'starvation', 'worker_failures', 'worker_timeouts', 'sla_breach')),
  -- What the alert is about: a pool id, client id, queue name ("all" for the total), or template id.
  subject TEXT NOT NULL,
  severity TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
  state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'acknowledged', 'resolved')),
  message TEXT NOT NULL,
  -- JSON object: the numbers behind the latest raise.
  details TEXT NOT NULL DEFAULT '{}',
  dedupe_key TEXT NOT NULL,
  -- How many times the condition was raised while this alert was unresolved.
  count INTEGER NOT NULL DEFAULT 1 CHECK (count >= 1),
  raised_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  acked_at INTEGER,
  resolved_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_unresolved_dedupe ON alerts (dedupe_key) WHERE state != 'resolved';
CREATE INDEX IF NOT EXISTS alerts_raised ON alerts (raised_at, id);
CREATE INDEX IF NOT EXISTS alerts_kind_subject ON alerts (kind, subject, state);

-- Reports read usage_daily by day across clients (cost by client or pool, usage by pool and tier).
CREATE INDEX IF NOT EXISTS usage_daily_day ON usage_daily (day, pool_id);

-- Finished requests (completed, failed, cancelled), mirrored from the scheduler object, where requests
-- live, for reports: cost by template and recent failures. Delivered by the scheduler's outbox in one
-- upsert per batch, keyed by request id, so a redelivery changes nothing. A request's cost lands here
-- when it finishes (actual_nano: NULL unless it completed).
CREATE TABLE IF NOT EXISTS request_log (
  id TEXT PRIMARY KEY,
  client_id TEXT NOT NULL,
  template TEXT NOT NULL,
  queue TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('completed', 'failed', 'cancelled', 'expired')),
  estimate_nano INTEGER NOT NULL CHECK (estimate_nano >= 0),
  actual_nano INTEGER CHECK (actual_nano IS NULL OR actual_nano >= 0),
  attempts INTEGER NOT NULL CHECK (attempts >= 0),
  created_at INTEGER NOT NULL,
  finished_at INTEGER NOT NULL,
  error TEXT
);
CREATE INDEX IF NOT EXISTS request_log_finished ON request_log (finished_at);
CREATE INDEX IF NOT EXISTS request_log_status_finished ON request_log (status, finished_at);

-- Pool levels sampled by the minute cron, for utilization over time. Kept 92 days by default (retention_settings).
CREATE TABLE IF NOT EXISTS pool_samples (
  pool_id TEXT NOT NULL,
  at INTEGER NOT NULL,
  level REAL NOT NULL,
  capacity INTEGER NOT NULL CHECK (capacity > 0),
  PRIMARY KEY (pool_id, at)
);

-- ---- Clients: quotas and burst (issue 6) --------------------------------------------------------

-- An operator's quota overrides for one client. NULL: the default (max_concurrent: the tier's;
-- cpu/memory: no limit). pool_daily: JSON object pool id → units per UTC day ({}: no caps).
CREATE TABLE IF NOT EXISTS client_quotas (
  client_id TEXT PRIMARY KEY REFERENCES clients (id) ON DELETE CASCADE,
  max_concurrent INTEGER CHECK (max_concurrent IS NULL OR max_concurrent > 0),
  cpu_millicores INTEGER CHECK (cpu_millicores IS NULL OR cpu_millicores > 0),
  memory_mb INTEGER CHECK (memory_mb IS NULL OR memory_mb > 0),
  pool_daily TEXT NOT NULL DEFAULT '{}',
  updated_at INTEGER NOT NULL,
  -- Fair-share weight in dispatch (issue 7); NULL: the tier's.
  weight INTEGER CHECK (weight IS NULL OR weight BETWEEN 1 AND 1000)
);

-- Who may burst above quota, how far, for how long, how often, and whether an operator must approve.
CREATE TABLE IF NOT EXISTS burst_policies (
  tier TEXT PRIMARY KEY REFERENCES tiers (id),
  allowed INTEGER NOT NULL CHECK (allowed IN (0, 1)),
  max_percent INTEGER NOT NULL CHECK (max_percent BETWEEN 100 AND 1000),
  max_duration_ms INTEGER NOT NULL CHECK (max_duration_ms > 0),
  -- At least this long between the end of one session and the start of the next.
  cooldown_ms INTEGER NOT NULL CHECK (cooldown_ms >= 0),
  max_per_day INTEGER NOT NULL CHECK (max_per_day > 0),
  requires_approval INTEGER NOT NULL CHECK (requires_approval IN (0, 1)),
  updated_at INTEGER NOT NULL
);

-- Every burst session, mirrored from the client's object (which owns the active one and ends it by alarm).
CREATE TABLE IF NOT EXISTS burst_sessions (
  id TEXT PRIMARY KEY,
  client_id TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'denied', 'active', 'ended', 'expired')),
  percent INTEGER NOT NULL,
  duration_ms INTEGER NOT NULL,
  reason TEXT,
  requested_at INTEGER NOT NULL,
  decided_at INTEGER,
  started_at INTEGER,
  ends_at INTEGER,
  ended_at INTEGER,
  updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS burst_sessions_client ON burst_sessions (client_id, requested_at);
CREATE INDEX IF NOT EXISTS burst_sessions_state ON burst_sessions (state, requested_at);

-- ---- Pools: management and auto-scaling (issue 7) -----------------------------------------------

-- A pool's sizing and low-water alert threshold. No row: static, pool_low below 10%. Kept apart from
-- `pools` because that table cannot be altered idempotently here.
CREATE TABLE IF NOT EXISTS pool_settings (
  pool_id TEXT PRIMARY KEY,
  sizing TEXT NOT NULL DEFAULT 'static' CHECK (sizing IN ('static', 'dynamic')),
  -- Dynamic pools only: the scaling policy keeps capacity within [min_capacity, max_capacity].
  min_capacity INTEGER CHECK (min_capacity IS NULL OR min_capacity > 0),
  max_capacity INTEGER CHECK (max_capacity IS NULL OR max_capacity >= min_capacity),
  -- pool_low is raised strictly below this share of capacity; 0: never.
  low_water_percent INTEGER NOT NULL DEFAULT 10 CHECK (low_water_percent BETWEEN 0 AND 100),
  updated_at INTEGER NOT NULL,
  -- Token leases to isolates (migration 0006): auto lends to an isolate that consumes often; off: never.
  leases TEXT NOT NULL DEFAULT 'auto' CHECK (leases IN ('auto', 'off'))
);

-- One scaling policy per dynamic pool. Utilizations are fractions (0.8 = 80%). NULL triggers are off.
CREATE TABLE IF NOT EXISTS scaling_policies (
  pool_id TEXT PRIMARY KEY,
  target_utilization REAL NOT NULL CHECK (target_utilization > 0 AND target_utilization < 1),
  scale_up_utilization REAL NOT NULL CHECK (scale_up_utilization > 0 AND scale_up_utilization <= 1),
  scale_down_utilization REAL NOT NULL CHECK (scale_down_utilization >= 0 AND scale_down_utilization < 1),
  window_ms INTEGER NOT NULL CHECK (window_ms > 0),
  scale_up_queue_depth INTEGER CHECK (scale_up_queue_depth IS NULL OR scale_up_queue_depth > 0),
  scale_up_wait_ms INTEGER CHECK (scale_up_wait_ms IS NULL OR scale_up_wait_ms > 0),
  step INTEGER NOT NULL CHECK (step > 0),
  cooldown_ms INTEGER NOT NULL CHECK (cooldown_ms >= 0),
  enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
  updated_at INTEGER NOT NULL
);

-- Each dynamic pool's cooldown and its last evaluation (JSON), whatever it decided.
CREATE TABLE IF NOT EXISTS scaling_state (
  pool_id TEXT PRIMARY KEY,
  cooldown_until INTEGER,
  last_evaluated_at INTEGER,
  last_evaluation TEXT
);

-- Every capacity change a scaling policy made, written in the same D1 batch as the change itself.
CREATE TABLE IF NOT EXISTS scaling_events (
  id TEXT PRIMARY KEY,
  pool_id TEXT NOT NULL,
  at INTEGER NOT NULL,
  action TEXT NOT NULL CHECK (action IN ('scale_up', 'scale_down')),
  from_capacity INTEGER NOT NULL,
  to_capacity INTEGER NOT NULL,
  reason TEXT NOT NULL,
  -- What started the evaluation: the minute cron, a pool that ran dry, or an operator.
  trigger TEXT NOT NULL CHECK (trigger IN ('cron', 'pool_dry', 'manual')),
  -- JSON object: the trigger values the decision saw.
  trigger_values TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS scaling_events_at ON scaling_events (at, id);
CREATE INDEX IF NOT EXISTS scaling_events_pool_at ON scaling_events (pool_id, at, id);

-- ---- Cost optimizer (issue 5) -------------------------------------------------------------------

-- A client's optimizer switches. No row for a strategy: on (every strategy is on by default).
CREATE TABLE IF NOT EXISTS client_optimizer (
  client_id TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
  strategy TEXT NOT NULL CHECK (strategy IN ('downgrade', 'batching', 'caching', 'compression', 'off_peak')),
  enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (client_id, strategy)
);

-- A template's optimizer options. No row: cache TTL 1 h, batches of up to 10, compression above 4096 bytes.
CREATE TABLE IF NOT EXISTS template_options (
  template_id TEXT PRIMARY KEY,
  cache_ttl_ms INTEGER NOT NULL CHECK (cache_ttl_ms > 0),
  batch_size INTEGER NOT NULL CHECK (batch_size BETWEEN 1 AND 1000),
  compress_threshold_bytes INTEGER NOT NULL CHECK (compress_threshold_bytes >= 0),
  updated_at INTEGER NOT NULL
);

-- What the optimizer saved, per request and strategy: one row each, so a repeated report adds nothing.
-- Cache hits are rows of strategy 'caching' (saved_nano: what the original execution cost).
CREATE TABLE IF NOT EXISTS optimizer_savings (
  id TEXT PRIMARY KEY,
  request_id TEXT NOT NULL,
  client_id TEXT NOT NULL,
  template TEXT NOT NULL,
  strategy TEXT NOT NULL CHECK (strategy IN ('downgrade', 'batching', 'caching', 'compression', 'off_peak')),
  saved_nano INTEGER NOT NULL CHECK (saved_nano >= 0),
  bytes_saved INTEGER NOT NULL DEFAULT 0 CHECK (bytes_saved >= 0),
  at INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS optimizer_savings_request_strategy ON optimizer_savings (request_id, strategy);
CREATE INDEX IF NOT EXISTS optimizer_savings_client_at ON optimizer_savings (client_id, at);
CREATE INDEX IF NOT EXISTS optimizer_savings_template ON optimizer_savings (template, strategy, at);

-- Results of cacheable templates by key (SHA-256 over client, template, model and params). `result`
-- is JSON text, gzip-compressed ("gz:" + base64) above the template's threshold.
CREATE TABLE IF NOT EXISTS result_cache (
  key TEXT PRIMARY KEY,
  template TEXT NOT NULL,
  result TEXT NOT NULL,
  -- What the execution that produced the result cost: what each hit saves.
  cost_nano INTEGER NOT NULL CHECK (cost_nano >= 0),
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS result_cache_expires ON result_cache (expires_at);

-- Recommendations read a client's finished requests by time.
CREATE INDEX IF NOT EXISTS request_log_client_finished ON request_log (client_id, finished_at);

-- ---- Service levels (issue 7) ---------------------------------------------------------------------

-- SLA targets per tier and queue; no row: the defaults in src/domain/sla.ts.
CREATE TABLE IF NOT EXISTS sla_targets (
  tier TEXT NOT NULL REFERENCES tiers (id),
  queue TEXT NOT NULL CHECK (queue IN ('immediate', 'fast', 'normal', 'batch', 'deferred')),
  max_wait_ms INTEGER NOT NULL CHECK (max_wait_ms > 0),
  max_exec_ms INTEGER NOT NULL CHECK (max_exec_ms > 0),
  target_percent REAL NOT NULL CHECK (target_percent > 0 AND target_percent <= 100),
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (tier, queue)
);

-- ---- Dashboard sessions and logins (issue 19, migration 0003) ------------------------------------

-- One row per dashboard login. The cookie carries the id, signed; a cookie is accepted only while its
-- row exists, is not revoked and has not expired. Each login deletes a bounded number of expired rows.
CREATE TABLE IF NOT EXISTS admin_sessions (
  id TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS admin_sessions_expires ON admin_sessions (expires_at);

-- Login attempts per source address (IPv6 by /64) in a fixed window from the window's first attempt.
-- Each attempt deletes a bounded number of rows whose window has ended.
CREATE TABLE IF NOT EXISTS login_attempts (
  source TEXT PRIMARY KEY,
  window_start INTEGER NOT NULL,
  attempts INTEGER NOT NULL CHECK (attempts > 0)
);
CREATE INDEX IF NOT EXISTS login_attempts_window ON login_attempts (window_start);

-- ---- Retention and retired client ids (issue 19, migration 0004) --------------------------------

-- How long each kind of record is kept, in days; the minute cron deletes older rows in bounded chunks.
-- Operators read and change these with GET/PUT /admin/retention. usage_daily (rollups) is kept forever.
CREATE TABLE IF NOT EXISTS retention_settings (
  kind TEXT PRIMARY KEY,
  days INTEGER NOT NULL CHECK (days BETWEEN 1 AND 3650),
  updated_at INTEGER NOT NULL
);

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

-- ---- Queue samples for the dashboard's trends (issue 24, migration 0005) ------------------------

-- One row per queue per cron minute (`at` is the cron's scheduled time, so a repeated run adds nothing).
-- depth and ready: requests queued and ready to run at that moment; dispatched: requests the scheduler
-- dispatched from the queue in the minute before it. Pruned by the retention run ('queue_samples').
CREATE TABLE IF NOT EXISTS queue_samples (
  queue TEXT NOT NULL CHECK (queue IN ('immediate', 'fast', 'normal', 'batch', 'deferred')),
  at INTEGER NOT NULL,
  depth INTEGER NOT NULL CHECK (depth >= 0),
  ready INTEGER NOT NULL CHECK (ready >= 0),
  dispatched INTEGER NOT NULL CHECK (dispatched >= 0),
  PRIMARY KEY (queue, at)
);
CREATE INDEX IF NOT EXISTS queue_samples_at ON queue_samples (at);
