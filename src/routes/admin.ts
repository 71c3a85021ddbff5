import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { authenticate } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { AppError } from "../errors";
import { clientBudget } from "../services/budget";
import { clearConfigCache } from "../storage/config";
import { schedulerState, setRunning } from "../services/scheduler";
import { findBudgetSettings, setClientBudget } from "../storage/clients";
import { BudgetFields, ClientId, TraceId } from "./schemas";

const SchedulerState = z
  .object({
    running: z.boolean(), queued: z.number().int(), in_flight: z.number().int(), max_in_flight: z.number().int(),
    last_pass_at: z.number().nullable(), dispatched_total: z.number().int(),
    settlements_owed: z.number().int().openapi({ description: "Ended worker calls whose settlement failed (a pool or client object unreachable), made again until it goes through; their requests stay running meanwhile." }),
    shards: z.number().int().openapi({ description: "Scheduler shards consulted (SCHEDULER_SHARDS, plus any still draining after a change); the counts are their sums." }),
    trace_id: TraceId,
  })
  .openapi("SchedulerState");

const SetBudget = z
  .object({
    monthly_budget_nano: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional()
      .openapi({ description: "A custom monthly budget in nano-dollars", example: 25_000_000_000_000 }),
    unlimited: z.literal(true).optional().openapi({ description: "No limit, explicitly" }),
    inherit: z.literal(true).optional().openapi({ description: "Remove the operator's setting: back to the client's own budget, else its tier's" }),
  })
  .strict()
  .superRefine((v, ctx) => {
    const given = (["monthly_budget_nano", "unlimited", "inherit"] as const).filter((k) => v[k] !== undefined);
    const message = "give exactly one of monthly_budget_nano, unlimited, inherit";
    if (given.length === 0) ctx.addIssue({ code: "custom", path: [], message });
    if (given.length > 1) for (const k of given) ctx.addIssue({ code: "custom", path: [k], message });
  })
  .openapi("SetBudget", { description: "Exactly one of the three fields" });

const ClientBudget = z.object({ ...BudgetFields, trace_id: TraceId }).openapi("ClientBudget");
const ClientParams = z.object({ clientId: ClientId.openapi({ param: { name: "clientId", in: "path" } }) });

/** The budget fields of a client's object (not its concurrency). */
async function budgetOf(env: Env, clientId: string) {
  const { concurrency_in_use: _, ...budget } = await clientBudget(env, clientId);
  return { client_id: clientId, ...budget };
}

const guard = { tags: ["admin"], security: [{ bearer: [] }], middleware: [authenticate("admin")] };
const responses = {
  200: { description: "Scheduler state.", content: { "application/json": { schema: SchedulerState } } },
  ...errorResponses("unauthorized", "forbidden"),
};

export const adminRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({ method: "post", path: "/admin/scheduler/start", ...guard, summary: "Resume dispatching (survives restarts)", responses }),
    async (c) => {
      c.var.logger.info("admin_scheduler", { action: "start" });
      return c.json({ ...(await setRunning(c.env, true)), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({ method: "post", path: "/admin/scheduler/stop", ...guard, summary: "Stop dispatching; queued work waits (survives restarts)", responses }),
    async (c) => {
      c.var.logger.info("admin_scheduler", { action: "stop" });
      return c.json({ ...(await setRunning(c.env, false)), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({ method: "get", path: "/admin/scheduler/status", ...guard, summary: "Whether dispatching is on, and its counts", responses }),
    async (c) => c.json({ ...(await schedulerState(c.env)), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/clients/{clientId}/budget", ...guard, summary: "A client's monthly budget: where it comes from, spent, in flight, remaining",
      request: { params: ClientParams },
      responses: {
        200: { description: "The client's budget this month.", content: { "application/json": { schema: ClientBudget } } },
        ...errorResponses("validation_failed", "unauthorized", "forbidden", "client_not_found"),
      },
    }),
    async (c) => c.json({ ...(await budgetOf(c.env, c.req.valid("param").clientId)), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "put", path: "/admin/clients/{clientId}/budget", ...guard,
      summary: "Set a client's monthly budget (custom), lift it (unlimited), or go back to its own or its tier's (inherit)",
      description: "Applies at once in this isolate; other isolates see it within CONFIG_TTL_MS. Spend and money in flight are unchanged.",
      request: { params: ClientParams, body: { required: true, content: { "application/json": { schema: SetBudget } } } },
      responses: {
        200: { description: "The client's budget as it now applies.", content: { "application/json": { schema: ClientBudget } } },
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "client_not_found"),
      },
    }),
    async (c) => {
      const { clientId } = c.req.valid("param");
      const body = c.req.valid("json");
      if (!(await findBudgetSettings(c.env.DB, clientId))) throw new AppError("client_not_found", `no client ${clientId}`, { client_id: clientId });
      const value = body.inherit ? undefined : body.unlimited ? null : body.monthly_budget_nano!;
      await setClientBudget(c.env.DB, clientId, value);
      clearConfigCache();
      const budget = await budgetOf(c.env, clientId);
      c.var.logger.info("admin_budget", {
        client_id: clientId, action: body.inherit ? "inherit" : body.unlimited ? "unlimited" : "set",
        budget_nano: budget.budget_nano, budget_source: budget.budget_source,
      });
      return c.json({ ...budget, trace_id: c.var.traceId }, 200);
    },
  );
