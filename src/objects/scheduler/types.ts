/**
 * The scheduler's contract: what the service layer, the routes and the RPC entrypoint hand it and get
 * back. Wire types only (and the request id), so that callers depend on this file and never on the
 * Durable Object class or its collaborators.
 */
import type { BudgetView } from "../../domain/budget";
import { newId } from "../../domain/ids";
import type { HistogramSnapshot } from "../../domain/histogram";
import type { DowngradeReason, Strategy } from "../../domain/optimizer";
import type { Priority, QueueName } from "../../domain/priority";
import type { Attainment, SlaTarget } from "../../domain/sla";
import type { Tier } from "../../domain/types";

/** A reservation a request holds in a pool (its row's `reservations`, as JSON). */
export interface Held {
  pool: string;
  /** The pool's reservation ("" for units taken from the shard's lease of the pool). */
  reservationId: string;
  amount: number;
  /** Units taken from the shard's lease of the pool (./unit-leases.ts): the usage event id their use is recorded under. */
  lease?: string;
}

/** What the service layer hands the scheduler for one new request (already validated and priced). */
export interface NewRequest {
  /** Given by the caller when it admitted the request's money under this id first. */
  id?: string;
  clientId: string;
  tier: Tier;
  maxConcurrent: number;
  template: string;
  params: unknown;
  queue: QueueName;
  idempotencyKey: string | null;
  notBefore: number | null;
  maxAttempts: number;
  estimateNano: number;
  /** The estimate per pool: the template's amounts at the prices of the time. */
  estimate: PoolCost[];
  /** What the cost optimizer decided (see services/optimizer.ts); absent: nothing. */
  plan?: StoredPlan | null;
  /** `params` as stored: JSON, or compressed JSON ("gz:..."), when the caller already encoded it. */
  paramsStored?: string;
  /** Hash of the spec its idempotency key stands for (services/requests.ts): a repeat with another conflicts. */
  specHash?: string | null;
  /** A result cache hit: the request is recorded as completed at once, at no cost. */
  cached?: { result: unknown; costNano: number } | null;
  /** The trace id of the enqueue or execute (HTTP, RPC or MCP): on the request's log lines and in its jobs. */
  traceId?: string | null;
  /** An execute's job slot, taken with its money (services/requests.ts): its admission asks its client object for none. */
  slotHeld?: boolean;
  /** Its money was admitted against this shard's lease from its client (./money-leases.ts): marked until converted. */
  moneyLeased?: boolean;
  /** An execute's reservations, taken beside its money (services/requests.ts): its admission asks those pools for nothing more. */
  poolsHeld?: Held[];
}

/** A single enqueue on its shard's money lease (decision 008) not queued: refused for money, or its client's object unreachable. */
export type LeaseRefusal = { refused: BudgetView } | { clientUnreachable: string };

/** The optimizer's decisions a request carries through the scheduler (stored as JSON with it). */
export interface StoredPlan {
  requested_template: string;
  downgraded_from: string | null;
  downgrade_reason: DowngradeReason | null;
  strategies: Array<{ strategy: Strategy; saved_nano: number; detail: string }>;
  cache_key: string | null;
  cache_ttl_ms: number;
  batchable: boolean;
  batch_size: number;
  compress_threshold_bytes: number | null;
  /** Bytes saved by storing params and result compressed. */
  bytes_saved: number;
  /** Answered from the cache or by an identical request's execution. */
  cached: boolean;
  /** How many requests went to the worker in the invocation that completed this one (1: alone). */
  batched: number | null;
}

/** Units and cost in one pool, for a request's estimate or its actual use. */
export type PoolCost = {
  pool: string;
  units: number;
  cost_nano: number;
};

export type RequestStatus = "queued" | "dispatching" | "running" | "completed" | "failed" | "cancelled" | "expired";

/** A request as callers see it. */
export interface RequestView {
  id: string;
  client_id: string;
  template: string;
  /** The template the caller asked for when the optimizer runs its cheaper alternative; null otherwise. */
  downgraded_from: string | null;
  downgrade_reason: DowngradeReason | null;
  queue: QueueName;
  status: RequestStatus;
  priority: number;
  attempts: number;
  max_attempts: number;
  idempotency_key: string | null;
  estimate_nano: number;
  actual_nano: number | null;
  estimate: PoolCost[];
  /** What the request really used per pool, once it completed. */
  actual: PoolCost[] | null;
  result: unknown;
  error: string | null;
  created_at: number;
  updated_at: number;
  not_before: number;
  started_at: number | null;
  finished_at: number | null;
  dispatch_seq: number | null;
  optimizer: {
    requested_template: string;
    strategies: StoredPlan["strategies"];
    cached: boolean;
    batch_size: number | null;
  } | null;
}

export interface EnqueueOutcome {
  request: RequestView;
  duplicate: boolean;
  /** The key's first request (`request`) was made with another spec: the service layer answers 409. */
  conflict?: boolean;
  position: number | null;
  estimated_wait_ms: number | null;
}

/**
 * A new request refused because its shard holds `max` queued already (SCHEDULER_MAX_QUEUED, passed by
 * the caller): nothing was written; the service layer answers 503 `queue_full`.
 */
export interface QueueFull {
  full: true;
  queued: number;
  max: number;
}

/** Whether a shard's answer to an enqueue or execute is a refusal for a full backlog. */
export function isQueueFull<T extends object>(answer: T | QueueFull): answer is QueueFull {
  return "full" in answer;
}

export interface PositionView {
  id: string;
  status: RequestStatus;
  queue: QueueName;
  position: number | null;
  queued_total: number;
  priority: Priority | null;
  estimated_wait_ms: number | null;
}

export interface QueueStats {
  queue: QueueName;
  depth: number;
  ready: number;
  oldest_wait_ms: number;
  wait_p50_ms: number;
  wait_p95_ms: number;
  dispatch_rate_per_s: number;
}

export interface SchedulerState {
  running: boolean;
  queued: number;
  in_flight: number;
  max_in_flight: number;
  last_pass_at: number | null;
  dispatched_total: number;
  /** Ended worker calls whose settlement failed and is made again until it goes through (./owed.ts). */
  settlements_owed: number;
  /** Shards consulted, when merged over every shard (services/scheduler.ts); absent from one shard's answer. */
  shards?: number;
}

/** Worker calls of one template since the scheduler object was created (see metrics()). */
export interface DispatchCounters {
  /** Calls started. */
  dispatches: number;
  /** Calls that succeeded. */
  completions: number;
  /** Calls that failed, other than by timing out or being cancelled. */
  failures: number;
  /** Attempts returned to the queue for another try (after a failure, a timeout or an expired lease). */
  retries: number;
  /** Calls that reached the template's deadline. */
  timeouts: number;
}

/** Upper bounds, in seconds, of the wait-time histogram of the requests queued now. */
export const WAIT_BUCKETS_S = [1, 5, 30, 60, 300, 600, 1800] as const;

export interface SchedulerMetrics {
  running: boolean;
  in_flight: number;
  /** Settlements owed (./owed.ts). */
  settlements_owed: number;
  queues: Array<{ queue: QueueName; depth: number; oldest_wait_ms: number; wait_seconds: HistogramSnapshot }>;
  counters: Record<string, DispatchCounters>;
}

/** Attainment of one tier and queue over a window (see slaSummary). */
export interface SlaGroup extends Attainment {
  tier: Tier;
  queue: QueueName;
  target: SlaTarget;
  breached_examples: string[];
}

export function newRequestId(): string {
  return newId("request");
}
