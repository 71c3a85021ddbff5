/** The optimizer's tables in D1: clients' switches, templates' options, the savings ledger, the result cache. */
import type { Strategy } from "../domain/optimizer";

export interface StrategySetting {
  strategy: Strategy;
  enabled: boolean;
  updated_at: number;
}

/** The switches a client has set (strategies without a row are on). */
export async function listStrategySettings(db: D1Database, clientId: string): Promise<StrategySetting[]> {
  const { results } = await db
    .prepare("SELECT strategy, enabled, updated_at FROM client_optimizer WHERE client_id = ?1 ORDER BY strategy")
    .bind(clientId)
    .all<{ strategy: Strategy; enabled: number; updated_at: number }>();
  return results.map((r) => ({ strategy: r.strategy, enabled: r.enabled === 1, updated_at: r.updated_at }));
}

/** Set some of a client's switches, in one statement. */
export async function setStrategySettings(db: D1Database, clientId: string, changes: Partial<Record<Strategy, boolean>>, now: number): Promise<void> {
  const rows = Object.entries(changes).map(([strategy, enabled]) => ({ s: strategy, e: enabled ? 1 : 0 }));
  if (rows.length === 0) return;
  await db
    .prepare(
      `INSERT INTO client_optimizer (client_id, strategy, enabled, updated_at)
       SELECT ?1, j.value ->> '$.s', j.value ->> '$.e', ?3 FROM json_each(?2) j WHERE true
       ON CONFLICT (client_id, strategy) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at`,
    )
    .bind(clientId, JSON.stringify(rows), now)
    .run();
}

export interface TemplateOptionsRow {
  template_id: string;
  cache_ttl_ms: number;
  batch_size: number;
  compress_threshold_bytes: number;
}

export async function listTemplateOptions(db: D1Database): Promise<TemplateOptionsRow[]> {
  const { results } = await db
    .prepare("SELECT template_id, cache_ttl_ms, batch_size, compress_threshold_bytes FROM template_options ORDER BY template_id")
    .all<TemplateOptionsRow>();
  return results;
}

/** One line of the savings ledger. */
export interface SavingsRow {
  requestId: string;
  clientId: string;
  template: string;
  strategy: Strategy;
  savedNano: number;
  bytesSaved?: number;
  at: number;
}

/** Rows per statement: one INSERT over a JSON array. */
const SAVINGS_PER_STATEMENT = 500;

/**
 * Add savings rows, one set-based statement per 500 rows. Idempotent by (request, strategy): a row
 * already there is left as it is, however often it is reported. Returns how many rows were new.
 */
export async function insertSavings(db: D1Database, rows: SavingsRow[]): Promise<number> {
  const insert = db.prepare(
    `INSERT INTO optimizer_savings (id, request_id, client_id, template, strategy, saved_nano, bytes_saved, at)
     SELECT 'sav_' || lower(hex(randomblob(10))), j.value ->> '$.r', j.value ->> '$.c', j.value ->> '$.t', j.value ->> '$.s',
            j.value ->> '$.n', j.value ->> '$.b', j.value ->> '$.a'
     FROM json_each(?1) j WHERE true
     ON CONFLICT DO NOTHING`,
  );
  const statements = [];
  for (let i = 0; i < rows.length; i += SAVINGS_PER_STATEMENT) {
    statements.push(insert.bind(JSON.stringify(rows.slice(i, i + SAVINGS_PER_STATEMENT).map((r) => ({
      r: r.requestId, c: r.clientId, t: r.template, s: r.strategy, n: r.savedNano, b: r.bytesSaved ?? 0, a: r.at,
    })))));
  }
  if (statements.length === 0) return 0;
  const results = await db.batch(statements);
  return results.reduce((n, r) => n + (r.meta.changes ?? 0), 0);
}

export interface CacheRow {
  key: string;
  template: string;
  result: string;
  cost_nano: number;
  created_at: number;
  expires_at: number;
}

/** The cached row under `key`, unless it has expired (expires_at at or before `now`). */
export async function findCached(db: D1Database, key: string, now: number): Promise<CacheRow | null> {
  return db.prepare("SELECT * FROM result_cache WHERE key = ?1 AND expires_at > ?2").bind(key, now).first<CacheRow>();
}

/** Store a result under `key`, replacing what was there. */
export async function upsertCached(db: D1Database, row: CacheRow): Promise<void> {
  await db
    .prepare(
      `INSERT INTO result_cache (key, template, result, cost_nano, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
       ON CONFLICT (key) DO UPDATE SET template = excluded.template, result = excluded.result, cost_nano = excluded.cost_nano,
         created_at = excluded.created_at, expires_at = excluded.expires_at`,
    )
    .bind(row.key, row.template, row.result, row.cost_nano, row.created_at, row.expires_at)
    .run();
}

/** Delete up to `limit` expired rows (expires_at at or before `now`); returns how many. */
export async function deleteExpired(db: D1Database, now: number, limit: number): Promise<number> {
  const r = await db
    .prepare("DELETE FROM result_cache WHERE key IN (SELECT key FROM result_cache WHERE expires_at <= ?1 LIMIT ?2)")
    .bind(now, limit)
    .run();
  return r.meta.changes ?? 0;
}

/** A client's savings in [from, to) per period ('YYYY-MM-DD' or 'YYYY-MM', UTC) and strategy. */
export interface SavingsSum {
  period: string;
  strategy: Strategy;
  requests: number;
  saved_nano: number;
  bytes_saved: number;
}

export async function savingsByPeriod(db: D1Database, clientId: string, from: number, to: number, periodChars: 7 | 10): Promise<SavingsSum[]> {
  const { results } = await db
    .prepare(
      `SELECT substr(strftime('%Y-%m-%d', at / 1000, 'unixepoch'), 1, ?4) AS period, strategy,
              COUNT(*) AS requests, SUM(saved_nano) AS saved_nano, SUM(bytes_saved) AS bytes_saved
       FROM optimizer_savings WHERE client_id = ?1 AND at >= ?2 AND at < ?3
       GROUP BY period, strategy ORDER BY period, strategy`,
    )
    .bind(clientId, from, to, periodChars)
    .all<SavingsSum>();
  return results;
}

/**
 * A client's completed requests of the given templates in [from, to) that did not come from the
 * cache (no 'caching' savings row): the executions behind the cache hit rate.
 */
export async function countExecutions(db: D1Database, clientId: string | null, templates: string[], from: number, to: number): Promise<number> {
  const row = await db
    .prepare(
      `SELECT COUNT(*) AS n FROM request_log r
       WHERE (?1 IS NULL OR r.client_id = ?1) AND r.status = 'completed' AND r.finished_at >= ?2 AND r.finished_at < ?3
         AND r.template IN (SELECT value FROM json_each(?4))
         AND NOT EXISTS (SELECT 1 FROM optimizer_savings s WHERE s.request_id = r.id AND s.strategy = 'caching')`,
    )
    .bind(clientId, from, to, JSON.stringify(templates))
    .first<{ n: number }>();
  return row?.n ?? 0;
}

/** A client's completed requests in [from, to) per template: how many and what they cost (actual, else estimate). */
export async function completedByTemplate(db: D1Database, clientId: string, from: number, to: number): Promise<Array<{ template: string; requests: number; cost_nano: number }>> {
  const { results } = await db
    .prepare(
      `SELECT template, COUNT(*) AS requests, SUM(COALESCE(actual_nano, estimate_nano)) AS cost_nano
       FROM request_log WHERE client_id = ?1 AND status = 'completed' AND finished_at >= ?2 AND finished_at < ?3
       GROUP BY template ORDER BY template`,
    )
    .bind(clientId, from, to)
    .all<{ template: string; requests: number; cost_nano: number }>();
  return results;
}

/** A client's completed requests in [from, to) by queue and UTC hour of creation. */
export async function completedByQueueHour(db: D1Database, clientId: string, from: number, to: number): Promise<Array<{ queue: string; hour: number; requests: number; cost_nano: number }>> {
  const { results } = await db
    .prepare(
      `SELECT queue, (created_at / 3600000) % 24 AS hour, COUNT(*) AS requests, SUM(COALESCE(actual_nano, estimate_nano)) AS cost_nano
       FROM request_log WHERE client_id = ?1 AND status = 'completed' AND finished_at >= ?2 AND finished_at < ?3
       GROUP BY queue, hour ORDER BY queue, hour`,
    )
    .bind(clientId, from, to)
    .all<{ queue: string; hour: number; requests: number; cost_nano: number }>();
  return results;
}

/** Every client's cache hits in [from, to) per template (savings rows of strategy 'caching'). */
export async function cacheHitsByTemplate(db: D1Database, templates: string[], from: number, to: number): Promise<Map<string, number>> {
  const { results } = await db
    .prepare(
      `SELECT template, COUNT(*) AS hits FROM optimizer_savings
       WHERE strategy = 'caching' AND at >= ?1 AND at < ?2 AND template IN (SELECT value FROM json_each(?3))
       GROUP BY template`,
    )
    .bind(from, to, JSON.stringify(templates))
    .all<{ template: string; hits: number }>();
  return new Map(results.map((r) => [r.template, r.hits]));
}

/** Every client's completed executions (not cache hits) in [from, to) per template. */
export async function executionsByTemplate(db: D1Database, templates: string[], from: number, to: number): Promise<Map<string, number>> {
  const { results } = await db
    .prepare(
      `SELECT r.template AS template, COUNT(*) AS n FROM request_log r
       WHERE r.status = 'completed' AND r.finished_at >= ?1 AND r.finished_at < ?2 AND r.template IN (SELECT value FROM json_each(?3))
         AND NOT EXISTS (SELECT 1 FROM optimizer_savings s WHERE s.request_id = r.id AND s.strategy = 'caching')
       GROUP BY r.template`,
    )
    .bind(from, to, JSON.stringify(templates))
    .all<{ template: string; n: number }>();
  return new Map(results.map((r) => [r.template, r.n]));
}

/** A client's spend in a range of UTC days (both included), from the daily usage rollups. */
export async function spendInDays(db: D1Database, clientId: string, fromDay: string, toDay: string): Promise<number> {
  const row = await db
    .prepare("SELECT COALESCE(SUM(cost_nano), 0) AS n FROM usage_daily WHERE client_id = ?1 AND day BETWEEN ?2 AND ?3")
    .bind(clientId, fromDay, toDay)
    .first<{ n: number }>();
  return row?.n ?? 0;
}

/** Savings ever recorded, per strategy (for /metrics). */
export async function savingsTotals(db: D1Database): Promise<Array<{ strategy: Strategy; saved_nano: number }>> {
  const { results } = await db
    .prepare("SELECT strategy, SUM(saved_nano) AS saved_nano FROM optimizer_savings GROUP BY strategy ORDER BY strategy")
    .all<{ strategy: Strategy; saved_nano: number }>();
  return results;
}
