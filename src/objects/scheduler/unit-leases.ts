/**
 * Units lent to this shard by pools (decision 007): a chunk's requests take what they need of a pool
 * from the shard's slice of it, with no reservation each, and what they used goes back to the pool as
 * usage events (grants) in one exchange per settlement, under event ids fixed when the units were taken
 * (the request's row keeps them: a settlement made again, also after a restart, records nothing twice).
 *
 * A pool lends to a shard only from plenty and only while no other shard waits there
 * (../pool/leases.ts, SHARD_LEASE): when units are short, requests reserve one by one again and the pool
 * arbitrates between shards (decision 004). What a slice holds is out of the pool's bucket, so nothing is
 * granted twice. A slice lives SHARD_LEASE.TTL_MS from its last exchange at the pool, and only requests
 * whose own lease ends before that take from it; the shard exchanges at least every RENEW_MS while it
 * holds anything, and hands idle units back.
 *
 * An exchange whose answer is lost is sent again as it was (the same report number: the pool answers it
 * again and applies it once) before any other. A slice not answered for its whole life may have lapsed at
 * the pool (its units back in the bucket): it starts over under a new holder, and the use of units taken
 * before is reported apart (`late`), as is use of units taken in an earlier life of the object. The pool
 * takes such use from its bucket again; the lapsed lease gave it back.
 */
import { newId } from "../../domain/ids";
import { newMeter, observe, poolLends, rateOf, SHARD_LEASE, sliceWant, type RateMeter } from "../../domain/leases";
import type { PoolConfig } from "../../domain/types";
import { log } from "../../log";
import { poolStub } from "../pool/stub";
import type { LeaseAnswer, LeaseExchange, LeaseGrant } from "../pool/types";

interface Slice {
  cfg: PoolConfig;
  /** The holder the pool knows it by: this object's life and the slice's epoch (or `late`). */
  holder: string;
  /** A slice of use only (its units came from a lease that lapsed or belonged to an earlier life). */
  late: boolean;
  epoch: number;
  /** Units the next requests may take, and units taken by requests not settled yet. */
  free: number;
  inUse: number;
  /** Requests whose lease ends before this (local time) may take from it. */
  until: number;
  report: number;
  /** Use not reported to the pool yet. */
  grants: LeaseGrant[];
  /** An exchange sent whose answer did not come: sent again, unchanged, before any other. */
  unanswered: LeaseExchange | null;
  /** The exchange in flight, if any (one at a time). */
  exchanging: Promise<void> | null;
  /** When the pool last answered (local time; 0: never in this epoch). */
  answeredAt: number;
  pausedUntil: number;
  /** The next exchange hands the free units back (handBackFree). */
  handBack: boolean;
  /** Units taken, and requests admitted, per second. */
  meter: RateMeter;
  requests: RateMeter;
}

/** What a request's settlement reports of units it took from a slice. */
export interface LeasedUse {
  cfg: PoolConfig;
  /** The usage event id fixed when the units were taken (Held.lease). */
  eventId: string;
  clientId: string;
  tier: LeaseGrant[2];
  requestId: string;
  amount: number;
  used: number;
  costNano: number;
  at: number;
}

/** Event ids settled in this object's life, remembered (the oldest forgotten first) so a settlement made again finds its first answer. */
const SETTLED_MAX = 100_000;

export class UnitLeases {
  private readonly slices = new Map<string, Slice>();
  private readonly late = new Map<string, Slice>();
  /** Event ids handed out and not settled yet: their pool and the slice's epoch then. */
  private readonly issued = new Map<string, { pool: string; epoch: number }>();
  /** What each settled event id used and cost (a settlement made again, a cancel after a failed one, gets it). */
  private readonly settled = new Map<string, { used: number; costNano: number }>();
  /** One holder per object life: what an earlier life held lapses at the pool on its own. */
  private readonly life: string;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly env: Env, private readonly shard: string) {
    this.life = `${shard}:${newId("isolate")}`;
  }

  /** Units held now over all slices (free and in use), for tests. */
  held(): { free: number; inUse: number } {
    let free = 0;
    let inUse = 0;
    for (const s of this.slices.values()) {
      free += s.free;
      inUse += s.inUse;
    }
    return { free, inUse };
  }

  /** The configuration a slice of this pool was last used with (a settlement whose pool's configuration is gone). */
  cfgOf(pool: string): PoolConfig | undefined {
    return this.slices.get(pool)?.cfg ?? this.late.get(pool)?.cfg;
  }

  /**
   * Take `amounts` of a pool for a chunk's requests whose leases end by `leaseUntil`, in order, while the
   * slice has them: an event id each for the first requests (all, some or none), and the rest reserve one
   * by one. While `backlog` (work is left queued after this chunk), a slice is topped up in the background
   * before it runs dry, or asked for; a shard that keeps up with its arrivals asks for none, so a steady
   * trickle that empties the queue at every pass does not take a slice only to hand it back
   * (Dispatcher.pass) at the pass's end.
   */
  take(cfg: PoolConfig, amounts: number[], leaseUntil: number, now: number, backlog: boolean): string[] {
    // A request whose lease would outlive any slice reserves on its own (and asks for no slice).
    if (!poolLends(cfg) || leaseUntil > now + SHARD_LEASE.TTL_MS - SHARD_LEASE.MARGIN_MS) return [];
    const s = this.slice(cfg);
    let total = 0;
    for (const a of amounts) total += a;
    observe(s.meter, now, total);
    observe(s.requests, now, amounts.length);
    if (now < s.pausedUntil) return [];
    const ids: string[] = [];
    if (now < s.until && leaseUntil <= s.until) {
      const issued = { pool: cfg.id, epoch: s.epoch };
      for (const a of amounts) {
        if (s.free < a) break;
        s.free -= a;
        s.inUse += a;
        const id = newId("event", now);
        this.issued.set(id, issued);
        ids.push(id);
      }
    }
    if (!backlog) return ids;
    if (ids.length < amounts.length) {
      // Short: only a pool this shard admits to often enough is worth a slice (below, a reservation each is cheaper).
      if (rateOf(s.requests, now) >= SHARD_LEASE.MIN_RATE) this.exchangeLater(s, total);
    } else if (s.free < Math.max(total, sliceWant(rateOf(s.meter, now), SHARD_LEASE.WINDOW_MS, 0, s.cfg.capacity) / 2)) {
      // Topped up at half of what it aims at (a window of this shard's use), not once the next chunk no
      // longer fits: that chunk, and each until the answer came, reserved one by one (472 of a 600 drain's).
      this.exchangeLater(s, total);
    }
    return ids;
  }

  /**
   * A request's units from a slice are done with: `used` of them become a grant (its usage event, to be
   * reported), the rest is free again. Once per event id: settled again (after a failed settlement, or a
   * cancel after one), it changes nothing and answers what the first settlement recorded. Use of units
   * taken before a lapse or in an earlier life of this object is reported apart. Returns what is recorded.
   */
  settle(use: LeasedUse): { used: number; costNano: number } {
    const first = this.settled.get(use.eventId);
    if (first) return first;
    const recorded = { used: use.used, costNano: use.costNano };
    this.remember(use.eventId, recorded);
    const grant: LeaseGrant = [use.eventId, use.clientId, use.tier, "scheduler", use.used, use.requestId, use.costNano, use.at];
    const issued = this.issued.get(use.eventId);
    this.issued.delete(use.eventId);
    const s = this.slices.get(use.cfg.id);
    if (!issued || !s || issued.epoch !== s.epoch) {
      if (use.used > 0) this.lateSlice(use.cfg).grants.push(grant);
      return recorded;
    }
    s.inUse -= use.amount;
    s.free += use.amount - use.used;
    if (use.used > 0) s.grants.push(grant);
    return recorded;
  }

  /** A request's units from a slice whose call was dropped (its lease ended): free again, as its reservation would have expired. */
  forget(eventId: string, amount: number): void {
    const issued = this.issued.get(eventId);
    if (!issued) return;
    this.issued.delete(eventId);
    this.remember(eventId, { used: 0, costNano: 0 });
    const s = this.slices.get(issued.pool);
    if (!s || issued.epoch !== s.epoch) return;
    s.inUse -= amount;
    s.free += amount;
  }

  /**
   * Hand back every slice's free units now (the shard has nothing queued that could take them): a pool's
   * availability is exact again as soon as a backlog is launched. A failure is logged; they go back
   * with the next exchange or when the lease lapses.
   */
  async handBackFree(): Promise<void> {
    await Promise.all([...this.slices.values()].filter((s) => s.free > 0).map(async (s) => {
      s.handBack = true;
      await this.flush(s).catch((err: unknown) => log.warn("unit_lease_failed", { pool: s.cfg.id, shard: this.shard, error: String(err) }));
    }));
  }

  /**
   * Report the use not yet reported of these pools (also use riding on an exchange already in flight,
   * or on one whose answer was lost); throws when a pool could not be told (the settlement is made again).
   */
  async report(pools: Iterable<string>): Promise<void> {
    const tasks: Array<Promise<void>> = [];
    for (const pool of new Set(pools)) {
      for (const s of [this.slices.get(pool), this.late.get(pool)]) if (s) tasks.push(this.reported(s));
    }
    await Promise.all(tasks);
  }

  /** Hand back every free unit and report all use now (tests; an idle shard does it within RENEW_MS). */
  async close(): Promise<void> {
    for (const s of this.slices.values()) s.pausedUntil = Number.MAX_SAFE_INTEGER;
    await Promise.all([...this.slices.values(), ...this.late.values()].map((s) => this.flush(s)));
  }

  private async reported(s: Slice): Promise<void> {
    while (s.exchanging) await s.exchanging.catch(() => undefined);
    if (s.grants.length > 0 || s.unanswered) await this.flush(s);
  }

  /** Exchanges made one at a time per slice: one in flight is waited for, then this one runs. */
  private async flush(s: Slice, need = 0): Promise<void> {
    while (s.exchanging) await s.exchanging.catch(() => undefined);
    const run = this.exchange(s, need);
    s.exchanging = run;
    try {
      await run;
    } finally {
      if (s.exchanging === run) s.exchanging = null;
      // Also after a failed exchange: a slice's lease must not lapse while its units are in use.
      this.keepAlive();
    }
  }

  /** A top-up (or a report) in the background, unless one is in flight: a failure is logged; the requests reserve meanwhile. */
  private exchangeLater(s: Slice, need: number): void {
    if (s.exchanging) return;
    this.flush(s, need).catch((err: unknown) => log.warn("unit_lease_failed", { pool: s.cfg.id, shard: this.shard, error: String(err) }));
  }

  private async exchange(s: Slice, need: number): Promise<void> {
    const holding = s.free > 0 || s.inUse > 0 || s.unanswered !== null;
    if (!s.late && holding && s.answeredAt > 0 && Date.now() - s.answeredAt >= SHARD_LEASE.TTL_MS - SHARD_LEASE.MARGIN_MS) this.lapse(s);
    if (s.unanswered) {
      const x = s.unanswered;
      this.answered(s, x, await lease(this.env, s.cfg, x));
    }
    const x = s.late ? this.lateExchange(s) : this.nextExchange(s, need);
    if (!x) return;
    // Unknown until answered whether the pool applied it: sent again unchanged if the answer is lost.
    s.unanswered = x;
    this.answered(s, x, await lease(this.env, s.cfg, x));
    if (s.pausedUntil > Date.now() && s.free > 0 && !x.close) await this.exchange(s, 0);
  }

  private nextExchange(s: Slice, need: number): LeaseExchange {
    const now = Date.now();
    const rate = rateOf(s.meter, now);
    // Quiet, or paused (another shard waits there, or the pool stopped lending): the free units go back.
    const idle = s.handBack || rateOf(s.requests, now) < SHARD_LEASE.MIN_RATE / 4 || now < s.pausedUntil;
    s.handBack = false;
    const returned = idle ? s.free : 0;
    s.free -= returned;
    const want = idle ? 0 : Math.max(0, sliceWant(rate, SHARD_LEASE.WINDOW_MS, 2 * need, s.cfg.capacity) - s.free);
    const close = idle && s.free === 0 && s.inUse === 0;
    return { holder: s.holder, report: ++s.report, grants: s.grants.splice(0), returned, want, need: 0, close, shard: this.shard, ttlMs: SHARD_LEASE.TTL_MS };
  }

  /** Use of units from a lease that is gone: reported under a holder that never held anything (the pool takes it from the bucket). */
  private lateExchange(s: Slice): LeaseExchange | null {
    if (s.grants.length === 0) return null;
    return { holder: s.holder, report: ++s.report, grants: s.grants.splice(0), returned: 0, want: 0, need: 0, close: true, shard: this.shard };
  }

  private answered(s: Slice, x: LeaseExchange, answer: LeaseAnswer): void {
    const received = Date.now();
    s.unanswered = null;
    s.answeredAt = received;
    if (s.late) return;
    s.free += answer.added;
    s.until = x.close ? 0 : received + answer.ttlMs - SHARD_LEASE.MARGIN_MS;
    if (answer.stop && !x.close && s.pausedUntil < received) s.pausedUntil = received + SHARD_LEASE.PAUSE_MS;
  }

  /**
   * Not answered for the lease's whole life: the pool may have taken it back (its units, those in use
   * included, are in its bucket again). Start over under a new holder; use of units taken before is late.
   */
  private lapse(s: Slice): void {
    const lost = s.unanswered;
    if (lost && lost.grants.length > 0) this.lateSlice(s.cfg).grants.push(...lost.grants);
    if (s.grants.length > 0) this.lateSlice(s.cfg).grants.push(...s.grants.splice(0));
    log.warn("unit_lease_lapsed", { pool: s.cfg.id, shard: this.shard, free: s.free, in_use: s.inUse });
    Object.assign(s, { epoch: s.epoch + 1, free: 0, inUse: 0, until: 0, report: 0, unanswered: null, answeredAt: 0 });
    s.holder = `${this.life}:${s.epoch}`;
  }

  /** While anything is held, exchange every RENEW_MS: the slice's lease stays alive, idle units go back. */
  private keepAlive(): void {
    if (this.timer) return;
    const holding = [...this.slices.values()].some((s) => s.free > 0 || s.inUse > 0 || s.grants.length > 0 || s.unanswered);
    if (!holding) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      for (const s of this.slices.values()) {
        if (s.free > 0 || s.inUse > 0 || s.grants.length > 0 || s.unanswered) this.exchangeLater(s, 0);
      }
    }, SHARD_LEASE.RENEW_MS);
  }

  private slice(cfg: PoolConfig): Slice {
    let s = this.slices.get(cfg.id);
    if (!s) this.slices.set(cfg.id, (s = emptySlice(cfg, `${this.life}:0`, false)));
    s.cfg = cfg;
    return s;
  }

  private lateSlice(cfg: PoolConfig): Slice {
    let l = this.late.get(cfg.id);
    if (!l) this.late.set(cfg.id, (l = emptySlice(cfg, `${this.life}:late`, true)));
    l.cfg = cfg;
    return l;
  }

  private remember(eventId: string, recorded: { used: number; costNano: number }): void {
    if (this.settled.size >= SETTLED_MAX) this.settled.delete(this.settled.keys().next().value!);
    this.settled.set(eventId, recorded);
  }
}

function emptySlice(cfg: PoolConfig, holder: string, late: boolean): Slice {
  const now = Date.now();
  return {
    cfg, holder, late, epoch: 0, free: 0, inUse: 0, until: 0, report: 0, grants: [], unanswered: null, exchanging: null,
    answeredAt: 0, pausedUntil: 0, handBack: false, meter: newMeter(now), requests: newMeter(now),
  };
}

/** One exchange with the pool's object (by configuration version first, as the isolates' leases do). */
async function lease(env: Env, cfg: PoolConfig, x: LeaseExchange): Promise<LeaseAnswer> {
  const stub = poolStub(env, cfg.id);
  let answer = (await stub.lease(cfg.version, x)) as LeaseAnswer | null;
  if (answer === null) answer = (await stub.lease(cfg, x)) as LeaseAnswer | null;
  if (answer === null) throw new Error(`pool ${cfg.id} refused its configuration`);
  return answer;
}
