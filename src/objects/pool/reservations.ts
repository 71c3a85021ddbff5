import { giveBack, take } from "../../domain/bucket";
import { newId } from "../../domain/ids";
import { SETTLED_RESERVATION_KEEP_MS } from "../../domain/retention";
import { log } from "../../log";
import type { Caller, PoolConfig } from "../../domain/types";
import type { UsageEvent } from "../../storage/usage";
import { fail } from "./results";
import type { PoolStore } from "./store";
import type { BatchReleaseItem, BatchReserveItem, ReleaseResult, ReserveResult, Result } from "./types";
import { heldBack, WaitBook } from "./waiters";

/** What the reservations need of the object that hosts them. */
export interface ReservationHost {
  /** Whether `caller` may take `amount` now, counting a denial when `spending` (./spending.ts). */
  admit(cfg: PoolConfig, caller: Caller, amount: number, now: number, spending: boolean): Result<number>;
  /** Be woken no later than `at` (a reservation's expiry). */
  ensureAlarm(at: number): void;
  /** Keep the object alive until `promise` settles (wakes sent after answering). */
  waitUntil(promise: Promise<unknown>): void;
}

export interface ReservationRow {
  id: string;
  client_id: string;
  request_id: string | null;
  via: string;
  amount: number;
  status: string;
  created_at: number;
  expires_at: number;
  [key: string]: SqlStorageValue;
}

/** A reservation granted in a batch, as written by its one INSERT. */
interface NewReservation {
  id: string;
  clientId: string;
  requestId: string | null;
  via: string;
  amount: number;
  expiresAt: number;
}

/** What a batch of settlements changes, written once for the whole batch. */
interface Settlements {
  expired: string[];
  released: Array<{ id: string; consumed: number; costNano: number; eventId: string | null }>;
  events: UsageEvent[];
}

/**
 * A pool's reservations: units taken from the bucket for a holder until it settles them (consumed and
 * refunded) or they expire by alarm, and the scheduler shards' requests waiting for units (./waiters.ts).
 * Batches are decided in memory, in order, then written in one statement per kind of change.
 */
export class Reservations {
  /** Scheduler shards' requests waiting for units here, in memory (issue 20: priority across shards). */
  private readonly waits = new WaitBook();

  constructor(
    private readonly env: Env,
    private readonly store: PoolStore,
    private readonly host: ReservationHost,
  ) {}

  /** Reservations held now (expired ones not yet swept included): how many, and their units. */
  held(): { n: number; units: number } {
    return this.store.sql.exec<{ n: number; units: number }>(
      "SELECT COUNT(*) AS n, COALESCE(SUM(amount), 0) AS units FROM reservations WHERE status = 'held'",
    ).one();
  }

  /** Units held by reservations. */
  heldUnits(): number {
    return this.store.sql.exec<{ n: number }>(
      "SELECT COALESCE(SUM(amount), 0) AS n FROM reservations WHERE status = 'held'",
    ).one().n;
  }

  /** The earliest expiry of a held reservation (null: none held). */
  nextExpiry(): number | null {
    return this.store.sql.exec<{ t: number | null }>(
      "SELECT MIN(expires_at) AS t FROM reservations WHERE status = 'held'",
    ).one().t;
  }

  /**
   * Decide each item in order against the bucket in memory (nothing here awaits, so no call interleaves),
   * then write every granted reservation in one statement and the bucket once.
   */
  reserveBatch(cfg: PoolConfig, items: BatchReserveItem[]): Result<ReserveResult>[] {
    const store = this.store;
    const now = Date.now();
    const granted: NewReservation[] = [];
    const results = items.map((item): Result<ReserveResult> => {
      // Another shard's request goes first: keep the units for it (./waiters.ts).
      const ahead = item.wait ? this.waits.aheadOf(item.wait, now) : null;
      if (ahead) {
        this.waits.refused(item.wait!, item.amount, now);
        return heldBack(cfg.id, item.amount, store.whole(), ahead, now);
      }
      const admitted = this.host.admit(cfg, item.caller, item.amount, now, true);
      if (!admitted.ok) {
        if (item.wait && admitted.error.code === "rate_limited") this.waits.refused(item.wait, item.amount, now);
        return admitted;
      }
      if (item.wait) this.waits.granted(item.wait, item.amount);
      store.bucket = take(store.bucket, item.amount);
      const id = item.id ?? newId("reservation", now);
      const expiresAt = now + item.ttlMs;
      granted.push({ id, clientId: item.caller.clientId, requestId: item.requestId, via: item.caller.via, amount: item.amount, expiresAt });
      return { ok: true, value: { pool: cfg.id, reservationId: id, amount: item.amount, expiresAt, remaining: store.whole() } };
    });
    store.saveDenials();
    if (granted.length === 0) return results;
    // Positional arrays: each `->>` parses its element again, and a short array reads faster than an object.
    store.sql.exec(
      `INSERT INTO reservations (id, client_id, request_id, via, amount, status, created_at, expires_at)
       SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, 'held', ?, value ->> 5
       FROM json_each(?)`,
      now, JSON.stringify(granted.map((r) => [r.id, r.clientId, r.requestId, r.via, r.amount, r.expiresAt])),
    );
    store.saveBucket();
    this.host.ensureAlarm(granted.reduce((t, r) => Math.min(t, r.expiresAt), Infinity));
    return results;
  }

  /**
   * Settle many reservations, as PoolObject.release each, in order: one read for all the reservations
   * named, decisions in memory, then one write per kind of change.
   */
  releaseBatch(cfg: PoolConfig, items: BatchReleaseItem[]): Result<ReleaseResult>[] {
    const store = this.store;
    const now = Date.now();
    const rows = new Map(store.sql.exec<ReservationRow>(
      "SELECT * FROM reservations WHERE id IN (SELECT value FROM json_each(?))",
      JSON.stringify(items.map((item) => item.reservationId)),
    ).toArray().map((row) => [row.id, row]));
    store.refillTo(now, cfg);
    const changes: Settlements = { expired: [], released: [], events: [] };
    const results = items.map((item) => this.settle(cfg, rows.get(item.reservationId), item, now, changes));
    if (changes.expired.length + changes.released.length === 0) return results;
    this.markExpired(changes.expired, now);
    if (changes.released.length) {
      store.sql.exec(
        `UPDATE reservations SET status = 'released', settled_at = ?, consumed = s.value ->> 1, cost_nano = s.value ->> 2, event_id = s.value ->> 3
         FROM json_each(?) AS s WHERE reservations.id = s.value ->> 0`,
        now, JSON.stringify(changes.released.map((r) => [r.id, r.consumed, r.costNano, r.eventId])),
      );
    }
    store.queueUsage(changes.events);
    store.saveBucket();
    if (this.waits.size > 0) this.wakeWaiters(now);
    return results;
  }

  /** Expire reservations past their time now (as the alarm would), so counts of active ones are exact. Returns how many. */
  expireDue(now: number, cfg: PoolConfig): number {
    const due = this.store.sql.exec<ReservationRow>("SELECT * FROM reservations WHERE status = 'held' AND expires_at <= ?", now).toArray();
    this.expire(due, now, cfg);
    return due.length;
  }

  /**
   * Settled reservations answer a late release with reservation_closed for a day (SETTLED_RESERVATION_KEEP_MS), then are forgotten
   * (one row per dispatched request would otherwise stay forever). Served by the (status, expires_at) index.
   */
  forgetSettled(now: number): void {
    this.store.sql.exec("DELETE FROM reservations WHERE status IN ('released', 'expired') AND expires_at < ?", now - SETTLED_RESERVATION_KEEP_MS);
  }

  /** Whether a shard other than `shard` has a request waiting here now. */
  othersWaiting(shard: string, now: number): boolean {
    return this.waits.size > 0 && this.waits.waitingShards(now).some((s) => s !== shard);
  }

  /** Units came back another way (a lease's): wake the shards waiting here, if any. */
  unitsBack(now: number): void {
    if (this.waits.size > 0) this.wakeWaiters(now);
  }

  /** Units came back: wake every scheduler shard with a request waiting here, so the first in line takes them. */
  private wakeWaiters(now: number): void {
    for (const shard of this.waits.waitingShards(now)) {
      this.host.waitUntil(this.env.SCHEDULER.get(this.env.SCHEDULER.idFromName(shard)).wake().catch(() => undefined));
    }
  }

  /**
   * One settlement of a batch, decided against the batch's copy of its row (`undefined`: not found). The
   * row's status is updated in that copy, so an id named twice in a batch sees its first settlement.
   */
  private settle(cfg: PoolConfig, row: ReservationRow | undefined, item: BatchReleaseItem, now: number, changes: Settlements): Result<ReleaseResult> {
    const { caller, reservationId, actualUsed } = item;
    // A settled reservation past its keep is forgotten even while its row waits for the alarm to delete
    // it: a client object keeps the event ids it counted only so long (src/domain/retention.ts).
    const forgotten = row !== undefined && row.status !== "held" && row.expires_at < now - SETTLED_RESERVATION_KEEP_MS;
    if (!row || forgotten || row.client_id !== caller.clientId) {
      return fail("reservation_not_found", `no reservation ${reservationId} in pool ${cfg.id}`);
    }
    if (row.status === "held" && row.expires_at <= now) {
      this.refundExpired(row, cfg);
      changes.expired.push(row.id);
    }
    // The scheduler's own settlement of the request this reservation was made for.
    const ours = item.replay === true && row.request_id !== null && row.request_id === item.requestId;
    // Made again after a settlement failed part-way: the first release's answer.
    if (row.status === "released" && ours) {
      const consumed = Number(row.consumed ?? 0);
      return {
        ok: true,
        value: {
          pool: cfg.id, reservationId, consumed, refunded: row.amount - consumed,
          costNano: Number(row.cost_nano ?? 0), eventId: (row.event_id as string | null) ?? null, at: Number(row.settled_at ?? now),
        },
      };
    }
    // The scheduler's settlement of a request whose reservation expired first (a settlement owed while this
    // pool could not be reached, past the request's lease): the work ran, so its use and cost are counted.
    // The units went back when it expired and are not taken again: the limit was exceeded by them then.
    const late = row.status === "expired" && ours;
    if (row.status !== "held" && !late) {
      return fail("reservation_closed", `reservation ${reservationId} is ${row.status}`, { status: row.status });
    }
    if (actualUsed > row.amount) {
      return fail("validation_failed", "actual_used exceeds the reserved amount", {
        fields: [{ path: "actual_used", message: `must be at most ${row.amount}` }],
      });
    }
    const store = this.store;
    const refunded = late ? 0 : row.amount - actualUsed;
    if (late && actualUsed > 0) log.warn("release_after_expiry", { pool: cfg.id, reservation_id: row.id, request_id: row.request_id, units: actualUsed });
    store.bucket = giveBack(store.bucket, refunded, cfg);
    const event = actualUsed > 0
      ? store.usageEvent(cfg, { clientId: row.client_id, tier: caller.tier, via: row.via }, row.request_id, "reservation", actualUsed, now)
      : null;
    if (event) changes.events.push(event);
    // The batch's copy too: an id named twice in a batch sees this settlement.
    Object.assign(row, { status: "released", consumed: actualUsed, cost_nano: event?.costNano ?? 0, event_id: event?.eventId ?? null, settled_at: now });
    changes.released.push({ id: row.id, consumed: actualUsed, costNano: event?.costNano ?? 0, eventId: event?.eventId ?? null });
    return {
      ok: true,
      value: {
        pool: cfg.id, reservationId, consumed: actualUsed, refunded,
        costNano: event?.costNano ?? 0, eventId: event?.eventId ?? null, at: now,
      },
    };
  }

  /** Expire held reservations past their time (the alarm's sweep): refund each, then write them at once. */
  private expire(rows: ReservationRow[], now: number, cfg: PoolConfig): void {
    if (rows.length === 0) return;
    this.store.refillTo(now, cfg);
    for (const row of rows) this.refundExpired(row, cfg);
    this.markExpired(rows.map((row) => row.id), now);
    this.store.saveBucket();
  }

  /** Give an expired reservation's units back, in memory; the caller writes it with markExpired. */
  private refundExpired(row: ReservationRow, cfg: PoolConfig): void {
    this.store.bucket = giveBack(this.store.bucket, row.amount, cfg);
    row.status = "expired";
  }

  private markExpired(ids: string[], now: number): void {
    if (ids.length === 0) return;
    // `+status`: look the rows up by id, not through the status index (which would visit every held row).
    this.store.sql.exec(
      `UPDATE reservations SET status = 'expired', settled_at = ?, consumed = 0
       WHERE id IN (SELECT value FROM json_each(?)) AND +status = 'held'`,
      now, JSON.stringify(ids),
    );
  }
}
