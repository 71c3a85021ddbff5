import type { PoolConfig, Sharing } from "../domain/types";

/** A pool as an operator manages it: its configuration, sizing bounds and when it last changed. */
export interface PoolRecord extends PoolConfig {
  sizing: "static" | "dynamic";
  lowWaterPercent: number;
  leases: "auto" | "off";
  /** Dynamic pools only (null for static ones): the bounds a scaling policy keeps capacity within. */
  minCapacity: number | null;
  maxCapacity: number | null;
  updatedAt: number;
}

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
  updated_at: number;
  sizing: PoolRecord["sizing"];
  min_capacity: number | null;
  max_capacity: number | null;
  low_water_percent: number;
  leases: PoolRecord["leases"];
}

/** Pools with their settings; a pool without a settings row is static with the default low water (10%). */
const SELECT_POOLS = `
  SELECT p.id, p.name, p.unit, p.capacity, p.refill_per_sec, p.cost_per_unit_nano, p.sharing, p.status, p.version, p.updated_at,
         COALESCE(s.sizing, 'static') AS sizing, s.min_capacity, s.max_capacity, COALESCE(s.low_water_percent, 10) AS low_water_percent,
         COALESCE(s.leases, 'auto') AS leases
  FROM pools p LEFT JOIN pool_settings s ON s.pool_id = p.id`;

function toRecord(row: PoolRow): PoolRecord {
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
    sizing: row.sizing,
    lowWaterPercent: row.low_water_percent,
    leases: row.leases,
    minCapacity: row.min_capacity,
    maxCapacity: row.max_capacity,
    updatedAt: row.updated_at,
  };
}

/** What a pool's object needs of a record (its bounds and timestamps stay in D1). */
export function configOf(record: PoolRecord): PoolConfig {
  const { minCapacity: _min, maxCapacity: _max, updatedAt: _at, ...config } = record;
  return config;
}

export async function listPools(db: D1Database): Promise<PoolConfig[]> {
  return (await listPoolRecords(db)).map(configOf);
}

export interface PoolFilter {
  status?: PoolConfig["status"];
  sizing?: PoolRecord["sizing"];
}

export async function listPoolRecords(db: D1Database, filter: PoolFilter = {}): Promise<PoolRecord[]> {
  const { results } = await db
    .prepare(`SELECT * FROM (${SELECT_POOLS}) WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR sizing = ?2) ORDER BY id`)
    .bind(filter.status ?? null, filter.sizing ?? null)
    .all<PoolRow>();
  return results.map(toRecord);
}

export async function findPoolRecord(db: D1Database, id: string): Promise<PoolRecord | null> {
  const row = await db.prepare(`${SELECT_POOLS} WHERE p.id = ?1`).bind(id).first<PoolRow>();
  return row ? toRecord(row) : null;
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

/** The settings row, written only when the statement before it changed exactly one row (its pool). */
function settingsStatement(db: D1Database, record: Omit<PoolRecord, "version" | "updatedAt">, now: number): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO pool_settings (pool_id, sizing, min_capacity, max_capacity, low_water_percent, updated_at, leases)
       SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE changes() = 1
       ON CONFLICT (pool_id) DO UPDATE SET sizing = excluded.sizing, min_capacity = excluded.min_capacity,
         max_capacity = excluded.max_capacity, low_water_percent = excluded.low_water_percent, updated_at = excluded.updated_at,
         leases = excluded.leases`,
    )
    .bind(record.id, record.sizing, record.minCapacity, record.maxCapacity, record.lowWaterPercent, now, record.leases);
}

/** Create a pool at version 1 with its settings, in one batch. False when a pool with this id exists (nothing written). */
export async function insertPool(db: D1Database, record: Omit<PoolRecord, "version" | "updatedAt">, now: number): Promise<boolean> {
  const [inserted] = await db.batch([
    db.prepare(
      `INSERT INTO pools (id, name, unit, capacity, refill_per_sec, cost_per_unit_nano, sharing, status, version, updated_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9) ON CONFLICT (id) DO NOTHING`,
    ).bind(record.id, record.name, record.unit, record.capacity, record.refillPerSec, record.costPerUnitNano, JSON.stringify(record.sharing), record.status, now),
    settingsStatement(db, record, now),
  ]);
  return inserted!.meta.changes === 1;
}

/**
 * Replace a pool's configuration and settings if its version is still `expectedVersion`, bumping the
 * version, in one batch with `extra` statements (each must change exactly one row and guard itself with
 * `WHERE changes() = 1`, so it lands only with the change). False when another writer got there first:
 * nothing is written.
 */
export async function writePool(
  db: D1Database, record: Omit<PoolRecord, "version" | "updatedAt">, expectedVersion: number, now: number, extra: D1PreparedStatement[] = [],
): Promise<boolean> {
  const [updated] = await db.batch([
    db.prepare(
      `UPDATE pools SET name = ?2, unit = ?3, capacity = ?4, refill_per_sec = ?5, cost_per_unit_nano = ?6, sharing = ?7, status = ?8,
         version = version + 1, updated_at = ?9
       WHERE id = ?1 AND version = ?10`,
    ).bind(record.id, record.name, record.unit, record.capacity, record.refillPerSec, record.costPerUnitNano, JSON.stringify(record.sharing), record.status, now, expectedVersion),
    settingsStatement(db, record, now),
    ...extra,
  ]);
  return updated!.meta.changes === 1;
}

/** Set a pool's version (a re-created pool continues from the version its object last adopted). */
export async function setPoolVersion(db: D1Database, id: string, version: number): Promise<void> {
  await db.prepare("UPDATE pools SET version = ?2 WHERE id = ?1").bind(id, version).run();
}

/** Delete a pool with its settings, scaling policy and scaling state; its scaling history stays. */
export async function deletePool(db: D1Database, id: string): Promise<boolean> {
  const [deleted] = await db.batch([
    db.prepare("DELETE FROM pools WHERE id = ?1").bind(id),
    db.prepare("DELETE FROM pool_settings WHERE pool_id = ?1").bind(id),
    db.prepare("DELETE FROM scaling_policies WHERE pool_id = ?1").bind(id),
    db.prepare("DELETE FROM scaling_state WHERE pool_id = ?1").bind(id),
  ]);
  return deleted!.meta.changes === 1;
}
