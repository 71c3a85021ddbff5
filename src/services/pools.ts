import type { Caller, PoolConfig } from "../domain/types";
import { AppError } from "../errors";
import type { ConsumeResult, Failure, Result, Spent, SpendOptions } from "../objects/pool";
import type { Principal } from "../http/context";
import { clientTier } from "./config";

/** Pool objects' ids by pool id: idFromName hashes the name on every call, and every spend needs one. */
const poolIds = new Map<string, DurableObjectId>();
const POOL_IDS_MAX = 4096;

export function poolStub(env: Env, poolId: string): DurableObjectStub<import("../objects/pool").PoolObject> {
  let id = poolIds.get(poolId);
  if (!id) {
    id = env.POOL.idFromName(poolId);
    if (poolIds.size >= POOL_IDS_MAX) poolIds.clear();
    poolIds.set(poolId, id);
  }
  return env.POOL.get(id);
}

/** The configuration version this isolate last handed to each pool's object, which keeps what it adopts. */
const handed = new Map<string, number>();

/**
 * Spend now from a pool (the consume route, the hot path and the RPC entrypoint). The object gets the
 * configuration itself only when this isolate has not handed it this version yet, or when the object
 * answers that it holds an older one (its storage started over); otherwise just the version. Throws
 * the AppError to answer.
 */
export async function consumeAt(env: Env, cfg: PoolConfig, caller: Caller, opts: SpendOptions): Promise<ConsumeResult> {
  const stub = poolStub(env, cfg.id);
  const spend = async (config: PoolConfig | number) =>
    (await stub.spend(config, caller.clientId, caller.tier, caller.via, opts.amount, opts.requestId, opts.idempotencyKey)) as Spent | Failure | null;
  let answer = handed.get(cfg.id) === cfg.version ? await spend(cfg.version) : null;
  if (answer === null) {
    answer = await spend(cfg);
    if (handed.size >= POOL_IDS_MAX) handed.clear();
    handed.set(cfg.id, cfg.version);
  }
  if (answer === null) throw new AppError("internal", `pool ${cfg.id} refused its configuration`);
  if (!Array.isArray(answer)) return unwrap(answer);
  const [eventId, costNano, remaining] = answer;
  return { pool: cfg.id, eventId, units: opts.amount, costNano, remaining };
}

/** A pool object's answer, or the AppError it stands for (429s carry Retry-After in seconds). */
export function unwrap<T>(result: Result<T>): T;
export function unwrap(result: Failure): never;
export function unwrap<T>(result: Result<T>): T {
  if (result.ok) return result.value;
  const retryMs = result.error.details?.retry_after_ms;
  const retryAfterSec = result.error.code === "rate_limited"
    ? typeof retryMs === "number" ? Math.max(1, Math.ceil(retryMs / 1000)) : 3600
    : undefined;
  throw AppError.from(result.error, retryAfterSec);
}

/**
 * The caller a spend is attributed to. A client's key speaks for its own client only; the internal
 * and admin tokens name the client they act for. New work for a suspended client is refused (403
 * `client_suspended`); `allowSuspended` is for what starts nothing: reads (checks, estimates) and
 * settling what was started before the suspension (release). A suspended client's own key is refused
 * earlier, by authenticate().
 */
export async function callerFor(
  env: Env, principal: Principal, clientId: string | undefined, via: string, opts: { allowSuspended?: boolean } = {},
): Promise<Caller> {
  if (principal.kind === "client") {
    if (clientId !== undefined && clientId !== principal.clientId) {
      throw new AppError("forbidden", "an API key may act only for its own client", { client_id: clientId });
    }
    return { clientId: principal.clientId, tier: principal.tier, via };
  }
  if (clientId === undefined) {
    throw new AppError("validation_failed", "client_id is required with this credential", {
      fields: [{ path: "client_id", message: "Required" }],
    });
  }
  const client = await clientTier(env, clientId);
  if (!client) throw new AppError("client_not_found", `no client ${clientId}`, { client_id: clientId });
  if (client.status === "suspended" && !opts.allowSuspended) {
    throw new AppError("client_suspended", `client ${clientId} is suspended: new work is refused`, { client_id: clientId });
  }
  return { clientId, tier: client.tier, via };
}

export type { PoolConfig };
