import type { RetentionKind } from "../domain/retention";

/** retention_settings in D1: days per kind of record, as operators set them. */
export interface RetentionRow {
  kind: string;
  days: number;
  updated_at: number;
}

export async function listRetentionRows(db: D1Database): Promise<RetentionRow[]> {
  const { results } = await db.prepare("SELECT kind, days, updated_at FROM retention_settings ORDER BY kind").all<RetentionRow>();
  return results;
}

export async function putRetentionRow(db: D1Database, kind: RetentionKind, days: number, now: number): Promise<RetentionRow> {
  const row = await db
    .prepare(
      `INSERT INTO retention_settings (kind, days, updated_at) VALUES (?1, ?2, ?3)
       ON CONFLICT (kind) DO UPDATE SET days = excluded.days, updated_at = excluded.updated_at
       RETURNING kind, days, updated_at`,
    )
    .bind(kind, days, now)
    .first<RetentionRow>();
  return row!;
}

/**
 * The D1 tables pruned by time: which rows are old (`?1` is the cutoff, epoch ms). Each condition
 * starts with a column an index leads with (migration 0004), so a chunk is found without a scan.
 */
export const PRUNABLE: Record<Exclude<RetentionKind, "requests">, { table: string; old: string }> = {
  // Every ledger row is written in the same D1 batch as its rollup (storage/usage.ts); the EXISTS
  // keeps a row whose day has no rollup at all (a ledger older than rollups), which was never counted.
  usage_events: {
    table: "usage_events",
    old: `at < ?1 AND EXISTS (SELECT 1 FROM usage_daily d WHERE d.client_id = usage_events.client_id
            AND d.pool_id = usage_events.pool_id AND d.day = strftime('%Y-%m-%d', usage_events.at / 1000, 'unixepoch'))`,
  },
  request_log: { table: "request_log", old: "finished_at < ?1" },
  alerts: { table: "alerts", old: "state = 'resolved' AND resolved_at < ?1" },
  optimizer_savings: { table: "optimizer_savings", old: "at < ?1" },
  scaling_events: { table: "scaling_events", old: "at < ?1" },
  pool_samples: { table: "pool_samples", old: "at < ?1" },
  queue_samples: { table: "queue_samples", old: "at < ?1" },
  // Sessions last at most their policy's duration, so the request time stands for the end (and is indexed).
  burst_sessions: { table: "burst_sessions", old: "state IN ('denied', 'ended', 'expired') AND requested_at < ?1" },
};
export type PrunableKind = keyof typeof PRUNABLE;

/** The query that picks a chunk of old rows (also what test/api/retention.test.ts checks the plan of). */
export function chunkQuery(kind: PrunableKind): string {
  const { table, old } = PRUNABLE[kind];
  return `SELECT rowid FROM ${table} WHERE ${old} LIMIT ?2`;
}

/** Delete up to `limit` rows of `kind` older than `cutoff`; answers how many went. */
export async function pruneChunk(db: D1Database, kind: PrunableKind, cutoff: number, limit: number): Promise<number> {
  // Table names and conditions come from the fixed table above, never from input; values are bound.
  const r = await db
    .prepare(`DELETE FROM ${PRUNABLE[kind].table} WHERE rowid IN (${chunkQuery(kind)})`)
    .bind(cutoff, limit)
    .run();
  return r.meta.changes ?? 0;
}
