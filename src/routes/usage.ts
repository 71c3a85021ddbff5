import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { dayKey, daysInclusive, monthStart, parseDay, parseMonth } from "../domain/calendar";
import type { RequestStatus } from "../objects/scheduler/types";
import { AppError } from "../errors";
import { authenticate, requireScope } from "../http/auth";
import type { AppEnv, Principal } from "../http/context";
import { errorResponses } from "../http/errors";
import { clientBudget } from "../services/budget";
import { clientTier, poolConfig, tierLimits } from "../storage/config";
import { countsFor } from "../services/scheduler";
import { usageHistory, type Granularity, type UsageSum } from "../storage/usage";
import { BudgetFields, ClientId, Nano, PoolId, TraceId } from "./schemas";

/** The longest history one call may ask for, in days (a leap year). */
export const MAX_RANGE_DAYS = 366;
const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 500;

const Day = z
  .string()
  .refine((s) => parseDay(s) !== null, "a calendar day YYYY-MM-DD (UTC), 1970 or later")
  .openapi({ example: "2026-11-01" });

const UsageParams = z.object({
  clientId: ClientId.openapi({ param: { name: "clientId", in: "path" } }),
});

const UsageQuery = z
  .object({
    from: Day.optional().openapi({ description: "First day, included. Default: the first day of `to`'s month" }),
    to: Day.optional().openapi({ description: "Last day, included. Default: today (UTC)" }),
    granularity: z.enum(["day", "month"]).default("day").openapi({ description: "One period per UTC day or per UTC month" }),
    pool: PoolId.optional().openapi({ description: "Only this pool" }),
    limit: z.coerce.number().int().min(1).max(MAX_LIMIT).default(DEFAULT_LIMIT).openapi({ description: `Periods per page, 1-${MAX_LIMIT}` }),
    cursor: z.string().min(1).max(200).optional().openapi({ description: "next_cursor of the previous page" }),
  })
  .strict();

const PoolUsage = z.object({ pool: z.string(), units: z.number().int(), cost_nano: Nano, events: z.number().int() });
const UsageHistory = z
  .object({
    client_id: z.string(),
    from: z.string(),
    to: z.string(),
    granularity: z.enum(["day", "month"]),
    periods: z.array(z.object({
      period: z.string().openapi({ description: "'YYYY-MM-DD' or 'YYYY-MM' (UTC); a month counts only its days inside from..to" }),
      pools: z.array(PoolUsage),
      units: z.number().int().openapi({ description: "Units of every pool added up: meaningful with a pool filter" }),
      cost_nano: Nano,
      events: z.number().int(),
    })),
    totals: z.object({
      cost_nano: Nano,
      events: z.number().int(),
      units_by_pool: z.record(z.string(), z.number().int()),
      cost_by_pool: z.record(z.string(), Nano),
    }).openapi({ description: "Over the whole range, whatever the page" }),
    next_cursor: z.string().nullable(),
    trace_id: TraceId,
  })
  .openapi("UsageHistory");

const STATUSES = ["queued", "dispatching", "running", "completed", "failed", "cancelled", "expired"] as const satisfies readonly RequestStatus[];

const CurrentUsage = z
  .object({
    ...BudgetFields,
    concurrency_in_use: z.number().int().openapi({ description: "The client's requests running now" }),
    concurrency_limit: z.number().int().openapi({ description: "Its tier's max_concurrent" }),
    requests_by_status: z.object(Object.fromEntries(STATUSES.map((s) => [s, z.number().int()])) as Record<(typeof STATUSES)[number], z.ZodNumber>)
      .openapi({ description: "The client's requests created this month, by status" }),
    trace_id: TraceId,
  })
  .openapi("CurrentUsage");

function invalidQuery(path: string, message: string): AppError {
  return new AppError("validation_failed", "invalid query", { fields: [{ path: `query.${path}`, message }] });
}

/** The days a history covers: defaults filled in from `now`, then checked together. */
function rangeOf(query: { from?: string; to?: string }, now: number): { from: string; to: string } {
  const to = query.to ?? dayKey(now);
  const from = query.from ?? dayKey(monthStart(parseDay(to)!));
  const days = daysInclusive(from, to);
  if (days < 1) throw invalidQuery("to", `must not be before from (${from})`);
  if (days > MAX_RANGE_DAYS) throw invalidQuery("to", `the range covers ${days} days; at most ${MAX_RANGE_DAYS}`);
  return { from, to };
}

/** Cursors are opaque to callers: the last period of the previous page, encoded. */
function encodeCursor(period: string): string {
  return btoa(JSON.stringify({ after: period })).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function decodeCursor(cursor: string, granularity: Granularity): string {
  try {
    const { after } = JSON.parse(atob(cursor.replace(/-/g, "+").replace(/_/g, "/"))) as { after?: unknown };
    const valid = typeof after === "string" && (granularity === "day" ? parseDay(after) : parseMonth(after)) !== null;
    if (valid) return after;
  } catch {
    // Not base64 or not JSON: the same answer as any other cursor this listing did not make.
  }
  throw invalidQuery("cursor", `not a cursor of a ${granularity} listing`);
}

/** A key reads its own client only; operators and platform workers read any client that exists. */
async function checkReader(env: Env, principal: Principal, clientId: string): Promise<void> {
  if (principal.kind === "client" && principal.clientId !== clientId) {
    throw new AppError("forbidden", "an API key may read only its own client's usage", { client_id: clientId });
  }
  if (!(await clientTier(env, clientId))) throw new AppError("client_not_found", `no client ${clientId}`, { client_id: clientId });
}

/** A sum across pools; past 2^53 it would no longer be exact, so it is refused rather than rounded. */
function exactSum(values: number[]): number {
  const total = values.reduce((sum, v) => sum + v, 0);
  if (!Number.isSafeInteger(total)) throw new RangeError(`usage sum not exact: ${total}`);
  return total;
}

function periodsOf(rows: UsageSum[]) {
  const periods: Array<{ period: string; pools: z.infer<typeof PoolUsage>[]; units: number; cost_nano: number; events: number }> = [];
  for (const r of rows) {
    if (periods.at(-1)?.period !== r.period) periods.push({ period: r.period, pools: [], units: 0, cost_nano: 0, events: 0 });
    const p = periods.at(-1)!;
    p.pools.push({ pool: r.pool_id, units: r.units, cost_nano: r.cost_nano, events: r.events });
    p.units = exactSum([p.units, r.units]);
    p.cost_nano = exactSum([p.cost_nano, r.cost_nano]);
    p.events = exactSum([p.events, r.events]);
  }
  return periods;
}

export const usageRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get", path: "/api/usage/{clientId}", tags: ["usage"], security: [{ bearer: [] }],
      summary: "Usage history of a client: units, cost and events per period and pool, with totals",
      description: "Read from the daily rollups (UTC days). Periods without usage are left out. Pages hold `limit` periods, oldest first; the totals cover the whole range on every page.",
      middleware: [authenticate("client", "admin", "internal"), requireScope("usage:read")],
      request: { params: UsageParams, query: UsageQuery },
      responses: {
        200: { description: "One page of periods and the totals of the range.", content: { "application/json": { schema: UsageHistory } } },
        ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_not_found", "pool_not_found"),
      },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      const query = c.req.valid("query");
      const { from, to } = rangeOf(query, Date.now());
      const after = query.cursor === undefined ? null : decodeCursor(query.cursor, query.granularity);
      await checkReader(c.env, c.var.principal, clientId);
      if (query.pool !== undefined) await poolConfig(c.env, query.pool);

      const filter = { clientId, fromDay: from, toDay: to, poolId: query.pool ?? null };
      const { rows, more, totals } = await usageHistory(c.env.DB, filter, query.granularity, after, query.limit);
      const periods = periodsOf(rows);
      return c.json({
        client_id: clientId,
        from,
        to,
        granularity: query.granularity,
        periods,
        totals: {
          cost_nano: exactSum(totals.map((t) => t.cost_nano)),
          events: exactSum(totals.map((t) => t.events)),
          units_by_pool: Object.fromEntries(totals.map((t) => [t.pool_id, t.units])),
          cost_by_pool: Object.fromEntries(totals.map((t) => [t.pool_id, t.cost_nano])),
        },
        next_cursor: more ? encodeCursor(periods.at(-1)!.period) : null,
        trace_id: c.var.traceId,
      }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/api/usage/{clientId}/current", tags: ["usage"], security: [{ bearer: [] }],
      summary: "This month so far: spend, budget, remaining, money in flight, requests by status, concurrency in use",
      description: "Read from the client's object, the one owner of its budget: exact at the moment of the call. Spend starts again at 0 at `resets_at`.",
      middleware: [authenticate("client", "admin", "internal"), requireScope("usage:read")],
      request: { params: UsageParams },
      responses: {
        200: { description: "The client's month.", content: { "application/json": { schema: CurrentUsage } } },
        ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_not_found"),
      },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      await checkReader(c.env, c.var.principal, clientId);
      const [budget, client, tiers] = await Promise.all([clientBudget(c.env, clientId), clientTier(c.env, clientId), tierLimits(c.env)]);
      const counts = await countsFor(c.env, clientId, parseMonth(budget.month)!);
      return c.json({
        client_id: clientId,
        ...budget,
        concurrency_limit: tiers.get(client!.tier)?.max_concurrent ?? 1,
        requests_by_status: Object.fromEntries(STATUSES.map((s) => [s, counts[s] ?? 0])) as Record<(typeof STATUSES)[number], number>,
        trace_id: c.var.traceId,
      }, 200);
    },
  );
