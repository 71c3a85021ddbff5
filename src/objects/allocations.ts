import { DurableObject } from "cloudflare:workers";
import { newId } from "../domain/ids";
import {
  applyConfigUpdate, canTransition, capacityView, checkCapacity, checkDepth, decodeListCursor, DEFAULT_ALLOCATION_CONFIG,
  demandOf, depthFor, depthUsage, encodeListCursor, HOLDING_STATES, LIVE_STATES, priorityRank, retryAfterSec,
  type AllocationConfig, type AllocationConfigUpdate, type AllocationPriority, type AllocationState, type CapacityLine,
  type Compute, type DepthUsage, type Resource,
} from "../domain/allocations";
import type { QuotaDecision, ResolvedQuota } from "../domain/quota";
import type { ErrorBody } from "../errors";
import { log } from "../log";

/** An allocation as the API shows it. */
export interface Allocation {
  id: string;
  client_id: string;
  job_id: string;
  parent_id: string | null;
  depth: number;
  workers: number;
  cpu_millicores: number;
  memory_mb: number;
  priority: AllocationPriority;
  ttl_ms: number;
  state: AllocationState;
  created_at: number;
  activated_at: number | null;
  expires_at: number;
  /** When it stopped holding capacity: released, expired or failed. */
  released_at: number | null;
  reason: string | null;
}

export interface AllocateInput {
  clientId: string;
  jobId: string;
  parentId?: string;
  depth?: number;
  workers: number;
  cpuMillicores: number;
  memoryMb: number;
  priority: AllocationPriority;
  ttlMs: number;
}

export interface AllocationFilter {
  clientId?: string;
  state?: AllocationState;
  jobId?: string;
  depth?: number;
  limit: number;
  cursor?: string;
}

export interface UsageView {
  depths: DepthUsage[];
  deeper_max_workers: number;
  totals: { allocations: number; workers: number; cpu_millicores: number; memory_mb: number };
}

/** A failure the HTTP layer turns into its error; 429s carry the seconds for Retry-After. */
export type AllocResult<T> = { ok: true; value: T } | { ok: false; error: ErrorBody; retryAfterSec?: number };

type Row = Allocation & { priority_rank: number; updated_at: number; [key: string]: SqlStorageValue };

/** A release that could not reach a client's object is retried by alarm after this long. */
const RELEASE_RETRY_MS = 10_000;
/** Ended allocations are kept this long for reading, then forgotten. */
const RETENTION_MS = 7 * 24 * 60 * 60 * 1000;

const holding = `state IN (${HOLDING_STATES.map((s) => `'${s}'`).join(", ")})`;
const live = `state IN (${LIVE_STATES.map((s) => `'${s}'`).join(", ")})`;

/**
 * The one owner of hierarchical allocations (a singleton): their rows, the worker quota of each depth
 * and the compute capacity. Admission is decided synchronously on SQLite (depth quota and capacity
 * are checked and the allocation inserted as pending with no await in between), so concurrent
 * allocations cannot overshoot. A pending allocation is counted while its client's object decides the
 * client's quota; it becomes active or failed. Expiry is by alarm, set to the earliest expiry.
 * Ending an allocation ends its whole subtree; every end frees the client's hold.
 */
export class AllocationObject extends DurableObject<Env> {
  private sql: SqlStorage;
  private config: AllocationConfig;
  /** Time of the alarm we know to be set. */
  private alarmAt: number | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS allocations (
        id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        job_id TEXT NOT NULL,
        parent_id TEXT,
        depth INTEGER NOT NULL,
        workers INTEGER NOT NULL,
        cpu_millicores INTEGER NOT NULL,
        memory_mb INTEGER NOT NULL,
        priority TEXT NOT NULL,
        priority_rank INTEGER NOT NULL,
        ttl_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        activated_at INTEGER,
        expires_at INTEGER NOT NULL,
        released_at INTEGER,
        reason TEXT,
        updated_at INTEGER NOT NULL
      );
      CREATE INDEX IF NOT EXISTS allocations_state ON allocations (state, depth);
      CREATE INDEX IF NOT EXISTS allocations_expiry ON allocations (state, expires_at);
      CREATE INDEX IF NOT EXISTS allocations_parent ON allocations (parent_id);
      CREATE INDEX IF NOT EXISTS allocations_order ON allocations (priority_rank, created_at, id);
      CREATE INDEX IF NOT EXISTS allocations_client ON allocations (client_id, priority_rank, created_at, id);
      CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    `);
    const saved = this.sql.exec<{ value: string }>("SELECT value FROM settings WHERE name = 'config'").toArray()[0];
    this.config = saved ? (JSON.parse(saved.value) as AllocationConfig) : DEFAULT_ALLOCATION_CONFIG;
    void ctx.blockConcurrencyWhile(async () => {
      this.alarmAt = await ctx.storage.getAlarm();
    });
  }

  // --- configuration ----------------------------------------------------------------------------

  /** Depth quotas and capacity totals as configured now. */
  settings(): AllocationConfig {
    return this.config;
  }

  /** An operator's change of depth quotas and capacity; applies to new allocations at once. */
  updateSettings(update: AllocationConfigUpdate): AllocationConfig {
    this.config = applyConfigUpdate(this.config, update);
    this.sql.exec(
      "INSERT INTO settings (name, value) VALUES ('config', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
      JSON.stringify(this.config),
    );
    log.info("allocation_settings_updated", { depths: this.config.depths, capacity: this.config.capacity });
    return this.config;
  }

  // --- allocate and release ---------------------------------------------------------------------

  /**
   * Allocate: (1) check the parent, the depth's quota and the capacity and insert as pending, all
   * synchronously; (2) ask the client's object for the client's quota (the only await); (3) active,
   * or failed with the client's shortfall. An allocation ended meanwhile (its parent released, its
   * TTL elapsed) gives its client hold back at once.
   */
  async allocate(quota: ResolvedQuota, input: AllocateInput): Promise<AllocResult<Allocation>> {
    const now = Date.now();
    const admitted = this.admit(input, now);
    if (!admitted.ok) return admitted;
    const row = admitted.value;
    const demand = demandOf(row.workers, row.cpu_millicores, row.memory_mb);
    let decision: QuotaDecision | undefined;
    try {
      [decision] = await this.clientStub(row.client_id).acquireJobs(quota, [
        { jobId: row.id, kind: "allocation", expiresAt: row.expires_at, cpuMillicores: demand.cpuMillicores, memoryMb: demand.memoryMb },
      ]);
    } catch (err) {
      log.error("allocation_quota_unavailable", { allocation_id: row.id, client_id: row.client_id, error: String(err) });
      await this.fail(row.id, "client quota unavailable");
      await this.giveBackHolds(row.client_id, [row.id]);
      return { ok: false, error: { code: "unavailable", message: "the client's quota could not be checked; try again" } };
    }
    if (!decision?.ok) {
      const shortfall = decision?.shortfall;
      await this.fail(row.id, `quota_exceeded: ${shortfall?.limit ?? "unknown"}`);
      return {
        ok: false,
        error: { code: "quota_exceeded", message: `the client's ${shortfall?.limit ?? ""} quota cannot admit this allocation`, details: { allocation_id: row.id, ...shortfall } },
        retryAfterSec: retryAfterSec(this.earliestExpiry({ client_id: row.client_id }), Date.now()),
      };
    }
    const current = this.row(row.id)!;
    if (current.state !== "pending") {
      await this.giveBackHolds(row.client_id, [row.id]);
      return { ok: false, error: { code: "allocation_state", message: `allocation ${row.id} ended while it was being allocated: ${current.reason ?? current.state}`, details: { allocation_id: row.id, state: current.state } } };
    }
    this.sql.exec("UPDATE allocations SET state = 'active', activated_at = ?1, updated_at = ?1 WHERE id = ?2", Date.now(), row.id);
    log.info("allocation_active", { allocation_id: row.id, client_id: row.client_id, job_id: row.job_id, depth: row.depth, workers: row.workers });
    return { ok: true, value: view(this.row(row.id)!) };
  }

  /**
   * Release an allocation and its whole subtree: each goes to releasing (still counted), the clients'
   * holds are freed, then released. `clientId` set: only that client's allocation (others: not found).
   * Returns the allocation and the ids of every allocation the release ended.
   */
  async release(allocationId: string, clientId: string | null): Promise<AllocResult<{ allocation: Allocation; released: string[] }>> {
    let row = this.row(allocationId);
    if (!row || (clientId !== null && row.client_id !== clientId)) return notFound(allocationId);
    if (LIVE_STATES.includes(row.state) && row.expires_at <= Date.now()) {
      // Its TTL has elapsed and the alarm has not run yet: it expired, it is not released.
      await this.expireDue(Date.now());
      row = this.row(allocationId)!;
    }
    if (!canTransition(row.state, "releasing")) {
      return { ok: false, error: { code: "allocation_state", message: `allocation ${allocationId} is ${row.state}`, details: { allocation_id: allocationId, state: row.state } } };
    }
    const ids = [allocationId, ...this.liveDescendants([allocationId])];
    this.beginRelease([allocationId], "released");
    this.beginRelease(ids.slice(1), "parent released");
    await this.finishRelease(ids);
    log.info("allocation_released", { allocation_id: allocationId, client_id: row.client_id, subtree: ids.length });
    return { ok: true, value: { allocation: view(this.row(allocationId)!), released: ids } };
  }

  /** How many allocations a client holds now (pending, active or releasing). */
  liveFor(clientId: string): number {
    return this.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM allocations WHERE client_id = ? AND ${live}`, clientId).one().n;
  }

  /** Release every live allocation of a client (the client is being deleted). Returns how many. */
  async cancelClient(clientId: string): Promise<number> {
    const ids = this.sql.exec<{ id: string }>(`SELECT id FROM allocations WHERE client_id = ? AND ${live}`, clientId).toArray().map((r) => r.id);
    this.beginRelease(ids, "client cancelled");
    await this.finishRelease(ids);
    if (ids.length) log.info("allocations_cancelled", { client_id: clientId, count: ids.length });
    return ids.length;
  }

  // --- reads ------------------------------------------------------------------------------------

  get(allocationId: string, clientId: string | null): AllocResult<Allocation> {
    const row = this.row(allocationId);
    if (!row || (clientId !== null && row.client_id !== clientId)) return notFound(allocationId);
    return { ok: true, value: view(row) };
  }

  /** Allocations by priority (critical first), then age, then id; keyset pagination over that order. */
  list(filter: AllocationFilter): { allocations: Allocation[]; nextCursor: string | null } {
    const after = filter.cursor ? decodeListCursor(filter.cursor) : null;
    const rows = this.sql.exec<Row>(
      `SELECT * FROM allocations
       WHERE (?1 IS NULL OR client_id = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR job_id = ?3) AND (?4 IS NULL OR depth = ?4)
         AND (?5 IS NULL OR (priority_rank, created_at, id) > (?5, ?6, ?7))
       ORDER BY priority_rank, created_at, id
       LIMIT ?8`,
      filter.clientId ?? null, filter.state ?? null, filter.jobId ?? null, filter.depth ?? null,
      after?.rank ?? null, after?.createdAt ?? null, after?.id ?? null, filter.limit + 1,
    ).toArray();
    const page = rows.slice(0, filter.limit);
    const last = page.at(-1);
    return {
      allocations: page.map(view),
      nextCursor: rows.length > filter.limit && last ? encodeListCursor({ rank: last.priority_rank, createdAt: last.created_at, id: last.id }) : null,
    };
  }

  /** Per depth: limit, workers held and what is left; and the totals held. */
  usage(): UsageView {
    const byDepth = this.sql.exec<{ depth: number; workers: number; n: number }>(
      `SELECT depth, SUM(workers) AS workers, COUNT(*) AS n FROM allocations WHERE ${holding} GROUP BY depth`,
    ).toArray();
    const used = this.inUse();
    return {
      depths: depthUsage(this.config.depths, new Map(byDepth.map((r) => [r.depth, { workers: r.workers, allocations: r.n }]))),
      deeper_max_workers: this.config.depths.deeper,
      totals: {
        allocations: byDepth.reduce((n, r) => n + r.n, 0),
        workers: used.workers, cpu_millicores: used.cpuMillicores, memory_mb: used.memoryMb,
      },
    };
  }

  /** Per resource: total, allocated, available and the part kept for critical allocations. */
  capacity(): Record<Resource, CapacityLine> {
    return capacityView(this.config.capacity, this.inUse());
  }

  // --- expiry -----------------------------------------------------------------------------------

  /** Sweep now what the alarm would: expire what is due, finish releases left in releasing. Returns how many expired. */
  async cleanup(): Promise<number> {
    const expired = await this.expireDue(Date.now());
    // Every release left in releasing, however recent: freeing a hold twice is harmless.
    await this.retryReleases(Date.now());
    this.scheduleNext(Date.now());
    return expired;
  }

  override async alarm(): Promise<void> {
    this.alarmAt = null;
    const now = Date.now();
    await this.expireDue(now);
    await this.retryReleases(now - RELEASE_RETRY_MS);
    this.sql.exec(`DELETE FROM allocations WHERE state IN ('released', 'failed', 'expired') AND released_at < ?`, now - RETENTION_MS);
    this.scheduleNext(Date.now());
  }

  // --- internals --------------------------------------------------------------------------------

  /** The synchronous admission: parent, depth, depth quota, capacity; inserted as pending. */
  private admit(input: AllocateInput, now: number): AllocResult<Row> {
    let parentDepth: number | null = null;
    if (input.parentId !== undefined) {
      const parent = this.row(input.parentId);
      if (!parent || parent.client_id !== input.clientId) return notFound(input.parentId, "parent_id");
      const state = LIVE_STATES.includes(parent.state) && parent.expires_at <= now ? "expired" : parent.state;
      if (!LIVE_STATES.includes(state)) {
        return { ok: false, error: { code: "allocation_state", message: `parent allocation ${parent.id} is ${state}: children need a pending or active parent`, details: { parent_id: parent.id, state } } };
      }
      parentDepth = parent.depth;
    }
    const depth = depthFor(parentDepth, input.depth);
    if (depth === null) {
      const expected = parentDepth === null ? 0 : parentDepth + 1;
      const message = input.depth !== undefined && input.depth !== expected ? `must be ${expected} (the parent's depth + 1; 0 without a parent)` : "too deep";
      return { ok: false, error: { code: "validation_failed", message: "invalid request body", details: { fields: [{ path: "depth", message }] } } };
    }
    const depthInUse = this.sql.exec<{ n: number }>(`SELECT COALESCE(SUM(workers), 0) AS n FROM allocations WHERE ${holding} AND depth = ?`, depth).one().n;
    const depthCheck = checkDepth(this.config.depths, depth, depthInUse, input.workers);
    if (!depthCheck.ok) {
      return {
        ok: false,
        error: { code: "depth_quota_exceeded", message: `depth ${depth} holds ${depthInUse} of its ${depthCheck.refusal.limit} workers; ${input.workers} more do not fit`, details: { ...depthCheck.refusal } },
        retryAfterSec: retryAfterSec(this.earliestExpiry({ depth }), now),
      };
    }
    const demand = demandOf(input.workers, input.cpuMillicores, input.memoryMb);
    const capacityCheck = checkCapacity(this.config.capacity, this.inUse(), demand, input.priority);
    if (!capacityCheck.ok) {
      const r = capacityCheck.refusal;
      return {
        ok: false,
        error: { code: "capacity_exceeded", message: `not enough ${r.resource}: ${r.in_use} of ${r.usable} usable at ${input.priority} priority are held, ${r.requested} more asked`, details: { ...r } },
        retryAfterSec: retryAfterSec(this.earliestExpiry({}), now),
      };
    }
    const id = newId("allocation");
    const expiresAt = now + input.ttlMs;
    this.sql.exec(
      `INSERT INTO allocations (id, client_id, job_id, parent_id, depth, workers, cpu_millicores, memory_mb, priority, priority_rank,
                                ttl_ms, state, created_at, activated_at, expires_at, released_at, reason, updated_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'pending', ?12, NULL, ?13, NULL, NULL, ?12)`,
      id, input.clientId, input.jobId, input.parentId ?? null, depth, input.workers, input.cpuMillicores, input.memoryMb,
      input.priority, priorityRank(input.priority), input.ttlMs, now, expiresAt,
    );
    this.ensureAlarm(expiresAt);
    return { ok: true, value: this.row(id)! };
  }

  /** A pending allocation the client's quota refused: failed, holding nothing; its subtree (if any came meanwhile) is released. */
  private async fail(id: string, reason: string): Promise<void> {
    const done = this.sql.exec(
      "UPDATE allocations SET state = 'failed', reason = ?1, released_at = ?2, updated_at = ?2 WHERE id = ?3 AND state = 'pending'",
      reason, Date.now(), id,
    ).rowsWritten;
    if (!done) return;
    const children = this.liveDescendants([id]);
    this.beginRelease(children, "parent failed");
    await this.finishRelease(children);
  }

  /** Expire every live allocation whose TTL has elapsed, exactly once each; release their subtrees. Returns how many expired. */
  private async expireDue(now: number): Promise<number> {
    const due = this.sql.exec<{ id: string; client_id: string }>(
      `SELECT id, client_id FROM allocations WHERE ${live} AND expires_at <= ?`, now,
    ).toArray();
    if (!due.length) return 0;
    this.sql.exec(
      `UPDATE allocations SET state = 'expired', reason = 'ttl elapsed', released_at = ?1, updated_at = ?1
       WHERE id IN (SELECT value FROM json_each(?2)) AND ${live}`,
      now, JSON.stringify(due.map((r) => r.id)),
    );
    const children = this.liveDescendants(due.map((r) => r.id));
    this.beginRelease(children, "parent expired");
    log.info("allocations_expired", { count: due.length, subtree: children.length });
    await Promise.all([...groupByClient(due)].map(([clientId, ids]) => this.giveBackHolds(clientId, ids)));
    await this.finishRelease(children);
    return due.length;
  }

  /** Releases left in releasing since `before` or earlier (a client's object could not be reached): try again. */
  private async retryReleases(before: number): Promise<void> {
    const stuck = this.sql.exec<{ id: string }>("SELECT id FROM allocations WHERE state = 'releasing' AND updated_at <= ?", before).toArray();
    if (stuck.length) await this.finishRelease(stuck.map((r) => r.id));
  }

  /** Live allocations under these (children, grandchildren, ...), parents before children. */
  private liveDescendants(rootIds: string[]): string[] {
    if (!rootIds.length) return [];
    return this.sql.exec<{ id: string }>(
      `WITH RECURSIVE sub (id, depth) AS (
         SELECT a.id, a.depth FROM allocations a WHERE a.parent_id IN (SELECT value FROM json_each(?1))
         UNION ALL
         SELECT a.id, a.depth FROM allocations a JOIN sub ON a.parent_id = sub.id
       )
       SELECT sub.id FROM sub JOIN allocations a ON a.id = sub.id WHERE a.${live} ORDER BY sub.depth`,
      JSON.stringify(rootIds),
    ).toArray().map((r) => r.id);
  }

  /** Pending or active → releasing, with the reason (synchronous: from here they are no longer live). */
  private beginRelease(ids: string[], reason: string): void {
    if (!ids.length) return;
    this.sql.exec(
      `UPDATE allocations SET state = 'releasing', reason = ?1, updated_at = ?2 WHERE id IN (SELECT value FROM json_each(?3)) AND ${live}`,
      reason, Date.now(), JSON.stringify(ids),
    );
  }

  /**
   * Free the clients' holds of these releasing allocations, then mark them released. Those whose
   * client could not be reached stay releasing (still counted) and the alarm tries again.
   */
  private async finishRelease(ids: string[]): Promise<void> {
    if (!ids.length) return;
    const rows = this.sql.exec<{ id: string; client_id: string }>(
      "SELECT id, client_id FROM allocations WHERE id IN (SELECT value FROM json_each(?)) AND state = 'releasing'", JSON.stringify(ids),
    ).toArray();
    const freed = await Promise.all([...groupByClient(rows)].map(async ([clientId, clientIds]) => ((await this.giveBackHolds(clientId, clientIds)) ? clientIds : [])));
    this.sql.exec(
      "UPDATE allocations SET state = 'released', released_at = ?1, updated_at = ?1 WHERE id IN (SELECT value FROM json_each(?2)) AND state = 'releasing'",
      Date.now(), JSON.stringify(freed.flat()),
    );
    if (freed.flat().length < rows.length) this.ensureAlarm(Date.now() + RELEASE_RETRY_MS);
  }

  /** Free these allocations' holds in their client's object; false when it could not be reached. */
  private async giveBackHolds(clientId: string, ids: string[]): Promise<boolean> {
    try {
      await this.clientStub(clientId).releaseJobs(ids);
      return true;
    } catch (err) {
      log.warn("allocation_hold_release_failed", { client_id: clientId, count: ids.length, error: String(err) });
      return false;
    }
  }

  private clientStub(clientId: string) {
    return this.env.CLIENT.get(this.env.CLIENT.idFromName(clientId));
  }

  private row(id: string): Row | undefined {
    return this.sql.exec<Row>("SELECT * FROM allocations WHERE id = ?", id).toArray()[0];
  }

  /** Workers, CPU and memory held by pending, active and releasing allocations. */
  private inUse(): Compute {
    const r = this.sql.exec<{ workers: number; cpu: number; mem: number }>(
      `SELECT COALESCE(SUM(workers), 0) AS workers, COALESCE(SUM(workers * cpu_millicores), 0) AS cpu,
              COALESCE(SUM(workers * memory_mb), 0) AS mem
       FROM allocations WHERE ${holding}`,
    ).one();
    return { workers: r.workers, cpuMillicores: r.cpu, memoryMb: r.mem };
  }

  /** The earliest expiry among live allocations, of one depth or one client when given. */
  private earliestExpiry(of: { depth?: number; client_id?: string }): number | null {
    return this.sql.exec<{ t: number | null }>(
      `SELECT MIN(expires_at) AS t FROM allocations WHERE ${live} AND (?1 IS NULL OR depth = ?1) AND (?2 IS NULL OR client_id = ?2)`,
      of.depth ?? null, of.client_id ?? null,
    ).one().t;
  }

  /** Make sure an alarm fires no later than `at`. */
  private ensureAlarm(at: number): void {
    // An alarm already due no later than `at` will do, unless it is overdue (a failed alarm waits in
    // the runtime's retry backoff): then set it again.
    if (this.alarmAt !== null && this.alarmAt <= at && this.alarmAt >= Date.now() - 1000) return;
    this.alarmAt = at;
    void this.ctx.storage.setAlarm(at);
  }

  /** After a sweep: wake for the earliest expiry, or to retry stuck releases. */
  private scheduleNext(now: number): void {
    const next = this.sql.exec<{ t: number | null }>(`SELECT MIN(expires_at) AS t FROM allocations WHERE ${live}`).one().t;
    if (next !== null) this.ensureAlarm(Math.max(next, now));
    const stuck = this.sql.exec<{ t: number | null }>("SELECT MIN(updated_at) AS t FROM allocations WHERE state = 'releasing'").one().t;
    if (stuck !== null) this.ensureAlarm(Math.max(stuck + RELEASE_RETRY_MS, now));
  }
}

function view(row: Row): Allocation {
  return {
    id: row.id, client_id: row.client_id, job_id: row.job_id, parent_id: row.parent_id, depth: row.depth, workers: row.workers,
    cpu_millicores: row.cpu_millicores, memory_mb: row.memory_mb, priority: row.priority, ttl_ms: row.ttl_ms, state: row.state,
    created_at: row.created_at, activated_at: row.activated_at, expires_at: row.expires_at, released_at: row.released_at, reason: row.reason,
  };
}

function notFound(id: string, field?: string): { ok: false; error: ErrorBody } {
  return { ok: false, error: { code: "allocation_not_found", message: `no allocation ${id}`, details: field ? { [field]: id } : { allocation_id: id } } };
}

function groupByClient(rows: Array<{ id: string; client_id: string }>): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const r of rows) groups.set(r.client_id, [...(groups.get(r.client_id) ?? []), r.id]);
  return groups;
}
