/**
 * Hierarchical allocations: compute for jobs that spawn sub-jobs. Pure rules only: the state machine,
 * the worker quota of each depth, capacity arithmetic and list cursors. The allocations' Durable
 * Object owns the rows and calls these to decide.
 */

import { decodeCursorText, encodeCursorText } from "./base64url";

export const ALLOCATION_STATES = ["pending", "active", "releasing", "released", "failed", "expired"] as const;
export type AllocationState = (typeof ALLOCATION_STATES)[number];

/** States whose allocations hold workers, CPU and memory (counted against depth quotas and capacity). */
export const HOLDING_STATES: readonly AllocationState[] = ["pending", "active", "releasing"];

/** States an allocation never leaves. */
export const TERMINAL_STATES: readonly AllocationState[] = ["released", "failed", "expired"];

/** States under which a child may be allocated, and which a release or an expiry ends. */
export const LIVE_STATES: readonly AllocationState[] = ["pending", "active"];

const TRANSITIONS: Record<AllocationState, readonly AllocationState[]> = {
  // pending: counted, waiting for the client's quota. Released while waiting when its parent goes.
  pending: ["active", "failed", "releasing", "expired"],
  active: ["releasing", "expired"],
  // releasing: still counted until the client's object has freed its hold.
  releasing: ["released"],
  released: [],
  failed: [],
  expired: [],
};

/** Whether an allocation may go from `from` to `to`. */
export function canTransition(from: AllocationState, to: AllocationState): boolean {
  return TRANSITIONS[from].includes(to);
}

export function isHolding(state: AllocationState): boolean {
  return HOLDING_STATES.includes(state);
}

export const PRIORITIES = ["low", "normal", "high", "critical"] as const;
export type AllocationPriority = (typeof PRIORITIES)[number];

/** Listing order: critical first, low last. */
export function priorityRank(priority: AllocationPriority): number {
  return PRIORITIES.length - 1 - PRIORITIES.indexOf(priority);
}

/** Defaults of an allocation's fields the caller may leave out. */
export const ALLOCATION_DEFAULTS = {
  cpuMillicores: 1000,
  memoryMb: 512,
  priority: "normal" as AllocationPriority,
  ttlMs: 15 * 60 * 1000,
};
export const MIN_TTL_MS = 1000;
export const MAX_TTL_MS = 24 * 60 * 60 * 1000;
/** Deepest level a sub-job may sit at (root 0): bounds a runaway recursion. */
export const MAX_DEPTH = 32;

// --- depth quotas -------------------------------------------------------------------------------

/** Max concurrent workers per depth: explicit levels, and one limit for every depth not listed. */
export interface DepthQuotas {
  /** depth → max workers held at once at that depth. */
  levels: Record<number, number>;
  /** Every depth not in `levels`. */
  deeper: number;
}

export const DEFAULT_DEPTH_QUOTAS: DepthQuotas = { levels: { 0: 10, 1: 30 }, deeper: 50 };

/** The worker limit of one depth. */
export function depthLimit(quotas: DepthQuotas, depth: number): number {
  return quotas.levels[depth] ?? quotas.deeper;
}

export interface DepthRefusal {
  depth: number;
  limit: number;
  in_use: number;
  requested: number;
}

/** Whether `workers` more fit at `depth` beside `inUse` already held there. */
export function checkDepth(quotas: DepthQuotas, depth: number, inUse: number, workers: number): { ok: true } | { ok: false; refusal: DepthRefusal } {
  const limit = depthLimit(quotas, depth);
  if (inUse + workers <= limit) return { ok: true };
  return { ok: false, refusal: { depth, limit, in_use: inUse, requested: workers } };
}

/**
 * The depth of a new allocation: its parent's + 1, or 0 without a parent. A depth the caller gives
 * must be that one; null when it is not (or is beyond MAX_DEPTH).
 */
export function depthFor(parentDepth: number | null, given: number | undefined): number | null {
  const depth = parentDepth === null ? 0 : parentDepth + 1;
  if (given !== undefined && given !== depth) return null;
  return depth <= MAX_DEPTH ? depth : null;
}

export interface DepthUsage {
  depth: number;
  limit: number;
  allocated: number;
  available: number;
  allocations: number;
}

/** Per depth: limit, workers held and what is left; every configured depth and every depth in use, in order. */
export function depthUsage(quotas: DepthQuotas, used: Map<number, { workers: number; allocations: number }>): DepthUsage[] {
  const depths = new Set<number>([...Object.keys(quotas.levels).map(Number), ...used.keys()]);
  return [...depths].sort((a, b) => a - b).map((depth) => {
    const limit = depthLimit(quotas, depth);
    const u = used.get(depth) ?? { workers: 0, allocations: 0 };
    return { depth, limit, allocated: u.workers, available: Math.max(0, limit - u.workers), allocations: u.allocations };
  });
}

// --- capacity -----------------------------------------------------------------------------------

/** Compute in CPU millicores, memory MB and workers: a total, a use or a demand. */
export interface Compute {
  cpuMillicores: number;
  memoryMb: number;
  workers: number;
}

export const DEFAULT_CAPACITY: Compute = { cpuMillicores: 64_000, memoryMb: 131_072, workers: 200 };

/** The last share of each total that only critical allocations may use. */
export const CRITICAL_RESERVE_PERCENT = 10;

export const RESOURCES = ["cpu_millicores", "memory_mb", "workers"] as const;
export type Resource = (typeof RESOURCES)[number];

const FIELD: Record<Resource, keyof Compute> = { cpu_millicores: "cpuMillicores", memory_mb: "memoryMb", workers: "workers" };

/** What an allocation of `workers` workers of `cpu` millicores and `memory` MB each holds in all. */
export function demandOf(workers: number, cpuMillicores: number, memoryMb: number): Compute {
  return { cpuMillicores: workers * cpuMillicores, memoryMb: workers * memoryMb, workers };
}

/** The part of a total kept for critical allocations (rounded down). */
export function criticalReserve(total: number): number {
  return Math.floor((total * CRITICAL_RESERVE_PERCENT) / 100);
}

/** How much of a total an allocation of this priority may bring the use up to. */
export function usableBy(total: number, priority: AllocationPriority): number {
  return priority === "critical" ? total : total - criticalReserve(total);
}

export interface CapacityRefusal {
  resource: Resource;
  total: number;
  usable: number;
  in_use: number;
  requested: number;
}

/** Whether `demand` fits beside `used` within `total`; the first resource it overruns otherwise. */
export function checkCapacity(total: Compute, used: Compute, demand: Compute, priority: AllocationPriority): { ok: true } | { ok: false; refusal: CapacityRefusal } {
  for (const resource of RESOURCES) {
    const f = FIELD[resource];
    const usable = usableBy(total[f], priority);
    if (used[f] + demand[f] > usable) {
      return { ok: false, refusal: { resource, total: total[f], usable, in_use: used[f], requested: demand[f] } };
    }
  }
  return { ok: true };
}

export interface CapacityLine {
  total: number;
  allocated: number;
  /** total - allocated, never below 0 (what a critical allocation could take). */
  available: number;
  /** Of the total, held back for critical allocations. */
  critical_reserve: number;
}

/** The capacity view: per resource, total, allocated, available and the critical reserve. */
export function capacityView(total: Compute, used: Compute): Record<Resource, CapacityLine> {
  const line = (f: keyof Compute): CapacityLine => ({
    total: total[f], allocated: used[f], available: Math.max(0, total[f] - used[f]), critical_reserve: criticalReserve(total[f]),
  });
  return { cpu_millicores: line("cpuMillicores"), memory_mb: line("memoryMb"), workers: line("workers") };
}

// --- configuration ------------------------------------------------------------------------------

export interface AllocationConfig {
  depths: DepthQuotas;
  capacity: Compute;
}

export const DEFAULT_ALLOCATION_CONFIG: AllocationConfig = { depths: DEFAULT_DEPTH_QUOTAS, capacity: DEFAULT_CAPACITY };

/** An operator's change: each part given replaces that part; `levels` replaces the whole list. */
export interface AllocationConfigUpdate {
  levels?: Record<number, number>;
  deeper?: number;
  capacity?: Partial<Compute>;
}

export function applyConfigUpdate(current: AllocationConfig, update: AllocationConfigUpdate): AllocationConfig {
  return {
    depths: { levels: update.levels ?? current.depths.levels, deeper: update.deeper ?? current.depths.deeper },
    capacity: { ...current.capacity, ...stripUndefined(update.capacity ?? {}) },
  };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

// --- listing ------------------------------------------------------------------------------------

/** A position in the listing order (priority, then creation time, then id). */
export interface ListPosition {
  rank: number;
  createdAt: number;
  id: string;
}

const CURSOR = /^(\d):(\d{1,15}):(alc_[a-f0-9]{32})$/;

export function encodeListCursor(p: ListPosition): string {
  return encodeCursorText(`${p.rank}:${p.createdAt}:${p.id}`);
}

export function decodeListCursor(cursor: string): ListPosition | null {
  const match = CURSOR.exec(decodeCursorText(cursor) ?? "");
  return match ? { rank: Number(match[1]), createdAt: Number(match[2]), id: match[3]! } : null;
}

/**
 * Seconds a refused caller should wait: until the earliest expiry among the allocations that hold
 * what it was refused, at least 1; `fallbackSec` when none of them will expire by itself.
 */
export function retryAfterSec(earliestExpiry: number | null, now: number, fallbackSec = 60): number {
  if (earliestExpiry === null) return fallbackSec;
  return Math.max(1, Math.ceil((earliestExpiry - now) / 1000));
}
