import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Scope } from "../domain/scopes";
import { TIERS } from "../domain/types";
import { AppError } from "../errors";
import { authenticate, requireScope } from "../http/auth";
import type { AppEnv, Principal } from "../http/context";
import { errorResponses, validationError } from "../http/errors";
import { listBurstSessions } from "../storage/quotas";
import { burstStatus, checkQuota, decideBurst, endBurst, getBurstPolicies, getQuota, requestBurst, requireQuota, setBurstPolicy, setQuota } from "../services/quotas";
import { ClientId, PoolId, TraceId } from "./schemas";

const MAX_UNITS = 1_000_000_000_000;
const BURST_STATES = ["pending", "denied", "active", "ended", "expired"] as const;

const Limits = z.object({
  max_concurrent: z.number().int().openapi({ description: "Jobs at once: running requests + active allocations" }),
  cpu_millicores: z.number().int().nullable().openapi({ description: "CPU of compute work (allocations); null: no limit" }),
  memory_mb: z.number().int().nullable().openapi({ description: "Memory of compute work (allocations); null: no limit" }),
  pool_daily: z.record(z.string(), z.number().int()).openapi({ description: "Units per UTC day per pool; pools not named have no cap" }),
});

const BurstSessionView = z
  .object({
    id: z.string().openapi({ example: "bst_5d0c..." }),
    client_id: z.string(),
    state: z.enum(BURST_STATES),
    percent: z.number().int().openapi({ description: "Limits while active, in percent of the quota" }),
    duration_ms: z.number().int(),
    reason: z.string().nullable(),
    requested_at: z.number().int(),
    decided_at: z.number().int().nullable(),
    started_at: z.number().int().nullable(),
    ends_at: z.number().int().nullable(),
    ended_at: z.number().int().nullable(),
    updated_at: z.number().int(),
  })
  .openapi("BurstSession");

const QuotaView = z
  .object({
    client_id: z.string(),
    day: z.string().openapi({ description: "The UTC day the per-pool figures are for, 'YYYY-MM-DD'" }),
    quota: Limits.openapi({ description: "The configured quota: operator overrides, else the tier's concurrency and no other limits" }),
    effective: Limits.openapi({ description: "What applies now: the quota raised by an active burst (daily caps are never raised)" }),
    weight: z.number().int().openapi({ description: "Fair-share weight in dispatch: among requests the priority formula leaves equal, clients are served in proportion to their weights" }),
    weight_source: z.enum(["tier", "client"]).openapi({ description: "tier: the tier's weight (enterprise 4, premium 3, standard 2, basic 1); client: set by an operator" }),
    burst: BurstSessionView.nullable(),
    usage: z.object({
      active_jobs: z.number().int(),
      running_requests: z.number().int(),
      active_allocations: z.number().int(),
      leased_slots: z.number().int().openapi({
        description: "Slots lent to scheduler shards in blocks (counted in active_jobs): a shard draining a backlog admits this client's requests against its block, so requests running on them are not in running_requests. Lent only from plenty (a block leaves the client four times its size free, and at least 256 slots) and only to clients with no daily cap per pool; given back when the shard's queue empties",
      }),
      cpu_millicores: z.number().int(),
      memory_mb: z.number().int(),
      pools_today: z.array(z.object({
        pool: z.string(),
        used: z.number().int().openapi({ description: "Units spent today plus units held by running requests" }),
        cap: z.number().int().nullable(),
        available: z.number().int().nullable(),
      })),
    }),
    trace_id: TraceId,
  })
  .openapi("ClientQuota");

const SetQuota = z
  .object({
    max_concurrent: z.number().int().min(1).max(100_000).nullable().openapi({ description: "null: the tier's" }),
    cpu_millicores: z.number().int().min(1).max(100_000_000).nullable().openapi({ description: "null: no limit" }),
    memory_mb: z.number().int().min(1).max(100_000_000).nullable().openapi({ description: "null: no limit" }),
    pool_daily: z.record(PoolId, z.number().int().min(0).max(MAX_UNITS)).default({}).openapi({ description: "Units per UTC day per pool" }),
    weight: z.number().int().min(1).max(1000).nullable().default(null).openapi({ description: "Fair-share weight in dispatch; null: the tier's" }),
  })
  .strict()
  .openapi("SetQuota", { description: "The whole quota (a PUT replaces it); null fields take the default" });

const QuotaCheck = z
  .object({
    template: z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/, "a template id").optional().openapi({ description: "A request of this template (its pool amounts)" }),
    cpu_millicores: z.number().int().min(0).max(100_000_000).optional().openapi({ description: "Compute work: CPU it needs" }),
    memory_mb: z.number().int().min(0).max(100_000_000).optional(),
    pools: z.record(PoolId, z.number().int().min(1).max(MAX_UNITS)).optional().openapi({ description: "Units per pool, beside (or instead of) a template's" }),
  })
  .strict()
  .refine((v) => v.template !== undefined || v.cpu_millicores !== undefined || v.memory_mb !== undefined || v.pools !== undefined, {
    message: "describe the job: template, cpu_millicores, memory_mb or pools", path: [],
  })
  .openapi("QuotaCheck");

const QuotaCheckResult = z
  .object({
    client_id: z.string(),
    fits: z.boolean(),
    job: z.object({ kind: z.string(), cpu_millicores: z.number().int(), memory_mb: z.number().int(), pools: z.record(z.string(), z.number().int()) }),
    limit: z.enum(["concurrent", "cpu", "memory", "pool_daily"]).nullable().openapi({ description: "The first limit the job breaks; null when it fits" }),
    pool: z.string().nullable(),
    limit_value: z.number().int().nullable(),
    in_use: z.number().int().nullable(),
    requested: z.number().int().nullable(),
    shortfall: z.number().int().nullable().openapi({ description: "How far over the limit the job would go" }),
    trace_id: TraceId,
  })
  .openapi("QuotaCheckResult");

const BurstAskBody = z
  .object({
    percent: z.number().int().min(101).max(1000).optional().openapi({ description: "Limits while active, percent of the quota. Default: the policy's maximum", example: 150 }),
    duration_ms: z.number().int().min(1000).max(7 * 24 * 3600 * 1000).optional().openapi({ description: "Default: the policy's maximum", example: 3_600_000 }),
    reason: z.string().min(1).max(500).optional(),
  })
  .strict()
  .openapi("BurstRequest");

const BurstPolicyView = z
  .object({
    tier: z.enum(TIERS),
    allowed: z.boolean(),
    max_percent: z.number().int(),
    max_duration_ms: z.number().int(),
    cooldown_ms: z.number().int().openapi({ description: "At least this long between the end of one session and the start of the next" }),
    max_per_day: z.number().int().openapi({ description: "Sessions (not denied) per rolling 24 hours" }),
    requires_approval: z.boolean(),
  })
  .openapi("BurstPolicy");

const SetBurstPolicy = z
  .object({
    allowed: z.boolean(),
    max_percent: z.number().int().min(100).max(1000),
    max_duration_ms: z.number().int().min(1000).max(7 * 24 * 3600 * 1000),
    cooldown_ms: z.number().int().min(0).max(30 * 24 * 3600 * 1000),
    max_per_day: z.number().int().min(1).max(1000),
    requires_approval: z.boolean(),
  })
  .strict()
  .openapi("SetBurstPolicy");

const BurstStatus = z
  .object({
    client_id: z.string(),
    active: BurstSessionView.nullable(),
    pending: BurstSessionView.nullable(),
    policy: BurstPolicyView,
    sessions: z.array(BurstSessionView).openapi({ description: "The latest 50 sessions, newest first" }),
    trace_id: TraceId,
  })
  .openapi("BurstStatus");

const OneBurst = z.object({ burst: BurstSessionView, trace_id: TraceId }).openapi("BurstResponse");

const ClientParams = z.object({ clientId: ClientId.openapi({ param: { name: "clientId", in: "path" } }) });
const BurstParams = z.object({ burstId: z.string().regex(/^bst_[a-f0-9]{32}$/, "a burst id (bst_...)").openapi({ param: { name: "burstId", in: "path" } }) });
const TierParams = z.object({ tier: z.enum(TIERS).openapi({ param: { name: "tier", in: "path" } }) });

const ok = <T extends z.ZodType>(description: string, schema: T) => ({ description, content: { "application/json": { schema } } });
const json = <T extends z.ZodType>(schema: T) => ({ content: { "application/json": { schema } }, required: true });
const adminOnly = { tags: ["clients"], security: [{ bearer: [] }], middleware: [authenticate("admin")] };
const forClient = (scope: Scope) => ({ tags: ["clients"], security: [{ bearer: [] }], middleware: [authenticate("client", "admin"), requireScope(scope)] });

/** A key acts for its own client only; the admin token for any. */
function ownClient(principal: Principal, clientId: string): void {
  if (principal.kind === "client" && principal.clientId !== clientId) {
    throw new AppError("forbidden", "an API key may act only for its own client", { client_id: clientId });
  }
}

export const quotaRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get", path: "/api/clients/{clientId}/quota", ...forClient("quota:read"),
      summary: "A client's quota, what applies now (with a burst), and its current use: jobs, CPU, memory, units per pool today",
      request: { params: ClientParams },
      responses: { 200: ok("The quota with current use.", QuotaView), ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_suspended", "client_not_found") },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      ownClient(c.var.principal, clientId);
      return c.json({ ...(await getQuota(c.env, clientId)), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/api/clients/{clientId}/quota/check", ...forClient("quota:read"),
      summary: "Would this job fit the client's quota now; if not, which limit and by how much (holds nothing)",
      request: { params: ClientParams, body: json(QuotaCheck) },
      responses: {
        200: ok("The answer: fits, or the limit it breaks and by how much.", QuotaCheckResult),
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "client_suspended", "client_not_found", "template_not_found", "pool_not_found"),
      },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      ownClient(c.var.principal, clientId);
      const { decision, job } = await checkQuota(c.env, clientId, c.req.valid("json"));
      const s = decision.ok ? null : decision.shortfall;
      return c.json({
        client_id: clientId, fits: decision.ok, job,
        limit: s?.limit ?? null, pool: s?.pool ?? null, limit_value: s?.limit_value ?? null, in_use: s?.in_use ?? null,
        requested: s?.requested ?? null, shortfall: s?.shortfall ?? null, trace_id: c.var.traceId,
      }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "put", path: "/admin/clients/{clientId}/quota", ...adminOnly,
      summary: "Set a client's quota (the whole of it): concurrent jobs, CPU, memory, units per pool per day",
      request: { params: ClientParams, body: json(SetQuota) },
      responses: {
        200: ok("The quota as it applies now, with current use.", QuotaView),
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "client_not_found", "pool_not_found"),
      },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      const body = c.req.valid("json");
      const view = await setQuota(c.env, clientId, body);
      c.var.logger.info("quota_set", { client_id: clientId, ...body });
      return c.json({ ...view, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/clients/{clientId}/quota", ...adminOnly,
      summary: "A client's quota with current use (as GET /api/clients/{clientId}/quota)",
      request: { params: ClientParams },
      responses: { 200: ok("The quota with current use.", QuotaView), ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_not_found") },
    }),
    async (c) => c.json({ ...(await getQuota(c.env, c.req.valid("param").clientId)), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "post", path: "/api/clients/{clientId}/burst", ...forClient("burst"),
      summary: "Ask to burst above quota: active at once, or pending an operator's approval when the tier's policy says so",
      request: { params: ClientParams, body: { content: { "application/json": { schema: BurstAskBody } }, required: false } },
      responses: {
        201: ok("The session (active or pending).", OneBurst),
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "client_suspended", "client_not_found", "burst_not_allowed", "burst_state"),
      },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      ownClient(c.var.principal, clientId);
      const text = await c.req.text();
      const parsed = BurstAskBody.safeParse(text.trim() === "" ? {} : safeJson(text));
      if (!parsed.success) throw validationError(parsed.error, "json");
      await requireQuota(c.env, clientId);
      const burst = await requestBurst(c.env, clientId, parsed.data);
      return c.json({ burst, trace_id: c.var.traceId }, 201);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/api/clients/{clientId}/burst", ...forClient("burst"),
      summary: "The client's burst: active and pending sessions, its tier's policy, recent sessions",
      request: { params: ClientParams },
      responses: { 200: ok("Burst status.", BurstStatus), ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_suspended", "client_not_found") },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      ownClient(c.var.principal, clientId);
      return c.json({ ...(await burstStatus(c.env, clientId)), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete", path: "/api/clients/{clientId}/burst", ...forClient("burst"),
      summary: "End the active burst now (work admitted under it finishes), or withdraw a pending one",
      request: { params: ClientParams },
      responses: { 200: ok("The session, ended.", OneBurst), ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_suspended", "client_not_found", "burst_not_found") },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      ownClient(c.var.principal, clientId);
      return c.json({ burst: await endBurst(c.env, clientId), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/bursts", ...adminOnly,
      summary: "Burst sessions across clients, newest first (e.g. state=pending: waiting for approval)",
      request: {
        query: z.object({
          state: z.enum(BURST_STATES).optional(),
          client_id: ClientId.optional(),
          limit: z.coerce.number().int().min(1).max(200).default(50),
        }).strict(),
      },
      responses: { 200: ok("Sessions.", z.object({ bursts: z.array(BurstSessionView), trace_id: TraceId }).openapi("BurstList")), ...errorResponses("validation_failed", "unauthorized", "forbidden") },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const bursts = await listBurstSessions(c.env.DB, { state: q.state, clientId: q.client_id, limit: q.limit });
      return c.json({ bursts, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/admin/bursts/{burstId}/approve", ...adminOnly,
      summary: "Approve a pending burst: it starts now and lasts its duration",
      request: { params: BurstParams },
      responses: { 200: ok("The session, active.", OneBurst), ...errorResponses("validation_failed", "unauthorized", "forbidden", "burst_not_found", "burst_state") },
    }),
    async (c) => {
      const burst = await decideBurst(c.env, c.req.valid("param").burstId, true);
      c.var.logger.info("burst_approved", { burst_id: burst.id, client_id: burst.client_id });
      return c.json({ burst, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/admin/bursts/{burstId}/deny", ...adminOnly,
      summary: "Deny a pending burst",
      request: { params: BurstParams },
      responses: { 200: ok("The session, denied.", OneBurst), ...errorResponses("validation_failed", "unauthorized", "forbidden", "burst_not_found", "burst_state") },
    }),
    async (c) => {
      const burst = await decideBurst(c.env, c.req.valid("param").burstId, false);
      c.var.logger.info("burst_denied", { burst_id: burst.id, client_id: burst.client_id });
      return c.json({ burst, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/burst-policies", ...adminOnly, summary: "Burst policy of every tier",
      responses: { 200: ok("Policies.", z.object({ policies: z.array(BurstPolicyView), trace_id: TraceId }).openapi("BurstPolicies")), ...errorResponses("unauthorized", "forbidden") },
    }),
    async (c) => c.json({ policies: await getBurstPolicies(c.env), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "put", path: "/admin/burst-policies/{tier}", ...adminOnly,
      summary: "Set a tier's burst policy: who may burst, how far, how long, how often, and whether approval is needed",
      request: { params: TierParams, body: json(SetBurstPolicy) },
      responses: { 200: ok("The policy.", z.object({ policy: BurstPolicyView, trace_id: TraceId }).openapi("BurstPolicyResponse")), ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden") },
    }),
    async (c) => {
      const { tier } = c.req.valid("param");
      const policy = await setBurstPolicy(c.env, tier, c.req.valid("json"));
      c.var.logger.info("burst_policy_set", { ...policy });
      return c.json({ policy, trace_id: c.var.traceId }, 200);
    },
  );

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new AppError("bad_request", "the body is not valid JSON");
  }
}
