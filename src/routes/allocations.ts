import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import {
  ALLOCATION_DEFAULTS, ALLOCATION_STATES, CRITICAL_RESERVE_PERCENT, decodeListCursor, MAX_DEPTH, MAX_TTL_MS, MIN_TTL_MS, PRIORITIES,
  type AllocationConfig,
} from "../domain/allocations";
import { authenticate, requireScope } from "../http/auth";
import type { AppEnv } from "../http/context";
import { errorResponses } from "../http/errors";
import {
  allocate, allocationStub, findAllocation, listAllocations, release, updateAllocationSettings,
} from "../services/allocations";
import { ClientId, TraceId } from "./schemas";

export const AllocationId = z.string().regex(/^alc_[a-f0-9]{32}$/, "an allocation id (alc_ + 32 hex)").openapi({ example: "alc_8d0c4f2a9b7e41d3a5c6f0e1b2d3c4a5" });
const Depth = z.number().int().min(0).max(MAX_DEPTH);
const Count = z.number().int().min(0).max(1_000_000_000);

const AllocationView = z
  .object({
    id: AllocationId,
    client_id: z.string(),
    job_id: z.string().openapi({ description: "The caller's id for the job" }),
    parent_id: z.string().nullable().openapi({ description: "The allocation of the job that spawned this one; null at the root" }),
    depth: z.number().int().openapi({ description: "0 at the root; the parent's depth + 1" }),
    workers: z.number().int(),
    cpu_millicores: z.number().int().openapi({ description: "Per worker" }),
    memory_mb: z.number().int().openapi({ description: "Per worker" }),
    priority: z.enum(PRIORITIES),
    ttl_ms: z.number().int(),
    state: z.enum(ALLOCATION_STATES).openapi({ description: "pending → active → releasing → released | failed | expired; pending, active and releasing hold capacity" }),
    created_at: z.number().int(),
    activated_at: z.number().int().nullable(),
    expires_at: z.number().int().openapi({ description: "Epoch ms: the allocation expires (with its subtree) if not released by then" }),
    released_at: z.number().int().nullable().openapi({ description: "When it stopped holding capacity (released, expired or failed)" }),
    reason: z.string().nullable().openapi({ description: "Why it ended: released, parent released, ttl elapsed, quota_exceeded: cpu, ...", example: "parent released" }),
  })
  .openapi("Allocation");

export const AllocateRequest = z
  .object({
    client_id: ClientId.optional().openapi({ description: "Required with the admin token; a client key acts for its own client" }),
    job_id: z.string().min(1).max(128).openapi({ description: "The caller's id for the job", example: "crawl-2026-11-23" }),
    parent_id: AllocationId.optional().openapi({ description: "The parent job's allocation (same client, pending or active)" }),
    depth: Depth.optional().openapi({ description: "Optional check: must equal the parent's depth + 1 (0 without a parent)" }),
    workers: z.number().int().min(1).max(100_000).openapi({ example: 4 }),
    cpu_millicores: z.number().int().min(1).max(1_000_000).default(ALLOCATION_DEFAULTS.cpuMillicores).openapi({ description: `Per worker; default ${ALLOCATION_DEFAULTS.cpuMillicores}` }),
    memory_mb: z.number().int().min(1).max(4_194_304).default(ALLOCATION_DEFAULTS.memoryMb).openapi({ description: `Per worker; default ${ALLOCATION_DEFAULTS.memoryMb}` }),
    priority: z.enum(PRIORITIES).default(ALLOCATION_DEFAULTS.priority).openapi({ description: `Default normal; only critical may use the last ${CRITICAL_RESERVE_PERCENT}% of capacity` }),
    ttl_ms: z.number().int().min(MIN_TTL_MS).max(MAX_TTL_MS).default(ALLOCATION_DEFAULTS.ttlMs).openapi({ description: "Lifetime, 1 s to 24 h; default 15 min" }),
  })
  .strict()
  .openapi("AllocateRequest");

export const ReleaseRequest = z.object({ allocation_id: AllocationId }).strict().openapi("ReleaseAllocation");

const OneAllocation = z.object({ allocation: AllocationView, trace_id: TraceId }).openapi("AllocationResponse");
const Released = z
  .object({
    allocation: AllocationView,
    released: z.array(z.string()).openapi({ description: "Every allocation this release ended: the allocation, then its subtree" }),
    trace_id: TraceId,
  })
  .openapi("AllocationReleased");
const AllocationList = z.object({ allocations: z.array(AllocationView), next_cursor: z.string().nullable(), trace_id: TraceId }).openapi("AllocationList");

export const ListQuery = z
  .object({
    state: z.enum(ALLOCATION_STATES).optional(),
    job_id: z.string().min(1).max(128).optional(),
    client_id: ClientId.optional().openapi({ description: "Admin token: one client's; a client key sees only its own" }),
    depth: z.coerce.number().int().min(0).max(MAX_DEPTH).optional(),
    limit: z.coerce.number().int().min(1).max(200).default(50),
    cursor: z.string().max(200).refine((c) => decodeListCursor(c) !== null, "a next_cursor from a previous page").optional(),
  })
  .strict();

const Capacity = z.object({ cpu_millicores: Count, memory_mb: Count, workers: Count });

const Quotas = z
  .object({
    depths: z.array(z.object({ depth: z.number().int(), max_workers: z.number().int() })).openapi({ description: "Max concurrent workers at each listed depth" }),
    deeper_max_workers: z.number().int().openapi({ description: "Max concurrent workers at every depth not listed" }),
    max_depth: z.number().int().openapi({ description: "The deepest depth allowed" }),
    capacity: Capacity.openapi({ description: "Compute totals shared by all allocations" }),
    critical_reserve_percent: z.number().int().openapi({ description: "The last share of each total only critical allocations may use" }),
    trace_id: TraceId,
  })
  .openapi("AllocationQuotas");

const SetQuotas = z
  .object({
    depths: z
      .array(z.object({ depth: Depth, max_workers: Count }).strict())
      .max(MAX_DEPTH + 1)
      .superRefine((list, ctx) => {
        const seen = new Set<number>();
        list.forEach((d, i) => {
          if (seen.has(d.depth)) ctx.addIssue({ code: "custom", path: [i, "depth"], message: `depth ${d.depth} is listed twice` });
          seen.add(d.depth);
        });
      })
      .optional()
      .openapi({ description: "Replaces the whole per-depth list" }),
    deeper_max_workers: Count.optional(),
    capacity: Capacity.partial().strict().optional().openapi({ description: "Only the totals given change" }),
  })
  .strict()
  .superRefine((v, ctx) => {
    if (v.depths === undefined && v.deeper_max_workers === undefined && v.capacity === undefined) {
      ctx.addIssue({ code: "custom", path: [], message: "give at least one of depths, deeper_max_workers, capacity" });
    }
  })
  .openapi("SetAllocationQuotas", { description: "Only the parts given change; depths replaces the list" });

const DepthLine = z.object({
  depth: z.number().int(),
  limit: z.number().int().openapi({ description: "Max concurrent workers" }),
  allocated: z.number().int().openapi({ description: "Workers held by pending, active and releasing allocations" }),
  available: z.number().int(),
  allocations: z.number().int(),
});
const Usage = z
  .object({
    depths: z.array(DepthLine).openapi({ description: "Every configured depth and every depth in use" }),
    deeper_max_workers: z.number().int(),
    totals: z.object({ allocations: z.number().int(), workers: z.number().int(), cpu_millicores: z.number().int(), memory_mb: z.number().int() }),
    trace_id: TraceId,
  })
  .openapi("AllocationUsage");

const CapacityLine = z.object({
  total: z.number().int(),
  allocated: z.number().int(),
  available: z.number().int().openapi({ description: "total - allocated (a critical allocation may take all of it)" }),
  critical_reserve: z.number().int().openapi({ description: "Of the total, kept for critical allocations" }),
});
const CapacityView = z
  .object({ cpu_millicores: CapacityLine, memory_mb: CapacityLine, workers: CapacityLine, trace_id: TraceId })
  .openapi("AllocationCapacity");

const Cleanup = z.object({ expired: z.number().int().openapi({ description: "Allocations expired by this sweep" }), trace_id: TraceId }).openapi("AllocationCleanup");

const Params = z.object({ allocationId: AllocationId.openapi({ param: { name: "allocationId", in: "path" } }) });

const json = <T extends z.ZodType>(schema: T) => ({ required: true, content: { "application/json": { schema } } });
const ok = <T extends z.ZodType>(description: string, schema: T) => ({ description, content: { "application/json": { schema } } });
const client = { tags: ["resources"], security: [{ bearer: [] }], middleware: [authenticate("client", "admin"), requireScope("allocations")] };
const admin = { tags: ["admin"], security: [{ bearer: [] }], middleware: [authenticate("admin")] };

function quotasView(cfg: AllocationConfig) {
  return {
    depths: Object.entries(cfg.depths.levels).map(([depth, max]) => ({ depth: Number(depth), max_workers: max })).sort((a, b) => a.depth - b.depth),
    deeper_max_workers: cfg.depths.deeper,
    max_depth: MAX_DEPTH,
    capacity: { cpu_millicores: cfg.capacity.cpuMillicores, memory_mb: cfg.capacity.memoryMb, workers: cfg.capacity.workers },
    critical_reserve_percent: CRITICAL_RESERVE_PERCENT,
  };
}

export const allocationRoutes = new OpenAPIHono<AppEnv>()
  .openapi(
    createRoute({
      method: "get", path: "/api/resources/quotas", ...client, summary: "Worker quotas by depth, and the compute capacity allocations share",
      responses: { 200: ok("Quotas.", Quotas), ...errorResponses("unauthorized", "forbidden") },
    }),
    async (c) => c.json({ ...quotasView(await allocationStub(c.env).settings()), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "post", path: "/api/resources/allocate", ...client,
      summary: "Allocate workers for a job (a sub-job names its parent's allocation): checked against the depth's quota, the capacity and the client's quota",
      request: { body: json(AllocateRequest) },
      responses: {
        201: ok("The allocation, active.", OneAllocation),
        ...errorResponses(
          "bad_request", "validation_failed", "unauthorized", "forbidden", "client_suspended", "client_not_found", "allocation_not_found",
          "allocation_state", "depth_quota_exceeded", "capacity_exceeded", "quota_exceeded", "unavailable",
        ),
      },
    }),
    async (c) => {
      const allocation = await allocate(c.env, c.var.principal, c.req.valid("json"));
      return c.json({ allocation, trace_id: c.var.traceId }, 201);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/api/resources/release", ...client, summary: "Release an allocation and its whole subtree",
      request: { body: json(ReleaseRequest) },
      responses: {
        200: ok("Released, with every allocation of the subtree (state releasing, still counted, if a client's object could not be reached: the alarm finishes it).", Released),
        ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden", "client_suspended", "allocation_not_found", "allocation_state"),
      },
    }),
    async (c) => {
      const { allocation, released } = await release(c.env, c.var.principal, c.req.valid("json").allocation_id);
      return c.json({ allocation, released, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/api/resources/usage", ...client, summary: "Per depth: worker limit, allocated and available; and the totals held",
      responses: { 200: ok("Usage by depth.", Usage), ...errorResponses("unauthorized", "forbidden") },
    }),
    async (c) => c.json({ ...(await allocationStub(c.env).usage()), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "get", path: "/api/resources/capacity", ...client, summary: "Total, allocated and available CPU, memory and workers",
      responses: { 200: ok("Capacity.", CapacityView), ...errorResponses("unauthorized", "forbidden") },
    }),
    async (c) => c.json({ ...(await allocationStub(c.env).capacity()), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "get", path: "/api/resources/allocations", ...client,
      summary: "Allocations by priority (critical first), then age; filtered by state, job, depth and (admin) client; paginated by cursor",
      request: { query: ListQuery },
      responses: { 200: ok("One page; next_cursor is null on the last.", AllocationList), ...errorResponses("validation_failed", "unauthorized", "forbidden") },
    }),
    async (c) => {
      const page = await listAllocations(c.env, c.var.principal, c.req.valid("query"));
      return c.json({ allocations: page.allocations, next_cursor: page.nextCursor, trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "get", path: "/api/resources/allocations/{allocationId}", ...client, summary: "One allocation",
      request: { params: Params },
      responses: { 200: ok("The allocation.", OneAllocation), ...errorResponses("validation_failed", "unauthorized", "forbidden", "allocation_not_found") },
    }),
    async (c) => c.json({ allocation: await findAllocation(c.env, c.var.principal, c.req.valid("param").allocationId), trace_id: c.var.traceId }, 200),
  )
  .openapi(
    createRoute({
      method: "put", path: "/admin/resources/quotas", ...admin, summary: "Set the worker quota per depth and the compute capacity of allocations",
      request: { body: json(SetQuotas) },
      responses: { 200: ok("The quotas now.", Quotas), ...errorResponses("bad_request", "validation_failed", "unauthorized", "forbidden") },
    }),
    async (c) => {
      const body = c.req.valid("json");
      const cfg = await updateAllocationSettings(c.env, {
        levels: body.depths ? Object.fromEntries(body.depths.map((d) => [d.depth, d.max_workers])) : undefined,
        deeper: body.deeper_max_workers,
        capacity: body.capacity ? { cpuMillicores: body.capacity.cpu_millicores, memoryMb: body.capacity.memory_mb, workers: body.capacity.workers } : undefined,
      });
      c.var.logger.info("admin_allocation_quotas", { depths: body.depths?.length ?? null, capacity: body.capacity ?? null });
      return c.json({ ...quotasView(cfg), trace_id: c.var.traceId }, 200);
    },
  )
  .openapi(
    createRoute({
      method: "post", path: "/admin/allocations/cleanup", ...admin, summary: "Expire every allocation whose TTL has elapsed, now (the alarm does it too)",
      responses: { 200: ok("How many expired.", Cleanup), ...errorResponses("unauthorized", "forbidden") },
    }),
    async (c) => {
      const expired = await allocationStub(c.env).cleanup();
      c.var.logger.info("admin_allocation_cleanup", { expired });
      return c.json({ expired, trace_id: c.var.traceId }, 200);
    },
  );
