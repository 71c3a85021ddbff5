import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { ALERT_KINDS, ALERT_SEVERITIES, ALERT_STATES } from "../domain/alerts";
import { authenticate } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { acknowledgeAlert, findAlert } from "../services/alerts";
import { decodeCursor, listAlerts } from "../storage/alerts";
import { TraceId } from "./schemas";

const AlertView = z
  .object({
    id: z.string().openapi({ example: "alt_0f3c..." }),
    kind: z.enum(ALERT_KINDS),
    subject: z.string().openapi({ description: "Pool id, client id, queue name (\"all\" for the total) or template id", example: "openai-gpt4" }),
    severity: z.enum(ALERT_SEVERITIES),
    state: z.enum(ALERT_STATES),
    message: z.string(),
    details: z.record(z.string(), z.unknown()),
    dedupe_key: z.string().openapi({ description: "At most one unresolved alert per key; monthly kinds carry the month", example: "budget_80:acme:2026-04" }),
    count: z.number().int().openapi({ description: "Times raised while unresolved" }),
    raised_at: z.number().int(),
    updated_at: z.number().int(),
    acked_at: z.number().int().nullable(),
    resolved_at: z.number().int().nullable(),
  })
  .openapi("Alert");

const AlertList = z.object({ alerts: z.array(AlertView), next_cursor: z.string().nullable(), trace_id: TraceId }).openapi("AlertList");
const OneAlert = z.object({ alert: AlertView, trace_id: TraceId }).openapi("AlertResponse");

const ListQuery = z
  .object({
    state: z.enum(ALERT_STATES).optional(),
    kind: z.enum(ALERT_KINDS).optional(),
    severity: z.enum(ALERT_SEVERITIES).optional(),
    limit: z.coerce.number().int().min(1).max(200).default(50),
    cursor: z.string().max(200).refine((c) => decodeCursor(c) !== null, "a next_cursor from a previous page").optional(),
  })
  // A misspelt filter would otherwise silently list everything.
  .strict();

const AlertId = z.object({ alertId: z.string().regex(/^alt_[a-f0-9]{32}$/, "an alert id (alt_...)").openapi({ param: { name: "alertId", in: "path" } }) });

const guard = { tags: ["admin"], security: [{ bearer: [] }], middleware: [authenticate("admin")] };
const ok = <T extends z.ZodType>(description: string, schema: T) => ({ description, content: { "application/json": { schema } } });

export const alertRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get", path: "/admin/alerts", ...guard, summary: "Alerts, newest first, filtered by state, kind and severity; paginated by cursor",
      request: { query: ListQuery },
      responses: { 200: ok("One page; next_cursor is null on the last.", AlertList), ...errorResponses("validation_failed", "unauthorized", "forbidden") },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const page = await listAlerts(c.env.DB, q);
      return c.json({ alerts: page.alerts, next_cursor: page.nextCursor, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/alerts/{alertId}", ...guard, summary: "One alert",
      request: { params: AlertId },
      responses: { 200: ok("The alert.", OneAlert), ...errorResponses("validation_failed", "unauthorized", "forbidden", "alert_not_found") },
    }),
    async (c) => c.json({ alert: await findAlert(c.env, c.req.valid("param").alertId), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "post", path: "/admin/alerts/{alertId}/ack", ...guard, summary: "Acknowledge an alert (again: no change); it still resolves when its condition clears",
      request: { params: AlertId },
      responses: {
        200: ok("The alert, acknowledged.", OneAlert),
        ...errorResponses("validation_failed", "unauthorized", "forbidden", "alert_not_found", "alert_state"),
      },
    }),
    async (c) => {
      const { alertId } = c.req.valid("param");
      const alert = await acknowledgeAlert(c.env, alertId, Date.now());
      c.var.logger.info("alert_acknowledged", { alert_id: alert.id, kind: alert.kind, subject: alert.subject });
      return c.json({ alert, trace_id: c.var.traceId }, 200);
    },
  );
