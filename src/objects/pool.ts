import { DurableObject } from "cloudflare:workers";
import { newId } from "../domain/ids";
import { fits, giveBack, msUntil, refill, take, type BucketState } from "../domain/bucket";
import { costOf } from "../domain/money";
import { accessFor } from "../domain/sharing";
import type { Caller, PoolConfig } from "../domain/types";
import type { ErrorBody } from "../errors";
import { insertUsageEvents, type UsageEvent } from "../storage/usage";
import { poolAlerts, POOL_LOW_PERCENT, type AlertDecision } from "../domain/alerts";
import { log } from "../log";
import { applyAlerts } from "../services/alerts";
import { budgetLimit } from "../services/config";
import { evaluatePoolScaling } from "../services/scaling";
import type { PoolSpend } from "./client";
import { LeaseBook, type LeaseAnswer, type LeaseExchange } from "./pool-leases";
import { flushDelay } from "../domain/flush";
import { heldBack, WaitBook, type WaitClaim } from "./pool-waiters";
import { settings } from "../settings";

export type Failure = { ok: false; error: ErrorBody };
export type Result<T> = { ok: true; value: T } | Failure;
/**
 * A granted consume as spend() answers it: the event id, its cost in nano-dollars, the whole units left,
 * and where its usage event sits: its outbox seq (0 for an idempotent replay, which spent nothing new)
 * and that outbox's source name (clients' objects count delivered spend by both).
 */
export type Spent = [eventId: string, costNano: number, remaining: number, seq: number, source: string];
/** One consume as spend() takes it: who, for how much, and the optional request id and idempotency key. */
export type SpendItem = [clientId: string, tier: Caller["tier"], via: string, amount: number, requestId: string | null, idempotencyKey: string | null];

export interface Availability {
  pool: string;
  level: number;
  capacity: number;
  refillPerSec: number;
  /** Whole units this caller could take now from the bucket (after shares kept for others; not counting units leased out). */
  available: number;
  utilization: number;
  reserved: number;
  /** Units lent to isolates on token leases (already taken from the bucket; their holders grant them). */
  leased: number;
  outbox: number;
  /** Spending refused for lack of units (rate_limited) since the object was created. */
  denials: number;
}

export interface CheckResult {
  pool: string;
  allowed: boolean;
  /** Whole units in the bucket for this caller; units leased out to isolates are not in it. */
  available: number;
  leased: number;
  retryAfterMs: number | null;
}

export interface ConsumeResult {
  pool: string;
  eventId: string;
  units: number;
  costNano: number;
  remaining: number;
}

export interface ReserveResult {
  pool: string;
  reservationId: string;
  amount: number;
  expiresAt: number;
  remaining: number;
}

export interface ReleaseResult {
  pool: string;
  reservationId: string;
  consumed: number;
  refunded: number;
  costNano: number;
  eventId: string | null;
  /** When the usage was recorded (its month is the month it is spent in). */
  at: number;
  /** Where its usage event sits (release() only): the outbox seq and source; the client's object holds the spend in flight until delivered. */
  seq?: number;
  source?: string;
}

/** A pool's live state as its object holds it (the admin API's view, and the answer to a pushed configuration). */
export interface PoolState {
  pool: string;
  /** The configuration version this object has adopted. */
  version: number;
  status: PoolConfig["status"];
  level: number;
  capacity: number;
  utilization: number;
  /** Units held by active reservations. */
  reservedUnits: number;
  /** Reservations held and not yet expired. */
  activeReservations: number;
  outbox: number;
  denials: number;
  /** Units lent to isolates on token leases, and the open leases. */
  leasedUnits: number;
  leaseHolders: number;
}

export interface BatchReserveItem {
  caller: Caller;
  amount: number;
  ttlMs: number;
  requestId: string | null;
  /** A reservation id chosen by the caller (reserve() only). */
  id?: string;
  /** A scheduler shard's queued request: its class, weight and shard, for priority across shards (./pool-waiters.ts). */
  wait?: WaitClaim;
}

export interface BatchReleaseItem {
  caller: Caller;
  reservationId: string;
  actualUsed: number;
}

export interface SpendOptions {
  amount: number;
  requestId?: string;
  idempotencyKey?: string;
}

export interface ReserveOptions extends SpendOptions {
  ttlMs: number;
  /** The id to give the reservation (the client's object holds its slot and price under it); made here when absent. */
  reservationId?: string;
}

const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;
/** How long a settled (released or expired) reservation is kept after its expiry time. */
const SETTLED_RETENTION_MS = 24 * 60 * 60 * 1000;
/**
 * Outbox events per delivery (one client report per client and one D1 batch each). A hot pool fills
 * several hundred a second: 1,000 (against 200) saved ~5% of a consume's CPU in an A/B run of the
 * benchmark. A batch's JSON is ~180 bytes per event, far below D1's limits.
 */
const FLUSH_BATCH = 1000;
const MAX_FLUSH_BACKOFF_MS = 60_000;
/** A dynamic pool that runs dry asks for a scaling evaluation at most this often (and not within its cooldown). */
const SCALING_KICK_MIN_MS = 10_000;

/**
 * One pool's limit owner: its token bucket, reservations, idempotency records and usage outbox.
 * Every method that decides a limit is synchronous (SQLite storage only), so calls cannot interleave
 * inside a decision. The outbox is delivered to D1 by alarm, never on the hot path.
 */
export class PoolObject extends DurableObject<Env> {
  private sql: SqlStorage;
  private config: PoolConfig | null = null;
  private bucket: BucketState = { level: 0, updatedAt: 0 };
  /** Time of the alarm we know to be set, to avoid rewriting it on every spend. */
  private alarmAt: number | null = null;
  private flushing = false;
  /** This storage's outbox epoch (see the meta table). */
  private epoch = "";
  /** The last outbox seq written (seqs only grow, also across deliveries). */
  private lastSeq = 0;
  private flushFailures = 0;
  /** Whether the pool_low alert was last reported raised (true) or cleared (false); null: not yet. */
  private lowReported: boolean | null = null;
  private denials = 0;
  /** The denial count last written to storage (denials are counted in memory and written once per call). */
  private savedDenials = 0;
  /** Earliest time running dry may ask for another scaling evaluation. */
  private scalingKickAfter = 0;
  /** Token leases lent to isolates (src/objects/pool-leases.ts). */
  private leases: LeaseBook;
  /** Events per second the outbox delivered at its last flush (null: not known yet), and when that was. */
  private outboxRate: number | null = null;
  private lastFlushAt = Date.now();
  /** Scheduler shards' requests waiting for units here, in memory (issue 20: priority across shards; ./pool-waiters.ts). */
  private waits = new WaitBook();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS bucket (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        level REAL NOT NULL,
        updated_at INTEGER NOT NULL,
        config TEXT NOT NULL,
        outbox_seq INTEGER NOT NULL DEFAULT 0
      );
      CREATE TABLE IF NOT EXISTS reservations (
        id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        request_id TEXT,
        via TEXT NOT NULL,
        amount INTEGER NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        settled_at INTEGER,
        consumed INTEGER
      );
      CREATE INDEX IF NOT EXISTS reservations_held ON reservations (status, expires_at);
      -- Usage events waiting for D1, in the order they happened: appended at the end of the table
      -- (seq is the rowid) and delivered and deleted from its start, so no index is written.
      -- A consume writes only its event: the bucket as it left it rides on the event's row (level,
      -- updated_at), and the bucket row is brought up to date when the outbox is delivered.
      CREATE TABLE IF NOT EXISTS usage_outbox (
        seq INTEGER PRIMARY KEY,
        payload TEXT NOT NULL,
        level REAL,
        updated_at INTEGER
      );
      CREATE TABLE IF NOT EXISTS idempotency (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        response TEXT NOT NULL,
        created_at INTEGER NOT NULL
      );
      CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
      -- This storage's outbox epoch: clients' objects count deliveries per (pool, epoch) by seq, so
      -- storage that started over (a new epoch) cannot have its seqs taken for ones already counted.
      CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    `);
    this.sql.exec("INSERT INTO meta (name, value) VALUES ('epoch', ?) ON CONFLICT (name) DO NOTHING", crypto.randomUUID());
    this.epoch = this.sql.exec<{ value: string }>("SELECT value FROM meta WHERE name = 'epoch'").one().value;
    this.leases = new LeaseBook(this.sql, {
      level: (now, cfg) => {
        this.refillTo(now, cfg);
        return this.whole();
      },
      shift: (units, cfg) => {
        this.refillTo(Date.now(), cfg);
        // Taking may leave the level below 0 (a grant reported after its lease was taken back); giving back stops at capacity.
        this.bucket = units >= 0 ? { level: this.bucket.level - units, updatedAt: this.bucket.updatedAt } : giveBack(this.bucket, -units, cfg);
      },
      record: (events) => {
        this.queueUsage(events);
        return this.lastSeq;
      },
      lastSeq: () => this.lastSeq,
      source: (cfg) => `${cfg.id}:${this.epoch}`,
      wakeAt: (at) => this.ensureAlarm(at),
    });
    this.migrateOutbox();
    this.migrateSnapshots();
    this.denials = this.sql.exec<{ value: number }>("SELECT value FROM counters WHERE name = 'denials'").toArray()[0]?.value ?? 0;
    this.savedDenials = this.denials;
    const row = this.sql.exec<{ level: number; updated_at: number; config: string; outbox_seq: number }>(
      "SELECT level, updated_at, config, outbox_seq FROM bucket WHERE id = 1",
    ).toArray()[0];
    this.lastSeq = Math.max(row?.outbox_seq ?? 0, this.sql.exec<{ n: number | null }>("SELECT MAX(seq) AS n FROM usage_outbox").one().n ?? 0);
    if (row) {
      this.config = JSON.parse(row.config) as PoolConfig;
      this.bucket = { level: row.level, updatedAt: row.updated_at };
      // A consume after the bucket row's last write left the newer level on its outbox row.
      const snapshot = this.sql.exec<{ level: number; updated_at: number }>(
        "SELECT level, updated_at FROM usage_outbox WHERE seq > ? AND level IS NOT NULL ORDER BY seq DESC LIMIT 1",
        row.outbox_seq,
      ).toArray()[0];
      if (snapshot) this.bucket = { level: snapshot.level, updatedAt: snapshot.updated_at };
    }
    void ctx.blockConcurrencyWhile(async () => {
      this.alarmAt = await ctx.storage.getAlarm();
    });
  }

  /** Liveness probe for /health. */
  ping(): string {
    return "pong";
  }

  availability(config: PoolConfig, caller: Caller | null): Availability {
    const cfg = this.adopt(config);
    const now = Date.now();
    this.refillTo(now, cfg);
    const access = caller ? accessFor(cfg, caller) : { allowed: true as const, protectedUnits: 0 };
    const available = access.allowed && cfg.status === "active" ? Math.max(0, Math.floor(this.bucket.level - access.protectedUnits + 1e-9)) : 0;
    const reserved = this.sql.exec<{ n: number }>(
      "SELECT COALESCE(SUM(amount), 0) AS n FROM reservations WHERE status = 'held'",
    ).one().n;
    const outbox = this.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM usage_outbox").one().n;
    return {
      pool: cfg.id,
      level: round3(this.bucket.level),
      capacity: cfg.capacity,
      refillPerSec: cfg.refillPerSec,
      available,
      utilization: cfg.capacity > 0 ? round3(1 - this.bucket.level / cfg.capacity) : 0,
      reserved,
      leased: this.leases.leased(),
      outbox,
      denials: this.denials,
    };
  }

  check(config: PoolConfig, caller: Caller, amount: number): Result<CheckResult> {
    const cfg = this.adopt(config);
    const admitted = this.admit(cfg, caller, amount, Date.now());
    if (!admitted.ok && admitted.error.code !== "rate_limited") return admitted;
    // A draining or disabled pool grants nothing new, whatever its level.
    const leased = this.leases.leased();
    if (cfg.status !== "active") return { ok: true, value: { pool: cfg.id, allowed: false, available: 0, leased, retryAfterMs: null } };
    if (admitted.ok) return { ok: true, value: { pool: cfg.id, allowed: true, available: admitted.value, leased, retryAfterMs: 0 } };
    const d = admitted.error.details as { available: number; retry_after_ms: number | null };
    return { ok: true, value: { pool: cfg.id, allowed: false, available: d.available, leased, retryAfterMs: d.retry_after_ms } };
  }

  /**
   * Consume, as every consume reaches the object (consumeAt in src/services/pools.ts): many in one call,
   * decided one after the other in the order given, each answered on its own (a denial stops nothing
   * else), with one commit for them all. Primitives in and a tuple out per consume, and in place of the
   * configuration the version of it that this object already holds: structured-cloning the
   * configuration, caller and answer objects across the call cost about 6% of a consume's CPU.
   * null: this object holds an older configuration (or none), and nothing was spent; call again with it.
   */
  spend(config: PoolConfig | number, items: SpendItem[]): Array<Spent | Failure> | null {
    const cfg = this.current(config);
    if (!cfg) return null;
    const source = `${cfg.id}:${this.epoch}`;
    return items.map(([clientId, tier, via, amount, requestId, idempotencyKey]) => {
      const before = this.lastSeq;
      const r = this.consumeWith(cfg, { clientId, tier, via }, { amount, requestId: requestId ?? undefined, idempotencyKey: idempotencyKey ?? undefined });
      // A replayed answer wrote no event: seq 0.
      return r.ok ? [r.value.eventId, r.value.costNano, r.value.remaining, this.lastSeq === before ? 0 : this.lastSeq, source] : r;
    });
  }

  /**
   * A token lease exchange with one holder (an isolate): record the consumes it granted from its lease,
   * take back what it returns, and lend it more (at most a fair share of what is left). Configuration
   * as spend() takes it; null: send the configuration itself. See src/objects/pool-leases.ts.
   */
  lease(config: PoolConfig | number, x: LeaseExchange): LeaseAnswer | null {
    const cfg = this.current(config);
    if (!cfg) return null;
    const answer = this.leases.exchange(cfg, x, Date.now());
    this.saveBucket();
    return answer;
  }

  /** The configuration a call names: adopted when given whole, else ours when it is at least that version. */
  private current(config: PoolConfig | number): PoolConfig | null {
    return typeof config !== "number" ? this.adopt(config) : this.config && this.config.version >= config ? this.config : null;
  }

  private consumeWith(cfg: PoolConfig, caller: Caller, opts: SpendOptions): Result<ConsumeResult> {
    return this.idempotent(caller, "consume", opts, () => {
      const now = Date.now();
      const admitted = this.admit(cfg, caller, opts.amount, now, true);
      if (!admitted.ok) {
        this.saveDenials();
        return admitted;
      }
      this.bucket = take(this.bucket, opts.amount);
      const event = this.usageEvent(cfg, caller, opts.requestId ?? null, "consume", opts.amount, now);
      // One write: the event, carrying the bucket's new level (no separate bucket UPDATE).
      this.queueUsage([event], true);
      return {
        ok: true,
        value: { pool: cfg.id, eventId: event.eventId, units: opts.amount, costNano: event.costNano, remaining: this.whole() },
      };
    });
  }

  reserve(config: PoolConfig, caller: Caller, opts: ReserveOptions): Result<ReserveResult> {
    const cfg = this.adopt(config);
    const item = { caller, amount: opts.amount, ttlMs: opts.ttlMs, requestId: opts.requestId ?? null, id: opts.reservationId };
    return this.idempotent(caller, "reserve", opts, () => this.reserveBatch(cfg, [item])[0]!);
  }

  /**
   * Reserve for many requests in one call (the scheduler's batched admission), in the order given.
   * Each item is answered on its own; one denial does not stop the others.
   */
  reserveMany(config: PoolConfig, items: BatchReserveItem[]): Result<ReserveResult>[] {
    return this.reserveBatch(this.adopt(config), items);
  }

  /**
   * Settle a reservation: consume `actualUsed` (default 0) and refund the rest. Using more than was
   * reserved is refused; the caller should have reserved enough. Only the holder's client may settle.
   */
  release(config: PoolConfig, caller: Caller, reservationId: string, actualUsed = 0): Result<ReleaseResult> {
    const r = this.releaseMany(config, [{ caller, reservationId, actualUsed }])[0]!;
    // Its event, if any, is the last one written.
    if (r.ok && r.value.eventId) Object.assign(r.value, { seq: this.lastSeq, source: `${r.value.pool}:${this.epoch}` });
    return r;
  }

  /**
   * Settle many reservations in one call (the scheduler's batched settlement), as `release` each, in
   * order: one read for all the reservations named, decisions in memory, then one write per kind of change.
   */
  releaseMany(config: PoolConfig, items: BatchReleaseItem[]): Result<ReleaseResult>[] {
    const cfg = this.adopt(config);
    const now = Date.now();
    const rows = new Map(this.sql.exec<ReservationRow>(
      "SELECT * FROM reservations WHERE id IN (SELECT value FROM json_each(?))",
      JSON.stringify(items.map((item) => item.reservationId)),
    ).toArray().map((row) => [row.id, row]));
    this.refillTo(now, cfg);
    const changes: Settlements = { expired: [], released: [], events: [] };
    const results = items.map((item) => this.settle(cfg, rows.get(item.reservationId), item, now, changes));
    if (changes.expired.length + changes.released.length === 0) return results;
    this.markExpired(changes.expired, now);
    if (changes.released.length) {
      this.sql.exec(
        `UPDATE reservations SET status = 'released', settled_at = ?, consumed = s.value ->> '$.consumed'
         FROM json_each(?) AS s WHERE reservations.id = s.value ->> '$.id'`,
        now, JSON.stringify(changes.released),
      );
    }
    this.queueUsage(changes.events);
    this.saveBucket();
    if (this.waits.size > 0) this.wakeWaiters(now);
    return results;
  }

  /** Units came back: wake every scheduler shard with a request waiting here, so the first in line takes them. */
  private wakeWaiters(now: number): void {
    for (const shard of this.waits.waitingShards(now)) {
      this.ctx.waitUntil(this.env.SCHEDULER.get(this.env.SCHEDULER.idFromName(shard)).wake().catch(() => undefined));
    }
  }

  /**
   * Adopt a configuration pushed by an admin change or a resize (when newer than ours) and answer the
   * live state, so that a change applies here at once rather than when callers' caches expire.
   */
  configure(config: PoolConfig): PoolState {
    const cfg = this.adopt(config);
    this.expireDue(Date.now(), cfg);
    return this.state(cfg);
  }

  /**
   * A newly created pool: start from a full bucket under `config`, whatever this object held before (a
   * deleted pool of the same name). Its version continues past the one held, so that callers still
   * caching the deleted pool's configuration cannot bring it back; the caller records the version answered.
   */
  install(config: PoolConfig): PoolState {
    const prior = this.config;
    const version = prior && prior.version >= config.version ? prior.version + 1 : config.version;
    const cfg = { ...config, version };
    this.config = cfg;
    this.bucket = { level: cfg.capacity, updatedAt: Date.now() };
    this.saveConfig(cfg);
    this.lowReported = null;
    return this.state(cfg);
  }

  /**
   * Retire this pool (it is being deleted): refused with pool_busy while reservations are active.
   * Otherwise it takes no more spending (its configuration becomes disabled, at its version, so stale
   * callers are refused too) and its outbox is delivered. The check and the switch are one step.
   */
  async retire(config: PoolConfig): Promise<Result<PoolState>> {
    const cfg = this.adopt(config);
    const now = Date.now();
    this.expireDue(now, cfg);
    const state = this.state(cfg);
    if (state.activeReservations > 0) {
      return fail("pool_busy", `pool ${cfg.id} has ${state.activeReservations} active reservation(s)`, {
        pool: cfg.id, active_reservations: state.activeReservations, reserved_units: state.reservedUnits,
      });
    }
    const retired: PoolConfig = { ...cfg, status: "disabled" };
    this.config = retired;
    this.saveConfig(retired);
    await this.flushOutbox();
    return { ok: true, value: this.state(retired) };
  }

  /** Deliver the outbox to D1 now (cron backstop, tests). Returns how many events were delivered. */
  async flush(): Promise<number> {
    return this.flushOutbox();
  }

  override async alarm(): Promise<void> {
    this.alarmAt = null;
    const now = Date.now();
    if (this.config) {
      const due = this.sql.exec<ReservationRow>(
        "SELECT * FROM reservations WHERE status = 'held' AND expires_at <= ?", now,
      ).toArray();
      this.expire(due, now, this.config);
      if (due.length) log.info("reservations_expired", { pool: this.config.id, count: due.length });
      const reclaimed = this.leases.reclaim(this.config, now);
      if (reclaimed > 0) {
        this.saveBucket();
        log.info("leases_reclaimed", { pool: this.config.id, units: reclaimed });
      }
    }
    this.sql.exec("DELETE FROM idempotency WHERE created_at < ?", now - IDEMPOTENCY_TTL_MS);
    // Settled reservations answer a late release with reservation_closed for a day, then are forgotten
    // (one row per dispatched request would otherwise stay forever). Served by the (status, expires_at) index.
    this.sql.exec("DELETE FROM reservations WHERE status IN ('released', 'expired') AND expires_at < ?", now - SETTLED_RETENTION_MS);
    await this.flushOutbox();
    await this.reportLevel();
    this.scheduleNext(Date.now());
  }

  // --- internals -------------------------------------------------------------------------------

  /** Adopt the caller's configuration when it is newer than ours; the bucket starts full. */
  private adopt(config: PoolConfig): PoolConfig {
    const current = this.config;
    if (current && current.version >= config.version) return current;
    const now = Date.now();
    if (current) {
      this.refillTo(now, current);
      // Capacity added is available at once (a resize up serves waiting work now); a cut clamps the level.
      const added = Math.max(0, config.capacity - current.capacity);
      this.bucket = { level: Math.min(this.bucket.level + added, config.capacity), updatedAt: now };
    } else {
      this.bucket = { level: config.capacity, updatedAt: now };
    }
    this.config = config;
    this.saveConfig(config);
    return config;
  }

  private saveConfig(config: PoolConfig): void {
    this.sql.exec(
      `INSERT INTO bucket (id, level, updated_at, config, outbox_seq) VALUES (1, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET level = excluded.level, updated_at = excluded.updated_at, config = excluded.config,
         outbox_seq = excluded.outbox_seq`,
      this.bucket.level, this.bucket.updatedAt, JSON.stringify(config), this.lastSeq,
    );
  }

  private state(cfg: PoolConfig): PoolState {
    this.refillTo(Date.now(), cfg);
    const held = this.sql.exec<{ n: number; units: number }>(
      "SELECT COUNT(*) AS n, COALESCE(SUM(amount), 0) AS units FROM reservations WHERE status = 'held'",
    ).one();
    return {
      pool: cfg.id,
      version: cfg.version,
      status: cfg.status,
      level: round3(this.bucket.level),
      capacity: cfg.capacity,
      utilization: cfg.capacity > 0 ? round3(1 - this.bucket.level / cfg.capacity) : 0,
      reservedUnits: held.units,
      activeReservations: held.n,
      outbox: this.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM usage_outbox").one().n,
      denials: this.denials,
      leasedUnits: this.leases.leased(),
      leaseHolders: this.leases.holders(Date.now()),
    };
  }

  /** Expire reservations past their time now (as the alarm would), so counts of active ones are exact. */
  private expireDue(now: number, cfg: PoolConfig): void {
    const due = this.sql.exec<ReservationRow>("SELECT * FROM reservations WHERE status = 'held' AND expires_at <= ?", now).toArray();
    this.expire(due, now, cfg);
  }

  /**
   * Whether `amount` may be taken by `caller` now. On success the value is what the caller could take.
   * Refills the bucket to `now` as a side effect (in memory; persisted by the caller's write).
   */
  private admit(cfg: PoolConfig, caller: Caller, amount: number, now: number, spending = false): Result<number> {
    if (spending && cfg.status !== "active") return fail("pool_inactive", `pool ${cfg.id} is ${cfg.status}`);
    const access = accessFor(cfg, caller);
    if (!access.allowed) return fail("pool_forbidden", `pool ${cfg.id} is dedicated to another client`);
    const ceiling = cfg.capacity - access.protectedUnits;
    if (amount > ceiling + 1e-9) {
      return fail("amount_exceeds_capacity", `pool ${cfg.id} can never grant ${amount} ${cfg.unit} to this caller`, {
        pool: cfg.id, requested: amount, max: Math.floor(ceiling + 1e-9),
      });
    }
    this.refillTo(now, cfg);
    const available = this.bucket.level - access.protectedUnits;
    if (fits(available, amount)) return { ok: true, value: Math.floor(available + 1e-9) };
    const retryAfterMs = msUntil(this.bucket.level, amount + access.protectedUnits, cfg);
    if (spending) {
      this.denials += 1;
      this.kickScaling(cfg, now);
    }
    return fail("rate_limited", `pool ${cfg.id} has ${Math.max(0, Math.floor(available + 1e-9))} ${cfg.unit} for ${amount} requested`, {
      pool: cfg.id,
      requested: amount,
      available: Math.max(0, Math.floor(available + 1e-9)),
      retry_after_ms: retryAfterMs,
      available_at: retryAfterMs === null ? null : now + retryAfterMs,
    });
  }

  /**
   * Decide each item in order against the bucket in memory (nothing here awaits, so no call interleaves),
   * then write every granted reservation in one statement and the bucket once.
   */
  private reserveBatch(cfg: PoolConfig, items: BatchReserveItem[]): Result<ReserveResult>[] {
    const now = Date.now();
    const granted: NewReservation[] = [];
    const results = items.map((item): Result<ReserveResult> => {
      // Another shard's request goes first: keep the units for it (./pool-waiters.ts).
      const ahead = item.wait ? this.waits.aheadOf(item.wait, now) : null;
      if (ahead) {
        this.waits.refused(item.wait!, item.amount, now);
        return heldBack(cfg.id, item.amount, this.whole(), ahead, now);
      }
      const admitted = this.admit(cfg, item.caller, item.amount, now, true);
      if (!admitted.ok) {
        if (item.wait && admitted.error.code === "rate_limited") this.waits.refused(item.wait, item.amount, now);
        return admitted;
      }
      if (item.wait) this.waits.granted(item.wait, item.amount);
      this.bucket = take(this.bucket, item.amount);
      const id = item.id ?? newId("reservation", now);
      const expiresAt = now + item.ttlMs;
      granted.push({ id, clientId: item.caller.clientId, requestId: item.requestId, via: item.caller.via, amount: item.amount, expiresAt });
      return { ok: true, value: { pool: cfg.id, reservationId: id, amount: item.amount, expiresAt, remaining: this.whole() } };
    });
    this.saveDenials();
    if (granted.length === 0) return results;
    this.sql.exec(
      `INSERT INTO reservations (id, client_id, request_id, via, amount, status, created_at, expires_at)
       SELECT value ->> '$.id', value ->> '$.clientId', value ->> '$.requestId', value ->> '$.via', value ->> '$.amount', 'held', ?, value ->> '$.expiresAt'
       FROM json_each(?)`,
      now, JSON.stringify(granted),
    );
    this.saveBucket();
    this.ensureAlarm(granted.reduce((t, r) => Math.min(t, r.expiresAt), Infinity));
    return results;
  }

  /**
   * One settlement of a batch, decided against the batch's copy of its row (`undefined`: not found). The
   * row's status is updated in that copy, so an id named twice in a batch sees its first settlement.
   */
  private settle(cfg: PoolConfig, row: ReservationRow | undefined, item: BatchReleaseItem, now: number, changes: Settlements): Result<ReleaseResult> {
    const { caller, reservationId, actualUsed } = item;
    if (!row || row.client_id !== caller.clientId) {
      return fail("reservation_not_found", `no reservation ${reservationId} in pool ${cfg.id}`);
    }
    if (row.status === "held" && row.expires_at <= now) {
      this.refundExpired(row, cfg);
      changes.expired.push(row.id);
    }
    if (row.status !== "held") {
      return fail("reservation_closed", `reservation ${reservationId} is ${row.status}`, { status: row.status });
    }
    if (actualUsed > row.amount) {
      return fail("validation_failed", "actual_used exceeds the reserved amount", {
        fields: [{ path: "actual_used", message: `must be at most ${row.amount}` }],
      });
    }
    const refunded = row.amount - actualUsed;
    this.bucket = giveBack(this.bucket, refunded, cfg);
    row.status = "released";
    changes.released.push({ id: row.id, consumed: actualUsed });
    const event = actualUsed > 0
      ? this.usageEvent(cfg, { clientId: row.client_id, tier: caller.tier, via: row.via }, row.request_id, "reservation", actualUsed, now)
      : null;
    if (event) changes.events.push(event);
    return {
      ok: true,
      value: {
        pool: cfg.id, reservationId, consumed: actualUsed, refunded,
        costNano: event?.costNano ?? 0, eventId: event?.eventId ?? null, at: now,
      },
    };
  }

  /**
   * A dynamic pool ran dry: ask its scaling policy to evaluate now, off the hot path, at most once per
   * SCALING_KICK_MIN_MS and not again before the cooldown the evaluation reports.
   */
  private kickScaling(cfg: PoolConfig, now: number): void {
    if (cfg.sizing !== "dynamic" || cfg.status !== "active" || now < this.scalingKickAfter) return;
    this.scalingKickAfter = now + SCALING_KICK_MIN_MS;
    this.ctx.waitUntil(evaluatePoolScaling(this.env, cfg.id, "pool_dry", now).then(
      (outcome) => {
        if (outcome?.cooldown_until) this.scalingKickAfter = Math.max(this.scalingKickAfter, outcome.cooldown_until);
      },
      (err: unknown) => log.warn("scaling_kick_failed", { pool: cfg.id, error: String(err) }),
    ));
  }

  /** For /metrics: written by the spending call that counted them (once per batch), so the count survives restarts. */
  private saveDenials(): void {
    if (this.denials === this.savedDenials) return;
    this.sql.exec(
      "INSERT INTO counters (name, value) VALUES ('denials', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
      this.denials,
    );
    this.savedDenials = this.denials;
  }

  private refillTo(now: number, cfg: PoolConfig): void {
    this.bucket = refill(this.bucket, cfg, now);
  }

  private whole(): number {
    return Math.floor(this.bucket.level + 1e-9);
  }

  /** Write the bucket row; it then supersedes every level carried by the outbox rows written so far. */
  private saveBucket(): void {
    this.sql.exec("UPDATE bucket SET level = ?, updated_at = ?, outbox_seq = ? WHERE id = 1", this.bucket.level, this.bucket.updatedAt, this.lastSeq);
  }

  /** Expire held reservations past their time (the alarm's sweep): refund each, then write them at once. */
  private expire(rows: ReservationRow[], now: number, cfg: PoolConfig): void {
    if (rows.length === 0) return;
    this.refillTo(now, cfg);
    for (const row of rows) this.refundExpired(row, cfg);
    this.markExpired(rows.map((row) => row.id), now);
    this.saveBucket();
  }

  /** Give an expired reservation's units back, in memory; the caller writes it with markExpired. */
  private refundExpired(row: ReservationRow, cfg: PoolConfig): void {
    this.bucket = giveBack(this.bucket, row.amount, cfg);
    row.status = "expired";
  }

  private markExpired(ids: string[], now: number): void {
    if (ids.length === 0) return;
    // `+status`: look the rows up by id, not through the status index (which would visit every held row).
    this.sql.exec(
      `UPDATE reservations SET status = 'expired', settled_at = ?, consumed = 0
       WHERE id IN (SELECT value FROM json_each(?)) AND +status = 'held'`,
      now, JSON.stringify(ids),
    );
  }

  private usageEvent(cfg: PoolConfig, caller: Caller, requestId: string | null, kind: UsageEvent["kind"], units: number, at: number): UsageEvent {
    return {
      eventId: newId("event", at),
      poolId: cfg.id,
      clientId: caller.clientId,
      requestId,
      via: caller.via,
      kind,
      units,
      costNano: costOf(units, cfg.costPerUnitNano),
      at,
    };
  }

  /** Objects made before usage_outbox kept their outbox keyed by event id: move what waits there, in order. */
  private migrateOutbox(): void {
    if (this.sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'").toArray().length === 0) return;
    this.sql.exec("INSERT INTO usage_outbox (payload) SELECT payload FROM outbox ORDER BY created_at, event_id");
    this.sql.exec("DROP TABLE outbox");
  }

  /**
   * Objects made before the outbox carried the bucket's level: add the columns (null: no level) and
   * the bucket row's mark of the last outbox row it supersedes.
   */
  private migrateSnapshots(): void {
    const has = (table: string, column: string) =>
      this.sql.exec("SELECT 1 FROM pragma_table_info(?) WHERE name = ?", table, column).toArray().length > 0;
    if (!has("usage_outbox", "level")) {
      this.sql.exec("ALTER TABLE usage_outbox ADD COLUMN level REAL");
      this.sql.exec("ALTER TABLE usage_outbox ADD COLUMN updated_at INTEGER");
    }
    if (!has("bucket", "outbox_seq")) this.sql.exec("ALTER TABLE bucket ADD COLUMN outbox_seq INTEGER NOT NULL DEFAULT 0");
  }

  /**
   * Put events in the outbox in one statement (each payload stored as written here) for the alarm to
   * deliver. `withLevel` (a single consume): the row also carries the bucket as it is now, in place of
   * a bucket UPDATE; the caller writes the bucket row otherwise.
   */
  private queueUsage(events: UsageEvent[], withLevel = false): void {
    if (events.length === 0) return;
    if (events.length === 1) {
      // The hot path (one consume): a plain insert, without building and walking a JSON array.
      const [event] = events as [UsageEvent];
      this.lastSeq += 1;
      if (withLevel) {
        this.sql.exec(
          "INSERT INTO usage_outbox (seq, payload, level, updated_at) VALUES (?, ?, ?, ?)",
          this.lastSeq, JSON.stringify(event), this.bucket.level, this.bucket.updatedAt,
        );
      } else {
        this.sql.exec("INSERT INTO usage_outbox (seq, payload) VALUES (?, ?)", this.lastSeq, JSON.stringify(event));
      }
    } else {
      this.sql.exec(
        "INSERT INTO usage_outbox (seq, payload) SELECT ? + key, value FROM json_each(?) ORDER BY key",
        this.lastSeq + 1, JSON.stringify(events.map((event) => JSON.stringify(event))),
      );
      this.lastSeq += events.length;
      if (withLevel) this.saveBucket();
    }
    const at = events.reduce((t, e) => Math.min(t, e.at), Infinity);
    this.ensureAlarm(at + this.flushDelay());
  }

  /**
   * Replay the stored answer for a repeated idempotency key (same parameters), refuse it for different
   * parameters, or run `fn` and store its answer. Denials are not stored: a retry may succeed later.
   */
  private idempotent<T>(caller: Caller, op: string, opts: SpendOptions & { ttlMs?: number }, fn: () => Result<T>): Result<T> {
    if (!opts.idempotencyKey) return fn();
    const key = `${caller.clientId}:${op}:${opts.idempotencyKey}`;
    const fingerprint = JSON.stringify([opts.amount, opts.requestId ?? null, opts.ttlMs ?? null]);
    const prior = this.sql.exec<{ fingerprint: string; response: string }>(
      "SELECT fingerprint, response FROM idempotency WHERE key = ?", key,
    ).toArray()[0];
    if (prior) {
      if (prior.fingerprint !== fingerprint) {
        return fail("idempotency_conflict", "idempotency key reused with different parameters", { idempotency_key: opts.idempotencyKey });
      }
      return JSON.parse(prior.response) as Result<T>;
    }
    const result = fn();
    if (result.ok) {
      this.sql.exec(
        "INSERT INTO idempotency (key, fingerprint, response, created_at) VALUES (?, ?, ?, ?)",
        key, fingerprint, JSON.stringify(result), Date.now(),
      );
    }
    return result;
  }

  private async flushOutbox(): Promise<number> {
    if (this.flushing) return 0;
    this.flushing = true;
    let delivered = 0;
    try {
      for (;;) {
        const rows = this.sql.exec<{ seq: number; payload: string }>(
          "SELECT seq, payload FROM usage_outbox ORDER BY seq LIMIT ?", FLUSH_BATCH,
        ).toArray();
        if (rows.length === 0) break;
        const parsed = rows.map((r) => ({ seq: r.seq, event: JSON.parse(r.payload) as UsageEvent }));
        const events = parsed.map((r) => r.event);
        await this.reportSpend(parsed);
        await insertUsageEvents(this.env.DB, events);
        // Events queued while D1 answered come after these: the batch is a prefix of the table. The
        // rows may carry the bucket's latest level: write the bucket row first (same transaction).
        this.saveBucket();
        this.sql.exec("DELETE FROM usage_outbox WHERE seq <= ?", rows[rows.length - 1]!.seq);
        delivered += rows.length;
      }
      this.flushFailures = 0;
      if (delivered > 0) {
        const now = Date.now();
        this.outboxRate = (delivered * 1000) / Math.max(now - this.lastFlushAt, settings(this.env).USAGE_FLUSH_DELAY_MS);
        this.lastFlushAt = now;
      }
    } catch (err) {
      this.flushFailures += 1;
      const backoff = Math.min(MAX_FLUSH_BACKOFF_MS, 500 * 2 ** this.flushFailures);
      log.warn("usage_flush_failed", { pool: this.config?.id, attempt: this.flushFailures, retry_in_ms: backoff, error: String(err) });
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
    const source = `${pool}:${this.epoch}`;
    await Promise.all([...byClient].map(async ([clientId, list]) => {
      const stub = this.env.CLIENT.get(this.env.CLIENT.idFromName(clientId));
      await stub.recordPoolSpend(await budgetLimit(this.env, clientId), source, pool, list);
    }));
  }

  /**
   * Raise the pool_low alert when this pool is below its low-water percent (default 10%) of capacity,
   * and resolve it when it is not (or the pool is disabled), from the alarm that follows spending (never on the hot path). D1 is written only when the state
   * changes; the cron pass re-checks every pool.
   */
  private async reportLevel(): Promise<void> {
    if (!this.config) return;
    this.refillTo(Date.now(), this.config);
    const threshold = this.config.lowWaterPercent ?? POOL_LOW_PERCENT;
    // A disabled (or deleted) pool takes no spending, so how full it is concerns no one.
    const disabled = this.config.status === "disabled";
    const low = !disabled && this.bucket.level * 100 < this.config.capacity * threshold;
    if (low === this.lowReported) return;
    const decision: AlertDecision = disabled
      ? { raise: [], clear: [{ kind: "pool_low", subject: this.config.id }] }
      : poolAlerts([{ id: this.config.id, level: Math.floor(this.bucket.level + 1e-9), capacity: this.config.capacity, lowWaterPercent: threshold }]);
    try {
      await applyAlerts(this.env, decision, Date.now());
      this.lowReported = low;
    } catch (err) {
      log.warn("pool_alert_failed", { pool: this.config.id, error: String(err) });
    }
  }

  /** Make sure an alarm fires no later than `at`. */
  private ensureAlarm(at: number): void {
    // An alarm already due no later than `at` will do, unless it is overdue (a failed alarm waits in
    // the runtime's retry backoff): then set it again.
    if (this.alarmAt !== null && this.alarmAt <= at && this.alarmAt >= Date.now() - 1000) return;
    this.alarmAt = at;
    void this.ctx.storage.setAlarm(at);
  }

  /** After an alarm: wake for the next reservation expiry, or soon if events are still waiting. */
  private scheduleNext(now: number): void {
    const next = this.sql.exec<{ t: number | null }>(
      "SELECT MIN(expires_at) AS t FROM reservations WHERE status = 'held'",
    ).one().t;
    if (next !== null) this.ensureAlarm(Math.max(next, now));
    const leaseDue = this.leases.nextDue();
    if (leaseDue !== null) this.ensureAlarm(Math.max(leaseDue, now));
    const pending = this.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM usage_outbox").one().n;
    if (pending > 0 && this.flushFailures === 0) this.ensureAlarm(now + this.flushDelay());
  }

  /** How long events wait before delivery: USAGE_FLUSH_DELAY_MS when busy, up to USAGE_FLUSH_MAX_MS when quiet (src/domain/flush.ts). */
  private flushDelay(): number {
    const { USAGE_FLUSH_DELAY_MS: base, USAGE_FLUSH_MAX_MS: max } = settings(this.env);
    return flushDelay(this.outboxRate, base, max ?? base);
  }
}

interface ReservationRow {
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
  released: Array<{ id: string; consumed: number }>;
  events: UsageEvent[];
}

function fail(code: ErrorBody["code"], message: string, details?: Record<string, unknown>): Failure {
  return { ok: false, error: details ? { code, message, details } : { code, message } };
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}
