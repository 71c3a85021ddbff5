import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { authenticate, requireScope } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { estimateCost } from "../services/estimate";
import { callerFor } from "../services/pools";
import { getRequest } from "../services/requests";
import type { RequestView } from "../objects/scheduler/types";
import { ClientId, Nano, PoolAmount, TraceId } from "./schemas";

const CostEstimateRequest = z
  .object({
    template: z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/, "a template id").optional().openapi({ example: "content-generate" }),
    requirements: z.array(PoolAmount).min(1).max(20).optional(),
    client_id: ClientId.optional().openapi({ description: "Required with the admin or internal token; a client key acts for its own client" }),
  })
  .strict()
  .superRefine((v, ctx) => {
    if ((v.template === undefined) === (v.requirements === undefined)) {
      ctx.addIssue({ code: "custom", path: ["template"], message: "give either template or requirements" });
    }
  })
  .openapi("CostEstimateRequest");

const CostEstimate = z
  .object({
    client_id: z.string(),
    template: z.string().nullable(),
    pools: z.array(z.object({ pool: z.string(), amount: z.number().int(), unit: z.string(), cost_per_unit_nano: Nano, cost_nano: Nano })),
    total_cost_nano: Nano,
    alternative: z
      .object({ template: z.string(), total_cost_nano: Nano })
      .nullable()
      .openapi({ description: "The template's cheaper alternative (a downgrade) and its cost, when there is one this client may use" }),
    trace_id: TraceId,
  })
  .openapi("CostEstimate");

const RequestId = z.object({ requestId: z.string().regex(/^req_[a-f0-9]{32}$/, "a request id (req_ and 32 hex digits)").openapi({ param: { name: "requestId", in: "path" } }) });

const RequestCost = z
  .object({
    request_id: z.string(),
    client_id: z.string(),
    template: z.string(),
    status: z.enum(["queued", "dispatching", "running", "completed", "failed", "cancelled", "expired"]),
    estimate_nano: Nano.openapi({ description: "What was admitted against the budget: the template's amounts at the prices of enqueue time" }),
    actual_nano: Nano.nullable().openapi({ description: "What the request spent; null until it completed" }),
    pools: z.array(z.object({
      pool: z.string(),
      estimate_units: z.number().int(),
      estimate_cost_nano: Nano,
      actual_units: z.number().int().nullable(),
      actual_cost_nano: Nano.nullable(),
      difference_nano: Nano.nullable().openapi({ description: "actual - estimate: negative when the request used less than estimated" }),
    })),
    trace_id: TraceId,
  })
  .openapi("RequestCost");

/** Estimate and actual side by side, per pool: the estimate's pools first, then any the actual adds. */
function costByPool(request: RequestView) {
  const actual = new Map((request.actual ?? []).map((p) => [p.pool, p]));
  const estimate = new Map(request.estimate.map((p) => [p.pool, p]));
  const pools = [...new Set([...estimate.keys(), ...actual.keys()])];
  return pools.map((pool) => {
    const e = estimate.get(pool);
    const a = actual.get(pool);
    return {
      pool,
      estimate_units: e?.units ?? 0,
      estimate_cost_nano: e?.cost_nano ?? 0,
      actual_units: a?.units ?? null,
      actual_cost_nano: a?.cost_nano ?? null,
      difference_nano: a ? a.cost_nano - (e?.cost_nano ?? 0) : null,
    };
  });
}

export const costRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "post", path: "/api/cost/estimate", tags: ["usage"], security: [{ bearer: [] }],
      summary: "What a template's declared requirements, or explicit pool amounts, would cost this client",
      description: "Exact integer nano-dollars at the pools' current prices. Spends nothing.",
      middleware: [authenticate("client", "admin", "internal"), requireScope("resources:read")],
      request: { body: { required: true, content: { "application/json": { schema: CostEstimateRequest } } } },
      responses: {
        200: { description: "Cost per pool and in total, and the cheaper alternative's.", content: { "application/json": { schema: CostEstimate } } },
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "client_suspended", "pool_forbidden", "pool_not_found", "template_not_found", "client_not_found"),
      },
    }),
    async (c) => {
      const body = c.req.valid("json");
      // An estimate starts nothing: allowed for a suspended client (its own key is refused by method).
      const caller = await callerFor(c.env, c.var.principal, body.client_id, "api", { allowSuspended: true });
      const estimate = await estimateCost(c.env, body, caller, c.var.logger);
      return c.json({ client_id: caller.clientId, ...estimate, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/api/cost/{requestId}", tags: ["usage"], security: [{ bearer: [] }],
      summary: "A request's estimate against what it really cost, per pool",
      description: "A key sees only its own client's requests (404 for any other); the admin token sees any. Actual figures are null until the request completed.",
      middleware: [authenticate("client", "admin"), requireScope("usage:read")],
      request: { params: RequestId },
      responses: {
        200: { description: "Estimate and actual, per pool and in total.", content: { "application/json": { schema: RequestCost } } },
        ...errorResponses("validation_failed", "unauthorized", "forbidden", "request_not_found"),
      },
    }),
    async (c) => {
      const p = c.var.principal;
      const request = await getRequest(c.env, c.req.valid("param").requestId, p.kind === "client" ? p.clientId : null);
      return c.json({
        request_id: request.id,
        client_id: request.client_id,
        template: request.template,
        status: request.status,
        estimate_nano: request.estimate_nano,
        actual_nano: request.actual_nano,
        pools: costByPool(request),
        trace_id: c.var.traceId,
      }, 200);
    },
  );
