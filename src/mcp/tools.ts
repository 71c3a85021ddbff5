import { z } from "@hono/zod-openapi";
import { AllocateRequest, AllocationId, ListQuery, ReleaseRequest } from "../routes/allocations";
import { RequestSpec } from "../routes/queue";
import { ClientId } from "../routes/schemas";
import { AppError } from "../errors";
import type { Principal } from "../http/context";
import type { RouteCall } from "../rpc/dispatch";

/**
 * The MCP tools: each is a REST operation, answered by its route in-process with the caller's
 * credential, so its input schema, checks, scopes and error codes are REST's. Input schemas are the
 * routes' own zod schemas.
 */
export interface Tool {
  name: string;
  title: string;
  description: string;
  input: z.ZodType;
  route(args: Record<string, unknown>, principal: Principal): RouteCall;
}

const NoArguments = z.object({}).strict();

export const TOOLS: Tool[] = [
  {
    name: "request_resources",
    title: "Request resources",
    description:
      "Allocate workers (with CPU and memory per worker) for a job, checked against the worker quota of the job's depth, the shared compute capacity and the client's quota. " +
      "A sub-job names its parent's allocation in parent_id. The allocation expires after ttl_ms unless released. Scope: allocations. " +
      "Refusals: depth_quota_exceeded, capacity_exceeded, quota_exceeded (429), allocation_not_found, allocation_state.",
    input: AllocateRequest,
    route: (args) => ({ method: "POST", path: "/api/resources/allocate", body: args }),
  },
  {
    name: "release_resources",
    title: "Release resources",
    description: "Release an allocation and its whole subtree of sub-job allocations; answers every allocation id it ended. Scope: allocations.",
    input: ReleaseRequest,
    route: (args) => ({ method: "POST", path: "/api/resources/release", body: args }),
  },
  {
    name: "get_capacity",
    title: "Get capacity",
    description: "Total, allocated and available CPU (millicores), memory (MB) and workers, and the reserve only critical allocations may use. Scope: allocations.",
    input: NoArguments,
    route: () => ({ method: "GET", path: "/api/resources/capacity" }),
  },
  {
    name: "get_allocation",
    title: "Get an allocation",
    description: "One allocation of the caller's client by id: its job, parent, depth, workers, priority, state and expiry. Scope: allocations.",
    input: z.object({ allocation_id: AllocationId }).strict(),
    route: (args) => ({ method: "GET", path: `/api/resources/allocations/${encodeURIComponent(String(args.allocation_id))}` }),
  },
  {
    name: "list_allocations",
    title: "List allocations",
    description: "The caller's allocations by priority (critical first), then age; filtered by state, job_id and depth; paginated: pass next_cursor back as cursor. Scope: allocations.",
    input: ListQuery,
    route: (args) => ({ method: "GET", path: "/api/resources/allocations", query: args }),
  },
  {
    name: "cleanup_expired_allocations",
    title: "Clean up expired allocations",
    description: "Expire every allocation whose TTL has elapsed, now (an alarm does it too); answers how many expired. Operators only: the admin token.",
    input: NoArguments,
    route: () => ({ method: "POST", path: "/admin/allocations/cleanup" }),
  },
  {
    name: "execute",
    title: "Execute a request",
    description:
      "Run a template's work now when its queue is immediate and every limit admits it, else enqueue it; answers the request (with its result once completed), its queue position and estimated wait. " +
      "Scope: execute. Refusals: budget_exceeded (402), quota_exceeded (429), template_not_found, worker_failed, queue_full (503: the scheduler shard is full; retry after retry_after_ms), unavailable (503: retry; look the request up by the request_id it names first).",
    input: RequestSpec,
    route: (args) => ({ method: "POST", path: "/api/execute", body: args }),
  },
  {
    name: "queue_status",
    title: "Queue status",
    description: "Per queue (immediate, fast, normal, batch, deferred): depth, ready requests, waits and dispatch rate; and whether the scheduler runs. Scope: execute.",
    input: NoArguments,
    route: () => ({ method: "GET", path: "/api/queue/status" }),
  },
  {
    name: "usage",
    title: "Usage this month",
    description: "The client's month so far: spend, budget, remaining, money in flight, requests by status, concurrency limit (nano-dollars: 1e-9 USD). Scope: usage:read. client_id: only with the admin token.",
    input: z.object({ client_id: ClientId.optional() }).strict(),
    route: (args, principal) => {
      const clientId = principal.kind === "client" ? (args.client_id as string | undefined) ?? principal.clientId : args.client_id;
      if (clientId === undefined) throw new AppError("validation_failed", "invalid arguments", { fields: [{ path: "client_id", message: "Required with the admin token" }] });
      return { method: "GET", path: `/api/usage/${encodeURIComponent(String(clientId))}/current` };
    },
  },
];

/** A tool's JSON Schema for tools/list: what its input schema accepts. */
export function inputJsonSchema(tool: Tool): Record<string, unknown> {
  const { $schema: _, ...schema } = z.toJSONSchema(tool.input, { io: "input", unrepresentable: "any" }) as Record<string, unknown>;
  return schema;
}
