import { DurableObject } from "cloudflare:workers";
import { budgetView, fitsBudget, type BudgetLimit, type BudgetView } from "../domain/budget";
import { monthKey } from "../domain/calendar";
import { budgetAlerts, BUDGET_CRITICAL_PERCENT, BUDGET_WARN_PERCENT, reached } from "../domain/alerts";
import { log } from "../log";
import { applyAlerts } from "../services/alerts";

export interface SlotRequest {
  requestId: string;
  /** The slot frees itself at this time if its holder never comes back (the dispatch lease). */
  expiresAt: number;
}

/** One line of spend: a usage event's cost, at the time it happened. */
export interface SpendEvent {
  eventId: string;
  costNano: number;
  at: number;
}

export interface BudgetItem {
  requestId: string;
  estimateNano: number;
}

export type BudgetDecision = { ok: true } | { ok: false; budget: BudgetView };

export interface Settlement {
  requestId: string;
  /** What the request really spent (empty when it failed or was cancelled before spending). */
  events: SpendEvent[];
  /** The request goes on (a retry): free its slot but keep its estimate in flight. */
  keepInFlight?: boolean;
}

/** How long counted event ids are kept to make spend idempotent (redelivery comes within minutes). */
const COUNTED_TTL_MS = 40 * 24 * 60 * 60 * 1000;

/**
 * One client's limit owner: its concurrency slots (one per running request, never more than the
 * client's maximum) and its money: spend per UTC month and the estimates of admitted, unsettled
 * requests (money in flight). Decisions are synchronous (SQLite only), so concurrent admissions cannot
 * overspend together. Slots carry the dispatch lease as their expiry, so a crashed dispatcher cannot
 * leak them.
 */
export class ClientObject extends DurableObject<Env> {
  private sql: SqlStorage;
  /** The budget line (month and threshold) last reported to the alerts; D1 is written only when it changes. */
  private reportedLine: string | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.createTables();
  }

  private createTables(): void {
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS slots (request_id TEXT PRIMARY KEY, acquired_at INTEGER NOT NULL, expires_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS spend (month TEXT PRIMARY KEY, spent_nano INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS in_flight (request_id TEXT PRIMARY KEY, estimate_nano INTEGER NOT NULL, admitted_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS counted (event_id TEXT PRIMARY KEY, cost_nano INTEGER NOT NULL, at INTEGER NOT NULL);
    `);
  }

  // --- concurrency slots ------------------------------------------------------------------------

  /**
   * Grant slots in the order asked until `max` are held. A request that already holds a slot keeps
   * it (a retried call is harmless). Returns the ids granted.
   */
  acquireSlots(max: number, items: SlotRequest[]): string[] {
    const now = Date.now();
    this.sql.exec("DELETE FROM slots WHERE expires_at <= ?", now);
    let held = this.inUseAt();
    const granted: string[] = [];
    for (const item of items) {
      const existing = this.sql.exec("SELECT 1 FROM slots WHERE request_id = ?", item.requestId).toArray().length > 0;
      if (existing) {
        this.sql.exec("UPDATE slots SET expires_at = ? WHERE request_id = ?", item.expiresAt, item.requestId);
        granted.push(item.requestId);
      } else if (held < max) {
        this.sql.exec("INSERT INTO slots (request_id, acquired_at, expires_at) VALUES (?, ?, ?)", item.requestId, now, item.expiresAt);
        held += 1;
        granted.push(item.requestId);
      }
    }
    return granted;
  }

  /** Free the slots of these requests; unknown ids are ignored. Returns how many were freed. */
  releaseSlots(requestIds: string[]): number {
    return this.sql.exec("DELETE FROM slots WHERE request_id IN (SELECT value FROM json_each(?))", JSON.stringify(requestIds)).rowsWritten;
  }

  /** Slots in use now (expired ones not counted). */
  inUse(): number {
    this.sql.exec("DELETE FROM slots WHERE expires_at <= ?", Date.now());
    return this.inUseAt();
  }

  // --- money ------------------------------------------------------------------------------------

  /**
   * Admit requests against the monthly budget, in order: each is admitted only if this month's spend
   * + money in flight + its estimate fits. An admitted request's estimate is in flight until it is
   * settled or dropped. A request already admitted is admitted again without counting twice.
   */
  admit(limit: BudgetLimit, items: BudgetItem[]): BudgetDecision[] {
    const now = Date.now();
    const spent = this.spentIn(monthKey(now));
    let inFlight = this.inFlight();
    return items.map((item) => {
      const already = this.sql.exec("SELECT 1 FROM in_flight WHERE request_id = ?", item.requestId).toArray().length > 0;
      if (already) return { ok: true };
      if (!fitsBudget(limit, spent, inFlight, item.estimateNano)) return { ok: false, budget: budgetView(limit, spent, inFlight, now) };
      this.sql.exec("INSERT INTO in_flight (request_id, estimate_nano, admitted_at) VALUES (?, ?, ?)", item.requestId, item.estimateNano, now);
      inFlight += item.estimateNano;
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
    this.sql.exec("DELETE FROM slots WHERE request_id IN (SELECT value FROM json_each(?))", JSON.stringify(items.map((i) => i.requestId)));
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

  budget(limit: BudgetLimit): BudgetView & { concurrency_in_use: number } {
    const now = Date.now();
    return { ...budgetView(limit, this.spentIn(monthKey(now)), this.inFlight(), now), concurrency_in_use: this.inUse() };
  }

  /** Forget everything this client's object holds (the client was deleted). */
  async forget(): Promise<void> {
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
    this.reportedLine = null;
    this.createTables();
  }

  // --- internals --------------------------------------------------------------------------------

  /** Count new events (synchronously), then raise budget alerts if this month's spend crossed a line. */
  private async spend(limit: BudgetLimit | null, events: SpendEvent[]): Promise<void> {
    const now = Date.now();
    const month = monthKey(now);
    const before = this.spentIn(month);
    for (const e of events) {
      const fresh = this.sql.exec("INSERT INTO counted (event_id, cost_nano, at) VALUES (?, ?, ?) ON CONFLICT (event_id) DO NOTHING", e.eventId, e.costNano, e.at).rowsWritten > 0;
      if (!fresh || e.costNano === 0) continue;
      this.sql.exec(
        "INSERT INTO spend (month, spent_nano) VALUES (?, ?) ON CONFLICT (month) DO UPDATE SET spent_nano = spent_nano + excluded.spent_nano",
        monthKey(e.at), e.costNano,
      );
    }
    this.sql.exec("DELETE FROM counted WHERE at < ?", now - COUNTED_TTL_MS);
    const after = this.spentIn(month);
    if (limit === null || after === before) return;
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

  private clientId(): string {
    return this.ctx.id.name ?? this.ctx.id.toString();
  }

  private spentIn(month: string): number {
    return this.sql.exec<{ n: number }>("SELECT COALESCE(MAX(spent_nano), 0) AS n FROM spend WHERE month = ?", month).one().n;
  }

  private inFlight(): number {
    return this.sql.exec<{ n: number }>("SELECT COALESCE(SUM(estimate_nano), 0) AS n FROM in_flight").one().n;
  }

  private inUseAt(): number {
    return this.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM slots").one().n;
  }
}
