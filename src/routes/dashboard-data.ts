import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { QUEUES } from "../domain/priority";
import { authenticate } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { BUDGET_ROWS, dashboardData, SPEND_STEP_MS, TREND_WINDOW_MS } from "../services/dashboard";
import { ClientId, Nano, TraceId } from "./schemas";

const Ms = z.number().int().openapi({ description: "Epoch milliseconds, UTC" });
const Count = z.number().int().min(0);

const BudgetRow = z
  .object({
    client_id: ClientId,
    budget_nano: Nano,
    spent_nano: Nano.openapi({ description: "Spent this month, from the usage ledger (daily rollups), in nano-dollars" }),
    used_permille: z.number().int().nullable().openapi({ description: "Budget used in tenths of a percent, rounded down (972 = 97.2%); null when the budget is 0" }),
    projected_nano: Nano.openapi({ description: "Month-end spend at this month's rate: spent × month length / max(time elapsed this month, 1 day), rounded down" }),
    projected_overrun: z.boolean().openapi({ description: "projected_nano > budget_nano" }),
    in_flight_nano: Nano.openapi({ description: "Estimates of running requests, held by the client's object" }),
    remaining_nano: Nano.openapi({ description: "budget - spent - in flight, never below 0" }),
  })
  .openapi("DashboardBudgetRow");

const DashboardData = z
  .object({
    at: Ms,
    open_alerts: z.object({ critical: Count, warning: Count, info: Count }).openapi({ description: "Open (not acknowledged) alerts per severity" }),
    scheduler_running: z.boolean(),
    budgets: z.object({
      month: z.string().openapi({ example: "2026-04" }),
      resets_at: Ms,
      clients_with_budget: Count,
      clients_without_limit: Count,
      rows: z.array(BudgetRow).openapi({ description: `The ${BUDGET_ROWS} active clients closest to their budget (spent / budget, highest first; then more spent first, then by id)` }),
    }),
    trends: z.object({
      from: Ms,
      to: Ms,
      pools: z.array(z.object({
        pool: z.string(),
        capacity: z.number(),
        samples: z.array(z.object({ at: Ms, level: z.number(), utilization: z.number().openapi({ description: "1 - level / capacity" }) })),
      })).openapi({ description: "Every pool with minute samples in the window (the cron's), oldest sample first" }),
      queues: z.array(z.object({
        queue: z.enum(QUEUES),
        samples: z.array(z.object({ at: Ms, depth: Count, ready: Count, dispatched: Count.openapi({ description: "Dispatched from the queue in the minute before `at`" }) })),
      })).openapi({ description: "The five queues, each with its minute samples in the window" }),
      spend: z.object({
        step_ms: z.number().int(),
        steps: z.array(z.object({ from: Ms, cost_nano: Nano })),
        total_nano: Nano,
      }).openapi({ description: "The usage ledger's spend in each step of the window, oldest first" }),
    }),
    trace_id: TraceId,
  })
  .openapi("DashboardData");

export const dashboardDataRoutes = new OpenAPIHono<AppEnv>().openapi(
  createRoute({
    method: "get", path: "/admin/dashboard/data", tags: ["admin"], security: [{ bearer: [] }], middleware: [authenticate("admin")],
    summary: "The dashboard's figures as JSON: open alerts per severity, budgets by risk with month-end projections, the last hour's samples",
    description: `What the page draws, for scripts and checks. Trends cover the last ${TREND_WINDOW_MS / 60_000} minutes: pool and queue samples as the minute cron records them, spend from the usage ledger in ${SPEND_STEP_MS / 60_000}-minute steps.`,
    responses: {
      200: { description: "The figures.", content: { "application/json": { schema: DashboardData } } },
      ...errorResponses("unauthorized", "forbidden"),
    },
  }),
  async (c) => c.json({ ...(await dashboardData(c.env, Date.now())), trace_id: c.var.traceId }, 200),
);
