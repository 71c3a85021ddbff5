/** Shared shapes of the domain: one name per thing (see ../shared/DESIGN.md). */
export const TIERS = ["enterprise", "premium", "standard", "basic"] as const;
export type Tier = (typeof TIERS)[number];

export type Sharing =
  | { mode: "shared" }
  | { mode: "reserved"; shares: ReservedShare[] }
  | { mode: "dedicated"; clientId: string };

/** A fraction of capacity kept for one tier or one client; others cannot take it. */
export interface ReservedShare {
  tier?: Tier;
  clientId?: string;
  fraction: number;
}

export interface PoolConfig {
  id: string;
  name: string;
  unit: string;
  capacity: number;
  refillPerSec: number;
  costPerUnitNano: number;
  sharing: Sharing;
  status: "active" | "draining" | "disabled";
  /** Static: capacity changes only by an operator; dynamic: also by its scaling policy. Default static. */
  sizing?: "static" | "dynamic";
  /** pool_low is raised strictly below this percent of capacity (0: never). Default 10. */
  lowWaterPercent?: number;
  /**
   * Token leases to isolates (see docs/architecture.md, the exactness model): auto (default) lends to an isolate once
   * its own consumes of the pool are frequent enough; off: every consume is decided by the pool's object.
   */
  leases?: "auto" | "off";
  /** Monotonic; a pool object adopts a configuration only when its version is newer. */
  version: number;
}

/** Who is spending: the client the work is for, and the channel it came through. */
export interface Caller {
  clientId: string;
  tier: Tier;
  via: string;
}

export interface PoolAmount {
  pool: string;
  amount: number;
}

/**
 * Who is calling: a client by API key, a platform worker by internal token, an operator by admin token,
 * or a Prometheus scraper by the metrics token (which reads /metrics and nothing else).
 */
export type Principal =
  | { kind: "client"; clientId: string; tier: Tier; scopes: string[]; keyId: string }
  | { kind: "internal" }
  | { kind: "admin" }
  | { kind: "metrics" };
