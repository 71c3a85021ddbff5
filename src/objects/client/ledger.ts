import { BUDGET_CRITICAL_PERCENT, BUDGET_WARN_PERCENT, budgetAlerts, reached } from "../../domain/alerts";
import { budgetView, fitsBudget, type BudgetLimit } from "../../domain/budget";
import { DAY_MS, dayKey, monthKey } from "../../domain/calendar";
import { ID_PREFIXES, idFloor } from "../../domain/ids";
import { COUNTED_EVENT_KEEP_MS } from "../../domain/retention";
import { fitsDaily, type QuotaUse, type ResolvedQuota } from "../../domain/quota";
import { log } from "../../log";
import { applyAlerts } from "../../storage/alert-apply";
import type { MoneyBook } from "./money";
import { storedTable } from "../sqlite";
import { COUNTED_BEFORE } from "./schema";
import type { BudgetDecision, BudgetItem, PoolSpend, Settlement, SpendEvent } from "./types";

/** A pool outbox silent this long is gone (its object re-created under a new epoch, or deleted): its watermark row goes. */
const DELIVERED_TTL_MS = 40 * DAY_MS;
/**
 * Counted event ids deleted per cleanup at most (one a minute), from `counted` and from the table an
 * upgrade set aside: a client settling a million requests a day adds ~700 a minute, so `counted` keeps
 * up; the old 40-day table (tens of millions of rows at that rate) empties over a day or two, and no
 * cleanup holds the object for long.
 */
const COUNTED_DELETE_LIMIT = 20_000;
/** How often spend also runs the housekeeping deletes. */
const CLEANUP_EVERY_MS = 60_000;

/** What the ledger needs of the object that hosts it. */
export interface LedgerHost {
  clientId(): string;
  /** Money held outside requests (./money.ts): made anew when the client's storage is wiped. */
  money(): MoneyBook;
  /** The quota's use now (./jobs.ts), for the daily caps per pool. */
  use(now: number): QuotaUse;
}

/**
 * A client's money: spend per UTC month (each event counted once, however often it is reported), the
 * estimates of admitted, unsettled requests (money in flight), units spent per pool per UTC day, and
 * the budget alerts when this month's spend crosses a line.
 */
export class Ledger {
  /** The budget line (month and threshold) last reported to the alerts; D1 is written only when it changes. */
  private reportedLine: string | null = null;
  /** When spend last ran its housekeeping deletes (0: not yet in this object's life). */
  private cleanedAt = 0;
  /**
   * SUM(estimate_nano) of `in_flight`, kept beside the table so an admission does not scan it (the scan
   * grew with the client's backlog). Changed in the same synchronous section as every write to the
   * table, all of them in this class; null until first read after the object starts or is wiped. A
   * bigint, so no order of adds and subtracts can round it.
   */
  private flying: bigint | null = null;
  /** This month's spend as last read or written (every write to `spend` is in this class): one statement fewer per admission. */
  private spent: { month: string; nano: number } | null = null;
  /** A day's units per pool as last read (every write to `pool_day` is in this class): read per admission and per acquire. */
  private units: { day: string; byPool: Record<string, number> } | null = null;
  /** Whether `counted_before` (./schema.ts) still holds ids; null until looked up in this object's life. */
  private before: boolean | null = null;

  constructor(
    private readonly env: Env,
    private readonly sql: SqlStorage,
    private readonly host: LedgerHost,
  ) {}

  /** Forget the budget line reported and the kept sum in flight (the client's storage was wiped). */
  reset(): void {
    this.reportedLine = null;
    this.flying = null;
    this.spent = null;
    this.units = null;
    this.before = null;
  }

  /**
   * Admit requests against the monthly budget, in order: each is admitted only if this month's spend
   * + money in flight + its estimate fits. An admitted request's estimate is in flight until it is
   * settled or dropped. A request already admitted is admitted again without counting twice.
   */
  admit(limit: BudgetLimit, items: BudgetItem[], quota: ResolvedQuota | null): BudgetDecision[] {
    const now = Date.now();
    const spent = this.spentIn(monthKey(now));
    let inFlight = this.inFlight();
    const use = quota ? this.host.use(now) : null;
    // A request admitted before is admitted again without counting twice, whatever the limits say now.
    const already = (item: BudgetItem) => this.sql.exec("SELECT 1 FROM in_flight WHERE request_id = ?", item.requestId).toArray().length > 0;
    return items.map((item): BudgetDecision => {
      if (quota && use && item.pools) {
        const daily = fitsDaily(quota, use, item.pools);
        if (!daily.ok) return already(item) ? { ok: true } : { ok: false, quota: daily.shortfall };
      }
      if (!fitsBudget(limit, spent, inFlight, item.estimateNano)) return already(item) ? { ok: true } : { ok: false, budget: budgetView(limit, spent, inFlight, now) };
      // It fits: one statement admits it, or finds it admitted before (then nothing is counted again).
      if (!this.book(item.requestId, item.estimateNano, now)) return { ok: true };
      inFlight += item.estimateNano;
      if (use && item.pools) for (const [pool, units] of Object.entries(item.pools)) use.poolToday[pool] = (use.poolToday[pool] ?? 0) + units;
      return { ok: true };
    });
  }

  /**
   * Requests a scheduler shard admitted against its money lease (decision 008) become ordinary requests
   * in flight, before any of them can run: a row each, `ON CONFLICT DO NOTHING`, so a conversion made
   * again (its answer was lost, the shard restarted) counts nothing twice.
   */
  convert(items: Array<[string, number]>, now: number): void {
    for (const [requestId, nano] of items) this.book(requestId, nano, now);
  }

  /** A request's estimate in flight: one row, and the kept sum with it; false when it was in flight already (nothing counted). */
  private book(requestId: string, nano: number, now: number): boolean {
    // Read (and if need be load) the sum before the insert, so a first load cannot count the row twice.
    const sum = this.flyingNano() + exactNano(nano);
    const inserted = this.sql.exec(
      "INSERT INTO in_flight (request_id, estimate_nano, admitted_at) VALUES (?, ?, ?) ON CONFLICT (request_id) DO NOTHING RETURNING 1",
      requestId, nano, now,
    ).toArray().length > 0;
    if (inserted) this.flying = sum;
    return inserted;
  }

  /** Requests whose estimates have been in flight since before `before`. */
  inFlightSince(before: number): string[] {
    return this.sql.exec<{ request_id: string }>("SELECT request_id FROM in_flight WHERE admitted_at < ?", before).toArray().map((r) => r.request_id);
  }

  /** Take requests' estimates out of flight without spending. */
  drop(requestIds: string[]): void {
    this.land(requestIds);
  }

  /**
   * The money side of settled requests: estimates of those that finished out of flight, their events
   * counted. A finished request's events are new exactly when its estimate leaves flight in this call
   * (the row goes in the same write): a settlement made again finds none in flight and counts nothing
   * twice, with no row kept per event (a counted id each was a write per request and a delete two days
   * later; decision 007, "Spend"). Events of a request that goes on (a retry keeps its estimate in
   * flight) are counted by id (`counted`: once while the object keeps the id, COUNTED_EVENT_KEEP_MS by event time;
   * ids are event ids, `evt_` and time-ordered, whose ranges the cleanup forgets).
   */
  async settle(limit: BudgetLimit | null, items: Settlement[]): Promise<void> {
    const done = items.filter((i) => !i.keepInFlight).map((i) => i.requestId);
    const landed = done.length ? this.land(done) : new Set<string>();
    const once: SpendEvent[] = [];
    const seen = new Set<string>();
    const byId: SpendEvent[] = [];
    for (const item of items) {
      if (item.keepInFlight) byId.push(...item.events);
      else if (landed.has(item.requestId)) {
        for (const e of item.events) {
          if (seen.has(e.eventId)) continue;
          seen.add(e.eventId);
          once.push(e);
        }
      }
    }
    await this.counted(limit, this.tally([...once, ...this.fresh(byId)]), Date.now());
  }

  /** Spend delivered by a pool object's outbox, new exactly when its seq is above the highest counted from `source`. */
  async recordPoolSpend(limit: BudgetLimit | null, source: string, pool: string, events: PoolSpend[]): Promise<void> {
    const now = Date.now();
    const mark = this.delivered(source);
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
    this.host.money().delivered(source, top);
    await this.counted(limit, this.tally(fresh), now);
  }

  /** The highest seq counted from a pool outbox (0: none). */
  delivered(source: string): number {
    return this.sql.exec<{ seq: number }>("SELECT seq FROM delivered WHERE source = ?", source).toArray()[0]?.seq ?? 0;
  }

  /** Units spent per pool on a UTC day (`pool_day`), for the daily caps per pool. */
  unitsOn(day: string): Readonly<Record<string, number>> {
    if (this.units?.day === day) return this.units.byPool;
    const byPool: Record<string, number> = {};
    for (const r of this.sql.exec<{ pool: string; units: number }>("SELECT pool, units FROM pool_day WHERE day = ?", day)) byPool[r.pool] = r.units;
    this.units = { day, byPool };
    return byPool;
  }

  spentIn(month: string): number {
    if (this.spent?.month === month) return this.spent.nano;
    const nano = this.sql.exec<{ n: number }>("SELECT COALESCE(MAX(spent_nano), 0) AS n FROM spend WHERE month = ?", month).one().n;
    this.spent = { month, nano };
    return nano;
  }

  /** Estimates of admitted requests in flight (without the money held outside requests). */
  requestsInFlight(): number {
    return Number(this.flyingNano());
  }

  /** The kept sum of `in_flight`, read from the table once per object life (as text: exact past 2^53). */
  private flyingNano(): bigint {
    this.flying ??= BigInt(this.sql.exec<{ n: string }>("SELECT CAST(COALESCE(SUM(estimate_nano), 0) AS TEXT) AS n FROM in_flight").one().n);
    return this.flying;
  }

  /** Take requests out of flight; the kept sum loses exactly the estimates of the rows deleted. */
  private land(requestIds: string[]): Set<string> {
    let sum = this.flyingNano();
    const gone = this.sql.exec<{ request_id: string; estimate_nano: number }>(
      "DELETE FROM in_flight WHERE request_id IN (SELECT value FROM json_each(?)) RETURNING request_id, estimate_nano", JSON.stringify(requestIds),
    ).toArray();
    const landed = new Set<string>();
    for (const r of gone) {
      sum -= BigInt(r.estimate_nano);
      landed.add(r.request_id);
    }
    this.flying = sum;
    return landed;
  }

  /** Admitted requests' estimates and the money held outside requests. */
  inFlight(): number {
    return this.host.money().inFlight(Date.now());
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
    const clientId = this.host.clientId();
    try {
      await applyAlerts(this.env, budgetAlerts({ clientId, spentNano: after, budgetNano, month }), now);
      this.reportedLine = line;
    } catch (err) {
      log.warn("budget_alert_failed", { client_id: clientId, error: String(err) });
    }
  }

  /**
   * Record events as counted in one statement and return those not counted before, in order. An id
   * reported twice in one batch is inserted by its first occurrence only, and returned once.
   */
  private fresh(events: SpendEvent[]): SpendEvent[] {
    if (events.length === 0) return [];
    if (this.hasBefore()) {
      // Ids counted before the upgrade, still kept aside: not counted again.
      const seen = new Set(this.sql.exec<{ event_id: string }>(
        `SELECT event_id FROM ${COUNTED_BEFORE} WHERE event_id IN (SELECT value FROM json_each(?))`, JSON.stringify(events.map((e) => e.eventId)),
      ).toArray().map((r) => r.event_id));
      if (seen.size) events = events.filter((e) => !seen.has(e.eventId));
      if (events.length === 0) return [];
    }
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
      this.units = null;
      this.sql.exec(
        `INSERT INTO pool_day (day, pool, units) SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?) WHERE true
         ON CONFLICT (day, pool) DO UPDATE SET units = units + excluded.units`,
        JSON.stringify([...units.values()]),
      );
    }
    if (cost.size) {
      this.spent = null;
      this.sql.exec(
        `INSERT INTO spend (month, spent_nano) SELECT key, value FROM json_each(?) WHERE true
         ON CONFLICT (month) DO UPDATE SET spent_nano = spent_nano + excluded.spent_nano`,
        JSON.stringify(Object.fromEntries(cost)),
      );
    }
    return cost;
  }

  private hasBefore(): boolean {
    this.before ??= storedTable(this.sql, COUNTED_BEFORE) !== undefined;
    return this.before;
  }

  /**
   * Forget counted ids past COUNTED_EVENT_KEEP_MS (oldest first, a bounded range of the primary key),
   * silent pool outboxes and pool days before yesterday. Housekeeping, so at most once a minute: every
   * horizon is days long, a minute late changes nothing.
   */
  private cleanUp(now: number): void {
    if (now - this.cleanedAt < CLEANUP_EVERY_MS) return;
    // Event ids sort by the time they were made, which is the event's time: ids from `evt_` up to the
    // first id of the cutoff's millisecond are older than the keep, a range of the primary key.
    this.sql.exec(
      "DELETE FROM counted WHERE event_id IN (SELECT event_id FROM counted WHERE event_id >= ? AND event_id < ? ORDER BY event_id LIMIT ?)",
      `${ID_PREFIXES.event}_`, idFloor("event", now - COUNTED_EVENT_KEEP_MS), COUNTED_DELETE_LIMIT,
    );
    if (this.hasBefore()) {
      // The rows set aside at the upgrade, oldest first (their rowids follow the order they came in).
      this.sql.exec(`DELETE FROM ${COUNTED_BEFORE} WHERE rowid IN (SELECT rowid FROM ${COUNTED_BEFORE} WHERE at < ? LIMIT ?)`, now - COUNTED_EVENT_KEEP_MS, COUNTED_DELETE_LIMIT);
      if (this.sql.exec(`SELECT 1 FROM ${COUNTED_BEFORE} LIMIT 1`).toArray().length === 0) {
        this.sql.exec(`DROP TABLE ${COUNTED_BEFORE}`);
        this.before = false;
      }
    }
    this.sql.exec("DELETE FROM delivered WHERE updated_at < ?", now - DELIVERED_TTL_MS);
    this.sql.exec("DELETE FROM pool_day WHERE day < ?", dayKey(now - 2 * DAY_MS));
    this.units = null;
    this.cleanedAt = now;
  }
}

/** An estimate as a bigint; only whole nano-dollars are ever admitted (src/services/estimate.ts refuses the rest). */
function exactNano(nano: number): bigint {
  if (!Number.isSafeInteger(nano)) throw new RangeError(`estimate must be a whole number of nano-dollars: ${nano}`);
  return BigInt(nano);
}
