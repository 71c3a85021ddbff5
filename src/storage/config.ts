import { resolveBudget, type BudgetLimit } from "../domain/budget";
import type { PoolConfig, Tier } from "../domain/types";
import { AppError } from "../errors";
import { findBudgetSettings, findClientTier, findKeyOwner, type KeyOwner } from "./clients";
import { listTiers, type TierRow } from "./tiers";
import { listPools } from "./pools";
import { listTemplates, type Template } from "./templates";
import { findQuotaOverrides, listBurstPolicies } from "./quotas";
import type { BurstPolicy } from "../domain/burst";
import type { ResolvedQuota } from "../domain/quota";
import { QUEUES } from "../domain/priority";
import { defaultTarget, type SlaTarget } from "../domain/sla";
import { TIERS } from "../domain/types";
import { listSlaTargets } from "./sla";
import { TtlCache } from "./cache";
import { settings } from "../settings";

const pools = new TtlCache<Map<string, PoolConfig>>(1);
const templates = new TtlCache<Map<string, Template>>(1);
/** Unknown API keys cached per isolate (each a D1 read saved); only older unknown keys make room for newer ones. */
export const KEY_MISSES_MAX = 10_000;
/** API keys by hash: valid keys and unknown ones in separate bounds, so bad keys cannot push out a valid one. */
export function newKeyCache(): TtlCache<KeyOwner | null> {
  return new TtlCache<KeyOwner | null>(10_000, { isNegative: (owner) => owner === null, maxEntries: KEY_MISSES_MAX });
}
const keys = newKeyCache();
const tiers = new TtlCache<Map<Tier, TierRow>>(1);
const clients = new TtlCache<{ tier: Tier; status: string } | null>();
const budgets = new TtlCache<BudgetLimit | null>();
const quotas = new TtlCache<ResolvedQuota | null>();
const burstPolicies = new TtlCache<Map<string, BurstPolicy>>(1);
const slaCache = new TtlCache<Map<string, SlaTarget>>(1);

function ttl(env: Env): number {
  return settings(env).CONFIG_TTL_MS;
}

export function poolConfigs(env: Env): Promise<Map<string, PoolConfig>> {
  return pools.get("all", ttl(env), async () => new Map((await listPools(env.DB)).map((p) => [p.id, p])));
}

export async function poolConfig(env: Env, id: string): Promise<PoolConfig> {
  const pool = (await poolConfigs(env)).get(id);
  if (!pool) throw new AppError("pool_not_found", `no pool named ${id}`, { pool: id });
  return pool;
}

export function templateConfigs(env: Env): Promise<Map<string, Template>> {
  return templates.get("all", ttl(env), async () => new Map((await listTemplates(env.DB)).map((t) => [t.id, t])));
}

export async function templateConfig(env: Env, id: string): Promise<Template> {
  const template = (await templateConfigs(env)).get(id);
  if (!template) throw new AppError("template_not_found", `no template named ${id}`, { template: id });
  return template;
}

export function keyOwner(env: Env, keyHash: string): Promise<KeyOwner | null> {
  return keys.get(keyHash, ttl(env), () => findKeyOwner(env.DB, keyHash));
}

export function clientTier(env: Env, clientId: string) {
  return clients.get(clientId, ttl(env), () => findClientTier(env.DB, clientId));
}

/** The monthly budget that applies to a client, or null for an unknown client. */
export function budgetLimit(env: Env, clientId: string): Promise<BudgetLimit | null> {
  return budgets.get(clientId, ttl(env), async () => {
    const settings = await findBudgetSettings(env.DB, clientId);
    return settings ? resolveBudget(settings) : null;
  });
}

export function tierLimits(env: Env): Promise<Map<Tier, TierRow>> {
  return tiers.get("all", ttl(env), async () => new Map((await listTiers(env.DB)).map((t) => [t.id, t])));
}

/**
 * The quota that applies to a client: the operator's overrides, else its tier's concurrency and no
 * CPU, memory or daily caps. Null for an unknown client.
 */
export function clientQuota(env: Env, clientId: string): Promise<ResolvedQuota | null> {
  return quotas.get(clientId, ttl(env), async () => {
    const [client, overrides, tiers] = await Promise.all([findClientTier(env.DB, clientId), findQuotaOverrides(env.DB, clientId), tierLimits(env)]);
    if (!client) return null;
    return {
      maxConcurrent: overrides?.max_concurrent ?? tiers.get(client.tier)?.max_concurrent ?? 1,
      cpuMillicores: overrides?.cpu_millicores ?? null,
      memoryMb: overrides?.memory_mb ?? null,
      poolDaily: overrides?.pool_daily ?? {},
      weight: overrides?.weight ?? null,
    };
  });
}

/** SLA targets for every tier and queue: operators' settings, else the defaults of domain/sla.ts. */
export function slaTargets(env: Env): Promise<Map<string, SlaTarget>> {
  return slaCache.get("all", ttl(env), async () => {
    const saved = new Map((await listSlaTargets(env.DB)).map((t) => [`${t.tier}/${t.queue}`, t]));
    const out = new Map<string, SlaTarget>();
    for (const tier of TIERS) for (const queue of QUEUES) out.set(`${tier}/${queue}`, saved.get(`${tier}/${queue}`) ?? defaultTarget(tier, queue));
    return out;
  });
}

/** Burst policies by tier. */
export function burstPolicyByTier(env: Env): Promise<Map<string, BurstPolicy>> {
  return burstPolicies.get("all", ttl(env), async () => new Map((await listBurstPolicies(env.DB)).map((p) => [p.tier, p])));
}

/** Forget everything cached in this isolate (after an admin change, and in tests). */
export function clearConfigCache(): void {
  pools.clear();
  templates.clear();
  keys.clear();
  clients.clear();
  tiers.clear();
  budgets.clear();
  quotas.clear();
  burstPolicies.clear();
  slaCache.clear();
}
