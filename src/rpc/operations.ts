/**
 * Every RPC method, as the REST operation it is: the method and route pattern, and whose credential
 * it runs with. `client` operations act for the `client_id` of the input, as that client's API key
 * with every scope would; `internal` ones as the internal token (`client_id` stays in the body, as
 * REST takes it). Path parameters are the input's snake_case fields (`request_id` for :requestId);
 * the rest of the input is the query (GET) or the JSON body.
 */
export const OPERATIONS = {
  // Queue and execution (scope execute)
  enqueue: { method: "POST", path: "/api/queue/enqueue", as: "client" },
  execute: { method: "POST", path: "/api/execute", as: "client" },
  queueStatus: { method: "GET", path: "/api/queue/status", as: "client" },
  position: { method: "GET", path: "/api/queue/position/:requestId", as: "client" },
  dequeue: { method: "DELETE", path: "/api/queue/:requestId", as: "client" },
  status: { method: "GET", path: "/api/execution/:requestId", as: "client" },
  cancel: { method: "POST", path: "/api/execution/:requestId/cancel", as: "client" },
  sla: { method: "GET", path: "/api/execution/:requestId/sla", as: "client" },
  // Usage and cost (usage:read, resources:read)
  slaReport: { method: "GET", path: "/api/sla", as: "client" },
  usage: { method: "GET", path: "/api/usage/:clientId", as: "client" },
  currentUsage: { method: "GET", path: "/api/usage/:clientId/current", as: "client" },
  cost: { method: "GET", path: "/api/cost/:requestId", as: "client" },
  costEstimate: { method: "POST", path: "/api/cost/estimate", as: "client" },
  // Pools (resources:read)
  serviceStatus: { method: "GET", path: "/status", as: "client" },
  availability: { method: "GET", path: "/api/resources/availability", as: "client" },
  check: { method: "POST", path: "/api/resources/check", as: "client" },
  estimate: { method: "POST", path: "/api/resources/estimate", as: "client" },
  // Quota and bursts (quota:read, burst)
  quota: { method: "GET", path: "/api/clients/:clientId/quota", as: "client" },
  quotaCheck: { method: "POST", path: "/api/clients/:clientId/quota/check", as: "client" },
  requestBurst: { method: "POST", path: "/api/clients/:clientId/burst", as: "client" },
  burst: { method: "GET", path: "/api/clients/:clientId/burst", as: "client" },
  endBurst: { method: "DELETE", path: "/api/clients/:clientId/burst", as: "client" },
  // Allocations (allocations)
  allocationQuotas: { method: "GET", path: "/api/resources/quotas", as: "client" },
  allocate: { method: "POST", path: "/api/resources/allocate", as: "client" },
  releaseAllocation: { method: "POST", path: "/api/resources/release", as: "client" },
  allocationUsage: { method: "GET", path: "/api/resources/usage", as: "client" },
  capacity: { method: "GET", path: "/api/resources/capacity", as: "client" },
  allocations: { method: "GET", path: "/api/resources/allocations", as: "client" },
  allocation: { method: "GET", path: "/api/resources/allocations/:allocationId", as: "client" },
  // Optimizer (resources:read, usage:read)
  analyze: { method: "POST", path: "/api/optimize/analyze", as: "client" },
  optimizerStats: { method: "GET", path: "/api/optimize/stats/:clientId", as: "client" },
  recommendations: { method: "GET", path: "/api/optimize/recommendations/:clientId", as: "client" },
  // The spend calls of the internal token (/internal/*)
  consume: { method: "POST", path: "/internal/consume", as: "internal" },
  reserve: { method: "POST", path: "/internal/reserve", as: "internal" },
  release: { method: "POST", path: "/internal/release", as: "internal" },
} as const satisfies Record<string, Operation>;

export interface Operation {
  method: "GET" | "POST" | "DELETE";
  path: string;
  as: "client" | "internal";
}

export type OperationName = keyof typeof OPERATIONS;

/** The input field that fills a path parameter: requestId → request_id. */
export function fieldOf(param: string): string {
  return param.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
