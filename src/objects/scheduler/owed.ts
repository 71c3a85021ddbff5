/**
 * Settlements owed: the outcomes of worker calls whose settlement failed (a pool or client object could
 * not be reached), kept in the shard's storage until a settlement goes through. The work ran; only its
 * accounting waits. So a request with a settlement owed is not sent back to its queue when its lease
 * ends (it would run, and be charged, twice), and a restart of the shard loses nothing: the object
 * reads what it owes when it starts and its alarm makes the settlements again.
 *
 * Made again after SETTLE_RETRY_MS, then every SETTLE_RETRY_EVERY_MS, for as long as it takes. Each
 * step is idempotent: the pools answer a repeated release with the first answer (kept a day), the
 * client object counts each usage event once, and requests settled meanwhile are skipped. A pool that
 * cannot be reached past a reservation's expiry (the request's lease) has given the units back by then:
 * it counts the late release's use and cost without taking them again (`release_after_expiry`, see
 * ../pool/reservations.ts). One limit: a settled reservation is forgotten a day after its expiry, and
 * a release later than that is refused (`release_refused`): that pool's use is not counted.
 */
import type { Outcome } from "./rows";

/** One ended worker call to settle. */
export interface Owed {
  id: string;
  attempt: number;
  outcome: Outcome;
}

/** A failed settlement is made again after these delays (ms), by its number of failures... */
const SETTLE_RETRY_MS = [200, 1000, 5000, 30_000];
/** ...then this often. */
const SETTLE_RETRY_EVERY_MS = 60_000;

/** How long to wait before a settlement that failed `failures` times is made again. */
export function settleRetryMs(failures: number): number {
  return SETTLE_RETRY_MS[failures - 1] ?? SETTLE_RETRY_EVERY_MS;
}

export class OwedSettlements {
  /** Every request with a settlement owed (the table's ids, in memory: the lease sweep asks per request). */
  private readonly ids = new Set<string>();
  /** Owed settlements being made now (not taken again until that attempt ends). */
  private readonly making = new Set<string>();

  constructor(private readonly sql: SqlStorage) {
    for (const row of sql.exec<{ id: string }>("SELECT id FROM settle_owed")) this.ids.add(row.id);
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  get size(): number {
    return this.ids.size;
  }

  /** When the earliest owed settlement due after `after` (epoch ms) is due; null: none. */
  nextDue(after = 0): number | null {
    if (this.ids.size === 0) return null;
    return this.sql.exec<{ t: number | null }>("SELECT MIN(next_at) AS t FROM settle_owed WHERE next_at > ?", after).one().t;
  }

  /** Keep (or keep again) a batch whose settlement failed for the `failures`-th time, due again at `nextAt`. */
  keep(batch: Owed[], failures: number, nextAt: number): void {
    this.sql.exec(
      `INSERT INTO settle_owed (id, attempt, outcome, failures, next_at)
       SELECT value ->> 0, value ->> 1, value ->> 2, ?, ? FROM json_each(?) WHERE true
       ON CONFLICT (id) DO UPDATE SET failures = excluded.failures, next_at = excluded.next_at`,
      failures, nextAt, JSON.stringify(batch.map((b) => [b.id, b.attempt, JSON.stringify(b.outcome)])),
    );
    for (const b of batch) {
      this.ids.add(b.id);
      this.making.delete(b.id);
    }
  }

  /** The owed settlements due by `now` and not being made, as one batch (taken: not handed out again until kept or done). */
  takeDue(now: number): { batch: Owed[]; failures: number } | null {
    if (this.ids.size === 0) return null;
    const rows = this.sql.exec<{ id: string; attempt: number; outcome: string; failures: number }>(
      "SELECT id, attempt, outcome, failures FROM settle_owed WHERE next_at <= ? ORDER BY next_at", now,
    ).toArray().filter((r) => !this.making.has(r.id));
    if (rows.length === 0) return null;
    for (const r of rows) this.making.add(r.id);
    return {
      batch: rows.map((r) => ({ id: r.id, attempt: r.attempt, outcome: JSON.parse(r.outcome) as Outcome })),
      failures: Math.max(...rows.map((r) => r.failures)),
    };
  }

  /** These settlements went through (or were no longer needed): forget them. */
  done(ids: string[]): void {
    const known = ids.filter((id) => this.ids.has(id));
    for (const id of ids) this.making.delete(id);
    if (known.length === 0) return;
    this.sql.exec("DELETE FROM settle_owed WHERE id IN (SELECT value FROM json_each(?))", JSON.stringify(known));
    for (const id of known) this.ids.delete(id);
  }
}
