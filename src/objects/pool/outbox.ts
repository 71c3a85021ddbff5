import { flushDelay } from "../../domain/flush";
import { log } from "../../log";
import { settings } from "../../settings";
import { budgetLimit } from "../../storage/config";
import { insertUsageEvents, type UsageEvent } from "../../storage/usage";
import type { PoolSpend } from "../client/types";
import type { PoolStore } from "./store";
import { clientStub } from "../client/stub";

/**
 * Outbox events per delivery (one client report per client and one D1 batch each). A hot pool fills
 * several hundred a second: 1,000 (against 200) saved ~5% of a consume's CPU in an A/B run of the
 * benchmark. A batch's JSON is ~180 bytes per event, far below D1's limits.
 */
const FLUSH_BATCH = 1000;
const MAX_FLUSH_BACKOFF_MS = 60_000;

/**
 * Delivery of the pool's usage outbox (written by ./store.ts): to the clients' objects, which count
 * the spend made outside requests, and to D1's ledger, in seq order and in batches, by alarm (never on
 * the hot path). A failed delivery is retried with backoff from its first undelivered event.
 */
export class Outbox {
  private flushing = false;
  private failures = 0;
  /** Events per second the outbox delivered at its last flush (null: not known yet), and when that was. */
  private rate: number | null = null;
  private lastFlushAt = Date.now();

  constructor(
    private readonly env: Env,
    private readonly store: PoolStore,
    private readonly ensureAlarm: (at: number) => void,
  ) {}

  /** Whether the last delivery failed (its retry is already set). */
  failing(): boolean {
    return this.failures > 0;
  }

  /** How long events wait before delivery: USAGE_FLUSH_DELAY_MS when busy, up to USAGE_FLUSH_MAX_MS when quiet (src/domain/flush.ts). */
  delay(): number {
    const { USAGE_FLUSH_DELAY_MS: base, USAGE_FLUSH_MAX_MS: max } = settings(this.env);
    return flushDelay(this.rate, base, max ?? base);
  }

  /** Deliver what waits, batch after batch. Returns how many events were delivered. */
  async flush(): Promise<number> {
    if (this.flushing) return 0;
    this.flushing = true;
    const store = this.store;
    let delivered = 0;
    try {
      for (;;) {
        const rows = store.sql.exec<{ seq: number; payload: string }>(
          "SELECT seq, payload FROM usage_outbox ORDER BY seq LIMIT ?", FLUSH_BATCH,
        ).toArray();
        if (rows.length === 0) break;
        const parsed = rows.map((r) => ({ seq: r.seq, event: JSON.parse(r.payload) as UsageEvent }));
        const events = parsed.map((r) => r.event);
        await this.reportSpend(parsed);
        await insertUsageEvents(this.env.DB, events);
        // Events queued while D1 answered come after these: the batch is a prefix of the table. The
        // rows may carry the bucket's latest level: write the bucket row first (same transaction).
        store.saveBucket();
        store.sql.exec("DELETE FROM usage_outbox WHERE seq <= ?", rows[rows.length - 1]!.seq);
        delivered += rows.length;
      }
      this.failures = 0;
      if (delivered > 0) {
        const now = Date.now();
        this.rate = (delivered * 1000) / Math.max(now - this.lastFlushAt, settings(this.env).USAGE_FLUSH_DELAY_MS);
        this.lastFlushAt = now;
      }
    } catch (err) {
      this.failures += 1;
      const backoff = Math.min(MAX_FLUSH_BACKOFF_MS, 500 * 2 ** this.failures);
      log.warn("usage_flush_failed", { pool: store.config?.id, attempt: this.failures, retry_in_ms: backoff, error: String(err) });
      this.ensureAlarm(Date.now() + backoff);
    } finally {
      this.flushing = false;
    }
    return delivered;
  }

  /**
   * Tell clients' objects what was spent outside a request (direct consumes and reservations): the
   * scheduler reports its requests' spend itself when it settles them. Each event goes with its outbox
   * seq, and a client object counts a seq from this outbox once (see ClientObject.recordPoolSpend), so
   * a flush retried after a failure reports nothing twice. (One edge at the upgrade from counting by
   * event id: an event reported that way, whose D1 write then failed, is counted again on the retry.)
   */
  private async reportSpend(rows: Array<{ seq: number; event: UsageEvent }>): Promise<void> {
    const byClient = new Map<string, PoolSpend[]>();
    for (const { seq, event: e } of rows) {
      // Units count against the client's daily caps per pool even when they cost nothing.
      if (e.via === "scheduler" || (e.costNano === 0 && e.units === 0)) continue;
      let list = byClient.get(e.clientId);
      if (!list) byClient.set(e.clientId, (list = []));
      list.push([seq, e.costNano, e.at, e.units]);
    }
    if (byClient.size === 0) return;
    const pool = rows[0]!.event.poolId;
    const source = this.store.source(pool);
    await Promise.all([...byClient].map(async ([clientId, list]) => {
      const stub = clientStub(this.env, clientId);
      await stub.recordPoolSpend(await budgetLimit(this.env, clientId), source, pool, list);
    }));
  }
}
