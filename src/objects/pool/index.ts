import { DurableObject } from "cloudflare:workers";
import { giveBack } from "../../domain/bucket";
import { accessFor } from "../../domain/sharing";
import type { Caller, PoolConfig } from "../../domain/types";
import { log } from "../../log";
import { AlarmClock } from "../alarm";
import { LeaseBook } from "./leases";
import { LevelAlert } from "./level-alert";
import { Outbox } from "./outbox";
import { Reservations } from "./reservations";
import { fail, round3 } from "./results";
import { Spending } from "./spending";
import { PoolStore } from "./store";
import type {
  Availability, BatchReleaseItem, BatchReserveItem, CheckResult, Failure, LeaseAnswer, LeaseExchange, PoolState, ReleaseResult,
  ReserveOptions, ReserveResult, Result, Spent, SpendItem,
} from "./types";

const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;

/**
 * One pool's limit owner: its token bucket, reservations, idempotency records and usage outbox.
 * Every method that decides a limit is synchronous (SQLite storage only), so calls cannot interleave
 * inside a decision. The outbox is delivered to D1 by alarm, never on the hot path.
 *
 * This class is the host: it owns the storage and the alarm, wires the collaborators (one file each
 * beside it: ./store.ts, ./spending.ts, ./reservations.ts, ./leases.ts, ./outbox.ts, ./level-alert.ts)
 * and answers RPC by delegating to them. Its contract is ./types.ts.
 */
export class PoolObject extends DurableObject<Env> {
  private readonly store: PoolStore;
  private readonly spending: Spending;
  private readonly reservations: Reservations;
  /** Token leases lent to isolates (./leases.ts). */
  private readonly leases: LeaseBook;
  private readonly outbox: Outbox;
  private readonly levelAlert: LevelAlert;
  /** Time of the alarm we know to be set, to avoid rewriting it on every spend. */
  private readonly clock: AlarmClock;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.clock = new AlarmClock(ctx.storage, "pool");
    const store = (this.store = new PoolStore(ctx.storage.sql, {
      ensureAlarm: (at) => this.clock.ensure(at),
      flushDelay: () => this.outbox.delay(),
    }));
    this.leases = new LeaseBook(store.sql, {
      level: (now, cfg) => {
        store.refillTo(now, cfg);
        return store.whole();
      },
      shift: (units, cfg) => {
        store.refillTo(Date.now(), cfg);
        // Taking may leave the level below 0 (a grant reported after its lease was taken back); giving back stops at capacity.
        store.bucket = units >= 0 ? { level: store.bucket.level - units, updatedAt: store.bucket.updatedAt } : giveBack(store.bucket, -units, cfg);
      },
      record: (events) => {
        store.queueUsage(events);
        return store.lastSeq;
      },
      lastSeq: () => store.lastSeq,
      source: (cfg) => store.source(cfg.id),
      wakeAt: (at) => this.clock.ensure(at),
      othersWaiting: (shard, now) => this.reservations.othersWaiting(shard, now),
    });
    store.load();
    this.spending = new Spending(env, ctx, store);
    this.reservations = new Reservations(env, store, {
      admit: (cfg, caller, amount, now, spending) => this.spending.admit(cfg, caller, amount, now, spending),
      ensureAlarm: (at) => this.clock.ensure(at),
      waitUntil: (promise) => ctx.waitUntil(promise),
    });
    this.outbox = new Outbox(env, store, (at) => this.clock.ensure(at));
    this.levelAlert = new LevelAlert(env, store);
    void ctx.blockConcurrencyWhile(async () => {
      await this.clock.load();
    });
  }

  /** Liveness probe for /health. */
  ping(): string {
    return "pong";
  }

  availability(config: PoolConfig, caller: Caller | null): Availability {
    const store = this.store;
    const cfg = store.adopt(config);
    const now = Date.now();
    store.refillTo(now, cfg);
    const access = caller ? accessFor(cfg, caller) : { allowed: true as const, protectedUnits: 0 };
    const available = access.allowed && cfg.status === "active" ? Math.max(0, Math.floor(store.bucket.level - access.protectedUnits + 1e-9)) : 0;
    const reserved = this.reservations.heldUnits();
    const outbox = store.outboxSize();
    return {
      pool: cfg.id,
      level: round3(store.bucket.level),
      capacity: cfg.capacity,
      refillPerSec: cfg.refillPerSec,
      available,
      utilization: cfg.capacity > 0 ? round3(1 - store.bucket.level / cfg.capacity) : 0,
      reserved,
      leased: this.leases.leased(),
      outbox,
      denials: store.denials,
    };
  }

  check(config: PoolConfig, caller: Caller, amount: number): Result<CheckResult> {
    return this.spending.check(this.store.adopt(config), caller, amount, () => this.leases.leased());
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
    const cfg = this.store.current(config);
    if (!cfg) return null;
    return this.spending.spend(cfg, items);
  }

  /**
   * A token lease exchange with one holder (an isolate): record the consumes it granted from its lease,
   * take back what it returns, and lend it more (at most a fair share of what is left). Configuration
   * as spend() takes it; null: send the configuration itself. See ./leases.ts.
   */
  lease(config: PoolConfig | number, x: LeaseExchange): LeaseAnswer | null {
    const cfg = this.store.current(config);
    if (!cfg) return null;
    const now = Date.now();
    const answer = this.leases.exchange(cfg, x, now);
    this.store.saveBucket();
    if (x.returned > 0 || x.close) this.reservations.unitsBack(now);
    return answer;
  }

  reserve(config: PoolConfig, caller: Caller, opts: ReserveOptions): Result<ReserveResult> {
    const cfg = this.store.adopt(config);
    const item = { caller, amount: opts.amount, ttlMs: opts.ttlMs, requestId: opts.requestId ?? null, id: opts.reservationId };
    return this.store.idempotent(caller, "reserve", opts, () => this.reservations.reserveBatch(cfg, [item])[0]!);
  }

  /**
   * Reserve for many requests in one call (the scheduler's batched admission), in the order given.
   * Each item is answered on its own; one denial does not stop the others.
   */
  reserveMany(config: PoolConfig, items: BatchReserveItem[]): Result<ReserveResult>[] {
    return this.reservations.reserveBatch(this.store.adopt(config), items);
  }

  /**
   * Settle a reservation: consume `actualUsed` (default 0) and refund the rest. Using more than was
   * reserved is refused; the caller should have reserved enough. Only the holder's client may settle.
   */
  release(config: PoolConfig, caller: Caller, reservationId: string, actualUsed = 0): Result<ReleaseResult> {
    const r = this.releaseMany(config, [{ caller, reservationId, actualUsed }])[0]!;
    // Its event, if any, is the last one written.
    if (r.ok && r.value.eventId) Object.assign(r.value, { seq: this.store.lastSeq, source: this.store.source(r.value.pool) });
    return r;
  }

  /**
   * Settle many reservations in one call (the scheduler's batched settlement), as `release` each, in
   * order: one read for all the reservations named, decisions in memory, then one write per kind of change.
   */
  releaseMany(config: PoolConfig, items: BatchReleaseItem[]): Result<ReleaseResult>[] {
    return this.reservations.releaseBatch(this.store.adopt(config), items);
  }

  /**
   * Adopt a configuration pushed by an admin change or a resize (when newer than ours) and answer the
   * live state, so that a change applies here at once rather than when callers' caches expire.
   */
  configure(config: PoolConfig): PoolState {
    const cfg = this.store.adopt(config);
    this.reservations.expireDue(Date.now(), cfg);
    return this.state(cfg);
  }

  /**
   * A newly created pool: start from a full bucket under `config`, whatever this object held before (a
   * deleted pool of the same name). Its version continues past the one held, so that callers still
   * caching the deleted pool's configuration cannot bring it back; the caller records the version answered.
   */
  install(config: PoolConfig): PoolState {
    const store = this.store;
    const prior = store.config;
    const version = prior && prior.version >= config.version ? prior.version + 1 : config.version;
    const cfg = { ...config, version };
    store.config = cfg;
    store.bucket = { level: cfg.capacity, updatedAt: Date.now() };
    store.saveConfig(cfg);
    this.levelAlert.reset();
    return this.state(cfg);
  }

  /**
   * Retire this pool (it is being deleted): refused with pool_busy while reservations are active or
   * units are lent to scheduler shards (their requests run on them).
   * Otherwise it takes no more spending (its configuration becomes disabled, at its version, so stale
   * callers are refused too) and its outbox is delivered. The check and the switch are one step.
   */
  async retire(config: PoolConfig): Promise<Result<PoolState>> {
    const store = this.store;
    const cfg = store.adopt(config);
    const now = Date.now();
    this.reservations.expireDue(now, cfg);
    const state = this.state(cfg);
    if (state.activeReservations > 0 || state.shardLeasedUnits > 0) {
      return fail("pool_busy", `pool ${cfg.id} has ${state.activeReservations} active reservation(s) and ${state.shardLeasedUnits} unit(s) lent to scheduler shards`, {
        pool: cfg.id, active_reservations: state.activeReservations, reserved_units: state.reservedUnits, shard_leased_units: state.shardLeasedUnits,
      });
    }
    const retired: PoolConfig = { ...cfg, status: "disabled" };
    store.config = retired;
    store.saveConfig(retired);
    await this.outbox.flush();
    return { ok: true, value: this.state(retired) };
  }

  /** Deliver the outbox to D1 now (cron backstop, tests). Returns how many events were delivered. */
  async flush(): Promise<number> {
    return this.outbox.flush();
  }

  override async alarm(): Promise<void> {
    this.clock.fired();
    const store = this.store;
    const now = Date.now();
    if (store.config) {
      const expired = this.reservations.expireDue(now, store.config);
      if (expired) log.info("reservations_expired", { pool: store.config.id, count: expired });
      const reclaimed = this.leases.reclaim(store.config, now);
      if (reclaimed > 0) {
        store.saveBucket();
        log.info("leases_reclaimed", { pool: store.config.id, units: reclaimed });
      }
    }
    store.sql.exec("DELETE FROM idempotency WHERE created_at < ?", now - IDEMPOTENCY_TTL_MS);
    this.reservations.forgetSettled(now);
    await this.outbox.flush();
    await this.levelAlert.report();
    this.scheduleNext(Date.now());
  }

  // --- internals -------------------------------------------------------------------------------

  private state(cfg: PoolConfig): PoolState {
    const store = this.store;
    store.refillTo(Date.now(), cfg);
    const held = this.reservations.held();
    return {
      pool: cfg.id,
      version: cfg.version,
      status: cfg.status,
      level: round3(store.bucket.level),
      capacity: cfg.capacity,
      utilization: cfg.capacity > 0 ? round3(1 - store.bucket.level / cfg.capacity) : 0,
      reservedUnits: held.units,
      activeReservations: held.n,
      outbox: store.outboxSize(),
      denials: store.denials,
      leasedUnits: this.leases.leased(),
      leaseHolders: this.leases.holders(Date.now()),
      shardLeasedUnits: this.leases.shardUnits(),
    };
  }


  /** After an alarm: wake for the next reservation expiry, or soon if events are still waiting. */
  private scheduleNext(now: number): void {
    const next = this.reservations.nextExpiry();
    if (next !== null) this.clock.ensure(Math.max(next, now));
    const leaseDue = this.leases.nextDue();
    if (leaseDue !== null) this.clock.ensure(Math.max(leaseDue, now));
    if (this.store.outboxSize() > 0 && !this.outbox.failing()) this.clock.ensure(now + this.outbox.delay());
  }
}
