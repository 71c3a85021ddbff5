import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { QUEUES } from "../domain/priority";
import { TIERS } from "../domain/types";
import { AppError } from "../errors";
import { authenticate, requireScope } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import { clearConfigCache, slaTargets } from "../storage/config";
import { requestSla, slaSummary } from "../services/scheduler";
import { deleteSlaTarget, putSlaTarget } from "../storage/sla";
import { ClientId, TraceId } from "./schemas";

/** The longest window a summary may cover: 31 days. */
const MAX_WINDOW_MS = 31 * 24 * 3600 * 1000;

const Target = z
  .object({
    tier: z.enum(TIERS),
    queue: z.enum(QUEUES),
    max_wait_ms: z.number().int().openapi({ description: "From when the request could first run (its not-before at enqueue) to its first dispatch" }),
    max_exec_ms: z.number().int().openapi({ description: "From its first dispatch to its end, retries included" }),
    target_percent: z.number().openapi({ description: "Share of decided requests that must meet both" }),
  })
  .openapi("SlaTarget");

const Verdict = z.enum(["met", "breached", "pending"]);
const RequestSlaView = z
  .object({
    request_id: z.string(),
    tier: z.enum(TIERS),
    queue: z.enum(QUEUES),
    target: Target,
    wait_ms: z.number().int().openapi({ description: "Waited before the first dispatch (so far, while queued)" }),
    exec_ms: z.number().int().nullable().openapi({ description: "From the first dispatch to the end (so far, while running); null before dispatch" }),
    wait: Verdict,
    execution: Verdict,
    status: z.enum(["met", "breached", "pending", "excluded"]).openapi({ description: "met: both met; breached: either breached, or the request failed or expired; pending: not decided yet; excluded: cancelled before any breach" }),
    decided_at: z.number().int().nullable().openapi({ description: "When the verdict became known" }),
    trace_id: TraceId,
  })
  .openapi("RequestSla");

const Group = z.object({
  tier: z.enum(TIERS),
  queue: z.enum(QUEUES),
  target: Target,
  total: z.number().int().openapi({ description: "Requests decided in the window (met + breached)" }),
  met: z.number().int(),
  breached: z.number().int(),
  attainment_percent: z.number().nullable().openapi({ description: "met / total, two decimals; null when nothing was decided" }),
  target_percent: z.number(),
  meets_target: z.boolean().nullable(),
  breached_examples: z.array(z.string()).openapi({ description: "Up to five breached request ids" }),
});

const Summary = z
  .object({
    from: z.number().int(),
    to: z.number().int(),
    client_id: z.string().nullable(),
    tiers: z.array(z.object({
      tier: z.enum(TIERS),
      total: z.number().int(),
      met: z.number().int(),
      breached: z.number().int(),
      attainment_percent: z.number().nullable(),
      queues: z.array(Group),
    })),
    overall: z.object({ total: z.number().int(), met: z.number().int(), breached: z.number().int(), attainment_percent: z.number().nullable() }),
    trace_id: TraceId,
  })
  .openapi("SlaSummary");

const SummaryQuery = z
  .object({
    from: z.coerce.number().int().min(0).optional().openapi({ description: "Epoch ms; default: `to` minus 24 hours" }),
    to: z.coerce.number().int().min(0).optional().openapi({ description: "Epoch ms; default: now" }),
    tier: z.enum(TIERS).optional(),
    queue: z.enum(QUEUES).optional(),
    client_id: ClientId.optional().openapi({ description: "Admin only: one client's requests. A client key always sees only its own." }),
  })
  .strict();

const SetTarget = z
  .object({
    max_wait_ms: z.number().int().min(1).max(MAX_WINDOW_MS),
    max_exec_ms: z.number().int().min(1).max(MAX_WINDOW_MS),
    target_percent: z.number().gt(0).max(100),
  })
  .strict()
  .openapi("SetSlaTarget");

const RequestId = z.object({ requestId: z.string().regex(/^req_[a-f0-9]{32}$/, "a request id (req_...)").openapi({ param: { name: "requestId", in: "path" } }) });
const TargetParams = z.object({
  tier: z.enum(TIERS).openapi({ param: { name: "tier", in: "path" } }),
  queue: z.enum(QUEUES).openapi({ param: { name: "queue", in: "path" } }),
});

const ok = <T extends z.ZodType>(description: string, schema: T) => ({ description, content: { "application/json": { schema } } });
const adminOnly = { tags: ["sla"], security: [{ bearer: [] }], middleware: [authenticate("admin")] };

export const slaRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get", path: "/api/execution/{requestId}/sla", tags: ["sla"], security: [{ bearer: [] }],
      middleware: [authenticate("client", "admin"), requireScope("execute")],
      summary: "One request against its service level: waited, ran, met or breached",
      request: { params: RequestId },
      responses: { 200: ok("The request's service level.", RequestSlaView), ...errorResponses("validation_failed", "unauthorized", "forbidden", "request_not_found") },
    }),
    async (c) => {
      const { requestId } = c.req.valid("param");
      const p = c.var.principal;
      const targets = [...(await slaTargets(c.env)).values()];
      const sla = await requestSla(c.env, requestId, p.kind === "client" ? p.clientId : null, targets);
      if (!sla) throw new AppError("request_not_found", `no request ${requestId}`, { request_id: requestId });
      return c.json({ ...sla, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/api/sla", tags: ["sla"], security: [{ bearer: [] }],
      middleware: [authenticate("client", "admin"), requireScope("usage:read")],
      summary: "Service-level attainment per tier and queue over a window (a client key: its own requests)",
      request: { query: SummaryQuery },
      responses: { 200: ok("Attainment.", Summary), ...errorResponses("validation_failed", "unauthorized", "forbidden") },
    }),
    async (c) => {
      const q = c.req.valid("query");
      const p = c.var.principal;
      if (p.kind === "client" && q.client_id !== undefined && q.client_id !== p.clientId) {
        throw new AppError("forbidden", "an API key may read only its own client's service levels", { client_id: q.client_id });
      }
      const to = q.to ?? Date.now();
      const from = q.from ?? to - 24 * 3600 * 1000;
      if (from > to || to - from > MAX_WINDOW_MS) {
        throw new AppError("validation_failed", "from must not be after to, and the window at most 31 days", { fields: [{ path: "query.from", message: "from <= to, at most 31 days before it" }] });
      }
      const clientId = p.kind === "client" ? p.clientId : (q.client_id ?? null);
      const targets = [...(await slaTargets(c.env)).values()];
      const groups = await slaSummary(c.env, from, to, targets, { clientId: clientId ?? undefined, tier: q.tier, queue: q.queue });
      const sum = (list: Array<{ met: number; breached: number }>) => {
        const met = list.reduce((n, g) => n + g.met, 0);
        const breached = list.reduce((n, g) => n + g.breached, 0);
        return { total: met + breached, met, breached, attainment_percent: met + breached === 0 ? null : Math.round((met * 10_000) / (met + breached)) / 100 };
      };
      const tiers = TIERS.map((tier) => {
        const queues = groups.filter((g) => g.tier === tier).sort((a, b) => QUEUES.indexOf(a.queue) - QUEUES.indexOf(b.queue));
        return { tier, ...sum(queues), queues };
      }).filter((t) => t.queues.length > 0);
      return c.json({ from, to, client_id: clientId, tiers, overall: sum(groups), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/sla/targets", ...adminOnly, summary: "SLA targets of every tier and queue (operators' settings, else the defaults)",
      responses: { 200: ok("Targets.", z.object({ targets: z.array(Target), trace_id: TraceId }).openapi("SlaTargets")), ...errorResponses("unauthorized", "forbidden") },
    }),
    async (c) => c.json({ targets: [...(await slaTargets(c.env)).values()], trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "put", path: "/admin/sla/targets/{tier}/{queue}", ...adminOnly, summary: "Set the SLA target of one tier and queue",
      request: { params: TargetParams, body: { content: { "application/json": { schema: SetTarget } }, required: true } },
      responses: { 200: ok("The target.", z.object({ target: Target, trace_id: TraceId }).openapi("SlaTargetResponse")), ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden") },
    }),
    async (c) => {
      const { tier, queue } = c.req.valid("param");
      const target = { tier, queue, ...c.req.valid("json") };
      await putSlaTarget(c.env.DB, target);
      clearConfigCache();
      c.var.logger.info("sla_target_set", { ...target });
      return c.json({ target, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete", path: "/admin/sla/targets/{tier}/{queue}", ...adminOnly, summary: "Return one tier and queue to the default SLA target",
      request: { params: TargetParams },
      responses: { 200: ok("The default target, now in force.", z.object({ target: Target, trace_id: TraceId })), ...errorResponses("validation_failed", "unauthorized", "forbidden") },
    }),
    async (c) => {
      const { tier, queue } = c.req.valid("param");
      await deleteSlaTarget(c.env.DB, tier, queue);
      clearConfigCache();
      const target = (await slaTargets(c.env)).get(`${tier}/${queue}`)!;
      return c.json({ target, trace_id: c.var.traceId }, 200);
    },
  );
