/**
 * Wait estimates from measured dispatch rates. A queued request starts once the work ranked ahead of it
 * that competes with it has been dispatched. For each pool it needs: the units the work ahead takes from
 * that pool, at the pool's grant rate. In its own queue: the competing requests ahead (those sharing a
 * pool with it; all, for a request that needs none), at the rate its queue drains (lower when other
 * queues take a share). For a request that needs no pool: everything ahead, at the overall rate. The
 * slowest bound is the estimate, never less than the time until its not-before. Work ahead that needs
 * other pools only does not hold it up: a pass skips requests blocked on a pool. Pure: the clock is a
 * parameter.
 */

/** Rates are measured over this window... */
export const ESTIMATE_WINDOW_MS = 30_000;
/**
 * ...and the overall and per-queue rates count only dispatches of requests that waited at least this
 * long: a queue that drained as fast as work came says how much came, not how fast it can drain, and
 * would make the first requests of the next burst look minutes away.
 */
export const BACKLOG_WAIT_MS = 200;
/** ...and trusted once they rest on this many dispatches (or units)... */
const MIN_COUNT = 5;
/** ...spread over at least this long (a pass launches many at once: one burst is no rate). */
const MIN_SPAN_MS = 1000;

/** Counts in one-second buckets over the window, with the time of each bucket's first event. */
class Series {
  private readonly slots: number;
  private readonly sec: Float64Array;
  private readonly count: Float64Array;
  private readonly first: Float64Array;

  constructor(windowMs: number) {
    this.slots = Math.ceil(windowMs / 1000);
    this.sec = new Float64Array(this.slots).fill(-1);
    this.count = new Float64Array(this.slots);
    this.first = new Float64Array(this.slots);
  }

  add(at: number, n: number): void {
    const sec = Math.floor(at / 1000);
    const slot = sec % this.slots;
    if (this.sec[slot] !== sec) {
      this.sec[slot] = sec;
      this.count[slot] = 0;
      this.first[slot] = at;
    }
    this.count[slot]! += n;
  }

  /** Per second over the span from the window's first event to `now`; null until it can be trusted. */
  rate(now: number): number | null {
    const nowSec = Math.floor(now / 1000);
    let total = 0;
    let earliest = Infinity;
    for (let i = 0; i < this.slots; i++) {
      const s = this.sec[i]!;
      if (s <= nowSec - this.slots || s > nowSec) continue;
      total += this.count[i]!;
      earliest = Math.min(earliest, this.first[i]!);
    }
    const span = now - earliest;
    if (total < MIN_COUNT || !(span >= MIN_SPAN_MS)) return null;
    return total / (span / 1000);
  }
}

/**
 * Dispatches per second overall and per queue, and units granted per second per pool, measured over a
 * sliding window. The span is measured from the window's first dispatch, not the window's length, so a
 * backlog that began draining 5 s ago is not taken for one draining at a twelfth of its rate.
 */
export class DispatchRates {
  private readonly all: Series;
  private readonly queues = new Map<string, Series>();
  private readonly pools = new Map<string, Series>();

  constructor(private readonly windowMs = ESTIMATE_WINDOW_MS) {
    this.all = new Series(windowMs);
  }

  /** A dispatch at `at` of a request that waited `waitedMs` since it was ready. */
  note(at: number, queue: string, pools: ReadonlyArray<{ pool: string; units: number }>, waitedMs: number): void {
    if (waitedMs >= BACKLOG_WAIT_MS) {
      this.all.add(at, 1);
      this.series(this.queues, queue).add(at, 1);
    }
    // A pool's rate is taken together with its refill rate (the larger): no filter needed.
    for (const p of pools) this.series(this.pools, p.pool).add(at, p.units);
  }

  total(now: number): number | null {
    return this.all.rate(now);
  }

  queue(queue: string, now: number): number | null {
    return this.queues.get(queue)?.rate(now) ?? null;
  }

  /** Units per second the scheduler's requests got from a pool. */
  pool(pool: string, now: number): number | null {
    return this.pools.get(pool)?.rate(now) ?? null;
  }

  private series(map: Map<string, Series>, key: string): Series {
    let s = map.get(key);
    if (!s) map.set(key, (s = new Series(this.windowMs)));
    return s;
  }
}

/** A queued request's place: what is ranked ahead of it, and what it needs. */
export interface WaitInput {
  /** Its position in the dispatch order (1: next). */
  position: number;
  /** Requests of its own queue ranked ahead of it that compete with it (share a pool; all when it needs none). */
  aheadInQueue: number;
  /** Per pool it needs: its own units, and the units the requests ranked ahead of it need there. */
  pools: Array<{ pool: string; units: number; aheadUnits: number }>;
  /** Until its not-before (0 when it may run now). */
  delayMs: number;
}

/** The rates an estimate rests on; null where nothing can be said. */
export interface WaitRates {
  /** Dispatches per second, all queues. */
  total: number | null;
  /** Dispatches per second of the request's queue. */
  queue: number | null;
  /** Units per second a pool grants: the larger of the measured rate and its refill rate. */
  pool(pool: string): number | null;
  /** When no overall rate is known yet: the wait by worker-call durations, for a position. */
  fallbackMs(position: number): number;
}

/**
 * Estimated wait in ms: the slowest of the bounds the rates give (see the file's comment), at least the
 * time until its not-before (deferred work waits for the later of the two: the backlog ahead drains
 * while it is held back). With no rate known yet, by worker-call durations.
 */
export function estimateWaitMs(input: WaitInput, rates: WaitRates): number {
  const bounds: number[] = [];
  for (const p of input.pools) {
    const rate = rates.pool(p.pool);
    if (rate !== null && rate > 0) bounds.push((p.aheadUnits + p.units) / rate);
  }
  if (input.pools.length === 0 && rates.total !== null && rates.total > 0) bounds.push(input.position / rates.total);
  if (rates.queue !== null && rates.queue > 0) bounds.push((input.aheadInQueue + 1) / rates.queue);
  const queueing = bounds.length ? Math.max(...bounds) * 1000 : rates.fallbackMs(input.position);
  return Math.round(Math.max(input.delayMs, queueing));
}
