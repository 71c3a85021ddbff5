import type { PoolObject } from "./index";

/** Pool objects' ids by pool id: idFromName hashes the name on every call, and every spend needs one. */
const poolIds = new Map<string, DurableObjectId>();
export const POOL_IDS_MAX = 4096;

export function poolStub(env: Env, poolId: string): DurableObjectStub<PoolObject> {
  let id = poolIds.get(poolId);
  if (!id) {
    id = env.POOL.idFromName(poolId);
    if (poolIds.size >= POOL_IDS_MAX) poolIds.clear();
    poolIds.set(poolId, id);
  }
  return env.POOL.get(id);
}
