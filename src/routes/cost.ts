import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { authenticate, requireScope } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { estimateCost } from "../services/estimate";
import { callerFor } from "../services/pools";
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

export const costRoutes = new OpenAPIHono<AppEnv>().openapi(
  createRoute({
    method: "post", path: "/api/cost/estimate", tags: ["usage"], security: [{ bearer: [] }],
    summary: "What a template's declared requirements, or explicit pool amounts, would cost this client",
    description: "Exact integer nano-dollars at the pools' current prices. Spends nothing.",
    middleware: [authenticate("client", "admin", "internal"), requireScope("resources:read")],
    request: { body: { required: true, content: { "application/json": { schema: CostEstimateRequest } } } },
    responses: {
      200: { description: "Cost per pool and in total, and the cheaper alternative's.", content: { "application/json": { schema: CostEstimate } } },
      ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "pool_forbidden", "pool_not_found", "template_not_found", "client_not_found"),
    },
  }),
  async (c) => {
    const body = c.req.valid("json");
    const caller = await callerFor(c.env, c.var.principal, body.client_id, "api");
    const estimate = await estimateCost(c.env, body, caller, c.var.logger);
    return c.json({ client_id: caller.clientId, ...estimate, trace_id: c.var.traceId }, 200);
  },
);
