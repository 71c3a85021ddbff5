/**
 * What the pool object asks of the layers above it without importing them (objects import contracts,
 * not services): src/index.ts sets each hook when the worker's module loads. Unset, nothing is asked.
 */
export interface PoolHooks {
  /**
   * A dynamic pool ran dry: evaluate its scaling policy now (src/services/scaling.ts). Answers the
   * cooldown the evaluation reports, before which the pool asks no more.
   */
  poolDry?: (env: Env, poolId: string, now: number) => Promise<{ cooldown_until: number | null } | null>;
}

export const poolHooks: PoolHooks = {};
