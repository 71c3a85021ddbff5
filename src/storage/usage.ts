/** The usage ledger in D1: append-only, one row per usage event, keyed by event id. */
export interface UsageEvent {
  eventId: string;
  poolId: string;
  clientId: string;
  requestId: string | null;
  via: string;
  kind: "consume" | "reservation";
  units: number;
  costNano: number;
  at: number;
}

const STATEMENTS_PER_BATCH = 100;

/** Insert events; a repeated event id is ignored, so redelivery after a failed flush is harmless. */
export async function insertUsageEvents(db: D1Database, events: UsageEvent[]): Promise<void> {
  const stmt = db.prepare(
    `INSERT INTO usage_events (event_id, pool_id, client_id, request_id, via, kind, units, cost_nano, at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (event_id) DO NOTHING`,
  );
  for (let i = 0; i < events.length; i += STATEMENTS_PER_BATCH) {
    await db.batch(
      events.slice(i, i + STATEMENTS_PER_BATCH).map((e) =>
        stmt.bind(e.eventId, e.poolId, e.clientId, e.requestId, e.via, e.kind, e.units, e.costNano, e.at),
      ),
    );
  }
}

export interface UsageRow {
  event_id: string;
  pool_id: string;
  client_id: string;
  request_id: string | null;
  via: string;
  kind: string;
  units: number;
  cost_nano: number;
  at: number;
}

export async function listUsageEvents(db: D1Database, filter: { poolId?: string; clientId?: string }): Promise<UsageRow[]> {
  const { results } = await db
    .prepare(
      `SELECT * FROM usage_events WHERE (?1 IS NULL OR pool_id = ?1) AND (?2 IS NULL OR client_id = ?2) ORDER BY at, event_id`,
    )
    .bind(filter.poolId ?? null, filter.clientId ?? null)
    .all<UsageRow>();
  return results;
}
