import { DAY_MS, parseDay } from "../domain/calendar";
import type { Period } from "../domain/periods";

/**
 * The first day ('YYYY-MM-DD') of the period of a 'YYYY-MM-DD' day column, in SQLite: the day, the
 * Monday of its ISO week (strftime %w is 0 on Sunday), or the first of its month. The same rule as
 * domain/periods.ts periodStart; test/api/reports.test.ts holds the two together at week and year edges.
 */
function periodStartSql(day: string, period: Period): string {
  if (period === "day") return day;
  if (period === "month") return `substr(${day}, 1, 7) || '-01'`;
  return `date(${day}, '-' || ((CAST(strftime('%w', ${day}) AS INTEGER) + 6) % 7) || ' days')`;
}

export type CostGroup = "client" | "pool" | "template";

/** One key's cost in one period. `count`: usage events (client, pool) or finished requests (template). */
export interface CostRow {
  period_start: string;
  key: string;
  /** Units: only by pool (units of different pools do not add up). */
  units: number | null;
  count: number;
  cost_nano: number;
}

export interface DayRange {
  /** First and last UTC day, both included. */
  from: string;
  to: string;
}

/**
 * Cost per period and client, pool or template, oldest period first, then by key. Clients and pools
 * read the daily rollups; templates read request_log by the UTC day each request finished (a
 * request's cost lands when it finishes; requests that did not complete cost nothing). At most
 * `limit` rows: the caller asks one more than it accepts, to know the report was cut.
 */
export async function costRows(db: D1Database, group: CostGroup, period: Period, range: DayRange, limit: number): Promise<CostRow[]> {
  const statement = group === "template"
    ? db.prepare(
      `WITH f AS (
         SELECT template, actual_nano, strftime('%Y-%m-%d', finished_at / 1000, 'unixepoch') AS day
         FROM request_log WHERE finished_at >= ?1 AND finished_at < ?2
       )
       SELECT ${periodStartSql("day", period)} AS period_start, template AS key, NULL AS units, COUNT(*) AS count,
              COALESCE(SUM(actual_nano), 0) AS cost_nano
       FROM f GROUP BY period_start, key ORDER BY period_start, key LIMIT ?3`,
    ).bind(parseDay(range.from)!, parseDay(range.to)! + DAY_MS, limit)
    : db.prepare(
      `SELECT ${periodStartSql("day", period)} AS period_start, ${group === "client" ? "client_id" : "pool_id"} AS key,
              ${group === "pool" ? "SUM(units)" : "NULL"} AS units, SUM(events) AS count, SUM(cost_nano) AS cost_nano
       FROM usage_daily WHERE day BETWEEN ?1 AND ?2
       GROUP BY period_start, key ORDER BY period_start, key LIMIT ?3`,
    ).bind(range.from, range.to, limit);
  const { results } = await statement.all<CostRow>();
  return exact(results);
}

/** One pool's usage by the clients of one tier in one period. */
export interface UsageRow {
  period_start: string;
  pool: string;
  /** The client's tier now (usage is not stamped with the tier of its day); null for a client no longer there. */
  tier: string | null;
  units: number;
  events: number;
  cost_nano: number;
}

/** Usage per period, pool and tier from the daily rollups, optionally one pool and one tier; oldest first. */
export async function usageRows(db: D1Database, period: Period, range: DayRange, filter: { pool: string | null; tier: string | null }, limit: number): Promise<UsageRow[]> {
  const { results } = await db
    .prepare(
      `SELECT ${periodStartSql("d.day", period)} AS period_start, d.pool_id AS pool, c.tier AS tier,
              SUM(d.units) AS units, SUM(d.events) AS events, SUM(d.cost_nano) AS cost_nano
       FROM usage_daily d LEFT JOIN clients c ON c.id = d.client_id
       WHERE d.day BETWEEN ?1 AND ?2 AND (?3 IS NULL OR d.pool_id = ?3) AND (?4 IS NULL OR c.tier = ?4)
       GROUP BY period_start, pool, tier ORDER BY period_start, pool, tier LIMIT ?5`,
    )
    .bind(range.from, range.to, filter.pool, filter.tier, limit)
    .all<UsageRow>();
  return exact(results);
}

/** The clients that spent most in these days (delivered usage), most first. */
export async function topSpenders(db: D1Database, range: DayRange, limit: number): Promise<Array<{ client_id: string; cost_nano: number }>> {
  const { results } = await db
    .prepare(
      `SELECT client_id, SUM(cost_nano) AS cost_nano FROM usage_daily WHERE day BETWEEN ?1 AND ?2
       GROUP BY client_id HAVING SUM(cost_nano) > 0 ORDER BY cost_nano DESC, client_id LIMIT ?3`,
    )
    .bind(range.from, range.to, limit)
    .all<{ client_id: string; cost_nano: number }>();
  return results;
}

/** Sums past 2^53 would come back rounded; refuse them rather than report a wrong amount of money. */
function exact<T extends { cost_nano: number; units?: number | null }>(rows: T[]): T[] {
  for (const r of rows) {
    if (!Number.isSafeInteger(r.cost_nano) || (r.units != null && !Number.isSafeInteger(r.units))) {
      throw new RangeError("a report sum is past 2^53 and would not be exact");
    }
  }
  return rows;
}
