import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../http/context";
import { authenticate, requireScope } from "../http/auth";
import { errorResponses } from "../http/errors";
import { poolConfigs } from "../storage/config";
import { poolStub } from "../objects/pool/stub";
import { countRows } from "../storage/clients";
import { TraceId } from "./schemas";

const Liveness = z.object({ service: z.string(), status: z.literal("ok"), time: z.number().int(), trace_id: TraceId }).openapi("Liveness");

const Dependency = z.object({ status: z.enum(["ok", "down"]), latency_ms: z.number(), error: z.string().optional() });
const Health = z
  .object({ status: z.enum(["ok", "degraded"]), dependencies: z.object({ d1: Dependency, pool_object: Dependency }), trace_id: TraceId })
  .openapi("Health");

const PoolStatus = z.object({
  pool: z.string(),
  name: z.string(),
  unit: z.string(),
  status: z.string(),
  sharing: z.string(),
  level: z.number(),
  capacity: z.number(),
  refill_per_sec: z.number(),
  utilization: z.number(),
  reserved: z.number(),
  pending_usage_events: z.number(),
});
const Status = z
  .object({
    time: z.number().int(),
    pools: z.array(PoolStatus),
    counts: z.record(z.string(), z.number()).openapi({
      description: "clients, pools, templates, active api_keys; usage_events: events recorded today (UTC), from the daily rollups",
    }),
    trace_id: TraceId,
  })
  .openapi("Status");

async function probe(fn: () => Promise<unknown>): Promise<z.infer<typeof Dependency>> {
  const started = Date.now();
  try {
    await fn();
    return { status: "ok", latency_ms: Date.now() - started };
  } catch (err) {
    return { status: "down", latency_ms: Date.now() - started, error: err instanceof Error ? err.message : String(err) };
  }
}

export const healthRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get", path: "/", tags: ["health"], security: [], summary: "Liveness",
      responses: { 200: { description: "The worker answers.", content: { "application/json": { schema: Liveness } } } },
    }),
    (c) => c.json({ service: "resource-manager", status: "ok" as const, time: Date.now(), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "get", path: "/health", tags: ["health"], security: [], summary: "Readiness: D1 and a pool object reachable",
      responses: {
        200: { description: "Every dependency answers.", content: { "application/json": { schema: Health } } },
        503: { description: "A dependency is down.", content: { "application/json": { schema: Health } } },
      },
    }),
    async (c) => {
      const [d1, poolObject] = await Promise.all([
        probe(() => c.env.DB.prepare("SELECT 1").first()),
        probe(() => poolStub(c.env, "__health").ping()),
      ]);
      const up = d1.status === "ok" && poolObject.status === "ok";
      if (!up) c.var.logger.warn("health_degraded", { d1: d1.status, pool_object: poolObject.status });
      const body = { status: up ? ("ok" as const) : ("degraded" as const), dependencies: { d1, pool_object: poolObject }, trace_id: c.var.traceId };
      return up ? c.json(body, 200) : c.json(body, 503);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/status", tags: ["health"], summary: "Pools with level, capacity and utilization; counts",
      middleware: [authenticate("admin", "internal", "client"), requireScope("resources:read")],
      security: [{ bearer: [] }],
      responses: {
        200: { description: "Current state.", content: { "application/json": { schema: Status } } },
        ...errorResponses("unauthorized", "forbidden"),
      },
    }),
    async (c) => {
      const [pools, counts] = await Promise.all([poolConfigs(c.env), countRows(c.env.DB)]);
      const snapshots = await Promise.all([...pools.values()].map(async (cfg) => ({ cfg, a: await poolStub(c.env, cfg.id).availability(cfg, null) })));
      return c.json({
        time: Date.now(),
        pools: snapshots.map(({ cfg, a }) => ({
          pool: cfg.id, name: cfg.name, unit: cfg.unit, status: cfg.status, sharing: cfg.sharing.mode,
          level: a.level, capacity: a.capacity, refill_per_sec: a.refillPerSec, utilization: a.utilization,
          reserved: a.reserved, pending_usage_events: a.outbox,
        })),
        counts,
        trace_id: c.var.traceId,
      }, 200);
    },
  );
