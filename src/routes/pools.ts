import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { TIERS, type Sharing as SharingT } from "../domain/types";
import { authenticate } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import type { PoolState } from "../objects/pool/types";
import { changePool, createPool, listPoolsFor, poolDetail, removePool, type PoolDefinition } from "../services/pool-admin";
import type { PoolRecord } from "../storage/pools";
import { scalingRoutes } from "./scaling";
import { ClientId, Nano, PoolId, TraceId } from "./schemas";

const Capacity = z.number().int().positive().max(1_000_000_000_000);
const Status = z.enum(["active", "draining", "disabled"]).openapi({
  description: "active: serves spending; draining: no new reservations or consumes, held reservations settle or expire as usual; disabled: drained and off",
});
const Sizing = z.enum(["static", "dynamic"]).openapi({ description: "static: capacity changes only by an operator; dynamic: also by its scaling policy, within [min_capacity, max_capacity]" });

const Share = z
  .object({
    tier: z.enum(TIERS).optional(),
    client_id: ClientId.optional(),
    fraction: z.number().gt(0).max(1).openapi({ description: "Share of capacity kept for this tier or client; others cannot take it", example: 0.3 }),
  })
  .strict()
  .superRefine((s, ctx) => {
    if ((s.tier === undefined) === (s.client_id === undefined)) ctx.addIssue({ code: "custom", path: ["tier"], message: "give exactly one of tier and client_id" });
  })
  .openapi("PoolShare");

const Sharing = z
  .discriminatedUnion("mode", [
    z.object({ mode: z.literal("shared") }).strict(),
    z.object({ mode: z.literal("reserved"), shares: z.array(Share).min(1).max(20) }).strict(),
    z.object({ mode: z.literal("dedicated"), client_id: ClientId }).strict(),
  ])
  .openapi("PoolSharing", { description: "shared: everyone; reserved: shares kept per tier or client (fractions add up to at most 1); dedicated: one client only" });

const LowWater = z.number().int().min(0).max(100).openapi({ description: "pool_low is raised strictly below this percent of capacity; 0: never", example: 10 });
const Leases = z.enum(["auto", "off"]).openapi({
  description: "Token leases to isolates: auto lends slices of the bucket to isolates that consume from the pool often (decided there, no object round trip; see docs/architecture.md, the exactness model); off: every consume is decided by the pool's object",
});

const Definition = {
  name: z.string().min(1).max(100).openapi({ example: "OpenAI GPT-4" }),
  unit: z.string().min(1).max(32).openapi({ example: "tokens" }),
  capacity: Capacity.openapi({ description: "Bucket size in whole units", example: 10000 }),
  refill_per_sec: z.number().min(0).max(1_000_000_000).openapi({ description: "Units added back per second", example: 166 }),
  cost_per_unit_nano: Nano.min(0).max(Number.MAX_SAFE_INTEGER),
  sharing: Sharing,
  status: Status,
  sizing: Sizing,
  min_capacity: Capacity.openapi({ description: "Dynamic pools: the least capacity scaling may set" }),
  max_capacity: Capacity.openapi({ description: "Dynamic pools: the most capacity scaling may set" }),
  low_water_percent: LowWater,
  leases: Leases,
};

const CreatePool = z
  .object({
    id: PoolId,
    ...Definition,
    sharing: Sharing.default({ mode: "shared" }),
    status: Status.default("active"),
    sizing: Sizing.default("static"),
    min_capacity: Definition.min_capacity.optional(),
    max_capacity: Definition.max_capacity.optional(),
    low_water_percent: LowWater.default(10),
    leases: Leases.default("auto"),
  })
  .strict()
  .openapi("CreatePool");

const UpdatePool = z
  .object({
    name: Definition.name.optional(),
    unit: Definition.unit.optional(),
    capacity: Definition.capacity.optional(),
    refill_per_sec: Definition.refill_per_sec.optional(),
    cost_per_unit_nano: Definition.cost_per_unit_nano.optional(),
    sharing: Sharing.optional(),
    status: Status.optional(),
    sizing: Sizing.optional(),
    min_capacity: Definition.min_capacity.optional(),
    max_capacity: Definition.max_capacity.optional(),
    low_water_percent: LowWater.optional(),
    leases: Leases.optional(),
  })
  .strict()
  .refine((v) => Object.keys(v).length > 0, { message: "give at least one field to change" })
  .openapi("UpdatePool", { description: "Only the fields given change; the pool's rules are checked on the result" });

const PoolView = z
  .object({
    id: z.string(),
    name: z.string(),
    unit: z.string(),
    capacity: z.number().int(),
    refill_per_sec: z.number(),
    cost_per_unit_nano: Nano,
    sharing: Sharing,
    status: Status,
    sizing: Sizing,
    min_capacity: z.number().int().nullable(),
    max_capacity: z.number().int().nullable(),
    low_water_percent: z.number().int(),
    leases: Leases,
    version: z.number().int().openapi({ description: "Bumped on every change; the pool's object adopts a newer version at once" }),
    updated_at: z.number().int(),
  })
  .openapi("Pool");

const PoolLive = z
  .object({
    version: z.number().int().openapi({ description: "The configuration version the pool's object holds" }),
    status: Status,
    level: z.number(),
    capacity: z.number().int(),
    utilization: z.number(),
    reserved_units: z.number().int(),
    active_reservations: z.number().int(),
    drained: z.boolean().openapi({ description: "Not active, no reservation held and no units lent to a scheduler shard: safe to disable" }),
    outbox: z.number().int().openapi({ description: "Usage events not yet delivered to D1" }),
    denials: z.number().int().openapi({ description: "Spending refused for lack of units since the object started" }),
    leased_units: z.number().int().openapi({ description: "Units lent to isolates on token leases: taken from the bucket, granted there" }),
    lease_holders: z.number().int().openapi({ description: "Isolates holding a lease now" }),
  })
  .openapi("PoolLive");

const PoolDetail = z.object({ pool: PoolView, live: PoolLive, trace_id: TraceId }).openapi("PoolDetail");
const PoolList = z.object({ pools: z.array(PoolView), trace_id: TraceId }).openapi("PoolList");
const PoolDeleted = z.object({ pool: z.string(), deleted: z.literal(true), trace_id: TraceId }).openapi("PoolDeleted");

const ListQuery = z.object({ status: Status.optional(), sizing: Sizing.optional() }).strict();
const PoolParams = z.object({ poolId: PoolId.openapi({ param: { name: "poolId", in: "path" } }) });

type SharingIn = z.infer<typeof Sharing>;

function sharingIn(s: SharingIn): SharingT {
  if (s.mode === "dedicated") return { mode: "dedicated", clientId: s.client_id };
  if (s.mode === "reserved") {
    return { mode: "reserved", shares: s.shares.map((x) => (x.tier !== undefined ? { tier: x.tier, fraction: x.fraction } : { clientId: x.client_id!, fraction: x.fraction })) };
  }
  return { mode: "shared" };
}

function sharingOut(s: SharingT): SharingIn {
  if (s.mode === "dedicated") return { mode: "dedicated", client_id: s.clientId };
  if (s.mode === "reserved") {
    return { mode: "reserved", shares: s.shares.map((x) => (x.tier !== undefined ? { tier: x.tier, fraction: x.fraction } : { client_id: x.clientId!, fraction: x.fraction })) };
  }
  return { mode: "shared" };
}

function poolView(r: PoolRecord) {
  return {
    id: r.id, name: r.name, unit: r.unit, capacity: r.capacity, refill_per_sec: r.refillPerSec, cost_per_unit_nano: r.costPerUnitNano,
    sharing: sharingOut(r.sharing), status: r.status, sizing: r.sizing, min_capacity: r.minCapacity, max_capacity: r.maxCapacity,
    low_water_percent: r.lowWaterPercent, leases: r.leases, version: r.version, updated_at: r.updatedAt,
  };
}

function liveView(s: PoolState) {
  return {
    version: s.version, status: s.status, level: s.level, capacity: s.capacity, utilization: s.utilization,
    reserved_units: s.reservedUnits, active_reservations: s.activeReservations,
    drained: s.status !== "active" && s.activeReservations === 0 && s.shardLeasedUnits === 0, outbox: s.outbox, denials: s.denials,
    leased_units: s.leasedUnits, lease_holders: s.leaseHolders,
  };
}

/** The record a PATCH makes of the current one: given fields replace; bounds fall away when the pool becomes static. */
function patched(current: PoolRecord, b: z.infer<typeof UpdatePool>): PoolDefinition {
  const sizing = b.sizing ?? current.sizing;
  const bound = (given: number | undefined, held: number | null) => (given !== undefined ? given : sizing === "static" ? null : held);
  return {
    id: current.id,
    name: b.name ?? current.name,
    unit: b.unit ?? current.unit,
    capacity: b.capacity ?? current.capacity,
    refillPerSec: b.refill_per_sec ?? current.refillPerSec,
    costPerUnitNano: b.cost_per_unit_nano ?? current.costPerUnitNano,
    sharing: b.sharing ? sharingIn(b.sharing) : current.sharing,
    status: b.status ?? current.status,
    sizing,
    minCapacity: bound(b.min_capacity, current.minCapacity),
    maxCapacity: bound(b.max_capacity, current.maxCapacity),
    lowWaterPercent: b.low_water_percent ?? current.lowWaterPercent,
    leases: b.leases ?? current.leases,
  };
}

const guard = { tags: ["admin"], security: [{ bearer: [] }], middleware: [authenticate("admin")] };
const ok = <T extends z.ZodType>(description: string, schema: T) => ({ description, content: { "application/json": { schema } } });
const json = <T extends z.ZodType>(schema: T) => ({ required: true, content: { "application/json": { schema } } });

export const poolRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "post", path: "/admin/pools", ...guard, summary: "Create a pool; its object starts with a full bucket",
      request: { body: json(CreatePool) },
      responses: {
        201: ok("The pool and its object's live state.", PoolDetail),
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "client_not_found", "pool_exists"),
      },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const { record, state } = await createPool(c.env, {
        id: b.id, name: b.name, unit: b.unit, capacity: b.capacity, refillPerSec: b.refill_per_sec, costPerUnitNano: b.cost_per_unit_nano,
        sharing: sharingIn(b.sharing), status: b.status, sizing: b.sizing, minCapacity: b.min_capacity ?? null, maxCapacity: b.max_capacity ?? null,
        lowWaterPercent: b.low_water_percent, leases: b.leases,
      }, Date.now());
      c.var.logger.info("admin_pool_created", { pool: record.id, capacity: record.capacity, sizing: record.sizing, status: record.status });
      return c.json({ pool: poolView(record), live: liveView(state), trace_id: c.var.traceId }, 201);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/pools", ...guard, summary: "Every pool, by id; filtered by status and sizing",
      request: { query: ListQuery },
      responses: { 200: ok("The pools.", PoolList), ...errorResponses("validation_failed", "unauthorized", "forbidden") },
    }),
    async (c) => c.json({ pools: (await listPoolsFor(c.env, c.req.valid("query"))).map(poolView), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "get", path: "/admin/pools/{poolId}", ...guard, summary: "A pool's configuration and its object's live level and reservations",
      request: { params: PoolParams },
      responses: { 200: ok("The pool.", PoolDetail), ...errorResponses("validation_failed", "unauthorized", "forbidden", "pool_not_found") },
    }),
    async (c) => {
      const { record, state } = await poolDetail(c.env, c.req.valid("param").poolId);
      return c.json({ pool: poolView(record), live: liveView(state), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "patch", path: "/admin/pools/{poolId}", ...guard, summary: "Change a pool; the change reaches its object at once",
      description: "Disabling a pool that holds active reservations is refused (409 pool_busy): set it draining first, which refuses new spending at once while held reservations settle. A dynamic pool made static loses its scaling policy.",
      request: { params: PoolParams, body: json(UpdatePool) },
      responses: {
        200: ok("The pool as changed, and its object's live state under the new configuration.", PoolDetail),
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "pool_not_found", "client_not_found", "pool_busy", "unavailable"),
      },
    }),
    async (c) => {
      const { poolId } = c.req.valid("param");
      const body = c.req.valid("json");
      const { record, state } = (await changePool(c.env, poolId, (current) => patched(current, body), { now: Date.now() }))!;
      c.var.logger.info("admin_pool_changed", { pool: poolId, fields: Object.keys(body), version: record.version });
      return c.json({ pool: poolView(record), live: liveView(state), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "delete", path: "/admin/pools/{poolId}", ...guard, summary: "Delete a pool; refused while it holds active reservations",
      description: "The pool's object refuses all spending from then on and delivers its undelivered usage; the pool's scaling history is kept.",
      request: { params: PoolParams },
      responses: { 200: ok("Deleted.", PoolDeleted), ...errorResponses("validation_failed", "unauthorized", "forbidden", "pool_not_found", "pool_busy") },
    }),
    async (c) => {
      const { poolId } = c.req.valid("param");
      await removePool(c.env, poolId, Date.now());
      c.var.logger.info("admin_pool_deleted", { pool: poolId });
      return c.json({ pool: poolId, deleted: true as const, trace_id: c.var.traceId }, 200);
    },
  )
  .route("/", scalingRoutes);
