import type { PoolConfig, Sharing } from "../domain/types";

interface PoolRow {
  id: string;
  name: string;
  unit: string;
  capacity: number;
  refill_per_sec: number;
  cost_per_unit_nano: number;
  sharing: string;
  status: PoolConfig["status"];
  version: number;
}

function toConfig(row: PoolRow): PoolConfig {
  return {
    id: row.id,
    name: row.name,
    unit: row.unit,
    capacity: row.capacity,
    refillPerSec: row.refill_per_sec,
    costPerUnitNano: row.cost_per_unit_nano,
    sharing: JSON.parse(row.sharing) as Sharing,
    status: row.status,
    version: row.version,
  };
}

export async function listPools(db: D1Database): Promise<PoolConfig[]> {
  const { results } = await db
    .prepare(
      "SELECT id, name, unit, capacity, refill_per_sec, cost_per_unit_nano, sharing, status, version FROM pools ORDER BY id",
    )
    .all<PoolRow>();
  return results.map(toConfig);
}

/** Insert or replace a pool, bumping its version so its object adopts the change. */
export async function upsertPool(db: D1Database, pool: Omit<PoolConfig, "version">, now = Date.now()): Promise<void> {
  await db
    .prepare(
      `INSERT INTO pools (id, name, unit, capacity, refill_per_sec, cost_per_unit_nano, sharing, status, version, updated_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9)
       ON CONFLICT (id) DO UPDATE SET name = excluded.name, unit = excluded.unit, capacity = excluded.capacity,
         refill_per_sec = excluded.refill_per_sec, cost_per_unit_nano = excluded.cost_per_unit_nano,
         sharing = excluded.sharing, status = excluded.status, version = pools.version + 1, updated_at = excluded.updated_at`,
    )
    .bind(pool.id, pool.name, pool.unit, pool.capacity, pool.refillPerSec, pool.costPerUnitNano, JSON.stringify(pool.sharing), pool.status, now)
    .run();
}
