import type { PoolConfig, Sharing } from "./types";

/**
 * The rules a pool's definition must keep, whoever changes it (an operator or a scaling policy). Pure:
 * answers the failing fields, named as the API names them.
 */
export interface PoolShape {
  capacity: number;
  sharing: Sharing;
  sizing: "static" | "dynamic";
  minCapacity: number | null;
  maxCapacity: number | null;
}

export interface FieldIssue {
  path: string;
  message: string;
}

/** Dynamic: min_capacity ≤ capacity ≤ max_capacity, both given; static: neither. Reserved shares: at most the whole pool, each subject once. */
export function poolIssues(pool: PoolShape): FieldIssue[] {
  const issues: FieldIssue[] = [];
  if (pool.sizing === "dynamic") {
    if (pool.minCapacity === null) issues.push({ path: "min_capacity", message: "Required for a dynamic pool" });
    if (pool.maxCapacity === null) issues.push({ path: "max_capacity", message: "Required for a dynamic pool" });
    if (pool.minCapacity !== null && pool.maxCapacity !== null && pool.minCapacity > pool.maxCapacity) {
      issues.push({ path: "min_capacity", message: `must be at most max_capacity (${pool.maxCapacity})` });
    } else {
      if (pool.minCapacity !== null && pool.capacity < pool.minCapacity) issues.push({ path: "capacity", message: `must be at least min_capacity (${pool.minCapacity})` });
      if (pool.maxCapacity !== null && pool.capacity > pool.maxCapacity) issues.push({ path: "capacity", message: `must be at most max_capacity (${pool.maxCapacity})` });
    }
  } else {
    if (pool.minCapacity !== null) issues.push({ path: "min_capacity", message: "only a dynamic pool has bounds" });
    if (pool.maxCapacity !== null) issues.push({ path: "max_capacity", message: "only a dynamic pool has bounds" });
  }
  if (pool.sharing.mode === "reserved") {
    const total = pool.sharing.shares.reduce((sum, s) => sum + s.fraction, 0);
    if (total > 1 + 1e-9) issues.push({ path: "sharing.shares", message: `fractions add up to ${Math.round(total * 1000) / 1000}; at most 1` });
    const seen = new Set<string>();
    pool.sharing.shares.forEach((s, i) => {
      const key = s.tier !== undefined ? `tier:${s.tier}` : `client:${s.clientId}`;
      if (seen.has(key)) issues.push({ path: `sharing.shares.${i}`, message: `a second share for the same ${s.tier !== undefined ? "tier" : "client"}` });
      seen.add(key);
    });
  }
  return issues;
}

/** Clients a sharing names (they must exist). */
export function clientsNamed(sharing: Sharing): string[] {
  if (sharing.mode === "dedicated") return [sharing.clientId];
  if (sharing.mode === "reserved") return sharing.shares.flatMap((s) => (s.clientId !== undefined ? [s.clientId] : []));
  return [];
}

/** Whether a status change needs the pool to hold no active reservations: disabling does (drain first). */
export function needsDrained(from: PoolConfig["status"], to: PoolConfig["status"]): boolean {
  return to === "disabled" && from !== "disabled";
}
