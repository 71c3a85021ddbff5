import { clientsNamed, needsDrained, poolIssues } from "../domain/pools";
import { AppError } from "../errors";
import { log } from "../log";
import type { PoolState } from "../objects/pool/types";
import { findClientTier } from "../storage/clients";
import {
  configOf, deletePool, findPoolRecord, insertPool, listPoolRecords, setPoolVersion, writePool,
  type PoolFilter, type PoolRecord,
} from "../storage/pools";
import { dropPolicyIfStatic } from "../storage/scaling";
import { applyAlerts } from "../storage/alert-apply";
import { clearConfigCache } from "../storage/config";
import { poolStub } from "../objects/pool/stub";
import { unwrap } from "./pools";
import { wakeAll } from "./scheduler";

/**
 * Operators' changes to pools. Every change is written to D1 with a version bump, the isolate's
 * configuration cache is cleared, and the new configuration is pushed to the pool's object at once, so
 * it applies there immediately rather than when other isolates' caches expire. Scaling resizes go
 * through the same path (changePool).
 */
export type PoolDefinition = Omit<PoolRecord, "version" | "updatedAt">;

/** A pool's record and its object's live state. */
export interface PoolDetail {
  record: PoolRecord;
  state: PoolState;
}

/** How many times a change is re-read and re-applied when another writer changed the pool meanwhile... */
const MAX_ATTEMPTS = 12;
/** ...after a random pause of up to this many ms per attempt so far, so that writers in step fall out of it. */
const RETRY_JITTER_MS = 10;

/** 400 naming each field that breaks a pool rule; 404 for a client the sharing names that does not exist. */
async function validate(env: Env, pool: PoolDefinition, checkClients: boolean): Promise<void> {
  const issues = poolIssues(pool);
  if (issues.length) throw new AppError("validation_failed", "invalid pool", { fields: issues });
  if (!checkClients) return;
  for (const clientId of clientsNamed(pool.sharing)) {
    if (!(await findClientTier(env.DB, clientId))) {
      throw new AppError("client_not_found", `sharing names client ${clientId}, which does not exist`, { client_id: clientId, field: "sharing" });
    }
  }
}

export async function findPool(env: Env, id: string): Promise<PoolRecord> {
  const record = await findPoolRecord(env.DB, id);
  if (!record) throw new AppError("pool_not_found", `no pool named ${id}`, { pool: id });
  return record;
}

export function listPoolsFor(env: Env, filter: PoolFilter): Promise<PoolRecord[]> {
  return listPoolRecords(env.DB, filter);
}

/** The pool's record, and its object's live state (the object adopts the record's configuration if it had an older one). */
export async function poolDetail(env: Env, id: string): Promise<PoolDetail> {
  const record = await findPool(env, id);
  return { record, state: await poolStub(env, id).configure(configOf(record)) };
}

/** Create a pool (409 pool_exists when the id is taken). Its object starts with a full bucket. */
export async function createPool(env: Env, pool: PoolDefinition, now: number): Promise<PoolDetail> {
  await validate(env, pool, true);
  if (!(await insertPool(env.DB, pool, now))) throw new AppError("pool_exists", `a pool named ${pool.id} already exists`, { pool: pool.id });
  clearConfigCache();
  const state = await poolStub(env, pool.id).install(configOf({ ...pool, version: 1, updatedAt: now }));
  if (state.version !== 1) {
    // The object served a deleted pool of this name: continue from its version.
    await setPoolVersion(env.DB, pool.id, state.version);
    clearConfigCache();
  }
  return { record: { ...pool, version: state.version, updatedAt: now }, state };
}

export interface ChangeOptions {
  now: number;
  /** Apply only if the pool is still at this version (a scaling decision made on it); null answer otherwise. */
  expectedVersion?: number;
  /** Statements to land in the same batch as the change (see storage/pools.ts writePool). */
  extra?: (next: PoolDefinition, current: PoolRecord) => D1PreparedStatement[];
}

/**
 * Change a pool: `change` maps the current record to the new definition. Validated as a whole (the
 * pool's rules hold across fields, whatever changed); disabling an active or draining pool is refused
 * with 409 pool_busy while it holds active reservations. Written with the version the change was made
 * on: when another writer got there first, the change is made again on the new record (or, with
 * `expectedVersion`, abandoned: null).
 */
export async function changePool(env: Env, id: string, change: (current: PoolRecord) => PoolDefinition, opts: ChangeOptions): Promise<PoolDetail | null> {
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt += 1) {
    const current = await findPool(env, id);
    if (opts.expectedVersion !== undefined && current.version !== opts.expectedVersion) return null;
    const next = change(current);
    await validate(env, next, JSON.stringify(next.sharing) !== JSON.stringify(current.sharing));
    if (needsDrained(current.status, next.status)) {
      const live = await poolStub(env, id).configure(configOf(current));
      if (live.activeReservations > 0 || live.shardLeasedUnits > 0) {
        throw new AppError("pool_busy", `pool ${id} has ${live.activeReservations} active reservation(s) and ${live.shardLeasedUnits} unit(s) lent to scheduler shards: drain it before disabling`, {
          pool: id, active_reservations: live.activeReservations, reserved_units: live.reservedUnits, shard_leased_units: live.shardLeasedUnits,
        });
      }
    }
    const extra = [...(opts.extra?.(next, current) ?? []), ...(next.sizing === "static" && current.sizing === "dynamic" ? [dropPolicyIfStatic(env.DB, id)] : [])];
    if (await writePool(env.DB, next, current.version, opts.now, extra)) {
      clearConfigCache();
      const record: PoolRecord = { ...next, version: current.version + 1, updatedAt: opts.now };
      const state = await poolStub(env, id).configure(configOf(record));
      // Queued work refused by this pool waits for its retry hint (a minute when the pool did not refill)
      // or a release: a change may have made room (capacity, refill, status), so every shard passes now.
      await wakeAll(env).catch((err: unknown) => log.warn("scheduler_wake_failed", { pool: id, error: String(err) }));
      return { record, state };
    }
    if (opts.expectedVersion !== undefined) return null;
    await new Promise((resolve) => setTimeout(resolve, Math.random() * RETRY_JITTER_MS * (attempt + 1)));
  }
  throw new AppError("unavailable", `pool ${id} is being changed by others; retry`, { pool: id });
}

/**
 * Delete a pool: refused with 409 pool_busy while it holds active reservations (its object decides,
 * and from then on refuses all spending). Its scaling history stays; an open pool_low alert is resolved.
 */
export async function removePool(env: Env, id: string, now: number): Promise<void> {
  const record = await findPool(env, id);
  unwrap(await poolStub(env, id).retire(configOf(record)));
  await deletePool(env.DB, id);
  clearConfigCache();
  await applyAlerts(env, { raise: [], clear: [{ kind: "pool_low", subject: id }] }, now).catch((err: unknown) => {
    log.warn("pool_alert_clear_failed", { pool: id, error: String(err) });
  });
}
