/**
 * What an execute that can run at once takes before it reaches its shard, beside its money: its job
 * slot (in the same client-object call: ClientObject.admit with RunSlots) and its units in each pool
 * (in parallel with that call), as the shard's admission would claim them. The immediate lane's
 * admission then asks neither object for anything (Dispatcher.runNow): an execute goes client and pools
 * at once, then the shard, then the worker, where it went client, shard, client, pools, worker. What is
 * taken for a request that is refused or stays queued is given back (here for a refusal; by the shard
 * otherwise: Admission.giveBackHeld).
 */
import type { JobClaim, ResolvedQuota } from "../domain/quota";
import type { RunSlots } from "../objects/client/types";
import { clientWeight, waitClaimOf } from "../objects/scheduler/admission";
import { callerOf } from "../objects/scheduler/rows";
import { shardName } from "../objects/scheduler/shards";
import type { Held, NewRequest } from "../objects/scheduler/types";
import { poolStub } from "../objects/pool/stub";
import type { ReserveResult, Result } from "../objects/pool/types";
import type { Template } from "../storage/templates";
import { settings } from "../settings";
import { poolConfigs, templateConfig, tierLimits } from "../storage/config";
import { log } from "../log";

/** Requests that can run at once: the immediate queue, not deferred. */
export function readyToRun(requests: NewRequest[]): NewRequest[] {
  const now = Date.now();
  return requests.filter((r) => r.queue === "immediate" && (r.notBefore ?? 0) <= now);
}

/**
 * How long what is taken before the shard is held: the lease the shard's claim will give (template
 * timeout + LEASE_MARGIN_MS, counted from a moment later), and a second more.
 */
function holdMs(env: Env, template: Template): number {
  return template.timeoutMs + settings(env).LEASE_MARGIN_MS + 1000;
}

/** The pool caller an execute's holds are taken and given back as: its client, as the scheduler. */
const callerFor = (r: NewRequest) => callerOf({ client_id: r.clientId, tier: r.tier });

/** The job slots to take with the money, claimed for the owner shard. */
export async function runSlots(env: Env, requests: NewRequest[], owner: number): Promise<RunSlots> {
  const now = Date.now();
  const claims = await Promise.all(requests.map(async (r): Promise<JobClaim> => {
    const template = await templateConfig(env, r.template);
    return {
      jobId: r.id!, kind: "request", expiresAt: now + holdMs(env, template),
      pools: Object.fromEntries(template.requirements.map((q) => [q.pool, q.amount])),
    };
  }));
  return { claims, shard: shardName(owner) };
}

/**
 * Each request's units in every pool its template needs, all or nothing per request (what one pool
 * grants is given back when another refuses): a pool short of units arbitrates between shards as for
 * the shard's own admission (the request's class and its client's weight). Requests refused here are
 * admitted by their shard as usual.
 */
export async function holdUnits(env: Env, requests: NewRequest[], owner: number, quota: ResolvedQuota | null): Promise<Map<string, Held[]>> {
  const [pools, tiers] = await Promise.all([poolConfigs(env), tierLimits(env)]);
  const now = Date.now();
  const got = new Map<string, Held[]>();
  await Promise.all(requests.map(async (r) => {
    const template = await templateConfig(env, r.template);
    const ttlMs = holdMs(env, template);
    const wait = waitClaimOf({ client_id: r.clientId, tier: r.tier, queue: r.queue, created_at: now, ready_at: now }, tiers, clientWeight(quota, tiers, r.tier), shardName(owner), now);
    const caller = callerFor(r);
    const answers = await Promise.all(template.requirements.map(async (q) => {
      const cfg = pools.get(q.pool);
      if (!cfg) return null;
      try {
        const [res] = (await poolStub(env, q.pool).reserveMany(cfg, [{ caller, amount: q.amount, ttlMs, requestId: r.id!, wait }])) as Result<ReserveResult>[];
        return res?.ok ? { pool: q.pool, reservationId: res.value.reservationId, amount: q.amount } : null;
      } catch {
        // Unreachable: the shard's admission asks again, and answers the execute queued if that fails too.
        // A grant whose answer was lost ends with its TTL.
        return null;
      }
    }));
    const held = answers.filter((a): a is Held => a !== null);
    if (held.length === template.requirements.length) got.set(r.id!, held);
    else await releaseUnits(env, [{ request: r, held }]);
  }));
  return got;
}

/** Give back units taken for requests that will not use them (nothing consumed). A failure is logged: they end with their TTL. */
export async function releaseUnits(env: Env, items: Array<{ request: NewRequest; held: Held[] }>): Promise<void> {
  const pools = await poolConfigs(env);
  await Promise.all(items.flatMap(({ request, held }) => held.map(async (h) => {
    const cfg = pools.get(h.pool);
    if (!cfg) return;
    try {
      await poolStub(env, h.pool).releaseMany(cfg, [{ caller: callerFor(request), reservationId: h.reservationId, actualUsed: 0 }]);
    } catch (err) {
      log.error("units_release_failed", { request_id: request.id, pool: h.pool, reservation_id: h.reservationId, error: String(err), trace_id: request.traceId ?? null });
    }
  })));
}
