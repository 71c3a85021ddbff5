/**
 * What a cached order answers about a request just placed into it, without walking it from the start
 * (a single enqueue's position and wait estimate): each client's first and last place among the ready
 * requests and how many it has there (where the next of its own goes), and what is ahead of a place
 * (units per pool, requests per queue and pool), kept as running sums at a checkpoint that moves to
 * each place asked for. The order's array is shared with its owner, which inserts into it and reports
 * each insertion (`inserted`).
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

export class OrderIndex {
  private readonly spans = new Map<string, ClientSpan>();
  /** The running sums cover items[0..at). */
  private at = 0;
  private readonly units = new Map<string, number>();
  private readonly counts = new Map<string, number>();

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
    if (place < this.at) {
      this.add(x, 1);
      this.at += 1;
    }
  }

  /**
   * Ahead of `place`, and of the order for `extra` (requests out of it that still go first): the units
   * of `pool` those requests need, and how many of them are in `queue` and need `pool` (a request naming
   * a pool twice counts its units twice and itself once).
   */
  ahead(place: number, queue: string, pool: string, extra: ReadonlyArray<Pick<OrderItem, "queue" | "pools">> = []): { units: number; inQueue: number } {
    while (this.at < place) this.add(this.items[this.at++]!, 1);
    while (this.at > place) this.add(this.items[--this.at]!, -1);
    let units = this.units.get(pool) ?? 0;
    let inQueue = this.counts.get(countKey(queue, pool)) ?? 0;
    for (const o of extra) {
      const needs = o.pools.filter((p) => p.pool === pool);
      for (const need of needs) units += need.units;
      if (needs.length > 0 && o.queue === queue) inQueue += 1;
    }
    return { units, inQueue };
  }

  private add(o: Pick<OrderItem, "queue" | "pools">, sign: 1 | -1): void {
    for (let i = 0; i < o.pools.length; i++) {
      const { pool, units } = o.pools[i]!;
      this.units.set(pool, (this.units.get(pool) ?? 0) + sign * units);
      // Counted once per request and pool.
      let named = false;
      for (let j = 0; j < i; j++) if (o.pools[j]!.pool === pool) named = true;
      if (!named) {
        const key = countKey(o.queue, pool);
        this.counts.set(key, (this.counts.get(key) ?? 0) + sign);
      }
    }
  }
}

const countKey = (queue: string, pool: string) => `${queue}\u0000${pool}`;
