import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { AppError } from "../errors";
import { authenticate } from "../http/auth";
import type { AppEnv, Principal } from "../http/context";
import { errorResponses } from "../http/errors";
import { poolConfig } from "../storage/config";
import { callerFor, consumeAt, releaseAt, reserveAt } from "../services/pools";
import { wakeAll } from "../services/scheduler";
import { ClientId, IdempotencyKey, MAX_REF_LENGTH, Nano, PoolId, RequestRef, TraceId, Units } from "./schemas";

const MIN_TTL_MS = 1_000;
const MAX_TTL_MS = 24 * 60 * 60 * 1000;

const Spend = {
  client_id: ClientId,
  pool: PoolId,
  amount: Units,
  request_id: RequestRef.optional(),
  idempotency_key: IdempotencyKey.optional().openapi({ description: "A retried call with the same key spends once and gets the same answer (or send an Idempotency-Key header)" }),
};

export const ConsumeRequest = z.object(Spend).strict().openapi("ConsumeRequest");
const ReserveRequest = z
  .object({ ...Spend, ttl_ms: z.number().int().min(MIN_TTL_MS).max(MAX_TTL_MS).default(60_000).openapi({ description: "Released by alarm when not settled by then" }) })
  .strict()
  .openapi("ReserveRequest");
const ReleaseRequest = z
  .object({
    client_id: ClientId,
    pool: PoolId,
    reservation_id: z.string().regex(/^res_[a-f0-9]{32}$/, "a reservation id from /internal/reserve"),
    actual_used: z.number().int().min(0).max(1_000_000_000_000).optional().openapi({ description: "Units really used; the rest is refunded. Default 0" }),
  })
  .strict()
  .openapi("ReleaseRequest");

const Consumed = z
  .object({ pool: z.string(), event_id: z.string(), units: z.number(), cost_nano: Nano, remaining: z.number(), trace_id: TraceId })
  .openapi("Consumed");
const Reserved = z
  .object({ pool: z.string(), reservation_id: z.string(), amount: z.number(), expires_at: z.number().int(), remaining: z.number(), trace_id: TraceId })
  .openapi("Reserved");
const Released = z
  .object({ pool: z.string(), reservation_id: z.string(), consumed: z.number(), refunded: z.number(), cost_nano: Nano, event_id: z.string().nullable(), trace_id: TraceId })
  .openapi("Released");

const json = <T extends z.ZodType>(schema: T) => ({ required: true, content: { "application/json": { schema } } });
const guard = { security: [{ bearer: [] }], middleware: [authenticate("internal", "admin")], tags: ["internal"] };
const SPEND_ERRORS = [
  "bad_request", "validation_failed", "amount_exceeds_capacity", "unauthorized", "budget_exceeded", "forbidden", "client_suspended", "pool_forbidden",
  "pool_not_found", "client_not_found", "idempotency_conflict", "pool_inactive", "rate_limited",
] as const;
const spendErrors = errorResponses(...SPEND_ERRORS);

/** The body's idempotency key, or the Idempotency-Key header; both given must agree. */
export function idempotencyKey(bodyKey: string | undefined, header: string | undefined): string | undefined {
  if (header !== undefined && (header.length === 0 || header.length > MAX_REF_LENGTH)) {
    throw new AppError("validation_failed", "invalid Idempotency-Key header", { fields: [{ path: "header.idempotency-key", message: `1 to ${MAX_REF_LENGTH} characters` }] });
  }
  if (bodyKey !== undefined && header !== undefined && bodyKey !== header) {
    throw new AppError("validation_failed", "idempotency_key and the Idempotency-Key header differ", { fields: [{ path: "idempotency_key", message: "differs from the header" }] });
  }
  return bodyKey ?? header;
}

/**
 * Spend now: the consume route's work after authentication and validation (also the hot path's, see
 * src/routes/consume-fast-path.ts). Throws the AppError to answer.
 */
export async function consumeNow(
  env: Env, ctx: Pick<ExecutionContext, "waitUntil">, principal: Principal, b: z.infer<typeof ConsumeRequest>, key: string | undefined, traceId: string,
) {
  const [caller, cfg] = await Promise.all([callerFor(env, principal, b.client_id, "internal"), poolConfig(env, b.pool)]);
  const r = await consumeAt(env, ctx, cfg, caller, { amount: b.amount, requestId: b.request_id, idempotencyKey: key });
  return { pool: r.pool, event_id: r.eventId, units: r.units, cost_nano: r.costNano, remaining: r.remaining, trace_id: traceId };
}

export const internalRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "post", path: "/internal/consume", ...guard, summary: "Spend units from a pool now",
      request: { body: json(ConsumeRequest) },
      responses: {
        200: { description: "Spent; a usage event is recorded.", content: { "application/json": { schema: Consumed } } },
        ...spendErrors,
        // A consume that waited in its pool's lane, or for its lease or budget exchange (see consumeAt), without an answer in time.
        ...errorResponses("unavailable"),
      },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const key = idempotencyKey(b.idempotency_key, c.req.header("idempotency-key"));
      return c.json(await consumeNow(c.env, c.executionCtx, c.var.principal, b, key, c.var.traceId), 200);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/internal/reserve", ...guard, summary: "Hold units in a pool until released or expired",
      request: { body: json(ReserveRequest) },
      responses: {
        200: { description: "Held: the units in the pool, one of the client's job slots and the price in flight, until released or expired.", content: { "application/json": { schema: Reserved } } },
        // A reservation also holds one of the client's job slots: 429 quota_exceeded when none is free.
        ...errorResponses(...SPEND_ERRORS, "quota_exceeded"),
      },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const key = idempotencyKey(b.idempotency_key, c.req.header("idempotency-key"));
      const [caller, cfg] = await Promise.all([callerFor(c.env, c.var.principal, b.client_id, "internal"), poolConfig(c.env, b.pool)]);
      const r = await reserveAt(c.env, cfg, caller, { amount: b.amount, ttlMs: b.ttl_ms, requestId: b.request_id, idempotencyKey: key });
      return c.json({ pool: r.pool, reservation_id: r.reservationId, amount: r.amount, expires_at: r.expiresAt, remaining: r.remaining, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/internal/release", ...guard, summary: "Settle a reservation: consume what was used, refund the rest",
      request: { body: json(ReleaseRequest) },
      responses: {
        200: { description: "Settled.", content: { "application/json": { schema: Released } } },
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "pool_not_found", "client_not_found", "reservation_not_found", "reservation_closed"),
      },
    }),
    async (c) => {
      const b = c.req.valid("json");
      // Settling what was reserved before a suspension is allowed: it frees units and records the spend.
      const [caller, cfg] = await Promise.all([callerFor(c.env, c.var.principal, b.client_id, "internal", { allowSuspended: true }), poolConfig(c.env, b.pool)]);
      const r = await releaseAt(c.env, cfg, caller, b.reservation_id, b.actual_used ?? 0);
      // Capacity came back: let waiting requests go without waiting for the cron.
      if (r.refunded > 0) c.executionCtx.waitUntil(wakeAll(c.env));
      return c.json({
        pool: r.pool, reservation_id: r.reservationId, consumed: r.consumed, refunded: r.refunded,
        cost_nano: r.costNano, event_id: r.eventId, trace_id: c.var.traceId,
      }, 200);
    },
  );
