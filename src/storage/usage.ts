import { dayKey } from "../domain/calendar";

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

/** Events per D1 batch: each batch is two statements over a JSON array (~180 bytes an event), one transaction. */
const EVENTS_PER_BATCH = 1000;

/**
 * Insert events into the ledger and add them to their client, pool and UTC day in `usage_daily`, in one
 * batch (one transaction), so ledger and rollups always agree. The rollup statement runs first and
 * counts only events not yet in the ledger (each id once, however often it repeats in the batch); the
 * ledger insert right after ignores ids it already holds. Redelivery after a failed flush is harmless.
 * Two statements per batch, not two per event: the per-statement cost of D1 is what a busy outbox pays.
 */
export async function insertUsageEvents(db: D1Database, events: UsageEvent[]): Promise<void> {
  // Each row is a positional array (see `row` below): `->> n` reads an array element faster than a key.
  const rollup = db.prepare(
    `INSERT INTO usage_daily (client_id, pool_id, day, units, cost_nano, events)
     SELECT c, p, d, SUM(u), SUM(k), COUNT(*) FROM (
       SELECT j.value ->> 2 AS c, j.value ->> 1 AS p, j.value ->> 9 AS d, j.value ->> 6 AS u, j.value ->> 7 AS k
       FROM json_each(?1) j
       WHERE NOT EXISTS (SELECT 1 FROM usage_events x WHERE x.event_id = j.value ->> 0)
       GROUP BY j.value ->> 0
     ) WHERE true GROUP BY c, p, d
     ON CONFLICT (client_id, pool_id, day) DO UPDATE SET
       units = units + excluded.units, cost_nano = cost_nano + excluded.cost_nano, events = events + excluded.events`,
  );
  const ledger = db.prepare(
    `INSERT INTO usage_events (event_id, pool_id, client_id, request_id, via, kind, units, cost_nano, at)
     SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4,
            j.value ->> 5, j.value ->> 6, j.value ->> 7, j.value ->> 8
     FROM json_each(?1) j WHERE true ON CONFLICT (event_id) DO NOTHING`,
  );
  const row = (e: UsageEvent) => [e.eventId, e.poolId, e.clientId, e.requestId, e.via, e.kind, e.units, e.costNano, e.at, dayKey(e.at)];
  for (let i = 0; i < events.length; i += EVENTS_PER_BATCH) {
    const rows = JSON.stringify(events.slice(i, i + EVENTS_PER_BATCH).map(row));
    await db.batch([rollup.bind(rows), ledger.bind(rows)]);
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

/** Which rollups a usage history reads: one client, a range of UTC days (both included), maybe one pool. */
export interface UsageFilter {
  clientId: string;
  fromDay: string;
  toDay: string;
  poolId: string | null;
}

/** One pool's sums over a period (a 'YYYY-MM-DD' day or a 'YYYY-MM' month) or over the whole range. */
export interface UsageSum {
  period: string;
  pool_id: string;
  units: number;
  cost_nano: number;
  events: number;
}

/** Length of a period key cut from a 'YYYY-MM-DD' day. */
const PERIOD_CHARS = { day: 10, month: 7 } as const;
export type Granularity = keyof typeof PERIOD_CHARS;

/**
 * One page of a usage history and the totals of the whole range, read in one batch so that both see
 * the same rollups. The page holds the per-pool sums of up to `limit` periods after `after` (the last
 * period of the previous page, or null), oldest first; `more` says whether further periods follow.
 * Periods without usage are not listed.
 */
export async function usageHistory(
  db: D1Database, filter: UsageFilter, granularity: Granularity, after: string | null, limit: number,
): Promise<{ rows: UsageSum[]; more: boolean; totals: UsageSum[] }> {
  const chars = PERIOD_CHARS[granularity];
  // One period more than asked tells whether there is a next page.
  const page = db
    .prepare(
      `WITH page AS (
         SELECT DISTINCT substr(day, 1, ?5) AS period FROM usage_daily
         WHERE client_id = ?1 AND day BETWEEN ?2 AND ?3 AND (?4 IS NULL OR pool_id = ?4) AND substr(day, 1, ?5) > ?6
         ORDER BY period LIMIT ?7
       )
       SELECT page.period AS period, d.pool_id AS pool_id, SUM(d.units) AS units, SUM(d.cost_nano) AS cost_nano, SUM(d.events) AS events
       FROM page JOIN usage_daily d ON substr(d.day, 1, ?5) = page.period
       WHERE d.client_id = ?1 AND d.day BETWEEN ?2 AND ?3 AND (?4 IS NULL OR d.pool_id = ?4)
       GROUP BY page.period, d.pool_id ORDER BY page.period, d.pool_id`,
    )
    .bind(filter.clientId, filter.fromDay, filter.toDay, filter.poolId, chars, after ?? "", limit + 1);
  const totals = db
    .prepare(
      `SELECT '' AS period, pool_id, SUM(units) AS units, SUM(cost_nano) AS cost_nano, SUM(events) AS events
       FROM usage_daily WHERE client_id = ?1 AND day BETWEEN ?2 AND ?3 AND (?4 IS NULL OR pool_id = ?4)
       GROUP BY pool_id ORDER BY pool_id`,
    )
    .bind(filter.clientId, filter.fromDay, filter.toDay, filter.poolId);
  const [pageResult, totalsResult] = await db.batch<UsageSum>([page, totals]);
  const rows = safe(pageResult!.results);
  const periods = [...new Set(rows.map((r) => r.period))];
  const more = periods.length > limit;
  return {
    rows: more ? rows.filter((r) => r.period <= periods[limit - 1]!) : rows,
    more,
    totals: safe(totalsResult!.results),
  };
}

/** Sums past 2^53 would come back rounded; refuse them rather than answer a wrong amount of money. */
function safe(rows: UsageSum[]): UsageSum[] {
  for (const r of rows) {
    if (![r.units, r.cost_nano, r.events].every(Number.isSafeInteger)) throw new RangeError(`usage sum not exact for ${r.pool_id} ${r.period}`);
  }
  return rows;
}
