/**
 * The allocation object's contract: what the service layer and the routes hand the AllocationObject
 * and get back. Wire types only, so that callers depend on this file and never on the class.
 */
import type { AllocationPriority, AllocationState, DepthUsage } from "../../domain/allocations";
import type { ErrorBody } from "../../errors";

/** An allocation as the API shows it. */
export interface Allocation {
  id: string;
  client_id: string;
  job_id: string;
  parent_id: string | null;
  depth: number;
  workers: number;
  cpu_millicores: number;
  memory_mb: number;
  priority: AllocationPriority;
  ttl_ms: number;
  state: AllocationState;
  created_at: number;
  activated_at: number | null;
  expires_at: number;
  /** When it stopped holding capacity: released, expired or failed. */
  released_at: number | null;
  reason: string | null;
}

export interface AllocateInput {
  clientId: string;
  jobId: string;
  parentId?: string;
  depth?: number;
  workers: number;
  cpuMillicores: number;
  memoryMb: number;
  priority: AllocationPriority;
  ttlMs: number;
}

export interface AllocationFilter {
  clientId?: string;
  state?: AllocationState;
  jobId?: string;
  depth?: number;
  limit: number;
  cursor?: string;
}

export interface UsageView {
  depths: DepthUsage[];
  deeper_max_workers: number;
  totals: { allocations: number; workers: number; cpu_millicores: number; memory_mb: number };
}

/** A failure the HTTP layer turns into its error; 429s carry the seconds for Retry-After. */
export type AllocResult<T> = { ok: true; value: T } | { ok: false; error: ErrorBody; retryAfterSec?: number };
