/**
 * Ranking: the fair order of the queued requests (tier, urgency, time waited, each client's share of
 * recent dispatches against its weight), a request's position and its estimated wait. It keeps the
 * dispatch log the shares and rates come from, and the tier and client weights from configuration.
 */
import { DEFAULT_TIER_POINTS, DEFAULT_TIER_WEIGHTS, fairIdsOf, fairOrder, priorityOf, readyOf, type Priority, type QueueName } from "../../domain/priority";
import type { Tier } from "../../domain/types";
import { DispatchWindow } from "../../domain/dispatch-window";
import { OrderIndex } from "../../domain/order-index";
import { DispatchRates, estimateWaitMs } from "../../domain/wait-estimate";
import { clientQuota, poolConfigs, tierLimits } from "../../storage/config";
import { MAX_IN_FLIGHT, SCAN_LIMIT } from "./limits";
import { poolNeedsOf, readyAtOf, type Queued, type Row } from "./rows";
import type { QueueStore } from "./store";

const FAIRNESS_WINDOW_MS = 5 * 60 * 1000;
/** Dispatch rates (estimates, queue status) are measured over this window. */
export const RATE_WINDOW_MS = 60 * 1000;
const RANK_CACHE_MS = 250;
/**
 * An order that only single enqueues changed since it was ranked (each placed into it: splice) answers
 * the next single enqueue for this long. While a shard dispatches, every claim changes its queued set
 * and the order is ranked again at once; while it does not, nothing but time moves the order: the
 * wait points earned meanwhile, and held-back requests whose time comes (an order is not used past
 * the first `not_before` of its tail: Ranking.ranked). Ranking it afresh every 250 ms was the most of a
 * single enqueue's placing with thousands queued (docs/benchmarks.md).
 */
const SPLICE_CACHE_MS = 1000;

/** A queued request's place in the order (1 = next) and its estimated wait; nulls once it left the queue. */
export interface PositionEstimate {
  position: number | null;
  estimated_wait_ms: number | null;
}

/** What a request ahead in the order counts for, in another's position and estimate: its queue and what it needs. */
type Ahead = Pick<Queued, "queue" | "pools">;

export class Ranking {
  /** Dispatches of the fairness window, per second by client and queue. */
  private readonly dispatched = new DispatchWindow(FAIRNESS_WINDOW_MS);
  /** How long the last worker calls took (ms), for estimates while nothing has been dispatched lately. */
  private durations: number[] = [];
  /** Operators' fair-share weights of clients with queued work (refreshed by each pass). */
  private weights = new Map<string, number>();
  /** Priority points and fair-share weight by tier, from the tier rows (loadWeights refreshes them). */
  private tierRows = new Map<Tier, { points: number; weight: number }>();
  /**
   * The full order for positions, reused while young and while the queued index has not changed (or, for a
   * single enqueue, only lost requests: see splice).
   * `items` holds the queued objects themselves, in that order; `spliced`: single enqueues were placed into it since
   * (see splice), so it serves only enqueue answers; `index`: each client's places and running sums of
   * what is ahead, made at the first splice; `placed`: the place of the last request spliced in.
   */
  private rankCache: {
    at: number; epoch: number; added: number; order: string[]; items: Queued[]; readyCount: number; spliced: boolean;
    index?: OrderIndex; placed?: { id: string; place: number };
  } | null = null;
  /** Measured dispatch rates (overall, per queue) and pool grant rates, for wait estimates. */
  private readonly rates = new DispatchRates();
  /** Each pool's refill per second (the pool rows as last loaded): its grant rate until one is measured. */
  private refill = new Map<string, number>();

  constructor(private readonly env: Env, private readonly store: QueueStore) {}

  /** Queued ids in dispatch order (ready ones first), with current fairness shares. */
  rankedOrder(now: number, allowSplice = false): string[] {
    return this.ranked(now, allowSplice).order;
  }

  /** The order for positions (ids, and what each was ranked with), from the cache when it may serve. */
  private ranked(now: number, allowSplice: boolean): NonNullable<Ranking["rankCache"]> {
    // Not past the time the first request of its tail (held back, in `not_before` order) may run: from
    // then on that one belongs among the ready ones.
    const cache = this.rankCache && now < (this.rankCache.items[this.rankCache.readyCount]?.notBefore ?? Infinity) ? this.rankCache : null;
    // An order placed into answers only single enqueues, for longer; any other, for RANK_CACHE_MS.
    const life = !cache ? 0 : cache.spliced ? (allowSplice ? SPLICE_CACHE_MS : 0) : RANK_CACHE_MS;
    if (cache && now - cache.at < life) {
      if (cache.epoch === this.store.epoch) return cache;
      if (allowSplice && this.splice(cache, now)) return cache;
    }
    const all = [...this.store.queued.values()];
    const ready = fairOrder(all.filter((q) => q.notBefore <= now), now, this.recentCounts(now), this.weightOf, SCAN_LIMIT);
    const later = all.filter((q) => q.notBefore > now).sort((a, b) => a.notBefore - b.notBefore || a.createdAt - b.createdAt);
    const items = [...ready, ...later];
    const order = items.map((q) => q.id);
    this.rankCache = { at: now, epoch: this.store.epoch, added: this.store.lastIndexed?.added ?? 0, order, items, readyCount: ready.length, spliced: false };
    return this.rankCache;
  }

  /**
   * Place the one request indexed since the cached order was ranked into it, instead of ranking the
   * whole backlog again for every single enqueue (O(n log n) each: most of an enqueue's CPU with a
   * few thousand queued). The fair order keeps each client's own order, so it goes after the last of
   * its client's requests that its client's own order puts ahead of it, by the client's mean spacing in
   * the order (the other clients' picks interleaved between two of its own), and never past the next
   * of its own: exact for clients taking turns, an estimate otherwise. Not placed (false: rank again)
   * when it is not ready, when its client has fewer than two requests ranked (no spacing to go by), or
   * when it ranks ahead of all its client's queued work (it may then pass other clients' work).
   * It is placed when it is the one request added since the order was ranked (or last placed into) and
   * the latest change; the others since can only have taken requests out (a pass's claims, a cancel),
   * and those leave the order first (compact): while a backlog drains, every enqueue found the order
   * changed by a claim and ranked the whole backlog again (~27 ms at 10,000 queued; docs/benchmarks.md).
   */
  private splice(cache: NonNullable<Ranking["rankCache"]>, now: number): boolean {
    const last = this.store.lastIndexed;
    if (!last || last.epoch !== this.store.epoch || last.added !== cache.added + 1) return false;
    const x = this.store.queued.get(last.id);
    if (!x || x.notBefore > now) return false;
    if (cache.epoch !== this.store.epoch - 1) this.compact(cache);
    const index = (cache.index ??= new OrderIndex(cache.items, cache.readyCount));
    const span = index.span(x.clientId);
    if (!span || span.count < 2) return false;
    // Within a client every request has the same fairness term: the order is fairRank's per-client rank.
    const key = (q: Queued) => ({ q, p: priorityOf({ ...q, recentShare: 0 }, cache.at) });
    const kx = key(x);
    const before = (a: ReturnType<typeof key>, b: ReturnType<typeof key>) =>
      Number(b.p.starved) - Number(a.p.starved) || b.p.score - a.p.score || readyOf(a.q) - readyOf(b.q) || (a.q.id < b.q.id ? -1 : 1);
    const spacing = (span.last - span.first) / (span.count - 1);
    let at: number;
    if (before(key(cache.items[span.last]!), kx) < 0) {
      // The usual case, after all its client's queued work: by the client's spacing after its last.
      at = Math.min(cache.readyCount, Math.round(span.last + spacing));
    } else {
      // Among its client's work: between the last of its client's places that goes before it and the next.
      const { prev, next } = index.boundAmong(x.clientId, (i) => before(key(cache.items[i]!), kx) < 0);
      if (prev < 0 || next < 0) return false;
      at = Math.min(next, Math.round(prev + spacing));
    }
    cache.items.splice(at, 0, x);
    cache.order.splice(at, 0, x.id);
    index.inserted(at);
    cache.placed = { id: x.id, place: at };
    cache.readyCount += 1;
    cache.epoch = this.store.epoch;
    cache.added = last.added;
    cache.spliced = true;
    return true;
  }

  /** Drop from a cached order the requests no longer queued (claimed, cancelled, finished); the rest keep their order. */
  private compact(cache: NonNullable<Ranking["rankCache"]>): void {
    const items: typeof cache.items = [];
    let readyCount = 0;
    cache.items.forEach((q, i) => {
      if (!this.store.queued.has(q.id)) return;
      items.push(q);
      if (i < cache.readyCount) readyCount += 1;
    });
    Object.assign(cache, { items, order: items.map((q) => q.id), readyCount, index: undefined, placed: undefined });
  }

  /**
   * The ready requests a pass may take, best first, one id per call (undefined at the end): the fair
   * order picked lazily, as far as the pass reads it (at most SCAN_LIMIT).
   */
  readyOrder(now: number): () => string | undefined {
    // Ranked afresh at every pass (each client's own order is kept by the store's ready index, which
    // only merges the heads of its groups here), with the shares as they are now.
    return fairIdsOf(this.store.ready.orders(now), this.recentCounts(now), this.weightOf);
  }

  /**
   * A queued request's place in the order (1 = next) and its estimated wait (domain/wait-estimate.ts:
   * the work ranked ahead of it, overall, in its queue and in each pool it needs, over the measured
   * rates); nulls once it left the queue. One walk of the order up to it.
   */
  positionOf(id: string, now: number, justEnqueued = false): PositionEstimate {
    const q = this.store.queued.get(id);
    if (!q) return { position: null, estimated_wait_ms: null };
    const cache = this.ranked(now, justEnqueued);
    const { items } = cache;
    // Just placed into the order (the usual single enqueue), needing one pool: what is ahead, from the running sums.
    const placed = cache.placed;
    if (justEnqueued && placed?.id === id && cache.index && q.pools.length === 1 && items[placed.place]?.id === id) {
      const admitting = this.admittingNeeds();
      const ahead = cache.index.ahead(placed.place, q.queue, q.pools[0]!.pool, admitting);
      return { position: placed.place + 1, estimated_wait_ms: this.estimate(q, placed.place + 1 + admitting.length, ahead.inQueue, [ahead.units], now) };
    }
    const aheadUnits = q.pools.map(() => 0);
    let aheadInQueue = 0;
    let position = 1;
    const onlyPool = q.pools.length === 1 ? q.pools[0]!.pool : null;
    const ahead = (o: Ahead) => {
      // Work ahead competes with it when it needs one of its pools (any work, when it needs none).
      if (onlyPool !== null && o.pools.length === 1) {
        // The usual case, one pool each: no search (this walk runs for every request ahead).
        if (o.pools[0]!.pool !== onlyPool) return;
        aheadUnits[0]! += o.pools[0]!.units;
        if (o.queue === q.queue) aheadInQueue += 1;
        return;
      }
      let competes = q.pools.length === 0;
      for (const need of o.pools) {
        const i = q.pools.findIndex((p) => p.pool === need.pool);
        if (i < 0) continue;
        aheadUnits[i]! += need.units;
        competes = true;
      }
      if (competes && o.queue === q.queue) aheadInQueue += 1;
    };
    const admitting = this.admittingNeeds();
    for (const o of admitting) ahead(o);
    // The order's own copies: no lookup per request ahead (a request that leaves the queue changes the
    // queued set, and the order is ranked again before it is used).
    for (const o of items) {
      if (o.id === id) break;
      position += 1;
      ahead(o);
    }
    return { position, estimated_wait_ms: this.estimate(q, position + admitting.length, aheadInQueue, aheadUnits, now) };
  }

  /**
   * positionOf for each of several requests (an enqueue's batch), from one walk of the order: for a
   * request needing one pool (the usual case) what is ahead of it is read off running sums per pool and
   * per queue and pool, where a walk each was a batch of 100 walking a 10,000-request order 100 times
   * (most of a batched enqueue's CPU). Others, and any not found in the order, get their own walk.
   */
  positionsOf(ids: string[], now: number, justEnqueued = false): PositionEstimate[] {
    if (ids.length <= 1) return ids.map((id) => this.positionOf(id, now, justEnqueued));
    const { items } = this.ranked(now, justEnqueued);
    const wanted = new Map<string, Queued>();
    for (const id of ids) {
      const q = this.store.queued.get(id);
      if (q && q.pools.length === 1) wanted.set(id, q);
    }
    const unitsByPool = new Map<string, number>();
    const byQueuePool = new Map<string, number>();
    const add = (o: Ahead) => {
      const seen: string[] = [];
      for (const need of o.pools) {
        unitsByPool.set(need.pool, (unitsByPool.get(need.pool) ?? 0) + need.units);
        if (seen.includes(need.pool)) continue;
        seen.push(need.pool);
        const key = `${o.queue}\u0000${need.pool}`;
        byQueuePool.set(key, (byQueuePool.get(key) ?? 0) + 1);
      }
    };
    const admitting = this.admittingNeeds();
    for (const o of admitting) add(o);
    const found = new Map<string, PositionEstimate>();
    for (let i = 0; i < items.length && found.size < wanted.size; i++) {
      const o = items[i]!;
      const q = wanted.get(o.id);
      if (q) {
        const pool = q.pools[0]!.pool;
        const aheadInQueue = byQueuePool.get(`${q.queue}\u0000${pool}`) ?? 0;
        found.set(o.id, { position: i + 1, estimated_wait_ms: this.estimate(q, i + 1 + admitting.length, aheadInQueue, [unitsByPool.get(pool) ?? 0], now) });
      }
      add(o);
    }
    return ids.map((id) => found.get(id) ?? this.positionOf(id, now, justEnqueued));
  }

  /** What the requests a pass has claimed and is admitting need: out of the order, but still ahead of any queued one for an estimate (a pool that refuses them sends them back). */
  private admittingNeeds(): Ahead[] {
    const out: Ahead[] = [];
    for (const other of this.store.admitting) {
      const row = this.store.live.get(other);
      if (row) out.push({ queue: row.queue, pools: poolNeedsOf(row) });
    }
    return out;
  }

  /** The estimated wait of a queued request with `position` requests ahead in all (domain/wait-estimate.ts). */
  private estimate(q: Queued, position: number, aheadInQueue: number, aheadUnits: number[], now: number): number | null {
    const avgRunMs = this.durations.length ? this.durations.reduce((a, b) => a + b, 0) / this.durations.length : 1000;
    return estimateWaitMs(
      { position, aheadInQueue, pools: q.pools.map((p, i) => ({ ...p, aheadUnits: aheadUnits[i]! })), delayMs: Math.max(0, q.notBefore - now) },
      {
        total: this.rates.total(now),
        queue: this.rates.queue(q.queue, now),
        pool: (pool) => Math.max(this.rates.pool(pool, now) ?? 0, this.refill.get(pool) ?? 0) || null,
        fallbackMs: (p) => Math.ceil(p / MAX_IN_FLIGHT) * avgRunMs,
      },
    );
  }

  /** Dispatches per second over the rate window, of one queue or of all. */
  dispatchRatePerS(now: number, queue?: QueueName): number {
    return this.dispatched.countSince(now, RATE_WINDOW_MS, queue) / (RATE_WINDOW_MS / 1000);
  }

  /** A queued request's priority now, its fairness term from its client's current share. */
  priorityNow(q: Queued, now: number): Priority {
    return priorityOf({ ...q, recentShare: this.shares(now).get(q.clientId) ?? 0 }, now);
  }

  /** The priority score a new request is stored with. */
  enqueueScore(clientId: string, tier: Tier, queue: QueueName, now: number): number {
    return priorityOf({ tier, tierPoints: this.tierPointsOf(tier), queue, createdAt: now, recentShare: this.shares(now).get(clientId) ?? 0 }, now).score;
  }

  noteDispatch(row: Row, now: number): void {
    this.dispatched.note(now, row.client_id, row.queue);
    this.rates.note(now, row.queue, poolNeedsOf(row), now - readyAtOf(row));
  }

  noteDuration(ms: number): void {
    this.durations.push(ms);
    if (this.durations.length > 100) this.durations.shift();
  }

  /** A client's fair-share weight: the operator's setting, else its tier's. */
  private weightOf = (client: string, tier: Tier): number => this.weights.get(client) ?? this.tierRows.get(tier)?.weight ?? DEFAULT_TIER_WEIGHTS[tier];

  tierPointsOf(tier: Tier): number {
    return this.tierRows.get(tier)?.points ?? DEFAULT_TIER_POINTS[tier];
  }

  /** Dispatches per client within the fairness window. */
  private recentCounts(now: number): Map<string, number> {
    const counts = new Map(this.dispatched.counts(now));
    // Claims still being admitted count too: a pass that ranks while another pass admits its chunk
    // must not hand the same clients' share out twice.
    for (const id of this.store.admitting) {
      const clientId = this.store.live.get(id)?.client_id;
      if (clientId) counts.set(clientId, (counts.get(clientId) ?? 0) + 1);
    }
    return counts;
  }

  /** Fair-share weights of the clients with queued work (operators' settings; the tier's otherwise). */
  async loadWeights(): Promise<void> {
    const clients = [...this.store.ready.clientIds()];
    const [loaded] = await Promise.all([
      Promise.all([...clients].map(async (id) => [id, (await clientQuota(this.env, id))?.weight ?? null] as const)),
      this.refreshTiers(),
    ]);
    const next = new Map<string, number>();
    for (const [id, weight] of loaded) if (weight !== null) next.set(id, weight);
    if (next.size !== this.weights.size || [...next].some(([id, w]) => this.weights.get(id) !== w)) {
      this.rankCache = null;
    }
    this.weights = next;
  }

  /**
   * Tier points and weights from the tier rows (through the configuration cache); queued work re-ranked
   * on a change. Pools' refill rates too, for wait estimates.
   */
  async refreshTiers(): Promise<void> {
    const [tiers, pools] = await Promise.all([tierLimits(this.env), poolConfigs(this.env)]);
    this.refill = new Map([...pools].map(([id, p]) => [id, p.refillPerSec]));
    let tiersChanged = false;
    for (const [tier, row] of tiers) {
      const known = this.tierRows.get(tier);
      if (known?.points === row.priority_points && known.weight === row.weight) continue;
      this.tierRows.set(tier, { points: row.priority_points, weight: row.weight });
      tiersChanged = true;
    }
    if (tiersChanged) {
      for (const q of this.store.queued.values()) q.tierPoints = this.tierPointsOf(q.tier);
      this.rankCache = null;
    }
  }

  /** Each client's share of the dispatches in the fairness window. */
  private shares(now: number): Map<string, number> {
    const counts = this.dispatched.counts(now);
    const total = this.dispatched.total(now);
    return new Map([...counts].map(([client, n]) => [client, total ? n / total : 0]));
  }
}
