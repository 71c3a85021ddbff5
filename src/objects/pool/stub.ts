import { ObjectIds } from "../object-ids";
import type { PoolObject } from "./index";

/** Pool objects' ids by pool id: every spend needs one. */
export const POOL_IDS_MAX = 4096;
const poolIds = new ObjectIds(POOL_IDS_MAX);

export function poolStub(env: Env, poolId: string): DurableObjectStub<PoolObject> {
  return env.POOL.get(poolIds.of(env.POOL, poolId));
}
