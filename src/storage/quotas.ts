import type { BurstPolicy, BurstSession, BurstState } from "../domain/burst";
import type { Tier } from "../domain/types";

/** Mirror burst sessions from a client's object (the owner) into D1, for operators' lists. Idempotent. */
export async function upsertBurstSessions(db: D1Database, sessions: BurstSession[]): Promise<void> {
  if (sessions.length === 0) return;
  await db
    .prepare(
      `INSERT INTO burst_sessions (id, client_id, state, percent, duration_ms, reason, requested_at, decided_at, started_at, ends_at, ended_at, updated_at)
       SELECT json_extract(value, '$.id'), json_extract(value, '$.client_id'), json_extract(value, '$.state'), json_extract(value, '$.percent'),
              json_extract(value, '$.duration_ms'), json_extract(value, '$.reason'), json_extract(value, '$.requested_at'),
              json_extract(value, '$.decided_at'), json_extract(value, '$.started_at'), json_extract(value, '$.ends_at'),
              json_extract(value, '$.ended_at'), json_extract(value, '$.updated_at')
       FROM json_each(?1) WHERE true
       ON CONFLICT (id) DO UPDATE SET state = excluded.state, decided_at = excluded.decided_at, started_at = excluded.started_at,
         ends_at = excluded.ends_at, ended_at = excluded.ended_at, updated_at = excluded.updated_at
       WHERE excluded.updated_at >= burst_sessions.updated_at`,
    )
    .bind(JSON.stringify(sessions))
    .run();
}

/** Sessions across clients, newest first, filtered by state and client. */
export async function listBurstSessions(db: D1Database, filter: { state?: BurstState; clientId?: string; limit: number }): Promise<BurstSession[]> {
  const { results } = await db
    .prepare(
      `SELECT * FROM burst_sessions WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR client_id = ?2)
       ORDER BY requested_at DESC, id DESC LIMIT ?3`,
    )
    .bind(filter.state ?? null, filter.clientId ?? null, filter.limit)
    .all<BurstSession>();
  return results;
}

/** Which client a session belongs to (operators approve by session id). */
export async function burstClient(db: D1Database, id: string): Promise<string | null> {
  const row = await db.prepare("SELECT client_id FROM burst_sessions WHERE id = ?1").bind(id).first<{ client_id: string }>();
  return row?.client_id ?? null;
}

interface PolicyRow {
  tier: Tier;
  allowed: number;
  max_percent: number;
  max_duration_ms: number;
  cooldown_ms: number;
  max_per_day: number;
  requires_approval: number;
}

export async function listBurstPolicies(db: D1Database): Promise<BurstPolicy[]> {
  const { results } = await db.prepare("SELECT * FROM burst_policies ORDER BY tier").all<PolicyRow>();
  return results.map((r) => ({
    tier: r.tier, allowed: r.allowed === 1, max_percent: r.max_percent, max_duration_ms: r.max_duration_ms,
    cooldown_ms: r.cooldown_ms, max_per_day: r.max_per_day, requires_approval: r.requires_approval === 1,
  }));
}

export async function putBurstPolicy(db: D1Database, p: BurstPolicy, now = Date.now()): Promise<void> {
  await db
    .prepare(
      `INSERT INTO burst_policies (tier, allowed, max_percent, max_duration_ms, cooldown_ms, max_per_day, requires_approval, updated_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
       ON CONFLICT (tier) DO UPDATE SET allowed = excluded.allowed, max_percent = excluded.max_percent, max_duration_ms = excluded.max_duration_ms,
         cooldown_ms = excluded.cooldown_ms, max_per_day = excluded.max_per_day, requires_approval = excluded.requires_approval, updated_at = excluded.updated_at`,
    )
    .bind(p.tier, p.allowed ? 1 : 0, p.max_percent, p.max_duration_ms, p.cooldown_ms, p.max_per_day, p.requires_approval ? 1 : 0, now)
    .run();
}

/** An operator's quota overrides for one client (null fields: the default). */
export interface QuotaOverrides {
  max_concurrent: number | null;
  cpu_millicores: number | null;
  memory_mb: number | null;
  pool_daily: Record<string, number>;
  /** Fair-share weight in dispatch; null: the tier's. */
  weight: number | null;
}

export async function findQuotaOverrides(db: D1Database, clientId: string): Promise<QuotaOverrides | null> {
  const row = await db.prepare("SELECT max_concurrent, cpu_millicores, memory_mb, pool_daily, weight FROM client_quotas WHERE client_id = ?1").bind(clientId)
    .first<{ max_concurrent: number | null; cpu_millicores: number | null; memory_mb: number | null; pool_daily: string; weight: number | null }>();
  return row ? { ...row, pool_daily: JSON.parse(row.pool_daily) as Record<string, number> } : null;
}

export async function putQuotaOverrides(db: D1Database, clientId: string, q: QuotaOverrides, now = Date.now()): Promise<void> {
  await db
    .prepare(
      `INSERT INTO client_quotas (client_id, max_concurrent, cpu_millicores, memory_mb, pool_daily, weight, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
       ON CONFLICT (client_id) DO UPDATE SET max_concurrent = excluded.max_concurrent, cpu_millicores = excluded.cpu_millicores,
         memory_mb = excluded.memory_mb, pool_daily = excluded.pool_daily, weight = excluded.weight, updated_at = excluded.updated_at`,
    )
    .bind(clientId, q.max_concurrent, q.cpu_millicores, q.memory_mb, JSON.stringify(q.pool_daily), q.weight, now)
    .run();
}
