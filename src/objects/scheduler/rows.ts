/**
 * The stored request row that the collaborators share, its entry in the queued index, and how callers
 * see it (RequestView). Plain data and pure functions: no storage, no bindings.
 */
import type { QueueName } from "../../domain/priority";
import type { Caller, Tier } from "../../domain/types";
import type { ErrorBody } from "../../errors";
import { decompressText } from "../../domain/compression";
import type { Held, PoolCost, RequestStatus, RequestView, StoredPlan } from "./types";

/** A row of the `requests` table (see schema.ts); the live copies in memory have the same shape. */
export interface Row {
  id: string;
  client_id: string;
  tier: Tier;
  max_concurrent: number;
  template: string;
  /** Long ones are not kept in memory while a request waits (QueueStore.loadParams reads them when it is launched): null there. */
  params: string | null;
  queue: QueueName;
  status: RequestStatus;
  priority: number;
  attempts: number;
  max_attempts: number;
  idempotency_key: string | null;
  estimate_nano: number;
  actual_nano: number | null;
  result: string | null;
  error: string | null;
  created_at: number;
  updated_at: number;
  not_before: number;
  lease_until: number | null;
  started_at: number | null;
  finished_at: number | null;
  dispatch_seq: number | null;
  reservations: string | null;
  ready_at: number | null;
  first_started_at: number | null;
  plan: string | null;
  estimate_detail: string | null;
  actual_detail: string | null;
  /** The trace id of the enqueue or execute that made it (null for requests made before the column). */
  trace_id: string | null;
  [key: string]: SqlStorageValue;
}

/** A queued request in the dispatch index (QueueStore.queued). */
export interface Queued {
  id: string;
  clientId: string;
  tier: Tier;
  /** The tier row's priority points when this request was indexed (refreshed when a tier changes). */
  tierPoints: number;
  queue: QueueName;
  createdAt: number;
  /** When it could first run (ready_at): waits, wait points and starvation count from here. */
  readyAt: number;
  notBefore: number;
  recentShare: number;
  /** The pools it needs and how many units of each (from its estimate), for wait estimates. */
  pools: PoolNeed[];
}

/** Units of one pool a request needs. */
export interface PoolNeed {
  pool: string;
  units: number;
}

/** The last estimate parsed per template: requests of one template mostly share the same text. */
const needsCache = new Map<string, { text: string; needs: PoolNeed[] }>();

/** The pools a request needs, from its stored estimate (parsed once per template and estimate text). */
export function poolNeedsOf(row: Pick<Row, "template" | "estimate_detail">): PoolNeed[] {
  const text = row.estimate_detail ?? "[]";
  const hit = needsCache.get(row.template);
  if (hit && hit.text === text) return hit.needs;
  const needs = (JSON.parse(text) as PoolCost[]).filter((p) => p.units > 0).map((p) => ({ pool: p.pool, units: p.units }));
  if (needsCache.size >= 1000) needsCache.clear();
  needsCache.set(row.template, { text, needs });
  return needs;
}

/** A row's ready time: stored since the column exists; before, the later of creation and not-before. */
export function readyAtOf(row: Pick<Row, "ready_at" | "created_at" | "not_before">): number {
  return row.ready_at ?? Math.max(row.created_at, row.not_before);
}

/** A request that ended, as finishAll records it. */
export interface Finished {
  id: string;
  status: "completed" | "failed";
  result?: string;
  actual?: number;
  actualDetail?: string;
  error?: string;
  plan?: StoredPlan;
  startedAt?: number;
}

/** A pool reservation a dispatched request holds. */
export type { Held } from "./types";

/** How a worker call ended, for settlement. */
export interface Outcome {
  ok: boolean;
  result?: unknown;
  usage?: Record<string, number>;
  error?: string;
  /** False for failures that no retry can fix. */
  retryable?: boolean;
  /** Requests in the worker invocation that produced this outcome (batching). */
  batched?: number;
}

/** A repeat of an idempotency key with another spec; a request made before hashes (NULL) never conflicts. */
export function specConflict(prior: Row, specHash: string | null): boolean {
  const stored = prior.spec_hash;
  return typeof stored === "string" && specHash !== null && stored !== specHash;
}

/** A failed call that reached its deadline. */
export function timedOut(outcome: Outcome): boolean {
  return !outcome.ok && (outcome.error ?? "").includes("timed out");
}

/** The scheduler as the pools see it: acting for the request's client. */
export function callerOf(row: Pick<Row, "client_id" | "tier">): Caller {
  return { clientId: row.client_id, tier: row.tier, via: "scheduler" };
}

/** What the worker is allotted per pool: the amounts the request holds. */
export function allottedOf(row: Row): Record<string, number> {
  return Object.fromEntries((JSON.parse(row.reservations ?? "[]") as Held[]).map((h) => [h.pool, h.amount]));
}

/** A request as callers see it (a compressed result stays compressed: see viewOf). */
export function view(row: Row): RequestView {
  const plan = row.plan ? (JSON.parse(row.plan) as StoredPlan) : null;
  return {
    id: row.id,
    client_id: row.client_id,
    template: row.template,
    downgraded_from: plan?.downgraded_from ?? null,
    downgrade_reason: plan?.downgrade_reason ?? null,
    queue: row.queue,
    status: row.status,
    priority: row.priority,
    attempts: row.attempts,
    max_attempts: row.max_attempts,
    idempotency_key: row.idempotency_key,
    estimate_nano: row.estimate_nano,
    actual_nano: row.actual_nano,
    estimate: row.estimate_detail === null ? [] : (JSON.parse(row.estimate_detail) as PoolCost[]),
    actual: row.actual_detail === null ? null : (JSON.parse(row.actual_detail) as PoolCost[]),
    result: row.result === null ? null : JSON.parse(row.result),
    error: row.error,
    created_at: row.created_at,
    updated_at: row.updated_at,
    not_before: row.not_before,
    started_at: row.started_at,
    finished_at: row.finished_at,
    dispatch_seq: row.dispatch_seq,
    optimizer: optimizerView(plan, row.status),
  };
}

function optimizerView(p: StoredPlan | null, status: RequestStatus): RequestView["optimizer"] {
  if (!p) return null;
  return {
    requested_template: p.requested_template,
    // A request that ran alone completes without rewriting its plan: batched null there means 1.
    strategies: p.strategies, cached: p.cached, batch_size: p.batched ?? (status === "completed" && !p.cached ? 1 : null),
  };
}

/** A view whose stored result may be compressed: decompressed for the caller. */
export async function viewOf(row: Row): Promise<RequestView> {
  if (typeof row.result === "string" && row.result.startsWith("gz:")) return view({ ...row, result: await decompressText(row.result) });
  return view(row);
}

/** A refusal in the objects' Result shape. */
export function fail(code: ErrorBody["code"], message: string, details?: Record<string, unknown>): { ok: false; error: ErrorBody } {
  return { ok: false, error: details ? { code, message, details } : { code, message } };
}
