import { grantFor, lendable, poolLends, SHARD_LEASE, TOKEN_LEASE } from "../../domain/leases";
import type { PoolConfig } from "../../domain/types";
import type { UsageEvent } from "../../storage/usage";
import type { LeaseAnswer, LeaseExchange, LeaseGrant } from "./types";

/** What the lease book needs of the pool object that hosts it. */
export interface LeaseHost {
  /** Whole units in the bucket after refill to `now`. */
  level(now: number, cfg: PoolConfig): number;
  /** Move units between the bucket and the leases: positive takes from the bucket (it may go below 0 for a late report). */
  shift(units: number, cfg: PoolConfig): void;
  /** Queue usage events in the outbox; returns the last seq written. */
  record(events: UsageEvent[]): number;
  /** The seq of the last event written so far, and this outbox's source name. */
  lastSeq(): number;
  source(cfg: PoolConfig): string;
  /** Be woken no later than `at` (lease expiry). */
  wakeAt(at: number): void;
  /** Whether a scheduler shard other than `shard` has a request waiting for units here (./waiters.ts). */
  othersWaiting(shard: string, now: number): boolean;
}

interface LeaseRow {
  holder: string;
  outstanding: number;
  expires_at: number;
  report: number;
  answer: string;
  open: number;
  [key: string]: SqlStorageValue;
}

/** Closed leases are remembered this long, so a repeated exchange is answered, not applied again. */
const CLOSED_RETENTION_MS = 10 * 60_000;

/**
 * A pool's token leases: units taken from the bucket and lent to isolates, which grant consumes from
 * them locally and report those grants here (usage events into the pool's outbox, exactly once per
 * report number). A lease's units are out of the bucket until the holder gives them back or, when it
 * stops reporting, until its expiry plus a grace. Decided synchronously, like every limit in the pool.
 */
export class LeaseBook {
  /** Units held by open leases (kept in step with the table). */
  private out = 0;
  private loaded = false;
  /** Grants reported after their lease had been taken back (the units were taken again from the bucket). */
  lateUnits = 0;

  constructor(private readonly sql: SqlStorage, private readonly host: LeaseHost) {
    sql.exec(`
      CREATE TABLE IF NOT EXISTS pool_leases (
        holder TEXT PRIMARY KEY,
        outstanding INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        report INTEGER NOT NULL,
        answer TEXT NOT NULL,
        open INTEGER NOT NULL
      );
    `);
    // Whether the holder is a scheduler shard (its units are its requests' while they run: ShardLeased).
    const columns = sql.exec<{ name: string }>("SELECT name FROM pragma_table_info('pool_leases')").toArray();
    if (!columns.some((c) => c.name === "shard")) sql.exec("ALTER TABLE pool_leases ADD COLUMN shard INTEGER NOT NULL DEFAULT 0");
  }

  /** Units lent to scheduler shards on open leases: their requests' while they run (a pool is busy while any are out). */
  shardUnits(): number {
    return this.sql.exec<{ n: number }>("SELECT COALESCE(SUM(outstanding), 0) AS n FROM pool_leases WHERE open = 1 AND shard = 1").one().n;
  }

  /** Units out on open leases. */
  leased(): number {
    if (!this.loaded) {
      this.out = this.sql.exec<{ n: number }>("SELECT COALESCE(SUM(outstanding), 0) AS n FROM pool_leases WHERE open = 1").one().n;
      this.loaded = true;
    }
    return this.out;
  }

  /** Open leases now (holders), for /metrics and the admin view. */
  holders(now: number): number {
    return this.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM pool_leases WHERE open = 1 AND expires_at > ?", now).one().n;
  }

  exchange(cfg: PoolConfig, x: LeaseExchange, now: number): LeaseAnswer {
    this.leased();
    const row = this.sql.exec<LeaseRow>("SELECT * FROM pool_leases WHERE holder = ?", x.holder).toArray()[0];
    if (row && x.report <= row.report) return JSON.parse(row.answer) as LeaseAnswer;
    const used = this.recordGrants(cfg, x.grants);
    let outstanding = 0;
    if (row?.open) {
      // The holder cannot give back or use more than it holds; what it reports beyond that was lent
      // again after a failed exchange it could not see: taken from the bucket now.
      const back = Math.min(Math.max(0, x.returned), Math.max(0, row.outstanding - used));
      outstanding = row.outstanding - used - back;
      if (outstanding < 0) {
        this.lateUnits += -outstanding;
        this.host.shift(-outstanding, cfg);
        outstanding = 0;
      }
      this.host.shift(-back, cfg);
      this.out -= row.outstanding;
    } else if (used > 0) {
      // Reported after the lease was taken back at its expiry: those units went back to the bucket.
      this.lateUnits += used;
      this.host.shift(used, cfg);
    }
    const lends = poolLends(cfg);
    // A shard's lease stops while another shard waits here: the units go to requests one by one again.
    const shardHeld = x.shard !== undefined && lends && this.host.othersWaiting(x.shard, now);
    let added = 0;
    if (x.close) {
      this.host.shift(-outstanding, cfg);
      outstanding = 0;
    } else if (x.shard !== undefined) {
      const level = this.host.level(now, cfg);
      added = lends && !shardHeld && x.want > 0 && x.want <= lendable(level, SHARD_LEASE) ? x.want : 0;
      this.host.shift(added, cfg);
      outstanding += added;
    } else if (lends) {
      const others = this.sql.exec<{ n: number }>(
        "SELECT COUNT(*) AS n FROM pool_leases WHERE open = 1 AND expires_at > ? AND holder != ?", now, x.holder,
      ).one().n;
      added = grantFor(this.host.level(now, cfg), others, x.want, x.need);
      if (x.need > 0 && added < x.need) added = 0;
      this.host.shift(added, cfg);
      outstanding += added;
    }
    // A pool that stopped lending keeps what the holder still holds until it closes (it may be granting
    // from it during this call): the answer's `stop` asks it to.
    const open = outstanding > 0 || (!x.close && lends) ? 1 : 0;
    const ttlMs = x.shard !== undefined ? Math.max(TOKEN_LEASE.TTL_MS, Math.min(SHARD_LEASE.TTL_MS, x.ttlMs ?? 0)) : TOKEN_LEASE.TTL_MS;
    const answer: LeaseAnswer = {
      added, ttlMs, level: this.host.level(now, cfg), source: this.host.source(cfg), seq: this.host.lastSeq(), stop: !lends || shardHeld,
    };
    const expiresAt = now + ttlMs;
    this.sql.exec(
      `INSERT INTO pool_leases (holder, outstanding, expires_at, report, answer, open, shard) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (holder) DO UPDATE SET outstanding = excluded.outstanding, expires_at = excluded.expires_at,
         report = excluded.report, answer = excluded.answer, open = excluded.open, shard = excluded.shard`,
      x.holder, outstanding, expiresAt, x.report, JSON.stringify(answer), open, x.shard !== undefined ? 1 : 0,
    );
    if (open) {
      this.out += outstanding;
      this.host.wakeAt(expiresAt + TOKEN_LEASE.GRACE_MS);
    }
    return answer;
  }

  /**
   * Take back the units of leases whose holders stopped reporting (expired plus the grace), and forget
   * closed leases after a while. Returns the units taken back.
   */
  reclaim(cfg: PoolConfig, now: number): number {
    this.leased();
    const due = this.sql.exec<{ holder: string; outstanding: number }>(
      "SELECT holder, outstanding FROM pool_leases WHERE open = 1 AND expires_at <= ?", now - TOKEN_LEASE.GRACE_MS,
    ).toArray();
    let units = 0;
    for (const r of due) units += r.outstanding;
    if (due.length) {
      this.sql.exec(
        "UPDATE pool_leases SET open = 0, outstanding = 0 WHERE holder IN (SELECT value FROM json_each(?))",
        JSON.stringify(due.map((r) => r.holder)),
      );
      this.out -= units;
      this.host.shift(-units, cfg);
    }
    this.sql.exec("DELETE FROM pool_leases WHERE open = 0 AND expires_at < ?", now - CLOSED_RETENTION_MS);
    return units;
  }

  /** When the next open lease is due to be taken back (null: none open). */
  nextDue(): number | null {
    const t = this.sql.exec<{ t: number | null }>("SELECT MIN(expires_at) AS t FROM pool_leases WHERE open = 1").one().t;
    return t === null ? null : t + TOKEN_LEASE.GRACE_MS;
  }

  /** Usage events for reported grants, in one write; returns the units they used. */
  private recordGrants(cfg: PoolConfig, grants: LeaseGrant[]): number {
    if (grants.length === 0) return 0;
    let used = 0;
    const events = grants.map(([eventId, clientId, , via, amount, requestId, costNano, at]): UsageEvent => {
      used += amount;
      // A scheduler shard's grants are its requests' use of units, as a reservation's release records it.
      return { eventId, poolId: cfg.id, clientId, requestId, via, kind: via === "scheduler" ? "reservation" : "consume", units: amount, costNano, at };
    });
    this.host.record(events);
    return used;
  }
}
