import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { dayKey, monthStart, parseDay } from "../domain/calendar";
import { toCsv, type CsvCell } from "../domain/csv";
import { formatUsd } from "../domain/money";
import { bucketIndex, dayRangeProblem, periodOfStart, PERIODS, timeBuckets, type Period } from "../domain/periods";
import { TIERS } from "../domain/types";
import { AppError } from "../errors";
import { authenticate } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { poolConfigs } from "../storage/config";
import { SAMPLE_RETENTION_MS, sampleBuckets } from "../storage/pool-samples";
import { costRows, usageRows, type CostGroup, type DayRange } from "../storage/reports";
import { Nano, PoolId, TraceId } from "./schemas";

/** The longest range per period, in days: a year of days, two of weeks, three of months. */
export const MAX_REPORT_DAYS: Record<Period, number> = { day: 366, week: 731, month: 1096 };
/** Rows one report may hold; a larger one is refused (narrow the range or use a longer period). */
export const MAX_REPORT_ROWS = 50_000;
/** Utilization history: samples are taken once a minute and kept as long as SAMPLE_RETENTION_MS. */
export const MIN_STEP_MS = 60_000;
export const MAX_BUCKETS = 2_000;
const HOUR_MS = 3_600_000;

const Day = z.string().refine((s) => parseDay(s) !== null, "a calendar day YYYY-MM-DD (UTC), 1970 or later").openapi({ example: "2026-11-01" });
const EpochMs = z.coerce.number().int().min(0).max(8_640_000_000_000);

const RangeFields = {
  from: Day.optional().openapi({ description: "First day, included. Default: the first day of `to`'s month" }),
  to: Day.optional().openapi({ description: "Last day, included. Default: today (UTC)" }),
  format: z.enum(["json", "csv"]).default("json").openapi({ description: "csv: a download with a header row" }),
};

const CostQuery = z
  .object({
    group_by: z.enum(["client", "pool", "template"]).default("client"),
    period: z.enum(PERIODS).default("day").openapi({ description: "UTC day, ISO week (Monday to Sunday, labelled YYYY-Www) or month" }),
    ...RangeFields,
  })
  .strict();

const UsageQuery = z
  .object({
    pool: PoolId.optional().openapi({ description: "Only this pool" }),
    tier: z.enum(TIERS).optional().openapi({ description: "Only clients of this tier (their tier now)" }),
    step: z.enum(PERIODS).default("day"),
    ...RangeFields,
  })
  .strict();

const UtilizationQuery = z
  .object({
    pool: PoolId.optional().openapi({ description: "Only this pool; default every pool" }),
    from: EpochMs.optional().openapi({ description: "Epoch ms, included. Default: `to` - 24 h" }),
    to: EpochMs.optional().openapi({ description: "Epoch ms, excluded. Default: now" }),
    step_ms: z.coerce.number().int().min(MIN_STEP_MS).max(SAMPLE_RETENTION_MS).default(HOUR_MS)
      .openapi({ description: `Bucket width, at least ${MIN_STEP_MS} (samples are taken once a minute). Default 1 h` }),
  })
  .strict();

const Usd = z.string().openapi({ description: "The same amount in US dollars, formatted from the integer", example: "$1.25" });
const PeriodFields = {
  period: z.string().openapi({ description: "'YYYY-MM-DD', 'YYYY-Www' or 'YYYY-MM'", example: "2026-W48" }),
  period_start: z.string().openapi({ description: "First day of the period; a period counts only its days inside from..to" }),
};

const CostReport = z
  .object({
    group_by: z.enum(["client", "pool", "template"]),
    period: z.enum(PERIODS),
    from: z.string(),
    to: z.string(),
    count_of: z.enum(["usage_events", "requests"]),
    rows: z.array(z.object({
      ...PeriodFields,
      key: z.string().openapi({ description: "The client, pool or template id" }),
      units: z.number().int().nullable().openapi({ description: "By pool only" }),
      count: z.number().int(),
      cost_nano: Nano,
      cost_usd: Usd,
    })),
    totals: z.object({
      by_key: z.array(z.object({ key: z.string(), units: z.number().int().nullable(), count: z.number().int(), cost_nano: Nano, cost_usd: Usd })),
      count: z.number().int(),
      cost_nano: Nano,
      cost_usd: Usd,
    }),
    trace_id: TraceId,
  })
  .openapi("CostReport");

const UsageReport = z
  .object({
    step: z.enum(PERIODS),
    from: z.string(),
    to: z.string(),
    pool: z.string().nullable(),
    tier: z.string().nullable(),
    rows: z.array(z.object({
      ...PeriodFields,
      pool: z.string(),
      tier: z.string().nullable().openapi({ description: "The clients' tier now; null for usage of clients no longer there" }),
      units: z.number().int(),
      events: z.number().int(),
      cost_nano: Nano,
      cost_usd: Usd,
    })),
    totals: z.object({ events: z.number().int(), cost_nano: Nano, cost_usd: Usd }),
    trace_id: TraceId,
  })
  .openapi("UsageReport");

const UtilizationReport = z
  .object({
    from: z.number().int(),
    to: z.number().int(),
    step_ms: z.number().int(),
    pools: z.array(z.object({
      pool: z.string(),
      buckets: z.array(z.object({
        start: z.number().int(),
        end: z.number().int(),
        samples: z.number().int(),
        utilization: z.number().nullable().openapi({ description: "Mean of 1 - level / capacity over the step's samples, 0-1; null without samples" }),
        level: z.number().nullable().openapi({ description: "Mean level" }),
        min_level: z.number().nullable(),
        capacity: z.number().int().nullable(),
      })),
    })),
    trace_id: TraceId,
  })
  .openapi("UtilizationReport");

function invalidQuery(field: string, message: string): AppError {
  return new AppError("validation_failed", "invalid query", { fields: [{ path: `query.${field}`, message }] });
}

/** The days a report covers: defaults filled in from `now`, then checked together against the period's limit. */
function dayRange(query: { from?: string; to?: string }, period: Period, now: number): DayRange {
  const to = query.to ?? dayKey(now);
  const from = query.from ?? dayKey(monthStart(parseDay(to)!));
  const problem = dayRangeProblem(from, to, MAX_REPORT_DAYS[period]);
  if (problem) throw invalidQuery(problem.field, problem.message);
  return { from, to };
}

/** Refuse a report cut at the row limit rather than answer part of it. */
function checkRows<T>(rows: T[]): T[] {
  if (rows.length > MAX_REPORT_ROWS) {
    throw invalidQuery("from", `the report would hold more than ${MAX_REPORT_ROWS} rows; narrow the range or use a longer period`);
  }
  return rows;
}

function csvResponse(c: Context<AppEnv>, filename: string, header: string[], rows: CsvCell[][]): Response {
  return c.body(toCsv(header, rows), 200, {
    "content-type": "text/csv; charset=utf-8",
    "content-disposition": `attachment; filename="${filename}"`,
    "cache-control": "no-store",
  });
}

const COUNT_COLUMN: Record<CostGroup, "events" | "requests"> = { client: "events", pool: "events", template: "requests" };

const guard = { tags: ["admin"], security: [{ bearer: [] }], middleware: [authenticate("admin")] };
const reportErrors = errorResponses("validation_failed", "unauthorized", "forbidden");
const jsonOrCsv = <T extends z.ZodType>(description: string, schema: T) => ({
  description,
  content: { "application/json": { schema }, "text/csv": { schema: z.string() } },
});

export const reportRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get", path: "/admin/reports/cost", ...guard,
      summary: "Cost by client, pool or template per day, ISO week or month, as JSON or CSV",
      description: "Clients and pools: delivered usage (the daily rollups). Templates: requests by the day they finished, at what they really cost (a request's cost lands when it finishes; failed and cancelled requests count with 0). Money in integer nano-dollars, with USD formatted from the integers.",
      request: { query: CostQuery },
      responses: { 200: jsonOrCsv("One row per period and key, oldest period first, then by key.", CostReport), ...reportErrors },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const range = dayRange(q, q.period, Date.now());
      const rows = checkRows(await costRows(c.env.DB, q.group_by, q.period, range, MAX_REPORT_ROWS + 1))
        .map((r) => ({ ...periodOfStart(r.period_start, q.period), key: r.key, units: r.units, count: r.count, cost_nano: r.cost_nano, cost_usd: formatUsd(r.cost_nano) }));
      if (q.format === "csv") {
        const withUnits = q.group_by === "pool";
        return csvResponse(
          c, `cost-by-${q.group_by}-${q.period}-${range.from}-${range.to}.csv`,
          ["period", "period_start", q.group_by, ...(withUnits ? ["units"] : []), COUNT_COLUMN[q.group_by], "cost_nano", "cost_usd"],
          rows.map((r) => [r.period, r.period_start, r.key, ...(withUnits ? [r.units] : []), r.count, r.cost_nano, r.cost_usd]),
        );
      }
      const byKey = new Map<string, { key: string; units: number | null; count: number; cost_nano: number }>();
      for (const r of rows) {
        const t = byKey.get(r.key) ?? { key: r.key, units: r.units === null ? null : 0, count: 0, cost_nano: 0 };
        t.units = t.units === null || r.units === null ? null : t.units + r.units;
        t.count += r.count;
        t.cost_nano += r.cost_nano;
        byKey.set(r.key, t);
      }
      const totals = [...byKey.values()].sort((a, b) => b.cost_nano - a.cost_nano || (a.key < b.key ? -1 : 1));
      const costNano = totals.reduce((n, t) => n + t.cost_nano, 0);
      return c.json({
        group_by: q.group_by, period: q.period, from: range.from, to: range.to,
        count_of: q.group_by === "template" ? ("requests" as const) : ("usage_events" as const),
        rows,
        totals: {
          by_key: totals.map((t) => ({ ...t, cost_usd: formatUsd(t.cost_nano) })),
          count: totals.reduce((n, t) => n + t.count, 0),
          cost_nano: costNano,
          cost_usd: formatUsd(costNano),
        },
        trace_id: c.var.traceId,
      }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/reports/usage", ...guard,
      summary: "Units, events and cost per pool and client tier over time (day, ISO week or month), as JSON or CSV",
      description: "From the daily rollups, joined with each client's tier as it is now.",
      request: { query: UsageQuery },
      responses: {
        200: jsonOrCsv("One row per period, pool and tier, oldest first.", UsageReport),
        ...errorResponses("validation_failed", "unauthorized", "forbidden", "pool_not_found"),
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const range = dayRange(q, q.step, Date.now());
      if (q.pool && !(await poolConfigs(c.env)).has(q.pool)) throw new AppError("pool_not_found", `no pool named ${q.pool}`, { pool: q.pool });
      const rows = checkRows(await usageRows(c.env.DB, q.step, range, { pool: q.pool ?? null, tier: q.tier ?? null }, MAX_REPORT_ROWS + 1))
        .map((r) => ({ ...periodOfStart(r.period_start, q.step), pool: r.pool, tier: r.tier, units: r.units, events: r.events, cost_nano: r.cost_nano, cost_usd: formatUsd(r.cost_nano) }));
      if (q.format === "csv") {
        return csvResponse(
          c, `usage-${q.step}-${range.from}-${range.to}.csv`,
          ["period", "period_start", "pool", "tier", "units", "events", "cost_nano", "cost_usd"],
          rows.map((r) => [r.period, r.period_start, r.pool, r.tier, r.units, r.events, r.cost_nano, r.cost_usd]),
        );
      }
      const costNano = rows.reduce((n, r) => n + r.cost_nano, 0);
      return c.json({
        step: q.step, from: range.from, to: range.to, pool: q.pool ?? null, tier: q.tier ?? null, rows,
        totals: { events: rows.reduce((n, r) => n + r.events, 0), cost_nano: costNano, cost_usd: formatUsd(costNano) },
        trace_id: c.var.traceId,
      }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/reports/utilization", ...guard,
      summary: "Pool utilization over time: the mean of the minute samples per step",
      description: `Samples are the pools' levels taken by the minute cron and kept ${SAMPLE_RETENTION_MS / 86_400_000} days by default (the \`pool_samples\` retention setting, GET /admin/retention). Steps are counted from \`from\`; the last ends at \`to\`. A step without samples has null figures.`,
      request: { query: UtilizationQuery },
      responses: {
        200: { description: "Every step of the range, per pool.", content: { "application/json": { schema: UtilizationReport } } },
        ...errorResponses("validation_failed", "unauthorized", "forbidden", "pool_not_found"),
      },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const to = q.to ?? Date.now();
      const from = q.from ?? Math.max(0, to - 24 * HOUR_MS);
      if (to <= from) throw invalidQuery("to", `must be after from (${from})`);
      if (to - from > SAMPLE_RETENTION_MS) throw invalidQuery("from", `the range is longer than the ${SAMPLE_RETENTION_MS / 86_400_000} days samples are kept`);
      const buckets = timeBuckets(from, to, q.step_ms);
      if (buckets.length > MAX_BUCKETS) throw invalidQuery("step_ms", `the range holds ${buckets.length} steps of ${q.step_ms} ms; at most ${MAX_BUCKETS}`);
      const configs = await poolConfigs(c.env);
      if (q.pool && !configs.has(q.pool)) throw new AppError("pool_not_found", `no pool named ${q.pool}`, { pool: q.pool });
      const pools = q.pool ? [q.pool] : [...configs.keys()].sort();
      const found = await sampleBuckets(c.env.DB, pools, from, to, q.step_ms);
      const byPool = new Map(pools.map((p) => [p, new Map<number, (typeof found)[number]>()]));
      for (const row of found) byPool.get(row.pool)?.set(row.bucket, row);
      const round = (n: number) => Math.round(n * 10_000) / 10_000;
      return c.json({
        from, to, step_ms: q.step_ms,
        pools: pools.map((pool) => ({
          pool,
          buckets: buckets.map((b) => {
            const s = byPool.get(pool)!.get(bucketIndex(b.start, from, q.step_ms));
            return s
              ? { ...b, samples: s.samples, utilization: round(s.utilization), level: round(s.level), min_level: round(s.min_level), capacity: s.capacity }
              : { ...b, samples: 0, utilization: null, level: null, min_level: null, capacity: null };
          }),
        })),
        trace_id: c.var.traceId,
      }, 200);
    },
  );
