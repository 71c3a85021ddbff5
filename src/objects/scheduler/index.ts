import { DurableObject } from "cloudflare:workers";
import type { BudgetLimit } from "../../domain/budget";
import type { QueueName } from "../../domain/priority";
import type { RequestSla, SlaTarget } from "../../domain/sla";
import type { Tier } from "../../domain/types";
import { log } from "../../log";
import { AlarmClock } from "../alarm";
import type { Result } from "../pool/types";
import { Admission } from "./admission";
import { WorkerCalls } from "./calls";
import { Dispatcher } from "./dispatcher";
import { Health } from "./health";
import { MoneyLeases } from "./money-leases";
import { MAX_IN_FLIGHT } from "./limits";
import { Outbox } from "./outbox";
import { OwedSettlements } from "./owed";
import { Ranking } from "./ranking";
import { activeFor, countsFor } from "./report-reads";
import { viewOf } from "./rows";
import { createTables } from "./schema";
import { Settlement } from "./settlement";
import { ownerShard, shardName, shardOfId } from "./shards";
import { QueueStore } from "./store";
import { SlotLeases } from "./slot-leases";
import { UnitLeases } from "./unit-leases";
import { PassWaker } from "./wake";
import { isQueueFull, type EnqueueOutcome, type LeaseRefusal, type NewRequest, type PositionView, type QueueFull, type QueueStats, type RequestView, type SchedulerMetrics, type SchedulerState, type SlaGroup } from "./types";

/**
 * The scheduler: the single owner of the five queues. It ranks queued requests, claims the best
 * with a lease, admits them against client slots and pool reservations (all-or-nothing, batched per
 * client and per pool), invokes each template's worker through its service binding with a deadline,
 * and settles what the worker reports. Claims are synchronous, so overlapping passes (alarm, cron,
 * execute) can never dispatch one request twice; a lease that ends returns its request to the queue.
 *
 * This class is the host: it owns the storage, the alarm and the running switch, wires the
 * collaborators (one file each beside it) and answers RPC by delegating to them.
 *
 * One object per shard (./shards.ts): each owns the clients that hash to it, with its own queues,
 * alarm, leases and outbox. Shard 0 also keeps the shard span (how many shards may hold work).
 */
export class SchedulerObject extends DurableObject<Env> {
  private readonly store: QueueStore;
  private readonly ranking: Ranking;
  private readonly admission: Admission;
  private readonly calls: WorkerCalls;
  private readonly settlement: Settlement;
  private readonly owed: OwedSettlements;
  private readonly outbox: Outbox;
  private readonly health: Health;
  private readonly dispatcher: Dispatcher;
  private readonly money: MoneyLeases;
  private running: boolean;
  private readonly clock: AlarmClock;
  /** When the next pass runs: a timer for soon, the alarm behind it and for later (./wake.ts). */
  private readonly waker: PassWaker;
  /** This shard's name ("scheduler", "scheduler-<k>") and index. */
  private readonly shard: string;
  private readonly shardIndex: number;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.clock = new AlarmClock(ctx.storage, "scheduler");
    this.waker = new PassWaker(this.clock, (trigger) => this.dispatcher.pass(trigger));
    const sql = ctx.storage.sql;
    createTables(sql);
    // Not ctx.id.name alone: an alarm that wakes this object cold gives it none (./shards.ts, shardOfId).
    const self = shardOfId(env, ctx.id);
    // A scheduler by another name (tests' scratch objects) keeps it and owns no client.
    if (!self && ctx.id.name === undefined) log.error("scheduler_not_a_shard", { id: ctx.id.toString() });
    this.shard = self?.name ?? ctx.id.name ?? shardName(0);
    this.shardIndex = self?.index ?? -1;
    // Collaborators call each other through narrow hosts; the arrows resolve once all are wired.
    this.store = new QueueStore(sql, {
      tierPointsOf: (tier) => this.ranking.tierPointsOf(tier),
      enqueueScore: (clientId, tier, queue, now) => this.ranking.enqueueScore(clientId, tier, queue, now),
    });
    this.ranking = new Ranking(env, this.store);
    const saved = this.store.readState();
    this.running = saved.get("running") !== "false";
    this.health = new Health(env, this.store, this.ranking, saved.get("counters"));
    this.outbox = new Outbox(env, sql, this.store.ends);
    this.calls = new WorkerCalls(env, this.store, {
      settle: (id, attempt, outcome) => this.settlement.queue(id, attempt, outcome),
      settleNow: () => this.settlement.settleNow(),
      noteDuration: (ms) => this.ranking.noteDuration(ms),
    });
    this.owed = new OwedSettlements(sql);
    const units = new UnitLeases(env, this.shard);
    // A block with room again: a pass, for work a pass could not admit while its block was being exchanged.
    const slots = new SlotLeases(env, this.shard, () => {
      if (this.store.queued.size > 0) this.waker.ensure(Date.now());
    });
    this.settlement = new Settlement(env, this.store, this.health, this.owed, units, slots, {
      abortCall: (id, reason) => this.calls.abort(id, reason),
      dropCall: (id, reason) => this.calls.drop(id, reason),
      passBy: (at) => this.waker.ensure(at),
    });
    this.money = new MoneyLeases(env, this.shard, {
      isLive: (id) => this.store.live.has(id),
      markConverted: (ids) => void sql.exec("UPDATE requests SET money_lease = NULL WHERE id IN (SELECT value FROM json_each(?))", JSON.stringify(ids)),
      markHolding: (clientId, holding) => void (holding
        ? sql.exec("INSERT INTO money_holders (client_id) VALUES (?) ON CONFLICT DO NOTHING", clientId)
        : sql.exec("DELETE FROM money_holders WHERE client_id = ?", clientId)),
    });
    this.admission = new Admission(env, this.store, this.settlement, this.shard, units, slots, this.money);
    this.dispatcher = new Dispatcher(
      env,
      { store: this.store, ranking: this.ranking, admission: this.admission, calls: this.calls, settlement: this.settlement, health: this.health, outbox: this.outbox, units, slots },
      { isRunning: () => this.running, passBy: (at) => this.waker.ensure(at), ownsClient: (id) => ownerShard(env, id) === this.shardIndex },
    );
    this.store.load();
    this.money.restore(
      sql.exec<{ id: string; client_id: string; estimate_nano: number }>("SELECT id, client_id, estimate_nano FROM requests WHERE money_lease IS NOT NULL").toArray(),
      sql.exec<{ client_id: string }>("SELECT client_id FROM money_holders").toArray().map((r) => r.client_id),
    );
    void ctx.blockConcurrencyWhile(async () => {
      await this.clock.load();
      // Settlements owed from before a restart are made again when due (the alarm's pass: Dispatcher.pass).
      const owedDue = this.owed.nextDue();
      if (owedDue !== null) this.clock.ensure(owedDue);
    });
  }

  // --- RPC: requests --------------------------------------------------------------------------

  /**
   * Add requests to their queues; a repeated idempotency key returns the first request (`conflict` when
   * its spec differs). `maxQueued` (SCHEDULER_MAX_QUEUED): a new request that would wait while this shard
   * holds that many queued is refused and nothing of it written (QueueFull).
   */
  enqueue(items: NewRequest[], maxQueued?: number): Array<EnqueueOutcome | QueueFull> {
    const now = Date.now();
    const outcomes = items.map((item) => this.fullFor(item, maxQueued) ?? this.store.insert(item, now));
    const taken = outcomes.filter((o): o is Exclude<typeof o, QueueFull> => !isQueueFull(o));
    if (taken.length < items.length) this.logFull(items.length - taken.length, maxQueued!, items);
    // A pass for new work; while dispatch is stopped only a cache hit's outbox entry needs one (setRunning wakes the rest).
    if (outcomes.some((o, i) => !isQueueFull(o) && !o.duplicate && (this.running || items[i]!.cached))) this.waker.ensure(now);
    // A single new request is placed into the cached order (Ranking.splice), not ranked with the whole backlog again.
    const positions = this.ranking.positionsOf(taken.map((o) => o.request.id), now, items.length === 1 && taken.length === 1 && !taken[0]!.duplicate);
    let next = 0;
    return outcomes.map((o) => (isQueueFull(o) ? o : { ...o, ...positions[next++]! }));
  }

  /**
   * Enqueue one request whose money this shard admits against its hold from the client's object
   * (decision 008; ./money-leases.ts), within `maxQueued` as enqueue's: `{ refused }` with the budget as
   * it stands when its estimate does not fit, `{ clientUnreachable }` when the client's object could not
   * be asked (nothing queued either way).
   */
  async enqueueOnLease(item: NewRequest, limit: BudgetLimit, maxQueued?: number): Promise<EnqueueOutcome | QueueFull | LeaseRefusal> {
    // Full already: refused (enqueue logs it) before any money is asked for.
    if (this.fullFor(item, maxQueued)) return this.enqueue([item], maxQueued)[0]!;
    let outcome: EnqueueOutcome | QueueFull | undefined;
    // Its money taken and its row inserted in one synchronous section (a conversion in between would miss it).
    const refusal = await this.money.admit(item.clientId, item.id!, item.estimateNano, limit, () => {
      [outcome] = this.enqueue([{ ...item, moneyLeased: true }], maxQueued);
      return !isQueueFull(outcome!);
    });
    return refusal ?? outcome!;
  }

  /** A budget read: the requests admitted against the client's hold here become requests in flight, and the hold ends. */
  returnMoneyLease(clientId: string): Promise<void> {
    return this.money.giveBack(clientId);
  }

  /**
   * Enqueue one request and, for the `immediate` queue, dispatch it at once in the immediate lane (no
   * pass over the backlog: Dispatcher.runNow) and wait for its first attempt to settle. Other queues are
   * only enqueued, within `maxQueued` as enqueue's. Returns the request as it stands.
   */
  async execute(item: NewRequest, waitMs: number, maxQueued?: number): Promise<EnqueueOutcome | QueueFull> {
    const now = Date.now();
    const runNow = !item.cached && item.queue === "immediate" && this.running;
    // Its job slot came with its money and its units beside it (services/requests.ts): given back here unless its admission takes them over.
    const held = { slot: item.slotHeld === true, pools: item.poolsHeld ?? [] };
    const giveBack = () => this.admission.giveBackHeld({ id: item.id!, clientId: item.clientId, tier: item.tier, traceId: item.traceId ?? null }, held.slot, held.pools);
    // The immediate lane is not held back by a full backlog: its request runs now (or waits, as any execute refused a slot).
    const full = runNow ? null : this.fullFor(item, maxQueued);
    if (full) {
      if (held.slot || held.pools.length) giveBack();
      this.logFull(1, full.max, [item]);
      return full;
    }
    // Run now: its row is written with its start (one commit; QueueStore.insert's `defer`).
    const inserted = this.store.insert(item, now, runNow);
    const id = inserted.request.id;
    if ((held.slot || held.pools.length) && (inserted.duplicate || !runNow)) giveBack();
    if (!inserted.duplicate && runNow) {
      const settled = this.store.waiters.waitFor(id, waitMs);
      try {
        if (await this.dispatcher.runNow(id, held.slot, held.pools)) await settled;
      } finally {
        this.store.writeHeldBack(id); // not started (it waits in its queue), or the admission failed
      }
    }
    if (this.store.queued.has(id)) this.waker.ensure(Date.now());
    const row = this.store.rowOf(id)!;
    return { request: await viewOf(row), duplicate: inserted.duplicate, ...(inserted.conflict ? { conflict: true } : {}), ...this.ranking.positionOf(id, Date.now()) };
  }

  /** One line per refusing call: `wrangler tail --search queue_full` shows a shard at its limit. */
  private logFull(refused: number, max: number, items: NewRequest[]): void {
    log.warn("queue_full", { shard: this.shardIndex, queued: this.store.queued.size, max_queued: max, refused, client_id: items[0]!.clientId, trace_id: items[0]!.traceId ?? null });
  }

  /**
   * Whether a new request must be refused: this shard holds `maxQueued` queued already. A cache hit (it
   * never waits) and a repeated idempotency key (answered with its first request) are not.
   */
  private fullFor(item: NewRequest, maxQueued: number | undefined): QueueFull | null {
    const queued = this.store.queued.size;
    if (maxQueued === undefined || queued < maxQueued || item.cached) return null;
    if (item.idempotencyKey && this.store.findByKey(item.clientId, item.idempotencyKey, null)) return null;
    return { full: true, queued, max: maxQueued };
  }

  /** Of these request ids, those the scheduler holds and has not finished. */
  unfinished(ids: string[]): string[] {
    return ids.filter((id) => this.store.live.has(id));
  }

  /** The id of the request a client made with this idempotency key, if any, and whether `specHash` conflicts with its spec. */
  findByKey(clientId: string, key: string, specHash: string | null = null): { id: string; conflict: boolean } | null {
    return this.store.findByKey(clientId, key, specHash);
  }

  async get(id: string, clientId: string | null): Promise<RequestView | null> {
    const row = this.store.rowOf(id);
    if (!row || (clientId !== null && row.client_id !== clientId)) return null;
    return viewOf(row);
  }

  /** How many of a client's requests created at or after `since` are in each status. */
  countsFor(clientId: string, since: number): Record<string, number> {
    return countsFor(this.store, clientId, since);
  }

  async position(id: string, clientId: string | null): Promise<PositionView | null> {
    const row = this.store.rowOf(id);
    if (!row || (clientId !== null && row.client_id !== clientId)) return null;
    await this.ranking.refreshTiers();
    const now = Date.now();
    const q = this.store.queued.get(id);
    return {
      id,
      status: row.status,
      queue: row.queue,
      queued_total: this.store.queued.size,
      priority: q ? this.ranking.priorityNow(q, now) : null,
      ...this.ranking.positionOf(id, now),
    };
  }

  /**
   * Cancel a request. Queued: removed from its queue. Dispatching or running (unless `onlyQueued`):
   * its worker call is aborted and its reservations and slot are released. Otherwise a conflict.
   */
  cancel(id: string, clientId: string | null, onlyQueued: boolean): Promise<Result<RequestView>> {
    return this.settlement.cancel(id, clientId, onlyQueued);
  }

  /** Cancel every unfinished request of a client (a forced delete). Returns how many were cancelled. */
  async cancelClient(clientId: string): Promise<number> {
    const ids = [...this.store.live.values()].filter((r) => r.client_id === clientId).map((r) => r.id);
    let cancelled = 0;
    for (const id of ids) if ((await this.settlement.cancel(id, clientId, false)).ok) cancelled += 1;
    return cancelled;
  }

  /** A client's unfinished requests: queued, and dispatching or running. */
  activeFor(clientId: string): { queued: number; running: number } {
    return activeFor(this.store, clientId);
  }

  // --- RPC: service levels, status, metrics ---------------------------------------------------

  /** One request against its service level; null when unknown (or another client's). */
  sla(id: string, clientId: string | null, targets: SlaTarget[]): RequestSla | null {
    return this.health.sla(id, clientId, targets);
  }

  /**
   * Service-level attainment of the requests decided (met or breached) between `from` and `to`, per
   * tier and queue, optionally for one client, tier or queue only.
   */
  slaSummary(from: number, to: number, targets: SlaTarget[], filter: { clientId?: string; tier?: Tier; queue?: QueueName }): SlaGroup[] {
    return this.health.slaSummary(from, to, targets, filter);
  }

  /**
   * Per pool: the units that queued requests are waiting for (their templates' amounts), how many are
   * waiting, and the oldest wait in ms. For scaling policies' queue-depth and wait-time triggers.
   */
  waitingByPool(): Promise<Record<string, { requests: number; units: number; oldest_wait_ms: number }>> {
    return this.health.waitingByPool();
  }

  queueStatus(): { queues: QueueStats[]; scheduler: SchedulerState } {
    return { queues: this.health.queues(Date.now()), scheduler: this.state() };
  }

  /** For /metrics: each queue's depth and the waits of its requests so far; worker-call counters. */
  metrics(): SchedulerMetrics {
    return this.health.metrics(this.running, this.calls.inflight.size, this.owed.size);
  }

  // --- RPC: control ---------------------------------------------------------------------------

  setRunning(running: boolean): SchedulerState {
    this.running = running;
    this.store.writeState("running", String(running));
    log.info(running ? "scheduler_started" : "scheduler_stopped", {});
    if (running) this.waker.ensure(Date.now());
    return this.state();
  }

  state(): SchedulerState {
    return {
      running: this.running,
      queued: this.store.queued.size,
      in_flight: this.calls.inflight.size,
      max_in_flight: MAX_IN_FLIGHT,
      last_pass_at: this.dispatcher.lastPassAt,
      dispatched_total: this.store.seq,
      settlements_owed: this.owed.size,
    };
  }

  // --- RPC: shards ---------------------------------------------------------------------------

  /**
   * Shard 0 only: how many shards may hold work, given the configured count — the highest count in
   * use since the shards above the current one last held nothing (services/scheduler.ts).
   */
  shardSpan(count: number): number {
    const stored = Number(this.store.readState().get("shard_span") ?? 1);
    if (count > stored) this.store.writeState("shard_span", String(count));
    return Math.max(count, stored);
  }

  /** Shard 0 only: shards from `top` up hold nothing any more (checked by the cron): forget them. */
  retireShards(count: number, top: number): number {
    const span = Math.max(count, top);
    this.store.writeState("shard_span", String(span));
    log.info("scheduler_shards_retired", { span });
    return span;
  }

  /** Whether this shard holds nothing: no unfinished request, nothing in its outbox, no rows kept. */
  holdsNothing(): boolean {
    return this.store.live.size === 0 && this.calls.inflight.size === 0 && this.owed.size === 0 && this.store.sql.exec("SELECT 1 FROM requests LIMIT 1").toArray().length === 0
      && this.store.sql.exec("SELECT 1 FROM finished_outbox LIMIT 1").toArray().length === 0;
  }

  /** Capacity was freed or work arrived elsewhere: run a pass soon. */
  wake(): void {
    this.waker.ensure(Date.now());
  }

  override async alarm(): Promise<void> {
    await this.waker.alarm();
  }

  /** One dispatch pass (see Dispatcher.pass); the cron calls it every minute as a backstop. */
  pass(trigger: string, onlyIds?: string[]): Promise<number> {
    return this.dispatcher.pass(trigger, onlyIds);
  }

  /**
   * Forget up to `limit` requests finished before `cutoff` whose request-log entry has reached D1
   * (reports read D1). The retention run calls it each cron minute with the "requests" setting.
   */
  purgeFinished(cutoff: number, limit: number): number {
    return this.store.purgeFinished(cutoff, limit);
  }
}
