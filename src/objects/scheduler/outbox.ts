/**
 * The outbox: finished requests (entered by QueueStore in the same write as their end, or by an end
 * record with its request-log entries: ./ends.ts) delivered to D1's request_log for reports, with the
 * optimizer's records of completed ones (savings rows, results into the result cache). Idempotent, in
 * batches, one delivery at a time, with a backoff after a failure.
 */
import { log } from "../../log";
import { decompressText } from "../../domain/compression";
import { cachePut, recordSavings } from "../../storage/optimizer-cache";
import type { SavingsRow } from "../../storage/optimizer";
import { insertRequestLogJson, MAX_ERROR_CHARS, REQUEST_LOG_COLUMNS } from "../../storage/request-log";
import type { Ends } from "./ends";
import type { StoredPlan } from "./types";

/**
 * Finished requests per D1 statement when the outbox is delivered to request_log: one bound JSON text
 * (json_each), ~250 bytes a request, far below D1's 2 MB per value; fewer round trips per drain.
 */
const FINISHED_BATCH = 1000;

/**
 * A pass the timer or the alarm brings delivers the outbox at most this often (ms). Each delivery is a
 * D1 write and a SQLite commit here; during a drain passes come every few ms, each with a chunk's worth
 * of finished requests. A second rather than 250 ms (the thirty-third session): a 30,000 drain's D1
 * writes and this store's commits went down, and executes during the default benchmark's drains waited
 * less (docs/benchmarks.md); reports read the request log up to a second later in a busy stretch. The
 * cron and explicit passes deliver at once.
 */
export const BUSY_FLUSH_MS = 1000;

/** A request-log row from a `requests` row `r`, in REQUEST_LOG_COLUMNS' order, the error cut to MAX_ERROR_CHARS (bound as ?1). */
const LOG_ROW = REQUEST_LOG_COLUMNS.map((c) => (c === "error" ? "substr(r.error, 1, ?1)" : `r.${c}`)).join(", ");

export class Outbox {
  /** The delivery running now (one at a time). */
  private delivery: Promise<void> | null = null;
  private failures = 0;
  private retryAt = 0;
  /** When the last delivery began (0: not yet in this object's life). */
  private flushedAt = 0;

  constructor(private readonly env: Env, private readonly sql: SqlStorage, private readonly ends: Ends) {}

  /**
   * For completed requests the optimizer touched: their savings (one row per strategy, idempotent by
   * request and strategy) and, for the leaders of cacheable work, their result into the result cache.
   * Delivered with the request log, so a failure retries both.
   */
  private async deliverOptimizerRecords(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    const rows = this.sql.exec<{ id: string; client_id: string; template: string; plan: string | null; result: string | null; actual_nano: number | null; finished_at: number }>(
      `SELECT r.id, r.client_id, r.template, b.plan, r.result, r.actual_nano, r.finished_at FROM requests r JOIN request_bodies b ON b.id = r.id
       WHERE r.id IN (SELECT value FROM json_each(?)) AND b.plan IS NOT NULL`,
      JSON.stringify(ids),
    ).toArray();
    const savings: SavingsRow[] = [];
    for (const r of rows) {
      const plan = JSON.parse(r.plan!) as StoredPlan;
      for (const saving of savingsOf(plan)) savings.push({ requestId: r.id, clientId: r.client_id, template: r.template, at: r.finished_at, ...saving });
      if (cachesResult(plan) && r.result !== null) {
        const text = r.result.startsWith("gz:") ? await decompressText(r.result) : r.result;
        await cachePut(this.env, plan.cache_key, r.template, JSON.parse(text), r.actual_nano ?? 0, plan.cache_ttl_ms, Date.now());
      }
    }
    if (savings.length) await recordSavings(this.env, savings);
  }

  /**
   * Start a delivery now, in the background, unless the last one began less than BUSY_FLUSH_MS ago; then
   * answer when to come back (the pass asks for a pass then), delivering nothing. The pass that starts it
   * does not wait for it: the shard's next pass would otherwise wait for D1, which under `wrangler dev`
   * shares the runtime's thread (a second's request log took it 70-130 ms, and the shard launched nothing
   * meanwhile). A delivery cannot fail: a failure is logged and backed off (flush).
   */
  flushPaced(now: number): number | null {
    const due = this.flushedAt + BUSY_FLUSH_MS;
    if (now < due) return due;
    void this.flush();
    return null;
  }

  /** Until no delivery runs (flush waits so; tests too). */
  async idle(): Promise<void> {
    while (this.delivery) await this.delivery;
  }

  /**
   * Deliver finished requests (queued by finish and cancel in the same SQLite write as their status) to
   * D1's request_log for reports: one upsert per batch, keyed by request id, then drop them from the
   * outbox. Run at the end of a pass (paced for the timer's and alarm's passes: flushPaced). One delivery
   * at a time: a flush that finds one running waits for it, then delivers what came after, so that what
   * was finished before it was called is delivered when it returns (unless D1 failed). A failure leaves
   * them for a later pass, after a backoff; it never fails the pass.
   */
  async flush(): Promise<void> {
    // None running: this one starts now, before the caller goes on (what it finds is what was finished by then).
    if (this.delivery) await this.idle();
    if (Date.now() < this.retryAt) return;
    const delivery = this.deliver().finally(() => {
      if (this.delivery === delivery) this.delivery = null;
    });
    this.delivery = delivery;
    await delivery;
  }

  private async deliver(): Promise<void> {
    this.flushedAt = Date.now();
    try {
      for (;;) {
        // One row back: the batch's request-log rows as the JSON D1 takes (built here, no object per
        // request), its outbox ids, and those with optimizer records to deliver.
        const batch = this.sql.exec<{ n: number; log: string; ids: string; optimizer: string }>(
          `SELECT COUNT(*) AS n,
                  json_group_array(json_array(${LOG_ROW})) FILTER (WHERE r.id IS NOT NULL) AS log,
                  json_group_array(o.id) AS ids,
                  json_group_array(o.id) FILTER (WHERE r.status = 'completed' AND o.optimizer = 1) AS optimizer
           FROM (SELECT id, optimizer FROM finished_outbox ORDER BY id LIMIT ?2) o LEFT JOIN requests r ON r.id = o.id`,
          MAX_ERROR_CHARS, FINISHED_BATCH,
        ).one();
        if (batch.n === 0) break;
        // A request no longer stored has nothing to report: its entry is just dropped.
        if (batch.log !== "[]") await insertRequestLogJson(this.env.DB, batch.log);
        await this.deliverOptimizerRecords(JSON.parse(batch.optimizer) as string[]);
        this.sql.exec("DELETE FROM finished_outbox WHERE id IN (SELECT value FROM json_each(?))", batch.ids);
        if (batch.n < FINISHED_BATCH) break;
      }
      // The end records' entries (./ends.ts), built when their requests ended: their rows may not say so yet.
      for (let logs = this.ends.undelivered(FINISHED_BATCH); logs; logs = this.ends.undelivered(FINISHED_BATCH)) {
        await insertRequestLogJson(this.env.DB, logs.log);
        this.ends.delivered(logs.seqs);
      }
      this.failures = 0;
    } catch (err) {
      this.failures += 1;
      const backoff = Math.min(60_000, 500 * 2 ** this.failures);
      this.retryAt = Date.now() + backoff;
      log.warn("request_log_flush_failed", { attempt: this.failures, retry_in_ms: backoff, error: String(err) });
    }
  }
}

/** The savings rows a completed request's plan records (one per strategy, and for compression and batching). */
function savingsOf(plan: StoredPlan): Array<Pick<SavingsRow, "strategy" | "savedNano" | "bytesSaved">> {
  const rows: Array<Pick<SavingsRow, "strategy" | "savedNano" | "bytesSaved">> = plan.strategies.map((st) => ({ strategy: st.strategy, savedNano: st.saved_nano }));
  if (plan.bytes_saved > 0) rows.push({ strategy: "compression", savedNano: 0, bytesSaved: plan.bytes_saved });
  if ((plan.batched ?? 1) > 1) rows.push({ strategy: "batching", savedNano: 0 });
  return rows;
}

/** Whether a completed request's result goes into the result cache: it ran cacheable work itself. */
function cachesResult(plan: StoredPlan): plan is StoredPlan & { cache_key: string } {
  return Boolean(plan.cache_key) && !plan.cached;
}

/** Whether a completed request has optimizer records to deliver (most plans decide nothing). */
export function hasOptimizerRecords(plan: StoredPlan | undefined): boolean {
  return plan !== undefined && (cachesResult(plan) || savingsOf(plan).length > 0);
}
