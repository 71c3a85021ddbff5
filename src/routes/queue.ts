import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { DOWNGRADE_REASONS, QUALITIES } from "../domain/optimizer";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "../domain/json";
import { QUEUES } from "../domain/priority";
import { AppError } from "../errors";
import { authenticate, requireScope } from "../http/auth";
import type { Context } from "hono";
import type { AppEnv, Principal } from "../http/context";
import { errorResponses, validationError } from "../http/errors";
import { callerFor } from "../services/pools";
import { cancelRequest, enqueueMany, execute, getRequest, positionOf, QUEUE_FULL_RETRY_SEC } from "../services/requests";
import { queueStatus } from "../services/scheduler";
import { idempotencyKey } from "./internal";
import { ClientId, IdempotencyKey, Nano, TraceId } from "./schemas";

const MAX_PARAMS_CHARS = 64 * 1024;

export const RequestSpec = z
  .object({
    template: z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/, "a template id").openapi({ example: "content-generate" }),
    params: z.unknown().optional().superRefine((p, ctx) => {
      if (p === undefined) return;
      // Depth first, before anything serializes it (RPC callers' params never pass the body check).
      if (nestsDeeperThan(p, MAX_JSON_DEPTH - 1)) ctx.addIssue({ code: "custom", message: `at most ${MAX_JSON_DEPTH} levels of objects and arrays, counting the request itself` });
      else if (JSON.stringify(p).length > MAX_PARAMS_CHARS) ctx.addIssue({ code: "custom", message: `at most ${MAX_PARAMS_CHARS} characters of JSON` });
    })
      .openapi({ description: "Passed to the worker as is", example: { prompt: "Write a haiku about rate limits" } }),
    queue: z.enum(QUEUES).optional().openapi({ description: "Default normal" }),
    idempotency_key: IdempotencyKey.optional().openapi({
      description: "Unique per client (or send an Idempotency-Key header): a repeat with the same request returns the first request; with a different one, 409 idempotency_conflict",
    }),
    not_before: z.number().int().min(0).max(8_640_000_000_000).optional().openapi({ description: "Epoch ms; not dispatched before" }),
    max_attempts: z.number().int().min(1).max(10).optional().openapi({ description: "Default: the template's max_attempts (3 as migrations create them)" }),
    quality: z.enum(QUALITIES).optional().openapi({
      description: "standard: the optimizer may run the template's cheaper alternative; premium: never (the original is demanded). Absent: only the queue (batch, deferred), the client's budget use or an exhausted pool may downgrade",
    }),
    allow_downgrade: z.boolean().optional().openapi({
      description: "Default true. false: never run as the template's cheaper alternative, whatever the rule (queue, budget, capacity): the request runs as requested, or is refused (402 budget_exceeded when the budget cannot cover it). With quality standard: 400",
    }),
    deadline: z.number().int().min(0).max(8_640_000_000_000).optional().openapi({ description: "Epoch ms by which it must run: a deferred request does not wait for the off-peak window past it" }),
    client_id: ClientId.optional().openapi({ description: "Required with the admin token" }),
  })
  .strict()
  .openapi("RequestSpec");

const PoolCost = z.object({ pool: z.string(), units: z.number().int(), cost_nano: Nano }).openapi("PoolCost");

const RequestView = z
  .object({
    id: z.string(), client_id: z.string(), template: z.string().openapi({ description: "The template that runs" }),
    downgraded_from: z.string().nullable().openapi({ description: "The template the caller asked for, when the optimizer runs its cheaper alternative (`template`); null when it runs as requested" }),
    downgrade_reason: z.enum(DOWNGRADE_REASONS).nullable().openapi({ description: "Why it was downgraded: quality standard, the batch or deferred queue, the client's budget use above DOWNGRADE_BUDGET_PERCENT, or an exhausted pool; null when not downgraded" }),
    queue: z.enum(QUEUES),
    status: z.enum(["queued", "dispatching", "running", "completed", "failed", "cancelled", "expired"]),
    priority: z.number(), attempts: z.number().int(), max_attempts: z.number().int(), idempotency_key: z.string().nullable(),
    estimate_nano: z.number().int(), actual_nano: z.number().int().nullable(),
    estimate: z.array(PoolCost).openapi({ description: "Per pool: the template's amounts at the prices of enqueue time" }),
    actual: z.array(PoolCost).nullable().openapi({ description: "Per pool: what the request really used; null until it completed" }),
    result: z.unknown(), error: z.string().nullable(),
    created_at: z.number().int(), updated_at: z.number().int(), not_before: z.number().int(),
    started_at: z.number().int().nullable(), finished_at: z.number().int().nullable(), dispatch_seq: z.number().int().nullable(),
    optimizer: z.object({
      requested_template: z.string().openapi({ description: "What the caller asked for; `template` is what runs" }),
      strategies: z.array(z.object({ strategy: z.string(), saved_nano: Nano, detail: z.string() })).openapi({ description: "Strategies applied, each with the nano-dollars it saves" }),
      cached: z.boolean().openapi({ description: "Answered from the result cache, or by an identical request's execution (coalesced): no pool units, no cost" }),
      batch_size: z.number().int().nullable().openapi({ description: "Requests sent to the worker in the same invocation as this one" }),
    }).nullable().openapi({ description: "What the cost optimizer did; null for requests enqueued before it" }),
  })
  .openapi("Request");

const Enqueued = z
  .object({ request: RequestView, duplicate: z.boolean(), position: z.number().int().nullable(), estimated_wait_ms: z.number().nullable(), trace_id: TraceId })
  .openapi("Enqueued");

const BatchResult = z
  .object({
    accepted: z.number().int(),
    rejected: z.number().int(),
    results: z.array(z.object({
      index: z.number().int(), ok: z.boolean(), request: RequestView.optional(), duplicate: z.boolean().optional(),
      position: z.number().int().nullable().optional(), estimated_wait_ms: z.number().nullable().optional(),
      error: z.object({ code: z.string(), message: z.string(), details: z.record(z.string(), z.unknown()).optional() }).optional(),
    })),
    trace_id: TraceId,
  })
  .openapi("BatchEnqueued");

const EnqueueBody = z
  .record(z.string(), z.unknown())
  .openapi("EnqueueBody", { description: "One RequestSpec, or { requests: RequestSpec[] (1..100), client_id? } answered item by item" });

const RequestId = z.object({ requestId: z.string().regex(/^req_[a-f0-9]{32}$/, "a request id (req_...)").openapi({ param: { name: "requestId", in: "path" } }) });

const QueueStatus = z
  .object({
    queues: z.array(z.object({
      queue: z.enum(QUEUES), depth: z.number().int(), ready: z.number().int(), oldest_wait_ms: z.number(),
      wait_p50_ms: z.number(), wait_p95_ms: z.number(), dispatch_rate_per_s: z.number(),
    })),
    scheduler: z.object({ running: z.boolean(), queued: z.number().int(), in_flight: z.number().int(), max_in_flight: z.number().int(), last_pass_at: z.number().nullable(), dispatched_total: z.number().int(), settlements_owed: z.number().int(), shards: z.number().int() }),
    trace_id: TraceId,
  })
  .openapi("QueueStatus");

const Position = z
  .object({
    id: z.string(), status: z.string(), queue: z.enum(QUEUES), position: z.number().int().nullable(), queued_total: z.number().int(),
    priority: z.object({ score: z.number(), tier: z.number(), queue: z.number(), wait: z.number(), fairness: z.number(), starved: z.boolean() }).nullable(),
    estimated_wait_ms: z.number().nullable(), trace_id: TraceId,
  })
  .openapi("Position");

const json = <T extends z.ZodType>(schema: T) => ({ required: true, content: { "application/json": { schema } } });
const guard = {
  tags: ["queue"],
  security: [{ bearer: [] }],
  middleware: [authenticate("client", "admin"), requireScope("execute")],
};
const ok = <T extends z.ZodType>(description: string, schema: T) => ({ description, content: { "application/json": { schema } } });

/** Says at the top of a single request's answer that the optimizer ran the cheaper alternative. */
const DOWNGRADED_FROM = "X-RM-Downgraded-From";
const downgradeHeader = {
  [DOWNGRADED_FROM]: { description: "Only when the request runs as the template's cheaper alternative: the template asked for (the view's `downgraded_from`)", schema: { type: "string" as const } },
};
const okDowngradable = <T extends z.ZodType>(description: string, schema: T) => ({ ...ok(description, schema), headers: downgradeHeader });

function markDowngrade(c: Context<AppEnv>, request: { downgraded_from: string | null }): void {
  if (request.downgraded_from) c.header(DOWNGRADED_FROM, request.downgraded_from);
}

/** The client a request route may see: its own for a key, any for the admin token. */
function scope(p: Principal): string | null {
  return p.kind === "client" ? p.clientId : null;
}

export const queueRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "post", path: "/api/queue/enqueue", ...guard, summary: "Enqueue one request, or up to 100 answered one by one",
      request: { body: json(EnqueueBody) },
      responses: {
        200: ok("Batch: each request accepted or rejected on its own.", BatchResult),
        202: okDowngradable("Queued (or the first request with this idempotency key).", Enqueued),
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "budget_exceeded", "quota_exceeded", "forbidden", "client_suspended", "template_not_found", "pool_not_found", "client_not_found", "idempotency_conflict", "queue_full", "unavailable"),
      },
    }),
    async (c) => {
      const body = c.req.valid("json");
      if (!("requests" in body)) {
        const parsed = RequestSpec.safeParse(body);
        if (!parsed.success) throw validationError(parsed.error, "json");
        const key = idempotencyKey(parsed.data.idempotency_key, c.req.header("idempotency-key"));
        const caller = await callerFor(c.env, c.var.principal, parsed.data.client_id, "api");
        const [result] = await enqueueMany(c.env, caller, [{ ...parsed.data, idempotency_key: key }], c.var.traceId);
        if (!result!.ok) throw AppError.from(result!.error, result!.error.code === "queue_full" ? QUEUE_FULL_RETRY_SEC : undefined);
        markDowngrade(c, result!.value.request);
        return c.json({ ...result!.value, trace_id: c.var.traceId }, 202);
      }
      const batch = z.object({ requests: z.array(z.unknown()).min(1).max(100), client_id: ClientId.optional() }).strict().safeParse(body);
      if (!batch.success) throw validationError(batch.error, "json");
      if (c.req.header("idempotency-key") !== undefined) {
        throw new AppError("validation_failed", "an Idempotency-Key header names one request; give each request of a batch its own idempotency_key", {
          fields: [{ path: "header.idempotency-key", message: "not with a batch" }],
        });
      }
      const caller = await callerFor(c.env, c.var.principal, batch.data.client_id, "api");
      const parsed = batch.data.requests.map((item) => RequestSpec.omit({ client_id: true }).safeParse(item));
      const valid = parsed.flatMap((p, index) => (p.success ? [{ index, spec: p.data }] : []));
      const outcomes = await enqueueMany(c.env, caller, valid.map((v) => v.spec), c.var.traceId);
      const byIndex = new Map(valid.map((v, i) => [v.index, outcomes[i]!]));
      const results = parsed.map((p, index) => {
        if (!p.success) {
          const e = validationError(p.error, "json");
          return { index, ok: false, error: { code: e.code, message: `request ${index}: ${e.message}`, details: e.details } };
        }
        const o = byIndex.get(index)!;
        return o.ok ? { index, ok: true, ...o.value } : { index, ok: false, error: o.error };
      });
      const accepted = results.filter((r) => r.ok).length;
      return c.json({ accepted, rejected: results.length - accepted, results, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/api/queue/status", ...guard, summary: "Per queue: depth, waits, dispatch rate; scheduler state",
      responses: { 200: ok("Queues.", QueueStatus), ...errorResponses("unauthorized", "forbidden") },
    }),
    async (c) => c.json({ ...(await queueStatus(c.env)), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "get", path: "/api/queue/position/{requestId}", ...guard, summary: "Position, priority and estimated wait",
      request: { params: RequestId },
      responses: { 200: ok("Position.", Position), ...errorResponses("validation_failed", "unauthorized", "forbidden", "request_not_found") },
    }),
    async (c) => c.json({ ...(await positionOf(c.env, c.req.valid("param").requestId, scope(c.var.principal))), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "delete", path: "/api/queue/{requestId}", ...guard, summary: "Remove a queued request (409 once it has left the queue)",
      request: { params: RequestId },
      responses: { 200: ok("Cancelled.", z.object({ request: RequestView, trace_id: TraceId })), ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_suspended", "request_not_found", "request_state") },
    }),
    async (c) => {
      const request = await cancelRequest(c.env, c.req.valid("param").requestId, scope(c.var.principal), true);
      return c.json({ request, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/api/execute", ...guard, summary: "Run now when the queue is immediate and every limit admits it; else enqueue",
      request: { body: json(RequestSpec) },
      responses: {
        200: okDowngradable("Ran: the request with its result.", Enqueued),
        202: okDowngradable("Queued: id, position and estimated wait.", Enqueued),
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "budget_exceeded", "quota_exceeded", "forbidden", "client_suspended", "template_not_found", "pool_not_found", "client_not_found", "idempotency_conflict", "worker_failed", "queue_full", "unavailable"),
      },
    }),
    async (c) => {
      const spec = c.req.valid("json");
      const key = idempotencyKey(spec.idempotency_key, c.req.header("idempotency-key"));
      const caller = await callerFor(c.env, c.var.principal, spec.client_id, "api");
      const outcome = await execute(c.env, caller, { ...spec, idempotency_key: key }, c.var.traceId);
      markDowngrade(c, outcome.request);
      const body = { ...outcome, trace_id: c.var.traceId };
      if (outcome.request.status === "failed") {
        throw new AppError("worker_failed", outcome.request.error ?? "the worker failed", { request: outcome.request });
      }
      return outcome.request.status === "completed" ? c.json(body, 200) : c.json(body, 202);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/api/execution/{requestId}", ...guard, summary: "A request: status, attempts, costs, result or error",
      request: { params: RequestId },
      responses: { 200: ok("The request.", z.object({ request: RequestView, trace_id: TraceId })), ...errorResponses("validation_failed", "unauthorized", "forbidden", "request_not_found") },
    }),
    async (c) => c.json({ request: await getRequest(c.env, c.req.valid("param").requestId, scope(c.var.principal)), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "post", path: "/api/execution/{requestId}/cancel", ...guard, summary: "Cancel a queued or running request; a running one is aborted and its reservations released",
      request: { params: RequestId },
      responses: { 200: ok("Cancelled.", z.object({ request: RequestView, trace_id: TraceId })), ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_suspended", "request_not_found", "request_state") },
    }),
    async (c) => {
      const request = await cancelRequest(c.env, c.req.valid("param").requestId, scope(c.var.principal), false);
      return c.json({ request, trace_id: c.var.traceId }, 200);
    },
  );
