import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { authenticate } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { schedulerStub } from "../services/requests";
import { TraceId } from "./schemas";

const SchedulerState = z
  .object({
    running: z.boolean(), queued: z.number().int(), in_flight: z.number().int(), max_in_flight: z.number().int(),
    last_pass_at: z.number().nullable(), dispatched_total: z.number().int(), trace_id: TraceId,
  })
  .openapi("SchedulerState");

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
      return c.json({ ...(await schedulerStub(c.env).setRunning(true)), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({ method: "post", path: "/admin/scheduler/stop", ...guard, summary: "Stop dispatching; queued work waits (survives restarts)", responses }),
    async (c) => {
      c.var.logger.info("admin_scheduler", { action: "stop" });
      return c.json({ ...(await schedulerStub(c.env).setRunning(false)), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({ method: "get", path: "/admin/scheduler/status", ...guard, summary: "Whether dispatching is on, and its counts", responses }),
    async (c) => c.json({ ...(await schedulerStub(c.env).state()), trace_id: c.var.traceId }, 200),
  );
