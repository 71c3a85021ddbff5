import { DurableObject } from "cloudflare:workers";
import { newId } from "../domain/ids";
import { budgetView, fitsBudget, type BudgetLimit, type BudgetView } from "../domain/budget";
import { activePercent, burstRefusal, type BurstAsk, type BurstPolicy, type BurstSession } from "../domain/burst";
import { DAY_MS, dayKey, monthKey } from "../domain/calendar";
import { fitsDaily, fitsQuota, withBurst, type JobClaim, type QuotaDecision, type QuotaShortfall, type QuotaUse, type ResolvedQuota } from "../domain/quota";
import type { ErrorBody } from "../errors";
import { upsertBurstSessions } from "../storage/quotas";
import { budgetAlerts, BUDGET_CRITICAL_PERCENT, BUDGET_WARN_PERCENT, reached } from "../domain/alerts";
import { log } from "../log";
import { applyAlerts } from "../services/alerts";
import { MoneyBook, type MoneyAnswer, type MoneyRequest, type SpendMark } from "./money";
import { ownerShard, shardStub } from "./scheduler/shards";


/** One line of spend: a usage event's cost, at the time it happened. */
export interface SpendEvent {
  eventId: string;
  costNano: number;
  at: number;
  /** The pool and units spent, counted against the client's daily caps per pool. */
  pool?: string;
  units?: number;
}

/** One event of a pool outbox's delivery: its seq in the outbox, cost, time and units. */
export type PoolSpend = [seq: number, costNano: number, at: number, units: number];

/** A client's quota as it stands: the configured limits, what applies now (with a burst), and the use. */
export interface QuotaState {
  quota: ResolvedQuota;
  effective: ResolvedQuota;
  burst: BurstSession | null;
  use: QuotaUse & { requests: number; allocations: number };
}

export type BurstResult = { ok: true; value: BurstSession } | { ok: false; error: ErrorBody };

export interface BudgetItem {
  requestId: string;
  estimateNano: number;
  /** Units per pool the request will spend, checked against the client's daily caps (with a quota). */
  pools?: Record<string, number>;
}

export type BudgetDecision = { ok: true } | { ok: false; budget: BudgetView } | { ok: false; quota: QuotaShortfall };

export interface Settlement {
  requestId: string;
  /** What the request really spent (empty when it failed or was cancelled before spending). */
  events: SpendEvent[];
  /** The request goes on (a retry): free its slot but keep its estimate in flight. */
  keepInFlight?: boolean;
}

/** How long counted event ids are kept to make spend idempotent (redelivery comes within minutes). */
const COUNTED_TTL_MS = 40 * DAY_MS;
/** How often spend also runs the housekeeping deletes. */
const CLEANUP_EVERY_MS = 60_000;

/**
 * One client's limit owner: its quota (jobs held at once — running requests and active allocations —,
 * CPU and memory of compute work, units per pool per UTC day), its burst sessions, and its money:
 * spend per UTC month and the estimates of admitted, unsettled requests (money in flight). Decisions
 * are synchronous (SQLite only), so concurrent admissions cannot overspend together. Jobs carry an
 * expiry (a dispatch lease, an allocation's TTL), so a crashed holder cannot leak them.
 */
export class ClientObject extends DurableObject<Env> {
  private sql: SqlStorage;
  /** The budget line (month and threshold) last reported to the alerts; D1 is written only when it changes. */
  private reportedLine: string | null = null;
  /** The jobs table in memory (loaded on first use), with its sums: admission reads them per call. */
  private held: HeldJobs | null = null;
  /** When spend last ran its housekeeping deletes (0: not yet in this object's life). */
  private cleanedAt = 0;
  /** Scheduler shards refused a slot since slots last freed, by name (in memory; see wakeRefused). */
  private refusedShards = new Set<string>();
  /** Money held outside requests: leases to isolates, reservations, spend awaiting delivery (./money.ts). */
  private money!: MoneyBook;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.createTables();
  }

  private createTables(): void {
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS jobs (
        job_id TEXT PRIMARY KEY, kind TEXT NOT NULL, acquired_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
        cpu_millicores INTEGER NOT NULL DEFAULT 0, memory_mb INTEGER NOT NULL DEFAULT 0, pools TEXT NOT NULL DEFAULT '{}'
      );
      CREATE TABLE IF NOT EXISTS pool_day (day TEXT NOT NULL, pool TEXT NOT NULL, units INTEGER NOT NULL, PRIMARY KEY (day, pool));
      CREATE TABLE IF NOT EXISTS bursts (id TEXT PRIMARY KEY, requested_at INTEGER NOT NULL, session TEXT NOT NULL, synced INTEGER NOT NULL DEFAULT 0);
      CREATE TABLE IF NOT EXISTS spend (month TEXT PRIMARY KEY, spent_nano INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS in_flight (request_id TEXT PRIMARY KEY, estimate_nano INTEGER NOT NULL, admitted_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS counted (event_id TEXT PRIMARY KEY, cost_nano INTEGER NOT NULL, at INTEGER NOT NULL);
      -- Pool outboxes' deliveries: the highest outbox seq counted from each (one row per pool outbox).
      CREATE TABLE IF NOT EXISTS delivered (source TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated_at INTEGER NOT NULL);
    `);
    this.money = new MoneyBook(this.sql, {
      delivered: (source) => this.sql.exec<{ seq: number }>("SELECT seq FROM delivered WHERE source = ?", source).toArray()[0]?.seq ?? 0,
      spent: (now) => this.spentIn(monthKey(now)),
      requestsInFlight: () => this.sql.exec<{ n: number }>("SELECT COALESCE(SUM(estimate_nano), 0) AS n FROM in_flight").one().n,
    });
    // Objects created before quotas kept request slots in "slots": carry them over once.
    if (this.sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'slots'").toArray().length) {
      this.sql.exec("INSERT OR IGNORE INTO jobs (job_id, kind, acquired_at, expires_at) SELECT request_id, 'request', acquired_at, expires_at FROM slots");
      this.sql.exec("DROP TABLE slots");
    }
  }

  // --- quota: concurrent jobs, CPU, memory, daily units per pool ------------------------------

  /**
   * Admit jobs in the order asked while they fit the quota (raised by an active burst). A job already
   * held keeps its place with the new expiry (a retried call is harmless). Synchronous, so concurrent
   * callers can never hold more than the quota together. Work held when a burst ends runs on; nothing
   * new is admitted until the use is back under the quota.
   */
  acquireJobs(quota: ResolvedQuota, items: JobClaim[], shard?: string): QuotaDecision[] {
    const now = Date.now();
    this.purgeExpired(now);
    const effective = withBurst(quota, activePercent(this.burstSessions(), now));
    const use = this.use(now);
    const held = this.heldOf(items.map((i) => i.jobId));
    // Decided in memory in order, written in two statements: expiries of jobs held before, new jobs.
    const extended = new Map<string, number>();
    const added = new Map<string, JobClaim>();
    const decisions = items.map((item): QuotaDecision => {
      const fresh = added.get(item.jobId);
      if (fresh) {
        added.set(item.jobId, { ...fresh, expiresAt: item.expiresAt });
        return { ok: true };
      }
      if (held.has(item.jobId)) {
        extended.set(item.jobId, item.expiresAt);
        return { ok: true };
      }
      const decision = fitsQuota(effective, use, item);
      if (!decision.ok) return decision;
      added.set(item.jobId, item);
      use.jobs += 1;
      use.cpuMillicores += item.cpuMillicores ?? 0;
      use.memoryMb += item.memoryMb ?? 0;
      for (const [pool, units] of Object.entries(item.pools ?? {})) use.poolToday[pool] = (use.poolToday[pool] ?? 0) + units;
      return { ok: true };
    });
    this.extendJobs(extended);
    this.insertJobs(now, [...added.values()]);
    if (shard && decisions.some((d) => !d.ok)) this.refusedShards.add(shard);
    return decisions;
  }

  /** Free these jobs' holds; unknown ids are ignored. Returns how many were freed. */
  releaseJobs(jobIds: string[]): number {
    return this.deleteJobs(jobIds);
  }

  /** Would this job fit now (with an active burst), and if not, which limit and by how much. Holds nothing. */
  checkJob(quota: ResolvedQuota, job: Omit<JobClaim, "jobId" | "expiresAt">): QuotaDecision {
    const now = Date.now();
    this.purgeExpired(now);
    return fitsQuota(withBurst(quota, activePercent(this.burstSessions(), now)), this.use(now), job);
  }

  quotaState(quota: ResolvedQuota): QuotaState {
    const now = Date.now();
    this.purgeExpired(now);
    const sessions = this.burstSessions();
    const burst = sessions.find((s) => s.state === "active" && s.ends_at !== null && s.ends_at > now) ?? null;
    const byKind = new Map(this.sql.exec<{ kind: string; n: number }>("SELECT kind, COUNT(*) AS n FROM jobs GROUP BY kind").toArray().map((r) => [r.kind, r.n]));
    return {
      quota,
      effective: withBurst(quota, burst?.percent ?? null),
      burst,
      use: { ...this.use(now), requests: byKind.get("request") ?? 0, allocations: byKind.get("allocation") ?? 0 },
    };
  }

  /** Jobs held now (expired ones not counted). */
  inUse(): number {
    this.purgeExpired(Date.now());
    return this.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM jobs").one().n;
  }

  // --- burst ------------------------------------------------------------------------------------

  /**
   * Ask for a burst under the tier's policy: active at once, or pending an operator's approval when
   * the policy says so. Ends by alarm at its expiry.
   */
  async requestBurst(policy: BurstPolicy, ask: BurstAsk): Promise<BurstResult> {
    const now = Date.now();
    const percent = ask.percent ?? policy.max_percent;
    const duration = ask.duration_ms ?? policy.max_duration_ms;
    const refusal = burstRefusal(policy, this.burstSessions(), { percent, duration_ms: duration }, now);
    if (refusal) return { ok: false, error: refusal };
    const session: BurstSession = {
      id: newId("burst"), client_id: this.clientId(), state: "pending", percent, duration_ms: duration,
      reason: ask.reason ?? null, requested_at: now, decided_at: null, started_at: null, ends_at: null, ended_at: null, updated_at: now,
    };
    if (!policy.requires_approval) Object.assign(session, { state: "active", decided_at: now, started_at: now, ends_at: now + duration });
    await this.saveBurst(session);
    if (session.state === "active") this.wakeScheduler();
    log.info("burst_requested", { client_id: session.client_id, burst_id: session.id, state: session.state, percent, duration_ms: duration });
    return { ok: true, value: session };
  }

  /** An operator approves (the session starts now, for its duration) or denies a pending session. */
  async decideBurst(id: string, approve: boolean): Promise<BurstResult> {
    const now = Date.now();
    const session = this.burstSessions().find((s) => s.id === id);
    if (!session) return { ok: false, error: { code: "burst_not_found", message: `no burst ${id}`, details: { burst_id: id } } };
    if (session.state !== "pending") return { ok: false, error: { code: "burst_state", message: `burst ${id} is ${session.state}`, details: { burst_id: id, state: session.state } } };
    Object.assign(session, approve
      ? { state: "active", decided_at: now, started_at: now, ends_at: now + session.duration_ms, updated_at: now }
      : { state: "denied", decided_at: now, updated_at: now });
    await this.saveBurst(session);
    if (approve) this.wakeScheduler();
    log.info("burst_decided", { client_id: session.client_id, burst_id: id, state: session.state });
    return { ok: true, value: session };
  }

  /** End the active session now, or withdraw a pending one. */
  async endBurst(): Promise<BurstResult> {
    const now = Date.now();
    this.expireBursts(now);
    const session = this.burstSessions().find((s) => s.state === "active" || s.state === "pending");
    if (!session) return { ok: false, error: { code: "burst_not_found", message: "no active or pending burst", details: { client_id: this.clientId() } } };
    Object.assign(session, { state: "ended", ended_at: now, updated_at: now });
    await this.saveBurst(session);
    log.info("burst_ended", { client_id: session.client_id, burst_id: session.id });
    return { ok: true, value: session };
  }

  /** Every session, newest first. */
  bursts(): BurstSession[] {
    this.expireBursts(Date.now());
    return this.burstSessions();
  }

  /** The active session's end, and the delivery of session records to D1 (retried until it succeeds). */
  override async alarm(): Promise<void> {
    this.expireBursts(Date.now());
    await this.syncBursts();
    this.armAlarm();
  }

  // --- money ------------------------------------------------------------------------------------

  /**
   * Admit requests against the monthly budget, in order: each is admitted only if this month's spend
   * + money in flight + its estimate fits. An admitted request's estimate is in flight until it is
   * settled or dropped. A request already admitted is admitted again without counting twice.
   */
  admit(limit: BudgetLimit, items: BudgetItem[], quota: ResolvedQuota | null = null): BudgetDecision[] {
    const now = Date.now();
    const spent = this.spentIn(monthKey(now));
    let inFlight = this.inFlight();
    const use = quota ? this.use(now) : null;
    return items.map((item): BudgetDecision => {
      const already = this.sql.exec("SELECT 1 FROM in_flight WHERE request_id = ?", item.requestId).toArray().length > 0;
      if (already) return { ok: true };
      if (quota && use && item.pools) {
        const daily = fitsDaily(quota, use, item.pools);
        if (!daily.ok) return { ok: false, quota: daily.shortfall };
      }
      if (!fitsBudget(limit, spent, inFlight, item.estimateNano)) return { ok: false, budget: budgetView(limit, spent, inFlight, now) };
      this.sql.exec("INSERT INTO in_flight (request_id, estimate_nano, admitted_at) VALUES (?, ?, ?)", item.requestId, item.estimateNano, now);
      inFlight += item.estimateNano;
      if (use && item.pools) for (const [pool, units] of Object.entries(item.pools)) use.poolToday[pool] = (use.poolToday[pool] ?? 0) + units;
      return { ok: true };
    });
  }

  /** Requests whose estimates have been in flight since before `before` (for reconciliation with the scheduler). */
  inFlightSince(before: number): string[] {
    return this.sql.exec<{ request_id: string }>("SELECT request_id FROM in_flight WHERE admitted_at < ?", before).toArray().map((r) => r.request_id);
  }

  /** Take requests' estimates out of flight without spending (a duplicate enqueue, a refused batch item). */
  drop(requestIds: string[]): void {
    this.sql.exec("DELETE FROM in_flight WHERE request_id IN (SELECT value FROM json_each(?))", JSON.stringify(requestIds));
  }

  /**
   * Requests whose attempt ended: free their slots, take the estimates of those that finished out of
   * flight, and add what they really spent to the month each event happened in. Each event counts once, however often it is reported.
   */
  async settle(limit: BudgetLimit | null, items: Settlement[]): Promise<void> {
    this.deleteJobs(items.map((i) => i.requestId));
    const done = items.filter((i) => !i.keepInFlight).map((i) => i.requestId);
    if (done.length) this.sql.exec("DELETE FROM in_flight WHERE request_id IN (SELECT value FROM json_each(?))", JSON.stringify(done));
    await this.spend(limit, items.flatMap((i) => i.events));
  }

  /**
   * Spend that did not come through a request (a platform worker's direct consume), delivered by the
   * pool objects' outboxes. Idempotent by event id.
   */
  async recordSpend(limit: BudgetLimit | null, events: SpendEvent[]): Promise<void> {
    await this.spend(limit, events);
  }

  /**
   * Spend delivered by a pool object's outbox (direct consumes and reservations settled by a caller).
   * `source` names that outbox (pool id and the outbox's epoch) and each event carries its `seq` there.
   * An outbox delivers in seq order and a retried delivery starts again at its first undelivered event,
   * so an event is new exactly when its seq is above the highest counted from its source: one row per
   * source here, not one per event (`counted` would grow by every direct consume for 40 days).
   */
  async recordPoolSpend(limit: BudgetLimit | null, source: string, pool: string, events: PoolSpend[]): Promise<void> {
    const now = Date.now();
    const mark = this.sql.exec<{ seq: number }>("SELECT seq FROM delivered WHERE source = ?", source).toArray()[0]?.seq ?? 0;
    let top = mark;
    const fresh: SpendEvent[] = [];
    for (const [seq, costNano, at, units] of events) {
      if (seq <= mark) continue;
      top = Math.max(top, seq);
      fresh.push({ eventId: "", costNano, at, pool, units });
    }
    if (top === mark) return;
    this.sql.exec(
      `INSERT INTO delivered (source, seq, updated_at) VALUES (?, ?, ?)
       ON CONFLICT (source) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at`,
      source, top, now,
    );
    this.money.delivered(source, top);
    await this.counted(limit, this.tally(fresh), now);
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
    this.deleteJobs([id]);
    this.money.giveBack(id, mark ? [mark] : [], Date.now());
  }

  budget(limit: BudgetLimit): BudgetView & { concurrency_in_use: number } {
    const now = Date.now();
    return { ...budgetView(limit, this.spentIn(monthKey(now)), this.inFlight(), now), concurrency_in_use: this.inUse() };
  }

  /** Forget everything this client's object holds (the client was deleted). */
  async forget(): Promise<void> {
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
    this.reportedLine = null;
    this.held = null;
    this.createTables();
  }

  // --- internals --------------------------------------------------------------------------------

  /** Count new events (synchronously), then raise budget alerts if this month's spend crossed a line. */
  private async spend(limit: BudgetLimit | null, events: SpendEvent[]): Promise<void> {
    const now = Date.now();
    await this.counted(limit, this.tally(this.fresh(events)), now);
  }

  /** After new spend is written (`added`: cost per month): housekeeping, then budget alerts if a line was crossed. */
  private async counted(limit: BudgetLimit | null, added: Map<string, number>, now: number): Promise<void> {
    const month = monthKey(now);
    this.cleanUp(now);
    if (limit === null || (added.get(month) ?? 0) === 0) return;
    const after = this.spentIn(month);
    const budgetNano = limit.limitNano;
    const line = `${month}:${budgetNano === null ? "none" : [BUDGET_WARN_PERCENT, BUDGET_CRITICAL_PERCENT, 100].filter((p) => reached(after, budgetNano, p)).join(",")}`;
    if (line === this.reportedLine) return;
    try {
      await applyAlerts(this.env, budgetAlerts({ clientId: this.clientId(), spentNano: after, budgetNano, month }), now);
      this.reportedLine = line;
    } catch (err) {
      log.warn("budget_alert_failed", { client_id: this.clientId(), error: String(err) });
    }
  }

  /**
   * Record events as counted in one statement and return those not counted before, in order. An id
   * reported twice in one batch is inserted by its first occurrence only, and returned once.
   */
  private fresh(events: SpendEvent[]): SpendEvent[] {
    if (events.length === 0) return [];
    const inserted = new Set(this.sql.exec<{ event_id: string }>(
      // "WHERE true" tells SQLite's parser that ON CONFLICT belongs to the upsert, not to a join.
      `INSERT INTO counted (event_id, cost_nano, at) SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?) WHERE true
       ON CONFLICT (event_id) DO NOTHING RETURNING event_id`,
      JSON.stringify(events.map((e) => [e.eventId, e.costNano, e.at])),
    ).toArray().map((r) => r.event_id));
    // delete() is true once per id: the first occurrence is the one that was inserted.
    return events.filter((e) => inserted.delete(e.eventId));
  }

  /**
   * Add fresh events to today's units per pool and the spend per month, one upsert per table for the
   * whole batch (summed in memory). Returns the cost added per month.
   */
  private tally(events: SpendEvent[]): Map<string, number> {
    const units = new Map<string, [day: string, pool: string, units: number]>();
    const cost = new Map<string, number>();
    for (const e of events) {
      if (e.pool && e.units) {
        const day = dayKey(e.at);
        const key = `${day}${e.pool}`; // a day key has a fixed length, so this is unique per (day, pool)
        units.set(key, [day, e.pool, (units.get(key)?.[2] ?? 0) + e.units]);
      }
      if (e.costNano !== 0) {
        const month = monthKey(e.at);
        cost.set(month, (cost.get(month) ?? 0) + e.costNano);
      }
    }
    if (units.size) {
      this.sql.exec(
        `INSERT INTO pool_day (day, pool, units) SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?) WHERE true
         ON CONFLICT (day, pool) DO UPDATE SET units = units + excluded.units`,
        JSON.stringify([...units.values()]),
      );
    }
    if (cost.size) {
      this.sql.exec(
        `INSERT INTO spend (month, spent_nano) SELECT key, value FROM json_each(?) WHERE true
         ON CONFLICT (month) DO UPDATE SET spent_nano = spent_nano + excluded.spent_nano`,
        JSON.stringify(Object.fromEntries(cost)),
      );
    }
    return cost;
  }

  /**
   * Forget counted ids past their TTL and pool days before yesterday. Housekeeping (the first scans the
   * whole table), so at most once a minute: both horizons are days long, a minute late changes nothing.
   */
  private cleanUp(now: number): void {
    if (now - this.cleanedAt < CLEANUP_EVERY_MS) return;
    this.sql.exec("DELETE FROM counted WHERE at < ?", now - COUNTED_TTL_MS);
    // A pool outbox silent for as long is gone (its object re-created under a new epoch, or deleted).
    this.sql.exec("DELETE FROM delivered WHERE updated_at < ?", now - COUNTED_TTL_MS);
    this.sql.exec("DELETE FROM pool_day WHERE day < ?", dayKey(now - 2 * DAY_MS));
    this.cleanedAt = now;
  }

  private clientId(): string {
    return this.ctx.id.name ?? this.ctx.id.toString();
  }

  private spentIn(month: string): number {
    return this.sql.exec<{ n: number }>("SELECT COALESCE(MAX(spent_nano), 0) AS n FROM spend WHERE month = ?", month).one().n;
  }

  /** Admitted requests' estimates and the money held outside requests. */
  private inFlight(): number {
    return this.money.inFlight(Date.now());
  }

  /** Which of these jobs are held now: one query for a batch. */
  private heldOf(jobIds: string[]): Set<string> {
    const jobs = this.jobs().byId;
    return new Set(jobIds.filter((id) => jobs.has(id)));
  }

  /**
   * The held jobs, read from SQLite once per object life and then kept in step by the methods below
   * (the only writers of the table). Before, every admission summed the table in SQL and parsed each
   * job's pools: a chunk of admissions against a client holding hundreds of jobs cost O(held) each.
   */
  private jobs(): HeldJobs {
    if (this.held) return this.held;
    const held = new HeldJobs();
    for (const r of this.sql.exec<{ job_id: string; kind: string; expires_at: number; cpu_millicores: number; memory_mb: number; pools: string }>(
      "SELECT job_id, kind, expires_at, cpu_millicores, memory_mb, pools FROM jobs",
    )) {
      held.add({ jobId: r.job_id, kind: r.kind === "allocation" ? "allocation" : "request", expiresAt: r.expires_at, cpuMillicores: r.cpu_millicores, memoryMb: r.memory_mb, pools: JSON.parse(r.pools) as Record<string, number> });
    }
    this.held = held;
    return held;
  }

  /** New expiries of held jobs, by job id. */
  private extendJobs(expiries: Map<string, number>): void {
    if (expiries.size === 0) return;
    this.sql.exec("UPDATE jobs SET expires_at = j.value FROM json_each(?) AS j WHERE jobs.job_id = j.key", JSON.stringify(Object.fromEntries(expiries)));
    const held = this.jobs();
    for (const [id, expiresAt] of expiries) held.extend(id, expiresAt);
  }

  private insertJobs(now: number, jobs: JobClaim[]): void {
    if (jobs.length === 0) return;
    this.sql.exec(
      `INSERT INTO jobs (job_id, kind, acquired_at, expires_at, cpu_millicores, memory_mb, pools)
       SELECT value ->> 0, value ->> 1, ?, value ->> 2, value ->> 3, value ->> 4, value ->> 5 FROM json_each(?)`,
      now, JSON.stringify(jobs.map((j) => [j.jobId, j.kind, j.expiresAt, j.cpuMillicores ?? 0, j.memoryMb ?? 0, JSON.stringify(j.pools ?? {})])),
    );
    const held = this.jobs();
    for (const j of jobs) held.add(j);
  }

  /** Free these jobs' holds; returns how many were held. */
  private deleteJobs(jobIds: string[]): number {
    const held = this.jobs();
    const known = jobIds.filter((id) => held.byId.has(id));
    if (known.length === 0) return 0;
    this.sql.exec("DELETE FROM jobs WHERE job_id IN (SELECT value FROM json_each(?))", JSON.stringify(known));
    for (const id of known) held.remove(id);
    this.wakeRefused();
    return known.length;
  }

  /** Drop holds whose time is up (nothing to do before the earliest expiry). */
  private purgeExpired(now: number): void {
    const held = this.jobs();
    if (now < held.earliest || now < held.recomputeEarliest()) return;
    this.sql.exec("DELETE FROM jobs WHERE expires_at <= ?", now);
    for (const [id, job] of held.byId) if (job.expiresAt <= now) held.remove(id);
    held.recomputeEarliest();
  }

  /** Held jobs, CPU and memory, and per pool: units spent today plus units held by running jobs. */
  private use(now: number): QuotaUse {
    const held = this.jobs();
    const poolToday: Record<string, number> = {};
    for (const r of this.sql.exec<{ pool: string; units: number }>("SELECT pool, units FROM pool_day WHERE day = ?", dayKey(now))) poolToday[r.pool] = r.units;
    for (const [pool, units] of held.poolUnits) poolToday[pool] = (poolToday[pool] ?? 0) + units;
    return { jobs: held.byId.size, cpuMillicores: held.cpu, memoryMb: held.memory, poolToday };
  }

  private burstSessions(): BurstSession[] {
    return this.sql.exec<{ session: string }>("SELECT session FROM bursts ORDER BY requested_at DESC, id DESC").toArray().map((r) => JSON.parse(r.session) as BurstSession);
  }

  /** Mark active sessions whose time is up as expired (the alarm does this on time; reads do it too). */
  private expireBursts(now: number): void {
    for (const s of this.burstSessions()) {
      if (s.state !== "active" || s.ends_at === null || s.ends_at > now) continue;
      Object.assign(s, { state: "expired", ended_at: s.ends_at, updated_at: now });
      this.sql.exec("UPDATE bursts SET session = ?, synced = 0 WHERE id = ?", JSON.stringify(s), s.id);
      log.info("burst_expired", { client_id: s.client_id, burst_id: s.id });
    }
  }

  private async saveBurst(session: BurstSession): Promise<void> {
    this.sql.exec(
      "INSERT INTO bursts (id, requested_at, session, synced) VALUES (?, ?, ?, 0) ON CONFLICT (id) DO UPDATE SET session = excluded.session, synced = 0",
      session.id, session.requested_at, JSON.stringify(session),
    );
    await this.syncBursts();
    this.armAlarm();
  }

  /** Deliver changed session records to D1 (burst_sessions); on failure the alarm retries. */
  private async syncBursts(): Promise<void> {
    const rows = this.sql.exec<{ id: string; session: string }>("SELECT id, session FROM bursts WHERE synced = 0").toArray();
    if (rows.length === 0) return;
    try {
      await upsertBurstSessions(this.env.DB, rows.map((r) => JSON.parse(r.session) as BurstSession));
      this.sql.exec("UPDATE bursts SET synced = 1 WHERE id IN (SELECT value FROM json_each(?)) AND session IN (SELECT value FROM json_each(?))",
        JSON.stringify(rows.map((r) => r.id)), JSON.stringify(rows.map((r) => r.session)));
    } catch (err) {
      log.warn("burst_sync_failed", { client_id: this.clientId(), error: String(err) });
    }
  }

  /** Wake at the active session's end, or in 5 s while records wait for delivery to D1. */
  private armAlarm(): void {
    const now = Date.now();
    const ends = this.burstSessions().filter((s) => s.state === "active" && s.ends_at !== null).map((s) => s.ends_at!);
    const unsynced = this.sql.exec("SELECT 1 FROM bursts WHERE synced = 0 LIMIT 1").toArray().length > 0;
    const at = Math.min(...ends, unsynced ? now + 5000 : Infinity);
    if (at !== Infinity) void this.ctx.storage.setAlarm(Math.max(at, now));
  }

  /**
   * Slots freed: wake the scheduler shards refused a slot since the last wake (issue 20: after a change of
   * SCHEDULER_SHARDS a client's work sits in two shards, and the one that frees a slot may not be the
   * one waiting). A shard's own settlements wake it anyway; this is for the other.
   */
  private wakeRefused(): void {
    for (const shard of this.refusedShards) this.ctx.waitUntil(this.env.SCHEDULER.get(this.env.SCHEDULER.idFromName(shard)).wake().catch(() => undefined));
    this.refusedShards.clear();
  }

  /** A burst began: wake the scheduler shard that owns this client. */
  private wakeScheduler(): void {
    this.ctx.waitUntil(shardStub(this.env, ownerShard(this.env, this.clientId())).wake().catch(() => undefined));
  }
}

/** The jobs a client holds, by id, with running sums of CPU, memory and units per pool. */
class HeldJobs {
  readonly byId = new Map<string, JobClaim>();
  cpu = 0;
  memory = 0;
  readonly poolUnits = new Map<string, number>();
  /** A lower bound of the earliest expiry (removals only move the true one later). */
  earliest = Infinity;

  add(job: JobClaim): void {
    this.remove(job.jobId);
    this.byId.set(job.jobId, job);
    this.cpu += job.cpuMillicores ?? 0;
    this.memory += job.memoryMb ?? 0;
    for (const [pool, units] of Object.entries(job.pools ?? {})) this.poolUnits.set(pool, (this.poolUnits.get(pool) ?? 0) + units);
    this.earliest = Math.min(this.earliest, job.expiresAt);
  }

  extend(jobId: string, expiresAt: number): void {
    const job = this.byId.get(jobId);
    if (!job) return;
    this.byId.set(jobId, { ...job, expiresAt });
    this.earliest = Math.min(this.earliest, expiresAt);
  }

  remove(jobId: string): void {
    const job = this.byId.get(jobId);
    if (!job) return;
    this.byId.delete(jobId);
    this.cpu -= job.cpuMillicores ?? 0;
    this.memory -= job.memoryMb ?? 0;
    for (const [pool, units] of Object.entries(job.pools ?? {})) {
      const left = (this.poolUnits.get(pool) ?? 0) - units;
      if (left === 0) this.poolUnits.delete(pool);
      else this.poolUnits.set(pool, left);
    }
  }

  recomputeEarliest(): number {
    let min = Infinity;
    for (const job of this.byId.values()) if (job.expiresAt < min) min = job.expiresAt;
    this.earliest = min;
    return min;
  }
}
