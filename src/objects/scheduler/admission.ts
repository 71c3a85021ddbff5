/**
 * Admission: claim the best ready requests under a lease, then admit them against their clients'
 * quotas (slots, burst, daily caps; one call per client) and every pool amount they need (one call per
 * pool), all-or-nothing per request. What is not admitted goes back to its queue with anything it got
 * released; what can never run fails.
 */
import { dayStart } from "../../domain/calendar";
import { log } from "../../log";
import { DEFAULT_TIER_WEIGHTS, priorityOf } from "../../domain/priority";
import type { PoolConfig, Tier } from "../../domain/types";
import type { ErrorBody } from "../../errors";
import { clientQuota, clientTier, tierLimits } from "../../storage/config";
import { poolStub } from "../pool/stub";
import type { Template } from "../../storage/templates";
import type { TierRow } from "../../storage/tiers";
import type { ReserveResult, Result } from "../pool/types";
import type { WaitClaim } from "../pool/types";
import { appendTo, groupBy } from "../../domain/groups";
import { callerOf, type Held, type Row } from "./rows";
import type { Release } from "./settlement";
import type { QueueStore } from "./store";
import { settings } from "../../settings";
import { clientStub } from "../client/stub";
import type { MoneyLeases } from "./money-leases";
import type { SlotLeases } from "./slot-leases";
import type { UnitLeases } from "./unit-leases";

/**
 * A chunk whose admission threw (a client or pool object, or D1, could not be reached) goes back to its
 * queue to run from this much later; it is not counted as an attempt (nothing ran).
 */
export const ADMISSION_RETRY_MS = 1000;

const NONE: ReadonlySet<string> = new Set();

/** What an admission answers: the requests admitted, and when to try again those that were not. */
export interface Admitted {
  rows: Row[];
  retryAt: number | null;
}

/** What an admission got so far, for giving it back when a later step throws; `abandoned` once it has. */
interface Got {
  held: Map<string, Held[]>;
  abandoned: boolean;
}

/** What a pool short of units arbitrates between shards with (../pool/waiters.ts): the request's class, its client's weight, its shard. */
export function waitClaimOf(
  request: Pick<Row, "client_id" | "tier" | "queue" | "created_at" | "ready_at">, tiers: Map<Tier, TierRow>, weight: number, shard: string, now: number,
): WaitClaim {
  const p = priorityOf({ tier: request.tier, tierPoints: tiers.get(request.tier)?.priority_points, queue: request.queue, createdAt: request.created_at, readyAt: request.ready_at ?? undefined, recentShare: 0 }, now);
  return { clientId: request.client_id, shard, priority: Math.floor(p.tier + p.queue + p.wait) + (p.starved ? 100 : 0), weight };
}

/** A client's fair-share weight: its operator-set weight, else its tier's, else the tier's default. */
export function clientWeight(quota: { weight?: number | null } | null, tiers: Map<Tier, TierRow>, tier: Tier): number {
  return quota?.weight ?? tiers.get(tier)?.weight ?? DEFAULT_TIER_WEIGHTS[tier];
}

/** What admission asks of settlement: to give back what requests it does not admit got. */
export interface AdmissionHost {
  releaseHolds(items: Release[]): Promise<unknown>;
}

export class Admission {
  /** `shard`: this scheduler object's name, which pools record their waiting requests under (../pool/waiters.ts). */
  constructor(
    private readonly env: Env, private readonly store: QueueStore, private readonly host: AdmissionHost, private readonly shard: string,
    private readonly units: UnitLeases,
    private readonly slots: SlotLeases,
    private readonly money: MoneyLeases,
  ) {}

  /**
   * Take requests out of their queues under a lease (template timeout + LEASE_MARGIN_MS), in memory
   * (synchronous: no other pass can take them too; QueueStore.claim).
   */
  claim(items: Array<{ id: string; template: Template | undefined }>, now: number): Row[] {
    const margin = this.leaseMarginMs();
    return this.store.claim(items.map(({ id, template }) => [id, now + (template?.timeoutMs ?? 30_000) + margin] as const), now);
  }

  /**
   * Admit claimed requests: client slots first (batched per client), then every pool amount
   * (batched per pool), all-or-nothing per request. Requests not admitted go back to their queue with
   * anything they got released; requests that can never run fail now.
   */
  async admit(
    rows: Row[], templates: Map<string, Template>, pools: Map<string, PoolConfig>, blockedPools: Set<string>, fullClients: Set<string>,
    slotsHeld?: Set<string>, poolsHeld?: Map<string, Held[]>,
  ): Promise<Admitted> {
    // Held already (an execute's, taken before it reached this shard): given back like the rest if it is not admitted.
    const got: Got = { held: new Map(poolsHeld ?? []), abandoned: false };
    try {
      // Money admitted against this shard's lease is in flight at its client before anything runs
      // (./money-leases.ts): a client whose object cannot be reached has its requests queued again, as an admission that failed.
      const money = await this.money.convertFor(rows.map((r) => r.id));
      if (money.failed.size) this.abandon(rows.filter((r) => money.failed.has(r.id)), { held: new Map(), abandoned: false }, money.error);
      const admissible = money.failed.size ? rows.filter((r) => !money.failed.has(r.id)) : rows;
      return await this.decide(admissible, templates, pools, blockedPools, fullClients, got, slotsHeld ?? NONE);
    } catch (err) {
      this.abandon(rows, got, err);
      throw err;
    } finally {
      for (const row of rows) this.store.admitting.delete(row.id);
    }
  }

  /**
   * An admission threw part-way: every request of it still claimed goes back to its queue, to run from
   * ADMISSION_RETRY_MS on (the passes that follow do not hammer an object that is down), and gives back, in the
   * background, its slots (released by job id, also those whose answer was lost) and the reservations
   * it is known to hold; a pool's grant that answers after this is released when it comes (by its
   * reservation id, in decide). The slots' release goes out after the pools' (Settlement.releaseHolds),
   * by when an acquire still answering has normally been sent, and a client object takes calls from one
   * caller in order, so a late slot is freed too; one still held for any reason ends with the lease or
   * joins the request's next admission (a client object holds a job id once). A reservation whose answer never
   * comes stays held until its lease-long TTL (held twice for that while, as when a shard dies while
   * admitting, never granted twice). Before, the requests stayed claimed, out of the lease sweep's reach (it
   * skips requests being admitted), until the object restarted. The caller gets the error: a pass
   * fails (the runtime retries its alarm with backoff, the cron's pass is the backstop), an execute
   * answers its request queued (Dispatcher.runNow).
   */
  private abandon(rows: Row[], got: Got, err: unknown): void {
    got.abandoned = true;
    const now = Date.now();
    const retryAt = now + ADMISSION_RETRY_MS;
    const back = rows.filter((row) => this.store.live.get(row.id)?.status === "dispatching");
    // Queued again first: in an object whose storage is gone (reset meanwhile) this throws, and nothing is logged or sent from it.
    for (const row of back) this.store.requeue(row, now, retryAt, false);
    log.error("admission_failed", {
      count: back.length, error: String(err), retry_in_ms: ADMISSION_RETRY_MS,
      requests: back.map((row) => ({ request_id: row.id, trace_id: row.trace_id })),
    });
    this.giveBack(back.map((row) => ({ row: { ...row, reservations: JSON.stringify(got.held.get(row.id) ?? []) }, actual: {}, final: false })));
    // A request cancelled while it was admitted settled its money and slot then, but not what it got meanwhile: its pool holds go back too.
    const gone = rows.filter((row) => got.held.has(row.id) && !back.includes(row));
    this.giveBack(gone.map((row) => ({ row: { ...row, reservations: JSON.stringify(got.held.get(row.id)) }, actual: {}, final: false, poolsOnly: true as const })));
  }

  /** Release, in the background, what an abandoned admission got (slots expire at the lease's end and reservations at their TTL if this fails too). */
  private giveBack(items: Release[]): void {
    if (items.length === 0) return;
    this.host.releaseHolds(items).catch((err: unknown) => log.error("admission_release_failed", { count: items.length, error: String(err) }));
  }

  /**
   * Give back job slots taken for requests that stay queued (an execute's, taken with its money), in
   * the background: a client object takes one caller's calls in order, so a later admission of the same
   * request (the same job id) is not undone by it. One that fails ends with its expiry.
   */
  private releaseSlots(clientId: string, ids: string[]): void {
    this.clientStub(clientId).releaseJobs(ids).catch((err: unknown) => log.error("slot_release_failed", { client_id: clientId, count: ids.length, error: String(err) }));
  }

  /**
   * Give back, in the background, what an execute took before it reached this shard (its job slot with
   * its money, its units), when its request is not admitted here: a repeated key, dispatch stopped, not
   * ready, or taken by nobody. As releaseSlots, a later admission of the same request is not undone.
   */
  giveBackHeld(request: { id: string; clientId: string; tier: Row["tier"]; traceId: string | null }, slot: boolean, pools: Held[]): void {
    if (slot) this.releaseSlots(request.clientId, [request.id]);
    if (pools.length === 0) return;
    const row = { id: request.id, client_id: request.clientId, tier: request.tier, trace_id: request.traceId, reservations: JSON.stringify(pools) } as Row;
    this.giveBack([{ row, actual: {}, final: false, poolsOnly: true }]);
  }

  /**
   * admit's decisions; what it holds in pools is recorded in `got` as the answers come. `slotsHeld`:
   * requests whose job slot is held already (an execute's, taken with its money): no client call for them.
   */
  private async decide(rows: Row[], templates: Map<string, Template>, pools: Map<string, PoolConfig>, blockedPools: Set<string>, fullClients: Set<string>, got: Got, slotsHeld: ReadonlySet<string>): Promise<Admitted> {
    let retryAt: number | null = null;
    const requeue: Row[] = [];
    const failNow: Array<{ row: Row; reason: string }> = [];
    const runnable: Row[] = [];
    for (const row of rows) {
      const template = templates.get(row.template);
      const missing = template?.requirements.find((r) => !pools.has(r.pool));
      if (!template) failNow.push({ row, reason: `template ${row.template} no longer exists` });
      else if (missing) failNow.push({ row, reason: `pool ${missing.pool} no longer exists` });
      else runnable.push(row);
    }

    // The client's quota, one call per client: its object admits jobs up to the quota (and burst). A
    // suspended client's work waits in its queue; a deleted client's fails.
    const byClient = groupBy(runnable, (r) => r.client_id);
    const slotted = new Set<string>();
    const waitUntil = new Map<string, number>();
    const weights = new Map<string, number>();
    const tiers = await tierLimits(this.env);
    await Promise.all([...byClient].map(async ([clientId, list]) => {
      const [quota, client] = await Promise.all([clientQuota(this.env, clientId), clientTier(this.env, clientId)]);
      if (!quota || !client) {
        for (const row of list) failNow.push({ row, reason: `client ${clientId} no longer exists` });
        return;
      }
      weights.set(clientId, clientWeight(quota, tiers, client.tier));
      if (client.status === "suspended") {
        fullClients.add(clientId);
        return;
      }
      for (const r of list) if (slotsHeld.has(r.id)) slotted.add(r.id);
      const mine = slotsHeld.size === 0 ? list : list.filter((r) => !slotsHeld.has(r.id));
      // From this shard's block of the client's slots while it has room (no call); the rest a job row each.
      await this.slots.ready(clientId);
      const fromBlock = this.slots.take(clientId, quota, mine.map((r) => ({ id: r.id, leaseUntil: r.lease_until! })), Date.now(), this.store.queued.size > 0);
      for (const id of fromBlock) slotted.add(id);
      const ask = fromBlock.size === 0 ? mine : mine.filter((r) => !fromBlock.has(r.id));
      if (ask.length === 0) return;
      const claims = ask.map((r) => ({
        jobId: r.id, kind: "request" as const, expiresAt: r.lease_until!,
        pools: Object.fromEntries(templates.get(r.template)!.requirements.map((q) => [q.pool, q.amount])),
      }));
      const decisions = await this.clientStub(clientId).acquireJobs(quota, claims, this.shard);
      decisions.forEach((d, i) => {
        if (d.ok) slotted.add(ask[i]!.id);
        // Over a daily cap per pool: the request waits for the next UTC day.
        else if (d.shortfall.limit === "pool_daily") waitUntil.set(ask[i]!.id, dayStart(Date.now()) + 24 * 60 * 60 * 1000);
      });
      if (decisions.some((d) => !d.ok)) fullClients.add(clientId);
    }));

    // Pool reservations, one call per pool.
    const withSlot = runnable.filter((r) => slotted.has(r.id));
    const failing = new Set(failNow.map((f) => f.row.id));
    for (const r of runnable) if (!slotted.has(r.id) && !failing.has(r.id)) requeue.push(r);
    // What an execute held already, for a request that cannot run now (no slot: its client is full,
    // suspended or gone), is given back.
    for (const row of rows) {
      if (slotted.has(row.id) || !(slotsHeld.has(row.id) || got.held.has(row.id))) continue;
      this.giveBackHeld({ id: row.id, clientId: row.client_id, tier: row.tier, traceId: row.trace_id ?? null }, slotsHeld.has(row.id), got.held.get(row.id) ?? []);
      got.held.delete(row.id);
    }
    const needs = new Map<string, Array<{ row: Row; amount: number }>>();
    for (const row of withSlot) {
      const already = got.held.get(row.id);
      for (const req of templates.get(row.template)!.requirements) {
        if (already?.some((h) => h.pool === req.pool)) continue;
        appendTo(needs, req.pool, { row, amount: req.amount });
      }
    }
    const held = got.held;
    const refused = new Map<string, ErrorBody>();
    const rankedAt = Date.now();
    const claimOf = (row: Row): WaitClaim => waitClaimOf(row, tiers, weights.get(row.client_id) ?? 1, this.shard, rankedAt);
    await Promise.all([...needs].map(async ([pool, list]) => {
      // From this shard's slice of the pool while it has units (one event id each, no call); the rest one reservation each.
      let leaseUntil = 0;
      for (const { row } of list) leaseUntil = Math.max(leaseUntil, row.lease_until!);
      // A slice serves a backlog: a shard that keeps up with its arrivals (nothing left queued) reserves per request.
      const leased = this.units.take(pools.get(pool)!, list.map((l) => l.amount), leaseUntil, Date.now(), this.store.queued.size > 0);
      leased.forEach((lease, i) => {
        const { row, amount } = list[i]!;
        held.set(row.id, [...(held.get(row.id) ?? []), { pool, reservationId: "", amount, lease }]);
      });
      // The slice ran short, or there is none: a reservation each for the rest.
      const rest = list.slice(leased.length);
      if (rest.length === 0) return;
      const results = (await this.poolStub(pool).reserveMany(pools.get(pool)!, rest.map(({ row, amount }) => ({
        caller: callerOf(row), amount, ttlMs: Math.max(1000, row.lease_until! - Date.now()), requestId: row.id, wait: claimOf(row),
      })))) as Result<ReserveResult>[];
      if (got.abandoned) {
        // Answered after the admission was given up: release what this pool granted, and only that (abandon released the slots).
        const late = results.flatMap((res, i) => (res.ok ? [{ row: { ...rest[i]!.row, reservations: JSON.stringify([{ pool, reservationId: res.value.reservationId, amount: rest[i]!.amount }]) }, actual: {}, final: false, poolsOnly: true as const }] : []));
        return this.giveBack(late);
      }
      results.forEach((res, i) => {
        const { row, amount } = rest[i]!;
        if (res.ok) held.set(row.id, [...(held.get(row.id) ?? []), { pool, reservationId: res.value.reservationId, amount }]);
        else if (!refused.has(row.id)) refused.set(row.id, res.error);
      });
    }));

    const admitted: Row[] = [];
    const rollback: Array<{ row: Row; holds: Held[] }> = [];
    for (const row of withSlot) {
      const error = refused.get(row.id);
      const holds = held.get(row.id) ?? [];
      if (!error) {
        row.reservations = JSON.stringify(holds);
        admitted.push(row);
        continue;
      }
      rollback.push({ row, holds });
      if (error.code === "rate_limited") {
        const details = error.details as { pool: string; retry_after_ms: number | null };
        blockedPools.add(details.pool);
        const hint = details.retry_after_ms ?? 60_000;
        retryAt = Math.min(retryAt ?? Infinity, Date.now() + Math.max(10, hint));
        requeue.push(row);
      } else if (error.code === "pool_inactive") {
        requeue.push(row);
        retryAt = Math.min(retryAt ?? Infinity, Date.now() + 60_000);
      } else {
        failNow.push({ row, reason: `${error.code}: ${error.message}` });
      }
    }
    if (rollback.length) await this.host.releaseHolds(rollback.map(({ row, holds }) => ({ row: { ...row, reservations: JSON.stringify(holds) }, actual: {}, final: false })));

    const now = Date.now();
    const claimed = (row: Row) => this.store.live.get(row.id)?.status === "dispatching";
    for (const row of requeue) if (claimed(row)) this.store.requeue(row, now, waitUntil.get(row.id) ?? row.not_before, false);
    this.store.finishAll(failNow.filter(({ row }) => claimed(row)).map(({ row, reason }) => ({ id: row.id, status: "failed", error: reason })), now);
    for (const row of rows) this.store.admitting.delete(row.id);
    // A request cancelled while it was being admitted gives back what it got.
    const stillClaimed = admitted.filter(claimed);
    const cancelled = stillClaimed.length === admitted.length ? [] : admitted.filter((r) => !claimed(r));
    if (cancelled.length) await this.host.releaseHolds(cancelled.map((row) => ({ row, actual: {}, final: true })));
    const failed = failNow.filter(({ row }) => this.store.rowOf(row.id)?.status === "failed").map(({ row }) => row);
    if (failed.length) await this.host.releaseHolds(failed.map((row) => ({ row: { ...row, reservations: null }, actual: {}, final: true })));
    return { rows: stillClaimed, retryAt };
  }

  private poolStub(pool: string) {
    return poolStub(this.env, pool);
  }

  private clientStub(clientId: string) {
    return clientStub(this.env, clientId);
  }

  private leaseMarginMs(): number {
    return settings(this.env).LEASE_MARGIN_MS;
  }
}
