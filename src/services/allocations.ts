import type { AllocationConfigUpdate, AllocationPriority, AllocationState } from "../domain/allocations";
import { AppError } from "../errors";
import type { Principal } from "../domain/types";
import type { AllocResult, Allocation } from "../objects/allocations/types";
import { callerFor } from "./pools";
import { clientQuota } from "./quotas";

/** The one allocations object (a singleton: depth quotas and capacity are global). */
export function allocationStub(env: Env): ReturnType<Env["ALLOCATIONS"]["get"]> {
  return env.ALLOCATIONS.get(env.ALLOCATIONS.idFromName("allocations"));
}

/** The object's answer, or the AppError it stands for (429s carry their Retry-After). */
export function unwrapAllocation<T>(result: AllocResult<T>): T {
  if (result.ok) return result.value;
  throw AppError.from(result.error, result.retryAfterSec);
}

/** Whose allocations a principal may see: a key its own client's, the admin token everyone's (null). */
export function ownerOf(principal: Principal): string | null {
  return principal.kind === "client" ? principal.clientId : null;
}

export interface AllocateBody {
  client_id?: string;
  job_id: string;
  parent_id?: string;
  depth?: number;
  workers: number;
  cpu_millicores: number;
  memory_mb: number;
  priority: AllocationPriority;
  ttl_ms: number;
}

/**
 * Allocate for the acting client: a key for its own client, the admin token for `client_id`. The
 * client's quota is resolved here and decided by the client's object, called from the allocations
 * object once depth and capacity have admitted the allocation.
 */
export async function allocate(env: Env, principal: Principal, body: AllocateBody): Promise<Allocation> {
  const { clientId } = await callerFor(env, principal, body.client_id, "api");
  const quota = await clientQuota(env, clientId);
  if (!quota) throw new AppError("client_not_found", `no client ${clientId}`, { client_id: clientId });
  return unwrapAllocation(await allocationStub(env).allocate(quota, {
    clientId, jobId: body.job_id, parentId: body.parent_id, depth: body.depth, workers: body.workers,
    cpuMillicores: body.cpu_millicores, memoryMb: body.memory_mb, priority: body.priority, ttlMs: body.ttl_ms,
  }));
}

/** Release an allocation and its subtree; a key may release only its own client's. */
export async function release(env: Env, principal: Principal, allocationId: string): Promise<{ allocation: Allocation; released: string[] }> {
  return unwrapAllocation(await allocationStub(env).release(allocationId, ownerOf(principal)));
}

export async function findAllocation(env: Env, principal: Principal, allocationId: string): Promise<Allocation> {
  return unwrapAllocation(await allocationStub(env).get(allocationId, ownerOf(principal)));
}

export interface ListQuery {
  client_id?: string;
  state?: AllocationState;
  job_id?: string;
  depth?: number;
  limit: number;
  cursor?: string;
}

/** A page of allocations: a key sees its own client's (naming another client is refused), the admin token any. */
export async function listAllocations(env: Env, principal: Principal, q: ListQuery): Promise<{ allocations: Allocation[]; nextCursor: string | null }> {
  const own = ownerOf(principal);
  if (own !== null && q.client_id !== undefined && q.client_id !== own) {
    throw new AppError("forbidden", "an API key may act only for its own client", { client_id: q.client_id });
  }
  return allocationStub(env).list({
    clientId: own ?? q.client_id, state: q.state, jobId: q.job_id, depth: q.depth, limit: q.limit, cursor: q.cursor,
  });
}

export function updateAllocationSettings(env: Env, update: AllocationConfigUpdate) {
  return allocationStub(env).updateSettings(update);
}
