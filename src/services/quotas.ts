import type { BurstAsk, BurstPolicy, BurstSession } from "../domain/burst";
import { dayKey } from "../domain/calendar";
import type { QuotaDecision, ResolvedQuota } from "../domain/quota";
import type { Tier } from "../domain/types";
import { AppError } from "../errors";
import type { BurstResult, QuotaState } from "../objects/client/types";
import { burstClient, putBurstPolicy, putQuotaOverrides, type QuotaOverrides } from "../storage/quotas";
import { burstPolicyByTier, clearConfigCache, clientQuota, clientTier, poolConfigs, templateConfig, tierLimits } from "../storage/config";
import { clientStub } from "../objects/client/stub";

export { clientQuota };


/** The quota that applies to a known client; 404 otherwise. */
export async function requireQuota(env: Env, clientId: string): Promise<ResolvedQuota> {
  const quota = await clientQuota(env, clientId);
  if (!quota) throw new AppError("client_not_found", `no client ${clientId}`, { client_id: clientId });
  return quota;
}

/** A quota as the API shows it: limits (configured and with any burst), use, and per pool today. */
export function quotaView(clientId: string, tierWeight: number, state: QuotaState) {
  const limits = (q: ResolvedQuota) => ({ max_concurrent: q.maxConcurrent, cpu_millicores: q.cpuMillicores, memory_mb: q.memoryMb, pool_daily: q.poolDaily });
  const weight = state.quota.weight ?? null;
  const pools = new Set([...Object.keys(state.quota.poolDaily), ...Object.keys(state.use.poolToday)]);
  return {
    client_id: clientId,
    day: dayKey(Date.now()),
    quota: limits(state.quota),
    effective: limits(state.effective),
    weight: weight ?? tierWeight,
    weight_source: (weight === null ? "tier" : "client") as "tier" | "client",
    burst: state.burst,
    usage: {
      active_jobs: state.use.jobs,
      running_requests: state.use.requests,
      active_allocations: state.use.allocations,
      leased_slots: state.use.leased,
      cpu_millicores: state.use.cpuMillicores,
      memory_mb: state.use.memoryMb,
      pools_today: [...pools].sort().map((pool) => {
        const used = state.use.poolToday[pool] ?? 0;
        const cap = state.quota.poolDaily[pool] ?? null;
        return { pool, used, cap, available: cap === null ? null : Math.max(0, cap - used) };
      }),
    },
  };
}

export async function getQuota(env: Env, clientId: string) {
  const [quota, client, tiers] = await Promise.all([requireQuota(env, clientId), clientTier(env, clientId), tierLimits(env)]);
  return quotaView(clientId, tiers.get(client!.tier)?.weight ?? 1, await clientStub(env, clientId).quotaState(quota));
}

/** Replace a client's quota overrides (null: the default). Every pool named must exist. */
export async function setQuota(env: Env, clientId: string, overrides: QuotaOverrides) {
  await requireQuota(env, clientId);
  const pools = await poolConfigs(env);
  const unknown = Object.keys(overrides.pool_daily).filter((p) => !pools.has(p));
  if (unknown.length) throw new AppError("pool_not_found", `no pool named ${unknown.join(", ")}`, { pools: unknown });
  await putQuotaOverrides(env.DB, clientId, overrides);
  clearConfigCache();
  return getQuota(env, clientId);
}

/** A job to check: a template (its pool amounts), or compute (CPU, memory) and pool units given directly. */
export interface JobSpec {
  template?: string;
  cpu_millicores?: number;
  memory_mb?: number;
  pools?: Record<string, number>;
}

/** Would this job fit the client's quota now; if not, which limit and by how much. */
export async function checkQuota(env: Env, clientId: string, job: JobSpec): Promise<{ decision: QuotaDecision; job: { kind: string; cpu_millicores: number; memory_mb: number; pools: Record<string, number> } }> {
  const quota = await requireQuota(env, clientId);
  const pools: Record<string, number> = { ...(job.pools ?? {}) };
  if (job.template) {
    for (const r of (await templateConfig(env, job.template)).requirements) pools[r.pool] = (pools[r.pool] ?? 0) + r.amount;
  }
  const known = await poolConfigs(env);
  const unknown = Object.keys(pools).filter((p) => !known.has(p));
  if (unknown.length) throw new AppError("pool_not_found", `no pool named ${unknown.join(", ")}`, { pools: unknown });
  const kind = job.template ? "request" : "allocation";
  const claim = { kind: kind as "request" | "allocation", cpuMillicores: job.cpu_millicores ?? 0, memoryMb: job.memory_mb ?? 0, pools };
  return { decision: await clientStub(env, clientId).checkJob(quota, claim), job: { kind, cpu_millicores: claim.cpuMillicores, memory_mb: claim.memoryMb, pools } };
}

// --- burst ----------------------------------------------------------------------------------------

async function policyFor(env: Env, clientId: string): Promise<BurstPolicy> {
  const client = await clientTier(env, clientId);
  if (!client) throw new AppError("client_not_found", `no client ${clientId}`, { client_id: clientId });
  const policy = (await burstPolicyByTier(env)).get(client.tier);
  return policy ?? { tier: client.tier, allowed: false, max_percent: 100, max_duration_ms: 1, cooldown_ms: 0, max_per_day: 1, requires_approval: true };
}

function unwrap(r: BurstResult): BurstSession {
  if (!r.ok) throw AppError.from(r.error);
  return r.value;
}

export async function requestBurst(env: Env, clientId: string, ask: BurstAsk): Promise<BurstSession> {
  const policy = await policyFor(env, clientId);
  return unwrap(await clientStub(env, clientId).requestBurst(policy, ask));
}

/** The client's burst: the session active now, one pending approval, its policy and recent sessions. */
export async function burstStatus(env: Env, clientId: string) {
  const policy = await policyFor(env, clientId);
  const sessions = await clientStub(env, clientId).bursts();
  const now = Date.now();
  return {
    client_id: clientId,
    active: sessions.find((s) => s.state === "active" && (s.ends_at ?? 0) > now) ?? null,
    pending: sessions.find((s) => s.state === "pending") ?? null,
    policy,
    sessions: sessions.slice(0, 50),
  };
}

export async function endBurst(env: Env, clientId: string): Promise<BurstSession> {
  await policyFor(env, clientId);
  return unwrap(await clientStub(env, clientId).endBurst());
}

/** An operator approves or denies a pending session, found by its id. */
export async function decideBurst(env: Env, burstId: string, approve: boolean): Promise<BurstSession> {
  const clientId = await burstClient(env.DB, burstId);
  if (!clientId) throw new AppError("burst_not_found", `no burst ${burstId}`, { burst_id: burstId });
  return unwrap(await clientStub(env, clientId).decideBurst(burstId, approve));
}

export async function getBurstPolicies(env: Env): Promise<BurstPolicy[]> {
  return [...(await burstPolicyByTier(env)).values()];
}

export async function setBurstPolicy(env: Env, tier: Tier, policy: Omit<BurstPolicy, "tier">): Promise<BurstPolicy> {
  await putBurstPolicy(env.DB, { ...policy, tier });
  clearConfigCache();
  return { ...policy, tier };
}
