/** `pool_samples` in D1: each pool's level once a minute (the cron), for utilization over time. */
export interface PoolSample {
  poolId: string;
  level: number;
  capacity: number;
}

/**
 * The longest range a utilization history may ask for: samples are kept 92 days by default (the
 * "pool_samples" retention setting; the retention run prunes older ones).
 */
export const SAMPLE_RETENTION_MS = 92 * 86_400_000;

/** Record one sample per pool at `at`. A cron run repeated for the same minute (`at` is its scheduled time) adds nothing. */
export async function insertPoolSamples(db: D1Database, samples: PoolSample[], at: number): Promise<void> {
  if (samples.length === 0) return;
  const rows = JSON.stringify(samples.map((s) => ({ p: s.poolId, l: s.level, c: s.capacity })));
  await db
    .prepare(
      `INSERT INTO pool_samples (pool_id, at, level, capacity)
       SELECT j.value ->> '$.p', ?2, j.value ->> '$.l', j.value ->> '$.c' FROM json_each(?1) j WHERE true
       ON CONFLICT (pool_id, at) DO NOTHING`,
    )
    .bind(rows, at)
    .run();
}

/** One pool's samples in one step of a series: how many, and their mean utilization and level. */
export interface SampleBucket {
  pool: string;
  bucket: number;
  samples: number;
  utilization: number;
  level: number;
  min_level: number;
  capacity: number;
}

/**
 * Samples of these pools in [from, to), grouped per pool and per step of `stepMs` counted from `from`
 * (bucket 0 starts at `from`). Utilization of a sample is 1 - level / capacity, as the pool object
 * reports it. Pools are named (not "all") so that each is read by its primary key range. The casts
 * keep the bucket an integer division: D1 may bind a JavaScript number as a REAL.
 */
export async function sampleBuckets(db: D1Database, poolIds: string[], from: number, to: number, stepMs: number): Promise<SampleBucket[]> {
  const { results } = await db
    .prepare(
      `SELECT pool_id AS pool, (at - CAST(?2 AS INTEGER)) / CAST(?4 AS INTEGER) AS bucket, COUNT(*) AS samples, AVG(1.0 - level / capacity) AS utilization,
              AVG(level) AS level, MIN(level) AS min_level, MAX(capacity) AS capacity
       FROM pool_samples WHERE pool_id IN (SELECT value FROM json_each(?1)) AND at >= ?2 AND at < ?3
       GROUP BY pool_id, bucket ORDER BY pool_id, bucket`,
    )
    .bind(JSON.stringify(poolIds), from, to, stepMs)
    .all<SampleBucket>();
  return results;
}
