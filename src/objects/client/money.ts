import { budgetView, type BudgetLimit, type BudgetView } from "../../domain/budget";
import { MONEY_LEASE, SHARD_MONEY } from "../../domain/leases";
import { newId } from "../../domain/ids";
import type { MoneyAnswer, MoneyRequest, ShardMoneyAnswer, SpendMark } from "./types";

/** What the money book needs of the client object. */
export interface MoneyHost {
  /** The highest seq counted from a pool outbox (0: none). */
  delivered(source: string): number;
  /** This month's spend, and the estimates of admitted requests in flight. */
  spent(now: number): number;
  requestsInFlight(): number;
}

/**
 * A client's money held outside its requests: slices of budget headroom leased to isolates (which decide
 * direct consumes against them locally), reservations made over /internal/reserve, and spend handed
 * back under a lease or reservation that its pool's outbox has not delivered yet. All of it counts as
 * money in flight, so budget + in flight can never be overrun; a holder that never comes back is
 * covered until its hold's drop time.
 */
export class MoneyBook {
  /**
   * The sum of the holds and the earliest drop time among them, kept so that an admission (every
   * enqueue) runs no statement here while no hold has expired: null after any write, read again then.
   */
  private kept: { nano: number; nextDropAt: number } | null = null;

  constructor(private readonly sql: SqlStorage, private readonly host: MoneyHost) {
    sql.exec(`
      CREATE TABLE IF NOT EXISTS money_holds (
        id TEXT PRIMARY KEY,
        nano INTEGER NOT NULL,
        drop_at INTEGER NOT NULL,
        source TEXT,
        seq INTEGER
      );
    `);
  }

  /** Money held now (expired holds dropped first). */
  held(now: number): number {
    if (this.kept && now < this.kept.nextDropAt) return this.kept.nano;
    this.sql.exec("DELETE FROM money_holds WHERE drop_at <= ?", now);
    const r = this.sql.exec<{ n: number; next: number | null }>("SELECT COALESCE(SUM(nano), 0) AS n, MIN(drop_at) AS next FROM money_holds").one();
    this.kept = { nano: r.n, nextDropAt: r.next ?? Infinity };
    return r.n;
  }

  /** Money in flight: admitted requests' estimates and every hold. */
  inFlight(now: number): number {
    return this.host.requestsInFlight() + this.held(now);
  }

  /**
   * Take back a returned lease (its undelivered spend stays held) and lend a new one: `carry + need` when
   * they fit the budget, up to `want` but at most half of what is left (another isolate asking next still
   * finds some). When `need` does not fit, only `carry` is lent (money already spent) and the answer
   * explains the refusal. Synchronous: no two leases can be lent from the same headroom.
   */
  lease(limit: BudgetLimit, req: MoneyRequest, now: number): MoneyAnswer {
    if (req.returning) this.giveBack(req.returning.id, req.returning.marks, now);
    const spent = this.host.spent(now);
    const inFlight = this.inFlight(now);
    const carry = Math.max(0, req.carry);
    const min = carry + Math.max(0, req.need);
    let nano: number;
    let refused: BudgetView | null = null;
    if (limit.limitNano === null) {
      nano = Math.max(min, req.want);
    } else {
      const left = limit.limitNano - spent - inFlight;
      if (left >= min) {
        nano = holdSize(left, min, req.want);
      } else {
        nano = carry;
        refused = budgetView(limit, spent, inFlight + carry, now);
      }
    }
    if (nano <= 0) return { lease: null, refused };
    const id = newId("money_hold", now);
    this.kept = null;
    this.sql.exec(
      "INSERT INTO money_holds (id, nano, drop_at) VALUES (?, ?, ?)",
      id, nano, now + MONEY_LEASE.TTL_MS + MONEY_LEASE.GRACE_MS,
    );
    return { lease: { id, nano, ttlMs: MONEY_LEASE.TTL_MS }, refused };
  }

  /**
   * A scheduler shard's money lease (decision 008): one hold per shard, `shard:<holder>`, set anew by
   * every exchange (a repeated exchange replaces it, never adds to it). The shard's requests admitted
   * under the previous hold were converted first (Ledger.convert), so the new one covers only what the
   * shard has yet to admit: `need` (else refused, with the budget as it stands: the 402's explanation)
   * and up to `want`, at most half of what is left. 0 and 0 (or no limit: the client is gone): the hold ends.
   */
  lendShard(limit: BudgetLimit | null, holder: string, want: number, need: number, now: number): ShardMoneyAnswer {
    const id = `shard:${holder}`;
    this.kept = null;
    this.sql.exec("DELETE FROM money_holds WHERE id = ?", id);
    // Nothing asked, or the client is gone (no budget to lend from).
    if ((want <= 0 && need <= 0) || !limit) return { lent: 0, refused: null };
    const spent = this.host.spent(now);
    const inFlight = this.inFlight(now);
    let nano: number;
    if (limit.limitNano === null) {
      nano = Math.max(need, want);
    } else {
      const left = limit.limitNano - spent - inFlight;
      if (left < need) return { lent: 0, refused: budgetView(limit, spent, inFlight, now) };
      nano = holdSize(left, need, want);
    }
    this.kept = null;
    if (nano > 0) this.sql.exec("INSERT INTO money_holds (id, nano, drop_at) VALUES (?, ?, ?)", id, nano, now + SHARD_MONEY.HOLD_MS);
    return { lent: nano, refused: null };
  }

  /** Hold a reservation's price until it is settled or its expiry (plus the grace) passes. */
  hold(id: string, nano: number, expiresAt: number): void {
    this.kept = null;
    this.sql.exec(
      "INSERT INTO money_holds (id, nano, drop_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
      id, nano, expiresAt + MONEY_LEASE.GRACE_MS,
    );
  }

  /** A lease or reservation comes back: its hold ends; the spend made under it stays held until delivered. */
  giveBack(id: string, marks: SpendMark[], now: number): void {
    this.kept = null;
    this.sql.exec("DELETE FROM money_holds WHERE id = ?", id);
    for (const [source, seq, nano] of marks) {
      if (nano <= 0 || seq <= this.host.delivered(source)) continue;
      this.sql.exec(
        "INSERT INTO money_holds (id, nano, drop_at, source, seq) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        `${id}:${source}`, nano, now + MONEY_LEASE.PENDING_MAX_MS, source, seq,
      );
    }
  }

  /** A pool outbox delivered up to `seq`: spend handed back under it is in the month's spend now. */
  delivered(source: string, seq: number): void {
    this.kept = null;
    this.sql.exec("DELETE FROM money_holds WHERE source = ? AND seq <= ?", source, seq);
  }

  /** The budget as it stands, with every hold in flight. */
  view(limit: BudgetLimit, now: number): BudgetView {
    return budgetView(limit, this.host.spent(now), this.inFlight(now), now);
  }
}

/** What a hold lends of `left` (which covers `min`): `min` at least, up to `want`, but beyond `min` at most half of what is left. */
function holdSize(left: number, min: number, want: number): number {
  return Math.min(left, Math.max(min, Math.min(want, Math.floor(left / 2))));
}
