import { insertPoolSamples, type PoolSample } from "../storage/pool-samples";
import { poolConfigs } from "../storage/config";
import { poolStub } from "../objects/pool/stub";

/**
 * Read every pool's level from its object and record them as one sample per pool at `at` (one D1
 * batch), for utilization over time. Disabled pools are left out; a pool that does not answer is
 * left out of this minute. Answers how many were recorded.
 */
export async function samplePools(env: Env, at: number): Promise<number> {
  const pools = [...(await poolConfigs(env)).values()].filter((p) => p.status !== "disabled");
  const read = await Promise.allSettled(pools.map(async (cfg): Promise<PoolSample> => {
    const a = await poolStub(env, cfg.id).availability(cfg, null);
    return { poolId: cfg.id, level: a.level, capacity: a.capacity };
  }));
  const samples = read.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  await insertPoolSamples(env.DB, samples, at);
  return samples.length;
}
