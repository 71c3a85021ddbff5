import type { Caller, PoolConfig, ReservedShare } from "./types";

export type Access = { allowed: true; protectedUnits: number } | { allowed: false };

function shareCovers(share: ReservedShare, caller: Caller): boolean {
  return (share.tier !== undefined && share.tier === caller.tier) ||
    (share.clientId !== undefined && share.clientId === caller.clientId);
}

/**
 * What a caller may draw from a pool. A dedicated pool serves its one client; a reserved pool keeps
 * each share it does not grant this caller out of reach (the caller may not push the level below the
 * sum of those shares); a shared pool serves everyone.
 */
export function accessFor(pool: Pick<PoolConfig, "capacity" | "sharing">, caller: Caller): Access {
  const sharing = pool.sharing;
  if (sharing.mode === "dedicated") {
    return sharing.clientId === caller.clientId ? { allowed: true, protectedUnits: 0 } : { allowed: false };
  }
  if (sharing.mode === "reserved") {
    const fraction = sharing.shares.filter((s) => !shareCovers(s, caller)).reduce((sum, s) => sum + s.fraction, 0);
    return { allowed: true, protectedUnits: Math.min(pool.capacity, fraction * pool.capacity) };
  }
  return { allowed: true, protectedUnits: 0 };
}
