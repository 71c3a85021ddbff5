import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { dayKey, daysInclusive, monthStart, parseDay } from "../domain/calendar";
import { DOWNGRADE_REASONS, QUALITIES, STRATEGIES, type Strategy } from "../domain/optimizer";
import { QUEUES } from "../domain/priority";
import type { Caller } from "../domain/types";
import { AppError } from "../errors";
import { authenticate, requireScope } from "../http/auth";
import type { AppEnv, Principal } from "../http/context";
import { errorResponses } from "../http/errors";
import { compressText } from "../domain/compression";
import { clientTier } from "../storage/config";
import {
  optimizerRecommendations, optimizerSettings, optimizerStats, planRequest, setOptimizerSettings, type RequestPlan,
} from "../services/optimizer";
import { cacheGet } from "../storage/optimizer-cache";
import { callerFor } from "../services/pools";
import { findClientTier } from "../storage/clients";
import { ClientId, Nano, TraceId } from "./schemas";

/** The longest stats range, in days (a leap year), and the recommendations window. */
const MAX_RANGE_DAYS = 366;
const DEFAULT_DAYS = 30;
const MAX_DAYS = 90;

const ClientParams = z.object({ clientId: ClientId.openapi({ param: { name: "clientId", in: "path" } }) });

const Day = z
  .string()
  .refine((s) => parseDay(s) !== null, "a calendar day YYYY-MM-DD (UTC), 1970 or later")
  .openapi({ example: "2026-11-01" });

const Days = z.coerce.number().int().min(1).max(MAX_DAYS)
  .openapi({ description: `The window: this many whole UTC days ending with today (today counts as a whole day), 1-${MAX_DAYS}`, example: DEFAULT_DAYS });

const StrategyName = z.enum(STRATEGIES).openapi({ description: "downgrade, batching, caching, compression or off_peak" });

// --- shapes --------------------------------------------------------------------------------------

const Switches = z
  .object(Object.fromEntries(STRATEGIES.map((s) => [s, z.boolean()])) as Record<Strategy, z.ZodBoolean>)
  .openapi("OptimizerSwitches", { description: "Each strategy: on (true) or off (false)" });

const ClientOptimizer = z
  .object({
    client_id: z.string(),
    strategies: Switches,
    updated_at: z.number().int().nullable().openapi({ description: "Epoch ms of the last change; null: never changed (all on by default)" }),
    trace_id: TraceId,
  })
  .openapi("ClientOptimizer");

const SetSwitches = z
  .object(Object.fromEntries(STRATEGIES.map((s) => [s, z.boolean().optional()])) as Record<Strategy, z.ZodOptional<z.ZodBoolean>>)
  .strict()
  .refine((v) => Object.values(v).some((x) => x !== undefined), { message: `give at least one of ${STRATEGIES.join(", ")}`, path: [] })
  .openapi("SetOptimizerSwitches", { description: "The strategies to turn on (true) or off (false); the others are left as they are", example: { caching: false, off_peak: true } });

const AnalyzeRequest = z
  .object({
    client_id: ClientId.optional().openapi({ description: "Required with the admin or internal token; a client key acts for its own client" }),
    template: z.string().min(1).max(64).optional().openapi({ description: "A proposed request's template; without it, the client's recent traffic is analyzed", example: "content-generate" }),
    params: z.unknown().optional().openapi({ description: "The proposed request's params (any JSON)" }),
    queue: z.enum(QUEUES).optional().openapi({ description: "Default normal" }),
    quality: z.enum(QUALITIES).optional().openapi({ description: "premium: the original model only, never a downgrade; standard: a cheaper alternative is welcome; not given: no preference" }),
    allow_downgrade: z.boolean().optional().openapi({ description: "As on enqueue and execute: false, never the cheaper alternative (default true)" }),
    deadline: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional().openapi({ description: "Epoch ms: a deferred request does not wait for off-peak past it" }),
    days: z.number().int().min(1).max(MAX_DAYS).optional().openapi({ description: `Client analysis: the window in whole UTC days (default ${DEFAULT_DAYS})` }),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.template !== undefined) {
      if (v.days !== undefined) ctx.addIssue({ code: "custom", path: ["days"], message: "only without template (a client analysis)" });
      return;
    }
    for (const k of ["params", "queue", "quality", "allow_downgrade", "deadline"] as const) {
      if (v[k] !== undefined) ctx.addIssue({ code: "custom", path: [k], message: "only with template (a proposed request)" });
    }
  })
  .openapi("AnalyzeRequest");

const StrategyAnalysis = z.object({
  strategy: StrategyName,
  enabled: z.boolean().openapi({ description: "The client's switch for this strategy" }),
  applies: z.boolean(),
  saved_nano: Nano.openapi({ description: "What it would save on this request" }),
  bytes_saved: z.number().int().openapi({ description: "Storage bytes it would save (compression)" }),
  detail: z.string(),
});

const RequestAnalysis = z
  .object({
    template: z.string(),
    queue: z.enum(QUEUES),
    quality: z.enum(QUALITIES).nullable(),
    original_estimate_nano: Nano,
    planned_template: z.string().openapi({ description: "The template it would run: the requested one or its cheaper alternative" }),
    planned_estimate_nano: Nano,
    downgrade_reason: z.enum(DOWNGRADE_REASONS).nullable(),
    not_before: z.number().int().nullable().openapi({ description: "Deferred requests: when it would start (off-peak), epoch ms" }),
    batchable: z.boolean(),
    strategies: z.array(StrategyAnalysis),
    total_saved_nano: Nano,
  })
  .openapi("RequestAnalysis");

const RecommendationItem = z.object({
  kind: z.enum(["downgrade", "caching", "off_peak"]),
  template: z.string().nullable(),
  alternative: z.string().nullable(),
  requests: z.number().int().openapi({ description: "Completed requests in the window this applies to" }),
  share_percent: z.number().openapi({ description: "Their share of the client's completed requests in the window" }),
  window_cost_nano: Nano.openapi({ description: "What they cost" }),
  window_saving_nano: Nano.openapi({ description: "What the recommendation would have saved in the window" }),
  monthly_saving_nano: Nano.openapi({ description: "The window's saving scaled to 30 days, rounded down" }),
  detail: z.string(),
});

const RecommendationFields = {
  days: z.number().int(),
  from_day: z.string(),
  to_day: z.string(),
  window_spend_nano: Nano.openapi({ description: "The client's spend in the window (daily usage rollups)" }),
  completed_requests: z.number().int(),
  recommendations: z.array(RecommendationItem),
  total_monthly_saving_nano: Nano,
};

const RecommendationsBody = z.object({ client_id: z.string(), ...RecommendationFields, trace_id: TraceId }).openapi("OptimizerRecommendations");

const AnalyzeResult = z
  .object({
    client_id: z.string(),
    mode: z.enum(["request", "client"]),
    request: RequestAnalysis.nullable().openapi({ description: "A proposed request's analysis (mode request)" }),
    recommendations: z.object(RecommendationFields).nullable().openapi({ description: "The client's recent traffic (mode client)" }),
    trace_id: TraceId,
  })
  .openapi("AnalyzeResult");

const StatsQuery = z
  .object({
    from: Day.optional().openapi({ description: "First day, included. Default: the first day of `to`'s month" }),
    to: Day.optional().openapi({ description: "Last day, included. Default: today (UTC)" }),
    granularity: z.enum(["day", "month"]).default("day").openapi({ description: "One period per UTC day or per UTC month" }),
  })
  .strict();

const StrategyTotals = z.object({ strategy: StrategyName, requests: z.number().int(), saved_nano: Nano, bytes_saved: z.number().int() });

const OptimizerStats = z
  .object({
    client_id: z.string(),
    from: z.string(),
    to: z.string(),
    granularity: z.enum(["day", "month"]),
    periods: z.array(z.object({ period: z.string(), saved_nano: Nano, bytes_saved: z.number().int(), strategies: z.array(StrategyTotals) }))
      .openapi({ description: "Periods with savings, oldest first" }),
    totals: z.object({ saved_nano: Nano, bytes_saved: z.number().int(), strategies: z.array(StrategyTotals).openapi({ description: "Every strategy, zeros included" }) }),
    requests: z.object({
      downgraded: z.number().int(), batched: z.number().int(), deferred: z.number().int(), cache_hits: z.number().int(), compressed: z.number().int(),
    }),
    cache: z.object({
      hits: z.number().int(),
      executions: z.number().int().openapi({ description: "Completed requests of cacheable templates that were executed (not answered from the cache)" }),
      hit_rate: z.number().nullable().openapi({ description: "hits / (hits + executions), 0-1; null when there were neither" }),
    }),
    trace_id: TraceId,
  })
  .openapi("OptimizerStats");

// --- handlers' helpers ---------------------------------------------------------------------------

function invalidQuery(path: string, message: string): AppError {
  return new AppError("validation_failed", "invalid query", { fields: [{ path: `query.${path}`, message }] });
}

/** A key reads its own client only; operators and platform workers read any client that exists. */
async function readerFor(env: Env, principal: Principal, clientId: string): Promise<Caller> {
  if (principal.kind === "client" && principal.clientId !== clientId) {
    throw new AppError("forbidden", "an API key may read only its own client's optimizer figures", { client_id: clientId });
  }
  const client = await clientTier(env, clientId);
  if (!client) throw new AppError("client_not_found", `no client ${clientId}`, { client_id: clientId });
  return { clientId, tier: client.tier, via: "api" };
}

async function requireClient(env: Env, clientId: string): Promise<void> {
  if (!(await findClientTier(env.DB, clientId))) throw new AppError("client_not_found", `no client ${clientId}`, { client_id: clientId });
}

/** All five strategies for a proposed request: what the plan does, and what caching and compression would add. */
async function analyzeRequest(env: Env, caller: Caller, body: z.infer<typeof AnalyzeRequest>, plan: RequestPlan, original: number, now: number) {
  const { switches } = await optimizerSettings(env, caller.clientId);
  const downgrade = plan.strategies.find((s) => s.strategy === "downgrade");
  const offPeak = plan.strategies.find((s) => s.strategy === "off_peak");
  const hit = plan.cache_key ? await cacheGet(env, plan.cache_key, now) : null;
  const paramsText = JSON.stringify(body.params ?? null);
  const packed = plan.compress_threshold_bytes === null ? null : await compressText(paramsText, plan.compress_threshold_bytes);
  const strategies: Array<z.infer<typeof StrategyAnalysis>> = [
    {
      strategy: "downgrade", enabled: switches.downgrade, applies: downgrade !== undefined, saved_nano: downgrade?.saved_nano ?? 0, bytes_saved: 0,
      detail: downgrade?.detail ?? (switches.downgrade ? "no downgrade: no cheaper alternative, quality premium or allow_downgrade false, or no rule applies (quality, queue, budget, capacity)" : "turned off for this client"),
    },
    {
      strategy: "caching", enabled: switches.caching, applies: hit !== null, saved_nano: hit?.costNano ?? 0, bytes_saved: 0,
      detail: hit ? "a cached result is there: it would be answered at once, at no cost"
        : plan.cache_key ? `no cached result now; an identical request within ${plan.cache_ttl_ms} ms of an execution would be answered from the cache at no cost`
          : switches.caching ? `${plan.template} is not cacheable` : "turned off for this client",
    },
    {
      strategy: "batching", enabled: switches.batching, applies: plan.batchable, saved_nano: 0, bytes_saved: 0,
      detail: plan.batchable ? `sent to the worker together with up to ${plan.batch_size - 1} other waiting requests of ${plan.template}; cost is attributed per request, so money is unchanged`
        : switches.batching ? "batching applies to batchable templates in the batch queue" : "turned off for this client",
    },
    {
      strategy: "compression", enabled: switches.compression, applies: packed?.compressed ?? false, saved_nano: 0, bytes_saved: packed?.bytesSaved ?? 0,
      detail: packed === null ? "turned off for this client"
        : packed.compressed ? `params (${new TextEncoder().encode(paramsText).length} bytes) stored gzip-compressed`
          : `params are ${new TextEncoder().encode(paramsText).length} bytes: stored as they are (compressed only above ${plan.compress_threshold_bytes} bytes, when it makes them smaller)`,
    },
    {
      strategy: "off_peak", enabled: switches.off_peak, applies: offPeak !== undefined, saved_nano: 0, bytes_saved: 0,
      detail: offPeak?.detail ?? (!switches.off_peak ? "turned off for this client"
        : (body.queue ?? "normal") === "deferred" ? "runs now: inside the off-peak window, or its deadline comes first" : "only deferred requests wait for the off-peak window"),
    },
  ];
  return {
    template: body.template!,
    queue: body.queue ?? "normal",
    quality: body.quality ?? null,
    original_estimate_nano: original,
    planned_template: plan.template,
    planned_estimate_nano: plan.estimate.total_cost_nano,
    downgrade_reason: plan.downgrade_reason,
    not_before: plan.not_before,
    batchable: plan.batchable,
    strategies,
    total_saved_nano: strategies.reduce((n, s) => n + s.saved_nano, 0),
  };
}

const json = <T extends z.ZodType>(schema: T) => ({ required: true, content: { "application/json": { schema } } });
const secured = { tags: ["optimizer"], security: [{ bearer: [] }] };

export const optimizeRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "post", path: "/api/optimize/analyze", ...secured,
      summary: "Which optimizer strategies would apply, and what each would save: for a proposed request, or for a client's recent traffic",
      description: "Enqueues nothing and spends nothing. With `template`: the plan the request would follow (downgrade, off-peak, cache, batching, compression) with the nano-dollars each saves. Without: the client's recommendations (as GET /api/optimize/recommendations/{clientId}).",
      middleware: [authenticate("client", "admin", "internal"), requireScope("resources:read")],
      request: { body: json(AnalyzeRequest) },
      responses: {
        200: { description: "The analysis.", content: { "application/json": { schema: AnalyzeResult } } },
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "client_suspended", "client_not_found", "template_not_found", "pool_not_found", "pool_forbidden"),
      },
    }),
    async (c) => {
      const body = c.req.valid("json");
      const caller = await callerFor(c.env, c.var.principal, body.client_id, "api", { allowSuspended: true });
      const now = Date.now();
      if (body.template === undefined) {
        const recommendations = await optimizerRecommendations(c.env, caller, now, body.days ?? DEFAULT_DAYS, c.var.logger);
        return c.json({ client_id: caller.clientId, mode: "client" as const, request: null, recommendations, trace_id: c.var.traceId }, 200);
      }
      const queue = body.queue ?? "normal";
      const plan = await planRequest(c.env, { caller, template: body.template, params: body.params ?? null, queue, quality: body.quality, allowDowngrade: body.allow_downgrade, deadline: body.deadline ?? null, now }, c.var.logger);
      const downgrade = plan.strategies.find((s) => s.strategy === "downgrade");
      const original = plan.estimate.total_cost_nano + (downgrade?.saved_nano ?? 0);
      const request = await analyzeRequest(c.env, caller, body, plan, original, now);
      return c.json({ client_id: caller.clientId, mode: "request" as const, request, recommendations: null, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/api/optimize/stats/{clientId}", ...secured,
      summary: "What the optimizer saved a client: by strategy and period, cache hit rate, requests downgraded, batched, deferred",
      description: "From the savings ledger (one row per request and strategy; cache hits are rows of strategy caching). Periods are UTC days or months within from..to.",
      middleware: [authenticate("client", "admin", "internal"), requireScope("usage:read")],
      request: { params: ClientParams, query: StatsQuery },
      responses: {
        200: { description: "Savings.", content: { "application/json": { schema: OptimizerStats } } },
        ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_not_found"),
      },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      const query = c.req.valid("query");
      const to = query.to ?? dayKey(Date.now());
      const from = query.from ?? dayKey(monthStart(parseDay(to)!));
      const days = daysInclusive(from, to);
      if (days < 1) throw invalidQuery("to", `must not be before from (${from})`);
      if (days > MAX_RANGE_DAYS) throw invalidQuery("to", `the range covers ${days} days; at most ${MAX_RANGE_DAYS}`);
      await readerFor(c.env, c.var.principal, clientId);
      const stats = await optimizerStats(c.env, clientId, from, to, query.granularity);
      return c.json({ client_id: clientId, from, to, granularity: query.granularity, ...stats, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/api/optimize/recommendations/{clientId}", ...secured,
      summary: "Savings a client could make, from its real usage, each with its estimated monthly saving",
      description:
        "From the client's completed requests in the window (request_log) and its spend (usage_daily), at today's prices and configuration. " +
        "downgrade: per template with a cheaper alternative, its spend minus that spend at the alternative's price ratio. " +
        "caching: per cacheable template while the client's caching is off, its spend × the cache hit rate all clients got on it in the window (no item without observed hits; repeated params are not recorded, so nothing is guessed). " +
        "off_peak: normal and batch requests created outside the off-peak window; prices do not vary by hour, so its saving is 0: it moves load, not money. " +
        "Monthly figures: the window's saving × 30 / days, rounded down.",
      middleware: [authenticate("client", "admin", "internal"), requireScope("usage:read")],
      request: { params: ClientParams, query: z.object({ days: Days.default(DEFAULT_DAYS) }).strict() },
      responses: {
        200: { description: "Recommendations.", content: { "application/json": { schema: RecommendationsBody } } },
        ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_not_found"),
      },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      const { days } = c.req.valid("query");
      const caller = await readerFor(c.env, c.var.principal, clientId);
      const body = await optimizerRecommendations(c.env, caller, Date.now(), days, c.var.logger);
      return c.json({ client_id: clientId, ...body, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/clients/{clientId}/optimizer", ...secured, middleware: [authenticate("admin")],
      summary: "A client's optimizer switches (every strategy is on unless turned off)",
      request: { params: ClientParams },
      responses: {
        200: { description: "The switches.", content: { "application/json": { schema: ClientOptimizer } } },
        ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_not_found"),
      },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      await requireClient(c.env, clientId);
      const { switches, updatedAt } = await optimizerSettings(c.env, clientId);
      return c.json({ client_id: clientId, strategies: switches, updated_at: updatedAt, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "put", path: "/admin/clients/{clientId}/optimizer", ...secured, middleware: [authenticate("admin")],
      summary: "Turn a client's optimizer strategies on or off",
      description: "Only the strategies named change. Applies at once in this isolate; other isolates see it within CONFIG_TTL_MS.",
      request: { params: ClientParams, body: json(SetSwitches) },
      responses: {
        200: { description: "The switches as they now are.", content: { "application/json": { schema: ClientOptimizer } } },
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "client_not_found"),
      },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      const body = c.req.valid("json");
      await requireClient(c.env, clientId);
      const changes = Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined)) as Partial<Record<Strategy, boolean>>;
      const { switches, updatedAt } = await setOptimizerSettings(c.env, clientId, changes, Date.now());
      c.var.logger.info("admin_optimizer", { client_id: clientId, changes });
      return c.json({ client_id: clientId, strategies: switches, updated_at: updatedAt, trace_id: c.var.traceId }, 200);
    },
  );
