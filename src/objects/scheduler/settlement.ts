/**
 * Settlement: what happens when a worker call ends, a lease runs out or a caller cancels. Consume what
 * each worker reports (never more than reserved), refund the rest, free client slots and settle the
 * money with each client; then finish the request, or retry it with backoff up to its attempts. Batched:
 * one release call per pool and one settle call per client for all that end together.
 */
import { backoffMs } from "../../domain/priority";
import { log } from "../../log";
import { compressText } from "../../domain/compression";
import { budgetLimit, poolConfigs } from "../../storage/config";
import { poolStub } from "../pool/stub";
import type { Settlement as ClientSettlement, SpendEvent } from "../client/types";
import type { ReleaseResult, Result } from "../pool/types";
import type { Health } from "./health";
import { appendTo, groupBy } from "../../domain/groups";
import { callerOf, fail, timedOut, view, type Finished, type Held, type Outcome, type Row } from "./rows";
import { BUSY_FLUSH_MS } from "./outbox";
import { settleRetryMs, type Owed, type OwedSettlements } from "./owed";
import type { QueueStore } from "./store";
import type { PoolCost, RequestStatus, RequestView, StoredPlan } from "./types";
import { clientStub } from "../client/stub";
import { costOf } from "../../domain/money";
import type { SlotLeases } from "./slot-leases";
import type { UnitLeases } from "./unit-leases";

/** Completions are settled together: one release call per pool and client for all that end within this window. */
const SETTLE_DELAY_MS = 5;
/**
 * ...or as soon as this many have ended. A timer does not fire while the runtime's event loop stays
 * busy (a pass launching thousands of calls to workers that answer at once), so without this a
 * backlog's whole wave waited for the pass to end before any of it was settled.
 */
const SETTLE_BATCH = 512;
const MAX_RESULT_CHARS = 256 * 1024;
/** Terminal states that cancellation cannot change. */
const TERMINAL: RequestStatus[] = ["completed", "failed", "cancelled", "expired"];

/** One request to give back: its holds released (consuming `actual` per pool), its money settled. */
export interface Release {
  row: Row;
  actual: Record<string, number>;
  /** The request is done: its estimate leaves the client's money in flight. */
  final: boolean;
  /** Its pool holds only: the client object's slot is left alone (a late answer to an admission given up: ./admission.ts). */
  poolsOnly?: true;
}

/** What settlement asks of its host: stop worker calls, and wake the dispatcher for capacity freed. */
export interface SettlementHost {
  abortCall(id: string, reason: Error): void;
  dropCall(id: string, reason: Error): void;
  /** Make sure a pass runs no later than `at`. */
  passBy(at: number): void;
}

export class Settlement {
  private settleBuffer: Owed[] = [];
  /**
   * Requests whose worker call has ended, from then until their settlement has gone through or is kept
   * as owed: their lease no longer sends them back to their queue (reclaimLeases). With many held jobs
   * running, a settlement's calls to the client and pool objects waited as long as the jobs ran
   * (docs/kam.md): with 3 s jobs one took 3 s (test/objects/slot-leases.test.ts), their leases ran out
   * meanwhile, and completed work was queued again and ran a second time.
   */
  private readonly ending = new Map<string, number>();
  private settleTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly env: Env,
    private readonly store: QueueStore,
    private readonly health: Health,
    private readonly owed: OwedSettlements,
    private readonly units: UnitLeases,
    private readonly slots: SlotLeases,
    private readonly host: SettlementHost,
  ) {}

  /**
   * Cancel a request. Queued: removed from its queue. Dispatching or running (unless `onlyQueued`):
   * its worker call is aborted and its reservations and slot are released. Otherwise a conflict.
   */
  async cancel(id: string, clientId: string | null, onlyQueued: boolean): Promise<Result<RequestView>> {
    const row = this.store.rowOf(id);
    if (!row || (clientId !== null && row.client_id !== clientId)) return fail("request_not_found", `no request ${id}`);
    if (TERMINAL.includes(row.status) || (onlyQueued && row.status !== "queued")) {
      return fail("request_state", `request ${id} is ${row.status}`, { status: row.status });
    }
    const now = Date.now();
    const was = row.status;
    const wasActive = was !== "queued";
    this.store.cancel(row, now);
    log.info("request_cancelled", { request_id: id, client_id: row.client_id, was, trace_id: row.trace_id });
    if (wasActive) this.host.abortCall(id, new Error("cancelled"));
    await this.releaseHolds([{ row, actual: {}, final: true }]);
    if (wasActive) this.host.passBy(Date.now());
    this.store.waiters.wake(id);
    return { ok: true, value: view(this.store.rowOf(id)!) };
  }

  /**
   * A worker call ended: settle it with the others that end within SETTLE_DELAY_MS (or SETTLE_BATCH of
   * them). A request whose caller waits for it (an execute) is settled at once and alone (the immediate
   * lane): a timer does not fire while the event loop is busy with a backlog, nor should it wait behind
   * 512 others. Immediate work nobody waits for (answered 202 and queued) settles with the rest: one
   * settlement each for 200 of them, all at once, held a drain's first wave up by half a second.
   */
  queue(id: string, attempt: number, outcome: Outcome): void {
    this.ending.set(id, attempt);
    if (this.store.waiters.has(id)) return this.settleSafely([{ id, attempt, outcome }]);
    this.settleBuffer.push({ id, attempt, outcome });
    if (this.settleBuffer.length >= SETTLE_BATCH) return this.settleNow();
    this.settleTimer ??= setTimeout(() => {
      this.settleTimer = null;
      this.settleSafely(this.settleBuffer.splice(0));
    }, SETTLE_DELAY_MS);
  }

  /** Settle what has ended, now (the timer, if armed, is not needed any more). */
  settleNow(): void {
    if (this.settleTimer) clearTimeout(this.settleTimer);
    this.settleTimer = null;
    if (this.settleBuffer.length) this.settleSafely(this.settleBuffer.splice(0));
  }

  /**
   * Settle a batch nobody awaits. A batch that fails (a pool or client object unreachable) is logged,
   * never left as an unhandled rejection, and kept in the shard's storage as owed (./owed.ts): made
   * again with backoff until it goes through, its requests running meanwhile (their leases do not send
   * them back to their queue: they ran), also across a restart. `failures`: of this batch so far.
   */
  private settleSafely(batch: Owed[], failures = 0): void {
    this.settle(batch).then(
      () => {
        this.ended(batch);
        if (failures > 0) this.unlessDead(() => this.owed.done(batch.map((b) => b.id)));
      },
      (err: unknown) => {
        const n = failures + 1;
        const retryInMs = settleRetryMs(n);
        const requests = batch.map((b) => ({ request_id: b.id, trace_id: this.store.live.get(b.id)?.trace_id ?? null }));
        log.error("settle_failed", { count: batch.length, requests, error: String(err), failures: n, retry_in_ms: retryInMs });
        const at = Date.now() + retryInMs;
        this.unlessDead(() => {
          this.owed.keep(batch, n, at);
          this.host.passBy(at);
        });
        // Owed now (kept in storage, which reclaimLeases also skips), or the object is gone.
        this.ended(batch);
      },
    );
  }

  /** A batch's settlement is through (or owed): its requests' leases apply again, unless a later attempt of one has ended meanwhile. */
  private ended(batch: Owed[]): void {
    for (const b of batch) if (this.ending.get(b.id) === b.attempt) this.ending.delete(b.id);
  }

  /**
   * Bookkeeping after a settlement nobody awaits. An object whose storage is gone (it was reset while the
   * settlement ran) cannot keep anything: that is logged, never an unhandled rejection; the requests'
   * rows still say running, so their leases send them back to their queue when the object restarts.
   */
  private unlessDead(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      log.error("settle_owed_unsaved", { error: String(err) });
    }
  }

  /**
   * Make the owed settlements that are due (a pass does first; they go on in the background), and keep
   * the alarm for the next due after them (an alarm may fire a moment before the clock reads its time).
   */
  retryOwed(now: number): void {
    const due = this.owed.takeDue(now);
    if (due) this.settleSafely(due.batch, due.failures);
    const next = this.owed.nextDue(now);
    if (next !== null) this.host.passBy(next);
  }

  /**
   * Settle finished calls in one batch: consume what each worker reports (never more than reserved;
   * a pool it does not report is taken as fully used), refund the rest, free client slots, record the
   * outcome, then wake the dispatcher for the capacity freed.
   */
  private async settle(batch: Owed[]): Promise<void> {
    const live: Array<{ row: Row; outcome: Outcome; actual: Record<string, number> }> = [];
    for (const { id, attempt, outcome } of batch) {
      const row = this.store.rowOf(id);
      // Cancelled meanwhile (already released), or an attempt whose lease was reclaimed: not ours to settle.
      if (!row || row.status !== "running" || row.attempts !== attempt) continue;
      const holds = JSON.parse(row.reservations ?? "[]") as Held[];
      const actual: Record<string, number> = {};
      if (outcome.ok) {
        for (const h of holds) {
          const reported = outcome.usage?.[h.pool];
          actual[h.pool] = typeof reported === "number" && Number.isInteger(reported) && reported >= 0 ? Math.min(h.amount, reported) : h.amount;
        }
      }
      live.push({ row, outcome, actual });
    }
    const final = (l: (typeof live)[number]) => l.outcome.ok || l.outcome.retryable === false || l.row.attempts >= l.row.max_attempts;
    // Results stored compressed above the plan's threshold (the work is done before the synchronous part).
    const stored = new Map<string, { text: string; bytesSaved: number }>();
    await Promise.all(live.filter((l) => l.outcome.ok).map(async ({ row, outcome }) => {
      let text = JSON.stringify(outcome.result ?? null);
      if (text.length > MAX_RESULT_CHARS) text = JSON.stringify({ truncated: true, chars: text.length });
      const threshold = this.store.plans.get(row.id)?.compress_threshold_bytes ?? null;
      if (threshold === null) return void stored.set(row.id, { text, bytesSaved: 0 });
      const c = await compressText(text, threshold);
      stored.set(row.id, { text: c.stored, bytesSaved: c.bytesSaved });
    }));
    const used = await this.releaseHolds(live.map((l) => ({ row: l.row, actual: l.actual, final: final(l) })));
    const now = Date.now();
    const leaders: Array<{ row: Row; plan: StoredPlan; result: string; actualNano: number }> = [];
    const finished: Finished[] = [];
    // One line for the batch (a line per request halved a drain's throughput under wrangler dev), with
    // each request's trace id: `wrangler tail --search <trace_id>` finds it.
    const settled: Array<{ request_id: string; trace_id: string | null; outcome: "completed" | "retry" | "failed" }> = [];
    for (const { row, outcome } of live) {
      this.health.noteOutcome(row, outcome, now);
      if (outcome.error !== "cancelled") this.health.count(row.template, outcome.ok ? "completions" : timedOut(outcome) ? "timeouts" : "failures");
      if (outcome.ok) {
        const { text: result, bytesSaved } = stored.get(row.id)!;
        const actual = used.get(row.id) ?? [];
        const actualNano = actual.reduce((sum, p) => sum + p.cost_nano, 0);
        const plan = this.store.plans.get(row.id);
        if (plan?.cache_key) leaders.push({ row, plan, result, actualNano });
        // The plan is rewritten only when the run changed it (most requests run alone, nothing compressed).
        const batched = outcome.batched ?? 1;
        finished.push({
          id: row.id, status: "completed", result, actual: actualNano, actualDetail: JSON.stringify(actual),
          plan: plan && (bytesSaved > 0 || batched > 1) ? { ...plan, bytes_saved: plan.bytes_saved + bytesSaved, batched } : undefined,
        });
        settled.push({ request_id: row.id, trace_id: row.trace_id, outcome: "completed" });
      } else if (outcome.retryable !== false && row.attempts < row.max_attempts) {
        this.store.requeue(row, now, now + backoffMs(row.attempts), true, outcome.error);
        this.health.count(row.template, "retries");
        log.warn("dispatch_retry", { request_id: row.id, attempt: row.attempts, error: outcome.error, trace_id: row.trace_id });
        settled.push({ request_id: row.id, trace_id: row.trace_id, outcome: "retry" });
      } else {
        finished.push({ id: row.id, status: "failed", error: outcome.error ?? "failed" });
        log.warn("request_failed", { request_id: row.id, client_id: row.client_id, attempts: row.attempts, error: outcome.error, trace_id: row.trace_id });
        settled.push({ request_id: row.id, trace_id: row.trace_id, outcome: "failed" });
      }
    }
    this.store.finishAll(finished, now);
    if (settled.length) log.info("requests_settled", { count: settled.length, requests: settled });
    if (leaders.length) {
      const waiting = this.store.queuedByCacheKey(new Set(leaders.map((l) => l.plan.cache_key!)));
      for (const leader of leaders) await this.completeFollowers(leader, waiting.get(leader.plan.cache_key!) ?? []);
    }
    this.health.saveCounters();
    // Capacity came back: a pass now when this shard has work waiting. With none, a pass within
    // BUSY_FLUSH_MS delivers the finished requests to the request log: executes that end close together
    // share it, where each took an alarm (a write of its own) and a pass of its own.
    if (live.length) this.host.passBy(this.store.queued.size > 0 ? Date.now() : Date.now() + BUSY_FLUSH_MS);
  }

  /**
   * A cacheable request completed: the identical requests queued behind it (same cache key) complete
   * with its result, at no cost and without dispatch. Their money leaves flight.
   */
  private async completeFollowers(leader: { row: Row; plan: StoredPlan; result: string; actualNano: number }, candidates: string[]): Promise<void> {
    const now = Date.now();
    const followers: Row[] = [];
    const finished: Finished[] = [];
    for (const id of candidates) {
      const row = this.store.live.get(id);
      const plan = this.store.plans.get(id);
      // Still queued: another leader of the same key may have completed it already.
      if (id === leader.row.id || !plan || row?.status !== "queued") continue;
      followers.push(row);
      finished.push({
        id, status: "completed", result: leader.result, actual: 0, actualDetail: "[]", startedAt: now,
        plan: { ...plan, cached: true, strategies: [...plan.strategies, { strategy: "caching", saved_nano: leader.actualNano, detail: `coalesced with ${leader.row.id}, which ran it` }] },
      });
    }
    this.store.finishAll(finished, now);
    if (followers.length === 0) return;
    log.info("requests_coalesced", {
      leader: leader.row.id, trace_id: leader.row.trace_id, followers: followers.length,
      requests: followers.map((r) => ({ request_id: r.id, trace_id: r.trace_id })),
    });
    await Promise.all([...groupBy(followers, (r) => r.client_id)].map(async ([clientId, list]) => {
      await this.clientStub(clientId).settle(await budgetLimit(this.env, clientId), list.map((r) => ({ requestId: r.id, events: [] })));
    }));
  }

  /**
   * Release reservations (consuming `actual` per pool) and client slots for these rows, and settle their
   * money with their clients: a final item's estimate leaves flight, and what was used is spent. Returns
   * what each request used per pool.
   */
  async releaseHolds(items: Release[]): Promise<Map<string, PoolCost[]>> {
    const pools = await poolConfigs(this.env);
    const byPool = new Map<string, Array<{ row: Row; hold: Held; used: number }>>();
    const used = new Map<string, PoolCost[]>();
    const events = new Map<string, SpendEvent[]>();
    const leasedPools = new Set<string>();
    const now = Date.now();
    // A slot from this shard's block of the client's slots goes back to the block (the client's settle below frees a job row's).
    for (const { row, poolsOnly } of items) if (!poolsOnly) this.slots.release(row.id);
    for (const { row, actual } of items) {
      for (const hold of JSON.parse(row.reservations ?? "[]") as Held[]) {
        if (hold.lease) {
          // Units from this shard's lease of the pool: their use is recorded here and reported in one exchange below.
          const cfg = pools.get(hold.pool) ?? this.units.cfgOf(hold.pool);
          if (!cfg) continue;
          const asked = actual[hold.pool] ?? 0;
          // What the first settlement of this hold recorded, if there was one (made again, or a cancel after it failed).
          const { used: units, costNano } = this.units.settle({
            cfg, eventId: hold.lease, clientId: row.client_id, tier: row.tier, requestId: row.id, amount: hold.amount, used: asked, costNano: costOf(asked, cfg.costPerUnitNano), at: now,
          });
          leasedPools.add(hold.pool);
          appendTo(used, row.id, { pool: hold.pool, units, cost_nano: costNano });
          if (units > 0) appendTo(events, row.id, { eventId: hold.lease, costNano, at: now, pool: hold.pool, units });
          continue;
        }
        appendTo(byPool, hold.pool, { row, hold, used: actual[hold.pool] ?? 0 });
      }
    }
    const reported = this.units.report(leasedPools);
    await Promise.all([reported, ...[...byPool].map(async ([pool, list]) => {
      const cfg = pools.get(pool);
      if (!cfg) return;
      // `replay`: a settlement made again after one failed part-way gets the first release's answers.
      const items = list.map(({ row, hold, used }) => ({ caller: callerOf(row), reservationId: hold.reservationId, actualUsed: used, replay: true, requestId: row.id }));
      const results = (await this.poolStub(pool).releaseMany(cfg, items)) as Result<ReleaseResult>[];
      results.forEach((r, i) => {
        const { row } = list[i]!;
        if (!r.ok) {
          log.warn("release_refused", { request_id: row.id, pool, error: r.error.code, trace_id: row.trace_id });
          return;
        }
        appendTo(used, row.id, { pool, units: r.value.consumed, cost_nano: r.value.costNano });
        if (r.value.eventId) appendTo(events, row.id, { eventId: r.value.eventId, costNano: r.value.costNano, at: r.value.at, pool, units: r.value.consumed });
      });
    })]);
    await Promise.all([...groupBy(items.filter((i) => !i.poolsOnly), (i) => i.row.client_id)].map(async ([clientId, list]) => {
      const settlements: ClientSettlement[] = list.map(({ row, final }) => ({ requestId: row.id, events: events.get(row.id) ?? [], keepInFlight: !final }));
      await this.clientStub(clientId).settle(await budgetLimit(this.env, clientId), settlements);
    }));
    return used;
  }

  /**
   * Requests whose lease ended without settling (a pass or the object died mid-way, or a worker call
   * outlived its deadline and margin) go back to their queue; a running one counts its attempt. Their
   * reservations and slots expire on their own. Not a request whose call has ended and whose settlement
   * is under way (`ending`) or owed: it ran.
   */
  reclaimLeases(now: number): Row[] {
    const failed: Row[] = [];
    // Every pass looks: walk the requests dispatching or running only, not the queued backlog.
    const stale: Row[] = [];
    for (const id of this.store.active) {
      const r = this.store.live.get(id)!;
      if (r.lease_until !== null && r.lease_until <= now && !this.store.admitting.has(r.id) && !this.owed.has(r.id) && !this.ending.has(r.id)) stale.push(r);
    }
    for (const row of stale) {
      const was = row.status;
      this.host.dropCall(row.id, new Error("lease expired"));
      // Units it took from this shard's leases come back when those leases do; a slot from its client's block, now.
      for (const h of JSON.parse(row.reservations ?? "[]") as Held[]) if (h.lease) this.units.forget(h.lease, h.amount);
      this.slots.release(row.id);
      if (row.status === "running" && row.attempts >= row.max_attempts) {
        this.store.finish(row.id, "failed", now, { error: "lease expired: the dispatcher stopped while the request ran" });
        failed.push(row);
      } else {
        if (row.status === "running") this.health.count(row.template, "retries");
        this.store.requeue(row, now, now, row.status === "running", "lease expired; returned to the queue");
      }
      log.warn("lease_expired", { request_id: row.id, was, attempts: row.attempts, trace_id: row.trace_id });
    }
    this.health.saveCounters();
    return failed;
  }

  private poolStub(pool: string) {
    return poolStub(this.env, pool);
  }

  private clientStub(clientId: string) {
    return clientStub(this.env, clientId);
  }
}
