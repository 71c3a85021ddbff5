import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { ScalingPolicy } from "../domain/scaling";
import { authenticate } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { findPool } from "../services/pool-admin";
import {
  evaluateNow, removeScalingPolicy, scalingPolicy, scalingStatus, setScalingCooldown, setScalingPolicy,
  type ScalingEvent, type ScalingOutcome, type ScalingStatus,
} from "../services/scaling";
import type { PoolRecord } from "../storage/pools";
import { decodeEventCursor, listScalingEvents, type StoredPolicy } from "../storage/scaling";
import { PoolId, TraceId } from "./schemas";

const DAY_MS = 86_400_000;
const EpochMs = z.number().int().min(0).max(8_640_000_000_000_000);

const PolicyFields = {
  target_utilization: z.number().gt(0).lt(1).openapi({ description: "Utilization (0-1) a resize aims for", example: 0.7 }),
  scale_up_utilization: z.number().gt(0).max(1).openapi({ description: "Scale up when utilization over the window is at least this", example: 0.85 }),
  scale_down_utilization: z.number().min(0).lt(1).openapi({ description: "Scale down when utilization over the window is at most this and nothing waits", example: 0.3 }),
  window_ms: z.number().int().min(60_000).max(DAY_MS).openapi({ description: "Utilization is averaged over this trailing window (minute samples plus the live reading)", example: 300_000 }),
  scale_up_queue_depth: z.number().int().min(1).max(1_000_000).nullable().openapi({ description: "Scale up when at least this many requests wait on the pool; null: not a trigger", example: 50 }),
  scale_up_wait_ms: z.number().int().min(1000).max(DAY_MS).nullable().openapi({ description: "Scale up when the oldest of them has waited this long; null: not a trigger", example: 60_000 }),
  step: z.number().int().min(1).max(1_000_000_000_000).openapi({ description: "Units per step: up by as many steps as reach the target (at least one), down by one step at most", example: 1000 }),
  cooldown_ms: z.number().int().min(0).max(7 * DAY_MS).openapi({ description: "No further change for this long after one", example: 300_000 }),
  enabled: z.boolean().openapi({ description: "false: evaluated and shown, never applied" }),
};

const PutPolicy = z
  .object({
    ...PolicyFields,
    window_ms: PolicyFields.window_ms.default(300_000),
    scale_up_queue_depth: PolicyFields.scale_up_queue_depth.default(null),
    scale_up_wait_ms: PolicyFields.scale_up_wait_ms.default(null),
    enabled: PolicyFields.enabled.default(true),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.scale_down_utilization >= p.target_utilization) {
      ctx.addIssue({ code: "custom", path: ["scale_down_utilization"], message: "must be below target_utilization" });
    }
    if (p.scale_up_utilization <= p.target_utilization) {
      ctx.addIssue({ code: "custom", path: ["scale_up_utilization"], message: "must be above target_utilization" });
    }
  })
  .openapi("PutScalingPolicy", { description: "The whole policy (PUT replaces it): scale_down_utilization < target_utilization < scale_up_utilization" });

const PolicyView = z
  .object({
    pool: z.string(),
    ...PolicyFields,
    min_capacity: z.number().int().openapi({ description: "The pool's bounds (set on the pool): scaling keeps capacity within them" }),
    max_capacity: z.number().int(),
    updated_at: z.number().int(),
  })
  .openapi("ScalingPolicy");

const TriggerValuesView = z
  .object({
    utilization: z.number().nullable(),
    used_units: z.number().nullable(),
    samples: z.number().int(),
    window_ms: z.number().int(),
    queued_requests: z.number().int(),
    queued_units: z.number().int(),
    oldest_wait_ms: z.number().int(),
  })
  .openapi("ScalingTriggerValues");

const Trigger = z.enum(["cron", "pool_dry", "manual"]).openapi({ description: "What started the evaluation" });
const Action = z.enum(["scale_up", "scale_down"]);

const EventView = z
  .object({
    id: z.string().openapi({ example: "sce_0f3c..." }),
    pool: z.string(),
    at: z.number().int(),
    action: Action,
    from_capacity: z.number().int(),
    to_capacity: z.number().int(),
    reason: z.string(),
    trigger: Trigger,
    trigger_values: TriggerValuesView,
  })
  .openapi("ScalingEvent");

const EvaluationView = z
  .object({
    at: z.number().int(),
    trigger: Trigger,
    action: z.enum(["scale_up", "scale_down", "none"]),
    from_capacity: z.number().int(),
    to_capacity: z.number().int(),
    wanted_capacity: z.number().int().openapi({ description: "What the triggers asked for, before bounds and cooldown" }),
    reason: z.string(),
    blocked: z.enum(["cooldown", "max_capacity", "min_capacity", "disabled", "conflict"]).nullable()
      .openapi({ description: "Why a change the triggers asked for was not made" }),
    trigger_values: TriggerValuesView,
  })
  .openapi("ScalingEvaluation");

const StatusView = z
  .object({
    pool: z.string(),
    sizing: z.enum(["static", "dynamic"]),
    status: z.enum(["active", "draining", "disabled"]),
    capacity: z.number().int(),
    min_capacity: z.number().int().nullable(),
    max_capacity: z.number().int().nullable(),
    policy: PolicyView.nullable(),
    cooldown_until: z.number().int().nullable(),
    in_cooldown: z.boolean(),
    last_decision: EventView.nullable().openapi({ description: "The latest capacity change the policy made" }),
    last_evaluation: EvaluationView.nullable().openapi({ description: "The latest evaluation, whatever it decided" }),
    trace_id: TraceId,
  })
  .openapi("ScalingStatus");

const OutcomeView = z
  .object({
    pool: z.string(),
    applied: z.boolean(),
    evaluation: EvaluationView,
    event: EventView.nullable(),
    cooldown_until: z.number().int().nullable(),
    trace_id: TraceId,
  })
  .openapi("ScalingOutcome");

const PolicyResponse = z.object({ policy: PolicyView, trace_id: TraceId }).openapi("ScalingPolicyResponse");
const PolicyDeleted = z.object({ pool: z.string(), deleted: z.literal(true), trace_id: TraceId }).openapi("ScalingPolicyDeleted");
const EventList = z.object({ events: z.array(EventView), next_cursor: z.string().nullable(), trace_id: TraceId }).openapi("ScalingEventList");

const SetCooldown = z
  .object({
    until: EpochMs.optional().openapi({ description: "Cool down until this time (epoch ms)" }),
    duration_ms: z.number().int().min(1).max(30 * DAY_MS).optional().openapi({ description: "Cool down for this long from now" }),
    clear: z.literal(true).optional().openapi({ description: "End the cooldown now" }),
  })
  .strict()
  .superRefine((v, ctx) => {
    const given = (["until", "duration_ms", "clear"] as const).filter((k) => v[k] !== undefined);
    const message = "give exactly one of until, duration_ms, clear";
    if (given.length === 0) ctx.addIssue({ code: "custom", path: [], message });
    if (given.length > 1) for (const k of given) ctx.addIssue({ code: "custom", path: [k], message });
  })
  .openapi("SetScalingCooldown", { description: "Exactly one of the three fields" });

const HistoryFilters = {
  action: Action.optional(),
  from: z.coerce.number().int().min(0).optional().openapi({ description: "Events at or after this time (epoch ms)" }),
  to: z.coerce.number().int().min(0).optional().openapi({ description: "Events before this time (epoch ms)" }),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z.string().max(200).refine((c) => decodeEventCursor(c) !== null, "a next_cursor from a previous page").optional(),
};
const PoolHistoryQuery = z.object(HistoryFilters).strict();
const EventsQuery = z.object({ pool: PoolId.optional(), ...HistoryFilters }).strict();

const PoolParams = z.object({ poolId: PoolId.openapi({ param: { name: "poolId", in: "path" } }) });

function policyView(record: PoolRecord, p: StoredPolicy) {
  return {
    pool: record.id, target_utilization: p.targetUtilization, scale_up_utilization: p.scaleUpUtilization, scale_down_utilization: p.scaleDownUtilization,
    window_ms: p.windowMs, scale_up_queue_depth: p.scaleUpQueueDepth, scale_up_wait_ms: p.scaleUpWaitMs, step: p.step, cooldown_ms: p.cooldownMs,
    enabled: p.enabled, min_capacity: record.minCapacity ?? record.capacity, max_capacity: record.maxCapacity ?? record.capacity, updated_at: p.updatedAt,
  };
}

function policyIn(b: z.infer<typeof PutPolicy>): ScalingPolicy {
  return {
    targetUtilization: b.target_utilization, scaleUpUtilization: b.scale_up_utilization, scaleDownUtilization: b.scale_down_utilization,
    windowMs: b.window_ms, scaleUpQueueDepth: b.scale_up_queue_depth, scaleUpWaitMs: b.scale_up_wait_ms, step: b.step, cooldownMs: b.cooldown_ms, enabled: b.enabled,
  };
}

/** Stored events and evaluations carry their trigger values as recorded; the view names them. */
function eventView(e: ScalingEvent) {
  return { ...e, trigger_values: e.trigger_values as z.infer<typeof TriggerValuesView> };
}

function statusView(s: ScalingStatus, now: number) {
  return {
    pool: s.record.id, sizing: s.record.sizing, status: s.record.status, capacity: s.record.capacity,
    min_capacity: s.record.minCapacity, max_capacity: s.record.maxCapacity,
    policy: s.policy ? policyView(s.record, s.policy) : null,
    cooldown_until: s.state.cooldownUntil, in_cooldown: s.state.cooldownUntil !== null && now < s.state.cooldownUntil,
    last_decision: s.lastDecision ? eventView(s.lastDecision) : null,
    last_evaluation: s.state.lastEvaluation ? s.state.lastEvaluation : null,
  };
}

function outcomeView(o: ScalingOutcome) {
  return { pool: o.pool, applied: o.event !== null, evaluation: o.evaluation, event: o.event ? eventView(o.event) : null, cooldown_until: o.cooldown_until };
}

const guard = { tags: ["admin"], security: [{ bearer: [] }], middleware: [authenticate("admin")] };
const ok = <T extends z.ZodType>(description: string, schema: T) => ({ description, content: { "application/json": { schema } } });
const json = <T extends z.ZodType>(schema: T) => ({ required: true, content: { "application/json": { schema } } });

export const scalingRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get", path: "/admin/pools/{poolId}/scaling", ...guard, summary: "A pool's scaling: sizing, policy, cooldown, last decision and last evaluation",
      request: { params: PoolParams },
      responses: { 200: ok("The pool's scaling.", StatusView), ...errorResponses("validation_failed", "unauthorized", "forbidden", "pool_not_found") },
    }),
    async (c) => c.json({ ...statusView(await scalingStatus(c.env, c.req.valid("param").poolId), Date.now()), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/pools/{poolId}/scaling/policy", ...guard, summary: "A dynamic pool's scaling policy",
      request: { params: PoolParams },
      responses: { 200: ok("The policy.", PolicyResponse), ...errorResponses("validation_failed", "unauthorized", "forbidden", "pool_not_found", "scaling_policy_not_found") },
    }),
    async (c) => {
      const { record, policy } = await scalingPolicy(c.env, c.req.valid("param").poolId);
      return c.json({ policy: policyView(record, policy), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "put", path: "/admin/pools/{poolId}/scaling/policy", ...guard, summary: "Set a dynamic pool's scaling policy (static pools: 409 pool_not_dynamic)",
      description: "Replaces the whole policy; the pool's cooldown is unchanged. Bounds are the pool's min_capacity and max_capacity (PATCH the pool to change them).",
      request: { params: PoolParams, body: json(PutPolicy) },
      responses: {
        200: ok("The policy as set.", PolicyResponse),
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "pool_not_found", "pool_not_dynamic"),
      },
    }),
    async (c) => {
      const { poolId } = c.req.valid("param");
      const { record, policy } = await setScalingPolicy(c.env, poolId, policyIn(c.req.valid("json")), Date.now());
      c.var.logger.info("admin_scaling_policy", { pool: poolId, action: "set" });
      return c.json({ policy: policyView(record, policy), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete", path: "/admin/pools/{poolId}/scaling/policy", ...guard, summary: "Remove a pool's scaling policy: its capacity stays where it is",
      request: { params: PoolParams },
      responses: { 200: ok("Removed.", PolicyDeleted), ...errorResponses("validation_failed", "unauthorized", "forbidden", "pool_not_found", "scaling_policy_not_found") },
    }),
    async (c) => {
      const { poolId } = c.req.valid("param");
      await removeScalingPolicy(c.env, poolId);
      c.var.logger.info("admin_scaling_policy", { pool: poolId, action: "delete" });
      return c.json({ pool: poolId, deleted: true as const, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/admin/pools/{poolId}/scaling/cooldown", ...guard, summary: "Set or clear a dynamic pool's scaling cooldown",
      request: { params: PoolParams, body: json(SetCooldown) },
      responses: {
        200: ok("The pool's scaling with its new cooldown.", StatusView),
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "pool_not_found", "pool_not_dynamic"),
      },
    }),
    async (c) => {
      const { poolId } = c.req.valid("param");
      const b = c.req.valid("json");
      const now = Date.now();
      const until = b.clear ? null : b.until ?? now + b.duration_ms!;
      const status = await setScalingCooldown(c.env, poolId, until);
      c.var.logger.info("admin_scaling_cooldown", { pool: poolId, cooldown_until: until });
      return c.json({ ...statusView(status, now), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/admin/pools/{poolId}/scaling/evaluate", ...guard, summary: "Evaluate a dynamic pool's policy now and apply the decision",
      description: "The same evaluation the minute cron runs; it respects the cooldown and the bounds. A resize is recorded in the scaling history with trigger `manual`.",
      request: { params: PoolParams },
      responses: {
        200: ok("What was decided, and the recorded event when the capacity changed.", OutcomeView),
        ...errorResponses("validation_failed", "unauthorized", "forbidden", "pool_not_found", "scaling_policy_not_found", "pool_not_dynamic", "pool_inactive"),
      },
    }),
    async (c) => c.json({ ...outcomeView(await evaluateNow(c.env, c.req.valid("param").poolId, Date.now())), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/pools/{poolId}/scaling/history", ...guard, summary: "A pool's scaling decisions, newest first; filtered by action and time, paginated by cursor",
      request: { params: PoolParams, query: PoolHistoryQuery },
      responses: { 200: ok("One page; next_cursor is null on the last.", EventList), ...errorResponses("validation_failed", "unauthorized", "forbidden", "pool_not_found") },
    }),
    async (c) => {
      const { poolId } = c.req.valid("param");
      await findPool(c.env, poolId);
      const page = await listScalingEvents(c.env.DB, { ...c.req.valid("query"), pool: poolId });
      return c.json({ events: page.events.map(eventView), next_cursor: page.nextCursor, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/scaling/events", ...guard, summary: "Scaling decisions across pools (deleted ones too), newest first; filtered by pool, action and time",
      request: { query: EventsQuery },
      responses: { 200: ok("One page; next_cursor is null on the last.", EventList), ...errorResponses("validation_failed", "unauthorized", "forbidden") },
    }),
    async (c) => {
      const page = await listScalingEvents(c.env.DB, c.req.valid("query"));
      return c.json({ events: page.events.map(eventView), next_cursor: page.nextCursor, trace_id: c.var.traceId }, 200);
    },
  );
