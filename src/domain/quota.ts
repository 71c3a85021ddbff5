/**
 * Client quotas: what a client may hold at once (concurrent jobs, CPU, memory) and spend per UTC day
 * per pool. Pure: the client's Durable Object owns the counts and calls these to decide.
 */

/** A client's quota as it applies now: tier defaults with the operator's overrides resolved. */
export interface ResolvedQuota {
  /** Running requests + active allocations at once. */
  maxConcurrent: number;
  /** CPU for compute work (allocations), millicores; null: no limit. */
  cpuMillicores: number | null;
  /** Memory for compute work (allocations), MB; null: no limit. */
  memoryMb: number | null;
  /** Units per UTC day per pool; a pool not named has no cap. */
  poolDaily: Record<string, number>;
  /** Fair-share weight in dispatch; null or absent: the tier's (its `weight`). Not a limit. */
  weight?: number | null;
}

/** One job asking to run: a request's dispatch (kind "request") or an allocation (kind "allocation"). */
export interface JobClaim {
  jobId: string;
  kind: "request" | "allocation" | "lease";
  /** The hold frees itself at this time if its holder never comes back (a dispatch lease, an allocation's TTL). */
  expiresAt: number;
  /** Counted against the concurrent-jobs limit (a request: 1; an allocation: 1 per job). */
  cpuMillicores?: number;
  memoryMb?: number;
  /** Units the job will spend per pool (its reservations), counted against today's caps. */
  pools?: Record<string, number>;
  /** Job slots it holds (default 1; a block lent to a scheduler shard holds many: ../domain/leases.ts, SLOT_LEASE). */
  slots?: number;
}

/** What a client holds now and spent today (per pool). */
export interface QuotaUse {
  jobs: number;
  cpuMillicores: number;
  memoryMb: number;
  /** Per pool: units spent today plus units held by running jobs. */
  poolToday: Record<string, number>;
}

export type QuotaLimitName = "concurrent" | "cpu" | "memory" | "pool_daily";

/** Why a job does not fit: which limit, its value, the use, what the job asks and by how much it is over. */
export interface QuotaShortfall {
  limit: QuotaLimitName;
  pool?: string;
  limit_value: number;
  in_use: number;
  requested: number;
  shortfall: number;
}

export type QuotaDecision = { ok: true } | { ok: false; shortfall: QuotaShortfall };

/** Limits raised by a burst: `percent` of the quota (150 = half as much again), rounded down. Daily pool caps are not raised. */
export function withBurst(quota: ResolvedQuota, percent: number | null): ResolvedQuota {
  if (percent === null || percent <= 100) return quota;
  const raise = (n: number) => Math.floor((n * percent) / 100);
  return {
    maxConcurrent: raise(quota.maxConcurrent),
    cpuMillicores: quota.cpuMillicores === null ? null : raise(quota.cpuMillicores),
    memoryMb: quota.memoryMb === null ? null : raise(quota.memoryMb),
    poolDaily: quota.poolDaily,
  };
}

/** Whether `job` fits beside `use` under `quota`; the first limit it breaks otherwise. */
export function fitsQuota(quota: ResolvedQuota, use: QuotaUse, job: Omit<JobClaim, "jobId" | "expiresAt">): QuotaDecision {
  if (use.jobs + 1 > quota.maxConcurrent) {
    return { ok: false, shortfall: { limit: "concurrent", limit_value: quota.maxConcurrent, in_use: use.jobs, requested: 1, shortfall: use.jobs + 1 - quota.maxConcurrent } };
  }
  const cpu = job.cpuMillicores ?? 0;
  if (quota.cpuMillicores !== null && cpu > 0 && use.cpuMillicores + cpu > quota.cpuMillicores) {
    return { ok: false, shortfall: { limit: "cpu", limit_value: quota.cpuMillicores, in_use: use.cpuMillicores, requested: cpu, shortfall: use.cpuMillicores + cpu - quota.cpuMillicores } };
  }
  const mem = job.memoryMb ?? 0;
  if (quota.memoryMb !== null && mem > 0 && use.memoryMb + mem > quota.memoryMb) {
    return { ok: false, shortfall: { limit: "memory", limit_value: quota.memoryMb, in_use: use.memoryMb, requested: mem, shortfall: use.memoryMb + mem - quota.memoryMb } };
  }
  return fitsDaily(quota, use, job.pools ?? {});
}

/** Whether spending `pools` today stays within the client's daily caps per pool (the admission check). */
export function fitsDaily(quota: ResolvedQuota, use: Pick<QuotaUse, "poolToday">, pools: Record<string, number>): QuotaDecision {
  for (const [pool, units] of Object.entries(pools)) {
    const cap = quota.poolDaily[pool];
    if (cap === undefined || units <= 0) continue;
    const used = use.poolToday[pool] ?? 0;
    if (used + units > cap) return { ok: false, shortfall: { limit: "pool_daily", pool, limit_value: cap, in_use: used, requested: units, shortfall: used + units - cap } };
  }
  return { ok: true };
}
