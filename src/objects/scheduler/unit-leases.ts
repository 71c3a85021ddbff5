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
 */
import { newId } from "../../domain/ids";
import { newMeter, observe, rateOf, SHARD_LEASE, sliceWant, type RateMeter } from "../../domain/leases";
import type { PoolConfig } from "../../domain/types";
import { log } from "../../log";
import { poolStub } from "../pool/stub";
import type { LeaseAnswer, LeaseExchange, LeaseGrant } from "../pool/types";

interface Slice {
  cfg: PoolConfig;
  /** Units the next requests may take. */
  free: number;
  /** Units taken by requests not settled yet. */
  inUse: number;
  /** Requests whose lease ends before this (local time) may take from it. */
  until: number;
  report: number;
  /** Use not reported to the pool yet. */
  grants: LeaseGrant[];
  /** The exchange in flight, if any (one at a time). */
  exchanging: Promise<void> | null;
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

/** Event ids settled in this object's life are remembered this long (a settlement made again skips them). */
const SETTLED_MAX = 100_000;

export class UnitLeases {
  private readonly slices = new Map<string, Slice>();
  /** Event ids handed out by this object's slices and not settled yet. */
  private readonly issued = new Set<string>();
  /** Event ids settled (a settlement made again finds them here). */
  private readonly settled = new Set<string>();
  /** Use of units taken in an earlier life of this object, reported under a holder of its own. */
  private readonly late: Slice[] = [];
  private readonly holder: string;
  private lateReport = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly env: Env, private readonly shard: string) {
    // One holder per object life: what an earlier life held lapses at the pool on its own.
    this.holder = `${shard}:${newId("isolate")}`;
  }

  /** Units held now over all slices (free and in use), for the state view and tests. */
  held(): { free: number; inUse: number } {
    let free = 0;
    let inUse = 0;
    for (const s of this.slices.values()) {
      free += s.free;
      inUse += s.inUse;
    }
    return { free, inUse };
  }

  /**
   * Take `amounts` of a pool for a chunk's requests whose leases end by `leaseUntil`: all from the slice,
   * answered with an event id each, or none (null; the requests reserve one by one). A slice running low
   * is topped up in the background.
   */
  take(cfg: PoolConfig, amounts: number[], leaseUntil: number, now: number): string[] | null {
    // A request whose lease would outlive any slice reserves on its own (and asks for no slice).
    if (!lendable(cfg) || leaseUntil > now + SHARD_LEASE.TTL_MS - SHARD_LEASE.MARGIN_MS) return null;
    const s = this.slice(cfg);
    let total = 0;
    for (const a of amounts) total += a;
    observe(s.meter, now, total);
    observe(s.requests, now, amounts.length);
    if (now < s.pausedUntil) return null;
    if (s.free >= total && now < s.until && leaseUntil <= s.until) {
      s.free -= total;
      s.inUse += total;
      if (s.free < total) this.exchangeLater(s, 0);
      return amounts.map(() => {
        const id = newId("event", now);
        this.issued.add(id);
        return id;
      });
    }
    // Only a pool this shard admits to often enough is worth a slice (below, a reservation each is cheaper).
    if (rateOf(s.requests, now) >= SHARD_LEASE.MIN_RATE) this.exchangeLater(s, total);
    return null;
  }

  /**
   * A request's units from a slice are done with: `used` of them become a grant (its usage event, to be
   * reported), the rest is free again. Once per event id: a settlement made again changes nothing, and
   * use of units taken in an earlier life of this object is reported on its own.
   */
  settle(use: LeasedUse): void {
    if (this.settled.has(use.eventId)) return;
    this.remember(use.eventId);
    const grant: LeaseGrant = [use.eventId, use.clientId, use.tier, "scheduler", use.used, use.requestId, use.costNano, use.at];
    const s = this.slices.get(use.cfg.id);
    if (!this.issued.delete(use.eventId) || !s) {
      if (use.used > 0) this.lateSlice(use.cfg).grants.push(grant);
      return;
    }
    s.inUse -= use.amount;
    s.free += use.amount - use.used;
    if (use.used > 0) s.grants.push(grant);
  }

  /** A request's units from a slice are lost with it (its lease ended): they come back when the lease does. */
  forget(pool: string, eventId: string, amount: number): void {
    if (!this.issued.delete(eventId)) return;
    this.remember(eventId);
    const s = this.slices.get(pool);
    if (s) s.inUse -= amount;
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

  /** Report the use not yet reported of these pools now; throws when a pool could not be told (the settlement is made again). */
  async report(pools: Iterable<string>): Promise<void> {
    const tasks: Array<Promise<void>> = [];
    for (const pool of new Set(pools)) {
      const s = this.slices.get(pool);
      if (s && s.grants.length > 0) tasks.push(this.flush(s));
      const late = this.late.find((l) => l.cfg.id === pool);
      if (late && late.grants.length > 0) tasks.push(this.flushLate(late));
    }
    await Promise.all(tasks);
  }

  /** Hand back every free unit and report all use now (tests; an idle shard does it within RENEW_MS). */
  async close(): Promise<void> {
    for (const s of this.slices.values()) s.pausedUntil = Number.MAX_SAFE_INTEGER;
    await Promise.all([...this.slices.values()].map((s) => this.flush(s)));
    await Promise.all(this.late.map((l) => this.flushLate(l)));
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
      // Also after a failed exchange: the slice's lease must not lapse while its units are in use.
      this.keepAlive();
    }
  }

  /** A top-up (or a report) in the background, unless one is in flight: a failure is logged; the requests reserve meanwhile. */
  private exchangeLater(s: Slice, need: number): void {
    if (s.exchanging) return;
    this.flush(s, need).catch((err: unknown) => log.warn("unit_lease_failed", { pool: s.cfg.id, shard: this.shard, error: String(err) }));
  }

  private async exchange(s: Slice, need: number): Promise<void> {
    const now = Date.now();
    const rate = rateOf(s.meter, now);
    // Quiet, or paused (another shard waits there, or the pool stopped lending): the free units go back.
    const idle = s.handBack || rateOf(s.requests, now) < SHARD_LEASE.MIN_RATE / 4 || now < s.pausedUntil;
    s.handBack = false;
    const returned = idle ? s.free : 0;
    s.free -= returned;
    const grants = s.grants.splice(0);
    const want = idle ? 0 : Math.max(0, sliceWant(rate, SHARD_LEASE.WINDOW_MS, 2 * need, s.cfg.capacity) - s.free);
    const close = idle && s.free === 0 && s.inUse === 0;
    const x: LeaseExchange = { holder: this.holder, report: ++s.report, grants, returned, want, need: 0, close, shard: this.shard, ttlMs: SHARD_LEASE.TTL_MS };
    let answer: LeaseAnswer;
    try {
      answer = await lease(this.env, s.cfg, x);
    } catch (err) {
      // Unknown whether the pool applied it: the grants go again with the next exchange (their event ids
      // are kept once by the ledger and the client; the pool counts them twice, conservatively), and what
      // was given back stays given back.
      s.grants.unshift(...grants);
      throw err;
    }
    const received = Date.now();
    s.free += answer.added;
    s.until = close ? 0 : received + answer.ttlMs - SHARD_LEASE.MARGIN_MS;
    if (answer.stop && !close && s.pausedUntil < received) {
      s.pausedUntil = received + SHARD_LEASE.PAUSE_MS;
      if (s.free > 0) await this.exchange(s, 0);
    }
  }

  private async flushLate(l: Slice): Promise<void> {
    const grants = l.grants.splice(0);
    if (grants.length === 0) return;
    // A holder that never held anything: the pool takes the units used from its bucket (the lease they
    // came from gives them back when it lapses).
    const x: LeaseExchange = { holder: `${this.holder}:late`, report: ++this.lateReport, grants, returned: 0, want: 0, need: 0, close: true, shard: this.shard };
    try {
      await lease(this.env, l.cfg, x);
    } catch (err) {
      l.grants.unshift(...grants);
      throw err;
    }
  }

  /** While anything is held, exchange every RENEW_MS: the slice's lease stays alive, idle units go back. */
  private keepAlive(): void {
    if (this.timer) return;
    const holding = [...this.slices.values()].some((s) => s.free > 0 || s.inUse > 0 || s.grants.length > 0);
    if (!holding) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      for (const s of this.slices.values()) {
        if (s.free > 0 || s.inUse > 0 || s.grants.length > 0) this.exchangeLater(s, 0);
      }
    }, SHARD_LEASE.RENEW_MS);
  }

  private slice(cfg: PoolConfig): Slice {
    let s = this.slices.get(cfg.id);
    if (!s) this.slices.set(cfg.id, (s = emptySlice(cfg)));
    s.cfg = cfg;
    return s;
  }

  private lateSlice(cfg: PoolConfig): Slice {
    let l = this.late.find((x) => x.cfg.id === cfg.id);
    if (!l) this.late.push((l = emptySlice(cfg)));
    l.cfg = cfg;
    return l;
  }

  private remember(eventId: string): void {
    if (this.settled.size >= SETTLED_MAX) this.settled.clear();
    this.settled.add(eventId);
  }
}

function emptySlice(cfg: PoolConfig): Slice {
  const now = Date.now();
  return { cfg, free: 0, inUse: 0, until: 0, report: 0, grants: [], exchanging: null, pausedUntil: 0, handBack: false, meter: newMeter(now), requests: newMeter(now) };
}

/** Whether a pool may lend to shards at all (its object decides how much: ../pool/leases.ts). */
function lendable(cfg: PoolConfig): boolean {
  return cfg.leases !== "off" && cfg.status === "active" && cfg.sharing.mode === "shared";
}

/** One exchange with the pool's object (by configuration version first, as the isolates' leases do). */
async function lease(env: Env, cfg: PoolConfig, x: LeaseExchange): Promise<LeaseAnswer> {
  const stub = poolStub(env, cfg.id);
  let answer = (await stub.lease(cfg.version, x)) as LeaseAnswer | null;
  if (answer === null) answer = (await stub.lease(cfg, x)) as LeaseAnswer | null;
  if (answer === null) throw new Error(`pool ${cfg.id} refused its configuration`);
  return answer;
}
