/**
 * What a cached order answers about a request just placed into it, without walking it from the start
 * (a single enqueue's position and wait estimate): each client's first and last place among the ready
 * requests and how many it has there (where the next of its own goes), and what is ahead of a place
 * (units per pool, requests per queue and pool), kept as running sums at checkpoints, the nearest of
 * which moves to each place asked for. Several: a client's requests of different queues are placed
 * far apart (fast ones early in the order, batch ones late), so one checkpoint walked a third of the
 * order and more between two enqueues; each stays near the places of one kind. The order's array is
 * shared with its owner, which inserts into it and reports each insertion (`inserted`).
 */

/** A request in the order: its client, its queue and what it needs of each pool. */
export interface OrderItem {
  clientId: string;
  queue: string;
  pools: ReadonlyArray<{ pool: string; units: number }>;
}

/** A client's ready requests in the order: the first and last place, and how many. */
export interface ClientSpan {
  first: number;
  last: number;
  count: number;
}

/** Running sums over items[0..at): units per pool, requests per queue and pool. */
interface Checkpoint {
  at: number;
  units: Map<string, number>;
  counts: Map<string, number>;
}

/** Checkpoints at most, and how far the nearest may be before another is made there (a copy of it, moved). */
const MAX_CHECKPOINTS = 8;
const NEAR = 32;

export class OrderIndex {
  private readonly spans = new Map<string, ClientSpan>();
  private readonly checkpoints: Checkpoint[] = [{ at: 0, units: new Map(), counts: new Map() }];

  /** `readyCount`: the ready requests are items[0..readyCount), in the order. */
  constructor(private readonly items: readonly OrderItem[], readyCount: number) {
    for (let i = 0; i < readyCount; i++) {
      const span = this.spans.get(items[i]!.clientId);
      if (span) {
        span.last = i;
        span.count += 1;
      } else {
        this.spans.set(items[i]!.clientId, { first: i, last: i, count: 1 });
      }
    }
  }

  /** A client's ready requests in the order, if it has any. */
  span(clientId: string): Readonly<ClientSpan> | undefined {
    return this.spans.get(clientId);
  }

  /**
   * Among a client's ready places, the first whose request does not go before the one being placed
   * (`goesBefore(place)`, which must hold for a prefix of the client's own places and not after), and the
   * client's place before it; -1 for either that does not exist. Bisects the client's span, stepping
   * from each probe to the client's next place, instead of listing its places (a walk of the span: most
   * of a single enqueue's placing with a few thousand queued).
   */
  boundAmong(clientId: string, goesBefore: (place: number) => boolean): { prev: number; next: number } {
    const span = this.spans.get(clientId);
    if (!span) return { prev: -1, next: -1 };
    const own = (i: number, step: 1 | -1, end: number): number => {
      while (i !== end && this.items[i]!.clientId !== clientId) i += step;
      return i;
    };
    // Own places before lo go before; own places at or after hi do not.
    let lo = span.first;
    let hi = span.last + 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const at = own(mid, 1, hi);
      if (at === hi) hi = mid;
      else if (goesBefore(at)) lo = at + 1;
      else hi = at;
    }
    const next = own(lo, 1, span.last + 1);
    const prev = own(lo - 1, -1, span.first - 1);
    return { prev: prev < span.first ? -1 : prev, next: next > span.last ? -1 : next };
  }

  /** A ready request was inserted at `place` (items[place] is it): every place at or after it moves one on. */
  inserted(place: number): void {
    for (const span of this.spans.values()) {
      if (span.first >= place) span.first += 1;
      if (span.last >= place) span.last += 1;
    }
    const x = this.items[place]!;
    const span = this.spans.get(x.clientId);
    if (span) {
      span.first = Math.min(span.first, place);
      span.last = Math.max(span.last, place);
      span.count += 1;
    } else {
      this.spans.set(x.clientId, { first: place, last: place, count: 1 });
    }
    for (const c of this.checkpoints) {
      if (place < c.at) {
        add(c, x, 1);
        c.at += 1;
      }
    }
  }

  /**
   * Ahead of `place`, and of the order for `extra` (requests out of it that still go first): the units
   * of `pool` those requests need, and how many of them are in `queue` and need `pool` (a request naming
   * a pool twice counts its units twice and itself once).
   */
  ahead(place: number, queue: string, pool: string, extra: ReadonlyArray<Pick<OrderItem, "queue" | "pools">> = []): { units: number; inQueue: number } {
    const c = this.nearest(place);
    while (c.at < place) add(c, this.items[c.at++]!, 1);
    while (c.at > place) add(c, this.items[--c.at]!, -1);
    let units = c.units.get(pool) ?? 0;
    let inQueue = c.counts.get(countKey(queue, pool)) ?? 0;
    for (const o of extra) {
      const needs = o.pools.filter((p) => p.pool === pool);
      for (const need of needs) units += need.units;
      if (needs.length > 0 && o.queue === queue) inQueue += 1;
    }
    return { units, inQueue };
  }

  /** The checkpoint to move to `place`: the nearest, or a copy of it when that is far and there is room for another. */
  private nearest(place: number): Checkpoint {
    let best = this.checkpoints[0]!;
    for (const c of this.checkpoints) if (Math.abs(c.at - place) < Math.abs(best.at - place)) best = c;
    if (Math.abs(best.at - place) <= NEAR || this.checkpoints.length >= MAX_CHECKPOINTS) return best;
    const copy = { at: best.at, units: new Map(best.units), counts: new Map(best.counts) };
    this.checkpoints.push(copy);
    return copy;
  }
}

function add(c: Checkpoint, o: Pick<OrderItem, "queue" | "pools">, sign: 1 | -1): void {
  for (let i = 0; i < o.pools.length; i++) {
    const { pool, units } = o.pools[i]!;
    c.units.set(pool, (c.units.get(pool) ?? 0) + sign * units);
    // Counted once per request and pool.
    let named = false;
    for (let j = 0; j < i; j++) if (o.pools[j]!.pool === pool) named = true;
    if (!named) {
      const key = countKey(o.queue, pool);
      c.counts.set(key, (c.counts.get(key) ?? 0) + sign);
    }
  }
}

const countKey = (queue: string, pool: string) => `${queue}\u0000${pool}`;
