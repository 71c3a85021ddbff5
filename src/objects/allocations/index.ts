import { DurableObject } from "cloudflare:workers";
import { newId } from "../../domain/ids";
import {
  applyConfigUpdate, canTransition, capacityView, checkCapacity, checkDepth, DEFAULT_ALLOCATION_CONFIG, demandOf, depthFor,
  LIVE_STATES, priorityRank, retryAfterSec, type AllocationConfig, type AllocationConfigUpdate, type CapacityLine, type Resource,
} from "../../domain/allocations";
import type { QuotaDecision, ResolvedQuota } from "../../domain/quota";
import { log } from "../../log";
import { AlarmClock } from "../alarm";
import { Releases, RELEASE_RETRY_MS } from "./releases";
import { AllocationRows, createTables, live, notFound, view, type Row } from "./rows";
import type { AllocateInput, Allocation, AllocationFilter, AllocResult, UsageView } from "./types";
import { clientStub } from "../client/stub";

/** Ended allocations are kept this long for reading, then forgotten. */
const RETENTION_MS = 7 * 24 * 60 * 60 * 1000;

/**
 * The one owner of hierarchical allocations (a singleton): their rows, the worker quota of each depth
 * and the compute capacity. Admission is decided synchronously on SQLite (depth quota and capacity
 * are checked and the allocation inserted as pending with no await in between), so concurrent
 * allocations cannot overshoot. A pending allocation is counted while its client's object decides the
 * client's quota; it becomes active or failed. Expiry is by alarm, set to the earliest expiry.
 * Ending an allocation ends its whole subtree; every end frees the client's hold.
 *
 * This class is the host: it owns the storage, the configuration and the alarm; reads of the table are
 * in ./rows.ts and the ways allocations end in ./releases.ts. Its contract is ./types.ts.
 */
export class AllocationObject extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly rows: AllocationRows;
  private readonly releases: Releases;
  private config: AllocationConfig;
  /** Time of the alarm we know to be set. */
  private readonly clock: AlarmClock;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.clock = new AlarmClock(ctx.storage, "allocations");
    this.sql = ctx.storage.sql;
    createTables(this.sql);
    this.rows = new AllocationRows(this.sql);
    this.releases = new Releases(this.sql, this.rows, {
      clientStub: (clientId) => this.clientStub(clientId),
      ensureAlarm: (at) => this.clock.ensure(at),
    });
    const saved = this.sql.exec<{ value: string }>("SELECT value FROM settings WHERE name = 'config'").toArray()[0];
    this.config = saved ? (JSON.parse(saved.value) as AllocationConfig) : DEFAULT_ALLOCATION_CONFIG;
    void ctx.blockConcurrencyWhile(async () => {
      await this.clock.load();
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
      await this.releases.fail(row.id, "client quota unavailable");
      await this.releases.giveBackHolds(row.client_id, [row.id]);
      return { ok: false, error: { code: "unavailable", message: "the client's quota could not be checked; try again" } };
    }
    if (!decision?.ok) {
      const shortfall = decision?.shortfall;
      await this.releases.fail(row.id, `quota_exceeded: ${shortfall?.limit ?? "unknown"}`);
      return {
        ok: false,
        error: { code: "quota_exceeded", message: `the client's ${shortfall?.limit ?? ""} quota cannot admit this allocation`, details: { allocation_id: row.id, ...shortfall } },
        retryAfterSec: retryAfterSec(this.rows.earliestExpiry({ client_id: row.client_id }), Date.now()),
      };
    }
    const current = this.rows.row(row.id)!;
    if (current.state !== "pending") {
      await this.releases.giveBackHolds(row.client_id, [row.id]);
      return { ok: false, error: { code: "allocation_state", message: `allocation ${row.id} ended while it was being allocated: ${current.reason ?? current.state}`, details: { allocation_id: row.id, state: current.state } } };
    }
    this.sql.exec("UPDATE allocations SET state = 'active', activated_at = ?1, updated_at = ?1 WHERE id = ?2", Date.now(), row.id);
    log.info("allocation_active", { allocation_id: row.id, client_id: row.client_id, job_id: row.job_id, depth: row.depth, workers: row.workers });
    return { ok: true, value: view(this.rows.row(row.id)!) };
  }

  /**
   * Release an allocation and its whole subtree: each goes to releasing (still counted), the clients'
   * holds are freed, then released. `clientId` set: only that client's allocation (others: not found).
   * Returns the allocation and the ids of every allocation the release ended.
   */
  async release(allocationId: string, clientId: string | null): Promise<AllocResult<{ allocation: Allocation; released: string[] }>> {
    let row = this.rows.row(allocationId);
    if (!row || (clientId !== null && row.client_id !== clientId)) return notFound(allocationId);
    if (LIVE_STATES.includes(row.state) && row.expires_at <= Date.now()) {
      // Its TTL has elapsed and the alarm has not run yet: it expired, it is not released.
      await this.releases.expireDue(Date.now());
      row = this.rows.row(allocationId)!;
    }
    if (!canTransition(row.state, "releasing")) {
      return { ok: false, error: { code: "allocation_state", message: `allocation ${allocationId} is ${row.state}`, details: { allocation_id: allocationId, state: row.state } } };
    }
    const ids = [allocationId, ...this.rows.liveDescendants([allocationId])];
    this.releases.begin([allocationId], "released");
    this.releases.begin(ids.slice(1), "parent released");
    await this.releases.finish(ids);
    log.info("allocation_released", { allocation_id: allocationId, client_id: row.client_id, subtree: ids.length });
    return { ok: true, value: { allocation: view(this.rows.row(allocationId)!), released: ids } };
  }

  /** How many allocations a client holds now (pending, active or releasing). */
  liveFor(clientId: string): number {
    return this.sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM allocations WHERE client_id = ? AND ${live}`, clientId).one().n;
  }

  /** Release every live allocation of a client (the client is being deleted). Returns how many. */
  async cancelClient(clientId: string): Promise<number> {
    const ids = this.sql.exec<{ id: string }>(`SELECT id FROM allocations WHERE client_id = ? AND ${live}`, clientId).toArray().map((r) => r.id);
    this.releases.begin(ids, "client cancelled");
    await this.releases.finish(ids);
    if (ids.length) log.info("allocations_cancelled", { client_id: clientId, count: ids.length });
    return ids.length;
  }

  // --- reads ------------------------------------------------------------------------------------

  get(allocationId: string, clientId: string | null): AllocResult<Allocation> {
    const row = this.rows.row(allocationId);
    if (!row || (clientId !== null && row.client_id !== clientId)) return notFound(allocationId);
    return { ok: true, value: view(row) };
  }

  /** Allocations by priority (critical first), then age, then id; keyset pagination over that order. */
  list(filter: AllocationFilter): { allocations: Allocation[]; nextCursor: string | null } {
    return this.rows.list(filter);
  }

  /** Per depth: limit, workers held and what is left; and the totals held. */
  usage(): UsageView {
    return this.rows.usage(this.config);
  }

  /** Per resource: total, allocated, available and the part kept for critical allocations. */
  capacity(): Record<Resource, CapacityLine> {
    return capacityView(this.config.capacity, this.rows.inUse());
  }

  // --- expiry -----------------------------------------------------------------------------------

  /** Sweep now what the alarm would: expire what is due, finish releases left in releasing. Returns how many expired. */
  async cleanup(): Promise<number> {
    const expired = await this.releases.expireDue(Date.now());
    // Every release left in releasing, however recent: freeing a hold twice is harmless.
    await this.releases.retry(Date.now());
    this.scheduleNext(Date.now());
    return expired;
  }

  override async alarm(): Promise<void> {
    this.clock.fired();
    const now = Date.now();
    await this.releases.expireDue(now);
    await this.releases.retry(now - RELEASE_RETRY_MS);
    this.sql.exec(`DELETE FROM allocations WHERE state IN ('released', 'failed', 'expired') AND released_at < ?`, now - RETENTION_MS);
    this.scheduleNext(Date.now());
  }

  // --- internals --------------------------------------------------------------------------------

  /** The synchronous admission: parent, depth, depth quota, capacity; inserted as pending. */
  private admit(input: AllocateInput, now: number): AllocResult<Row> {
    let parentDepth: number | null = null;
    if (input.parentId !== undefined) {
      const parent = this.rows.row(input.parentId);
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
    const depthInUse = this.rows.depthInUse(depth);
    const depthCheck = checkDepth(this.config.depths, depth, depthInUse, input.workers);
    if (!depthCheck.ok) {
      return {
        ok: false,
        error: { code: "depth_quota_exceeded", message: `depth ${depth} holds ${depthInUse} of its ${depthCheck.refusal.limit} workers; ${input.workers} more do not fit`, details: { ...depthCheck.refusal } },
        retryAfterSec: retryAfterSec(this.rows.earliestExpiry({ depth }), now),
      };
    }
    const demand = demandOf(input.workers, input.cpuMillicores, input.memoryMb);
    const capacityCheck = checkCapacity(this.config.capacity, this.rows.inUse(), demand, input.priority);
    if (!capacityCheck.ok) {
      const r = capacityCheck.refusal;
      return {
        ok: false,
        error: { code: "capacity_exceeded", message: `not enough ${r.resource}: ${r.in_use} of ${r.usable} usable at ${input.priority} priority are held, ${r.requested} more asked`, details: { ...r } },
        retryAfterSec: retryAfterSec(this.rows.earliestExpiry({}), now),
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
    this.clock.ensure(expiresAt);
    return { ok: true, value: this.rows.row(id)! };
  }

  private clientStub(clientId: string) {
    return clientStub(this.env, clientId);
  }


  /** After a sweep: wake for the earliest expiry, or to retry stuck releases. */
  private scheduleNext(now: number): void {
    const next = this.sql.exec<{ t: number | null }>(`SELECT MIN(expires_at) AS t FROM allocations WHERE ${live}`).one().t;
    if (next !== null) this.clock.ensure(Math.max(next, now));
    const stuck = this.sql.exec<{ t: number | null }>("SELECT MIN(updated_at) AS t FROM allocations WHERE state = 'releasing'").one().t;
    if (stuck !== null) this.clock.ensure(Math.max(stuck + RELEASE_RETRY_MS, now));
  }
}
