import { DurableObject } from "cloudflare:workers";
import { budgetView, type BudgetLimit, type BudgetView } from "../../domain/budget";
import { activePercent, type BurstAsk, type BurstPolicy, type BurstSession } from "../../domain/burst";
import { monthKey } from "../../domain/calendar";
import { fitsQuota, withBurst, type JobClaim, type QuotaDecision, type ResolvedQuota } from "../../domain/quota";
import { ownerShard, shardStub } from "../scheduler/shards";
import { Bursts } from "./bursts";
import { Jobs } from "./jobs";
import { Ledger } from "./ledger";
import { MoneyBook } from "./money";
import { createTables, migrate } from "./schema";
import type { AdmitDecision, BudgetDecision, BudgetItem, BurstResult, MoneyAnswer, MoneyRequest, PoolSpend, QuotaState, RunSlots, Settlement, ShardMoneyAnswer, ShardMoneyAsk, SlotAsk, SpendMark } from "./types";

/**
 * One client's limit owner: its quota (jobs held at once — running requests and active allocations —,
 * CPU and memory of compute work, units per pool per UTC day), its burst sessions, and its money:
 * spend per UTC month and the estimates of admitted, unsettled requests (money in flight). Decisions
 * are synchronous (SQLite only), so concurrent admissions cannot overspend together. Jobs carry an
 * expiry (a dispatch lease, an allocation's TTL), so a crashed holder cannot leak them.
 *
 * This class is the host: it owns the storage and the alarm, wires the collaborators (one file each
 * beside it: ./jobs.ts, ./bursts.ts, ./ledger.ts, ./money.ts) and answers RPC by delegating to them.
 * Its contract is ./types.ts.
 */
export class ClientObject extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly jobs: Jobs;
  private readonly burstSessions: Bursts;
  private readonly ledger: Ledger;
  /** Money held outside requests: leases to isolates, reservations, spend awaiting delivery (./money.ts). */
  private money!: MoneyBook;
  private name: string | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.jobs = new Jobs(env, this.sql, { waitUntil: (promise) => ctx.waitUntil(promise), unitsOn: (day) => this.ledger.unitsOn(day) });
    this.burstSessions = new Bursts(env, ctx, { clientId: () => this.clientId(), wakeScheduler: () => this.wakeScheduler() });
    this.ledger = new Ledger(env, this.sql, { clientId: () => this.clientId(), money: () => this.money, use: (now) => this.jobs.use(now) });
    this.createTables();
  }

  private createTables(): void {
    createTables(this.sql);
    const named = this.ctx.id.name;
    if (named !== undefined) this.sql.exec("INSERT INTO identity (name) SELECT ? WHERE NOT EXISTS (SELECT 1 FROM identity)", named);
    this.money = new MoneyBook(this.sql, {
      delivered: (source) => this.ledger.delivered(source),
      spent: (now) => this.ledger.spentIn(monthKey(now)),
      requestsInFlight: () => this.ledger.requestsInFlight(),
    });
    migrate(this.sql);
  }

  // --- quota: concurrent jobs, CPU, memory, daily units per pool ------------------------------

  /**
   * Admit jobs in the order asked while they fit the quota (raised by an active burst). A job already
   * held keeps its place with the new expiry (a retried call is harmless). Synchronous, so concurrent
   * callers can never hold more than the quota together. Work held when a burst ends runs on; nothing
   * new is admitted until the use is back under the quota.
   */
  acquireJobs(quota: ResolvedQuota, items: JobClaim[], shard?: string): QuotaDecision[] {
    return this.holdJobs(quota, items, shard);
  }

  private holdJobs(quota: ResolvedQuota, items: JobClaim[], shard?: string): QuotaDecision[] {
    const now = Date.now();
    this.jobs.purgeExpired(now);
    const effective = withBurst(quota, activePercent(this.burstSessions.sessions(), now));
    return this.jobs.acquire(effective, items, now, shard);
  }

  /**
   * Lend a scheduler shard a block of job slots, or resize or renew the one it holds (decision 007;
   * ../scheduler/slot-leases.ts): one job row for the block, which the shard admits requests against in
   * memory, with no row per request. Sized within plenty and never below the slots the shard has in use
   * (./jobs.ts, lend); 0 hands the block back. Returns the block's size now.
   */
  leaseSlots(quota: ResolvedQuota, ask: SlotAsk): number {
    const now = Date.now();
    this.jobs.purgeExpired(now);
    return this.jobs.lend(withBurst(quota, activePercent(this.burstSessions.sessions(), now)), ask, now);
  }

  /** Free these jobs' holds; unknown ids are ignored. Returns how many were freed. */
  releaseJobs(jobIds: string[]): number {
    return this.jobs.release(jobIds);
  }

  /** Would this job fit now (with an active burst), and if not, which limit and by how much. Holds nothing. */
  checkJob(quota: ResolvedQuota, job: Omit<JobClaim, "jobId" | "expiresAt">): QuotaDecision {
    const now = Date.now();
    this.jobs.purgeExpired(now);
    return fitsQuota(withBurst(quota, activePercent(this.burstSessions.sessions(), now)), this.jobs.use(now), job);
  }

  quotaState(quota: ResolvedQuota): QuotaState {
    const now = Date.now();
    this.jobs.purgeExpired(now);
    const sessions = this.burstSessions.sessions();
    const burst = sessions.find((s) => s.state === "active" && s.ends_at !== null && s.ends_at > now) ?? null;
    const byKind = this.jobs.countByKind();
    return {
      quota,
      effective: withBurst(quota, burst?.percent ?? null),
      burst,
      use: { ...this.jobs.use(now), requests: byKind.get("request") ?? 0, allocations: byKind.get("allocation") ?? 0, leased: byKind.get("lease") ?? 0 },
    };
  }

  /** Jobs held now (expired ones not counted). */
  inUse(): number {
    this.jobs.purgeExpired(Date.now());
    return this.jobs.count();
  }

  // --- burst ------------------------------------------------------------------------------------

  /**
   * Ask for a burst under the tier's policy: active at once, or pending an operator's approval when
   * the policy says so. Ends by alarm at its expiry.
   */
  async requestBurst(policy: BurstPolicy, ask: BurstAsk): Promise<BurstResult> {
    return this.burstSessions.request(policy, ask);
  }

  /** An operator approves (the session starts now, for its duration) or denies a pending session. */
  async decideBurst(id: string, approve: boolean): Promise<BurstResult> {
    return this.burstSessions.decide(id, approve);
  }

  /** End the active session now, or withdraw a pending one. */
  async endBurst(): Promise<BurstResult> {
    return this.burstSessions.end();
  }

  /** Every session, newest first. */
  bursts(): BurstSession[] {
    this.burstSessions.expire(Date.now());
    return this.burstSessions.sessions();
  }

  /** The active session's end, and the delivery of session records to D1 (retried until it succeeds). */
  override async alarm(): Promise<void> {
    await this.burstSessions.onAlarm();
  }

  // --- money ------------------------------------------------------------------------------------

  /**
   * Admit requests against the monthly budget, in order: each is admitted only if this month's spend
   * + money in flight + its estimate fits. An admitted request's estimate is in flight until it is
   * settled or dropped. A request already admitted is admitted again without counting twice.
   */
  admit(limit: BudgetLimit, items: BudgetItem[], quota: ResolvedQuota | null = null, slots?: RunSlots): AdmitDecision[] {
    const decisions: AdmitDecision[] = this.ledger.admit(limit, items, quota);
    if (!slots || !quota) return decisions;
    // An execute that will run at once takes its job slot in this call too (as acquireJobs, by `shard`):
    // the immediate lane's admission then makes no call here of its own (one call and one commit fewer).
    const admitted = new Set(items.filter((_, i) => decisions[i]!.ok).map((item) => item.requestId));
    const claims = slots.claims.filter((c) => admitted.has(c.jobId));
    const got = this.holdJobs(quota, claims, slots.shard);
    const slotted = new Set(claims.filter((_, i) => got[i]!.ok).map((c) => c.jobId));
    return decisions.map((d, i) => (d.ok ? { ok: true, slot: slotted.has(items[i]!.requestId) } : d));
  }

  /** Requests whose estimates have been in flight since before `before` (for reconciliation with the scheduler). */
  inFlightSince(before: number): string[] {
    return this.ledger.inFlightSince(before);
  }

  /** Take requests' estimates out of flight without spending (a duplicate enqueue, a refused batch item). */
  drop(requestIds: string[]): void {
    this.ledger.drop(requestIds);
  }

  /**
   * Requests whose attempt ended: free their slots, take the estimates of those that finished out of
   * flight, and add what they really spent to the month each event happened in. Each event counts once, however often it is reported.
   */
  async settle(limit: BudgetLimit | null, items: Settlement[]): Promise<void> {
    this.jobs.release(items.map((i) => i.requestId));
    await this.ledger.settle(limit, items);
  }

  /**
   * Spend delivered by a pool object's outbox (direct consumes and reservations settled by a caller).
   * `source` names that outbox (pool id and the outbox's epoch) and each event carries its `seq` there.
   * An outbox delivers in seq order and a retried delivery starts again at its first undelivered event,
   * so an event is new exactly when its seq is above the highest counted from its source: one row per
   * source here, not one per event (`counted` would grow by every direct consume for days).
   */
  async recordPoolSpend(limit: BudgetLimit | null, source: string, pool: string, events: PoolSpend[]): Promise<void> {
    await this.ledger.recordPoolSpend(limit, source, pool, events);
  }

  // --- direct spends: money leases and reservations -------------------------------------------

  /**
   * A slice of budget headroom for an isolate's direct consumes (see ./money.ts and src/services/money.ts),
   * taking back the slice it returns.
   */
  leaseMoney(limit: BudgetLimit, req: MoneyRequest): MoneyAnswer {
    return this.money.lease(limit, req, Date.now());
  }

  /**
   * A scheduler shard's money exchange (decision 008; ../scheduler/money-leases.ts): the requests it
   * admitted under its hold become requests in flight, then the hold is replaced (`want`, `need`; see
   * ./money.ts, lendShard) unless `keepHold`. Synchronous: no admission sees the money in between.
   */
  lendShard(limit: BudgetLimit | null, ask: ShardMoneyAsk): ShardMoneyAnswer {
    const now = Date.now();
    this.ledger.convert(ask.convert, now);
    if (ask.keepHold) return { lent: 0, refused: null };
    return this.money.lendShard(limit, ask.holder, ask.want, ask.need, now);
  }

  /**
   * Admit a reservation made outside a request (/internal/reserve, RPC reserve): it holds one job slot
   * (the concurrency limit, and its units against the pool's daily cap) and its price in flight until it
   * is settled, or until it expires. Refused with the budget (402) or the quota's shortfall (429).
   */
  holdReservation(limit: BudgetLimit, quota: ResolvedQuota, hold: { id: string; nano: number; expiresAt: number; pool: string; units: number }): BudgetDecision {
    const now = Date.now();
    const view = this.money.view(limit, now);
    if (limit.limitNano !== null && view.spent_nano + view.in_flight_nano + hold.nano > limit.limitNano) return { ok: false, budget: view };
    const [job] = this.acquireJobs(quota, [{ jobId: hold.id, kind: "allocation", expiresAt: hold.expiresAt, pools: { [hold.pool]: hold.units } }]);
    if (!job!.ok) return { ok: false, quota: job!.shortfall };
    this.money.hold(hold.id, hold.nano, hold.expiresAt);
    return { ok: true };
  }

  /** A reservation was settled (its spend, if any, is held until its outbox delivers it) or never made. */
  settleReservation(id: string, mark: SpendMark | null): void {
    this.jobs.release([id]);
    this.money.giveBack(id, mark ? [mark] : [], Date.now());
  }

  budget(limit: BudgetLimit): BudgetView & { concurrency_in_use: number } {
    const now = Date.now();
    return { ...budgetView(limit, this.ledger.spentIn(monthKey(now)), this.ledger.inFlight(), now), concurrency_in_use: this.inUse() };
  }

  /** Forget everything this client's object holds (the client was deleted). */
  async forget(): Promise<void> {
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
    this.ledger.reset();
    this.jobs.reset();
    this.createTables();
  }

  /**
   * The client's id: the name this object was reached by. workerd gives none to an object an alarm wakes
   * cold (the burst's end, a retried delivery; cloudflare/partykit#391), and that instance then serves
   * later calls too: the name is kept in storage at the first named construction, and read back then.
   */
  private clientId(): string {
    return (this.name ??= this.ctx.id.name ?? this.sql.exec<{ name: string }>("SELECT name FROM identity").toArray()[0]?.name ?? this.ctx.id.toString());
  }

  /** A burst began: wake the scheduler shard that owns this client. */
  private wakeScheduler(): void {
    this.ctx.waitUntil(shardStub(this.env, ownerShard(this.env, this.clientId())).wake().catch(() => undefined));
  }
}
