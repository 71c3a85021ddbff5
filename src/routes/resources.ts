import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { accessFor } from "../domain/sharing";
import type { PoolAmount as PoolAmountT } from "../domain/types";
import { authenticate, requireScope } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { poolConfig, poolConfigs } from "../storage/config";
import { estimateCost } from "../services/estimate";
import { poolStub } from "../objects/pool/stub";
import { callerFor, unwrap } from "../services/pools";
import { ClientId, Nano, PoolAmount, PoolId, TraceId, Units } from "./schemas";

const PoolAvailability = z.object({
  pool: z.string(),
  name: z.string(),
  unit: z.string(),
  status: z.string(),
  sharing: z.string(),
  capacity: z.number(),
  level: z.number(),
  available: z.number().int().openapi({
    description: "Whole units this client could take now from the pool's bucket (after shares kept for others). Units lent to isolates on token leases are not in it: they are granted there, so a consume can still succeed when this is 0",
  }),
  leased: z.number().int().openapi({ description: "Units lent to isolates on token leases now (already taken from the bucket; see docs/architecture.md, the exactness model)" }),
  refill_per_sec: z.number(),
  utilization: z.number(),
  cost_per_unit_nano: Nano,
});
const Availability = z.object({ pools: z.array(PoolAvailability), trace_id: TraceId }).openapi("Availability");

/** One pool and amount, or several as `requirements`: exactly one of the two forms. */
const Amounts = z
  .object({
    pool: PoolId.optional(),
    amount: Units.optional(),
    requirements: z.array(PoolAmount).min(1).max(20).optional(),
    client_id: ClientId.optional().openapi({ description: "Required with the admin token; a client key acts for its own client" }),
  })
  .strict()
  .superRefine((v, ctx) => {
    const single = v.pool !== undefined || v.amount !== undefined;
    if (single && v.requirements) ctx.addIssue({ code: "custom", path: ["requirements"], message: "give either pool and amount, or requirements" });
    if (!single && !v.requirements) ctx.addIssue({ code: "custom", path: ["pool"], message: "give pool and amount, or requirements" });
    if (single && v.pool === undefined) ctx.addIssue({ code: "custom", path: ["pool"], message: "Required" });
    if (single && v.amount === undefined) ctx.addIssue({ code: "custom", path: ["amount"], message: "Required" });
  });

const CheckRequest = Amounts.openapi("CheckRequest");
const CheckResult = z
  .object({
    allowed: z.boolean(),
    results: z.array(z.object({
      pool: z.string(), amount: z.number(), allowed: z.boolean(),
      available: z.number().openapi({ description: "Whole units in the pool's bucket for this client; units lent to isolates on leases are not counted (see leased)" }),
      leased: z.number().openapi({ description: "Units lent to isolates on token leases: a consume may be granted from them although allowed is false" }),
      retry_after_ms: z.number().nullable(),
    })),
    trace_id: TraceId,
  })
  .openapi("CheckResult");

const EstimateRequest = z
  .object({
    template: z.string().min(1).max(64).optional(),
    requirements: z.array(PoolAmount).min(1).max(20).optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    if ((v.template === undefined) === (v.requirements === undefined)) {
      ctx.addIssue({ code: "custom", path: ["template"], message: "give either template or requirements" });
    }
  })
  .openapi("EstimateRequest");
const Estimate = z
  .object({
    template: z.string().nullable(),
    pools: z.array(z.object({ pool: z.string(), amount: z.number(), unit: z.string(), cost_per_unit_nano: Nano, cost_nano: Nano })),
    total_cost_nano: Nano,
    trace_id: TraceId,
  })
  .openapi("Estimate");

function amountsOf(v: z.infer<typeof Amounts>): PoolAmountT[] {
  return v.requirements ?? [{ pool: v.pool!, amount: v.amount! }];
}

const json = <T extends z.ZodType>(schema: T) => ({ required: true, content: { "application/json": { schema } } });
const secured = { security: [{ bearer: [] }] };

export const resourceRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get", path: "/api/resources/availability", tags: ["resources"], ...secured,
      summary: "Every pool this client may use, with what it could take now",
      middleware: [authenticate("client", "admin"), requireScope("resources:read")],
      responses: {
        200: { description: "Pools.", content: { "application/json": { schema: Availability } } },
        ...errorResponses("unauthorized", "forbidden"),
      },
    }),
    async (c) => {
      const p = c.var.principal;
      const caller = p.kind === "client" ? { clientId: p.clientId, tier: p.tier, via: "api" } : null;
      const pools = [...(await poolConfigs(c.env)).values()].filter((cfg) => !caller || accessFor(cfg, caller).allowed);
      const rows = await Promise.all(
        pools.map(async (cfg) => {
          const a = await poolStub(c.env, cfg.id).availability(cfg, caller);
          return {
            pool: cfg.id, name: cfg.name, unit: cfg.unit, status: cfg.status, sharing: cfg.sharing.mode,
            capacity: cfg.capacity, level: a.level, available: a.available, leased: a.leased, refill_per_sec: cfg.refillPerSec,
            utilization: a.utilization, cost_per_unit_nano: cfg.costPerUnitNano,
          };
        }),
      );
      return c.json({ pools: rows, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/api/resources/check", tags: ["resources"], ...secured,
      summary: "Would these amounts fit now? Spends nothing",
      middleware: [authenticate("client", "admin"), requireScope("resources:read")],
      request: { body: json(CheckRequest) },
      responses: {
        200: { description: "Per pool: allowed, what is available, and when enough will be.", content: { "application/json": { schema: CheckResult } } },
        ...errorResponses("bad_request", "validation_failed", "amount_exceeds_capacity", "unauthorized", "forbidden", "client_suspended", "pool_forbidden", "pool_not_found", "client_not_found"),
      },
    }),
    async (c) => {
      const body = c.req.valid("json");
      // A check spends nothing: allowed for a suspended client (its own key is refused by method).
      const caller = await callerFor(c.env, c.var.principal, body.client_id, "api", { allowSuspended: true });
      const amounts = amountsOf(body);
      const configs = await Promise.all(amounts.map((a) => poolConfig(c.env, a.pool)));
      const results = await Promise.all(
        amounts.map(async (a, i) => {
          const r = unwrap(await poolStub(c.env, a.pool).check(configs[i]!, caller, a.amount));
          return { pool: a.pool, amount: a.amount, allowed: r.allowed, available: r.available, leased: r.leased, retry_after_ms: r.retryAfterMs };
        }),
      );
      return c.json({ allowed: results.every((r) => r.allowed), results, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/api/resources/estimate", tags: ["resources"], ...secured,
      summary: "Cost of a template's requirements, or of explicit pool amounts",
      middleware: [authenticate("client", "admin"), requireScope("resources:read")],
      request: { body: json(EstimateRequest) },
      responses: {
        200: { description: "Cost per pool and in total, in nano-dollars.", content: { "application/json": { schema: Estimate } } },
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "client_suspended", "pool_forbidden", "pool_not_found", "template_not_found"),
      },
    }),
    async (c) => {
      const p = c.var.principal;
      const caller = p.kind === "client" ? { clientId: p.clientId, tier: p.tier, via: "api" } : null;
      const { template, pools, total_cost_nano } = await estimateCost(c.env, c.req.valid("json"), caller, c.var.logger);
      return c.json({ template, pools, total_cost_nano, trace_id: c.var.traceId }, 200);
    },
  );
