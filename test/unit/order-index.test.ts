import { describe, expect, it } from "vitest";
import { OrderIndex, type OrderItem } from "../../src/domain/order-index";
import { mulberry32 } from "../support/helpers";

/** What a walk from the start of the order finds ahead of `place` (as Ranking.positionOf walks it). */
function walk(items: OrderItem[], place: number, queue: string, pool: string): { units: number; inQueue: number } {
  let units = 0;
  let inQueue = 0;
  for (const o of items.slice(0, place)) {
    const needs = o.pools.filter((p) => p.pool === pool);
    units += needs.reduce((sum, p) => sum + p.units, 0);
    if (needs.length && o.queue === queue) inQueue += 1;
  }
  return { units, inQueue };
}

/** Each client's ready places, counted from the start. */
function spans(items: OrderItem[], readyCount: number): Map<string, { first: number; last: number; count: number }> {
  const out = new Map<string, { first: number; last: number; count: number }>();
  items.slice(0, readyCount).forEach((o, i) => {
    const s = out.get(o.clientId);
    if (s) Object.assign(s, { last: i, count: s.count + 1 });
    else out.set(o.clientId, { first: i, last: i, count: 1 });
  });
  return out;
}

const POOLS = ["p1", "p2", "p3"];
const QUEUES = ["fast", "normal", "batch"];
const CLIENTS = ["a", "b", "c", "d", "e"];

function item(rnd: () => number): OrderItem {
  const n = Math.floor(rnd() * 3); // none, one or two pools (a pool may be named twice)
  const pools = Array.from({ length: n }, () => ({ pool: POOLS[Math.floor(rnd() * POOLS.length)]!, units: 1 + Math.floor(rnd() * 5) }));
  return { clientId: CLIENTS[Math.floor(rnd() * CLIENTS.length)]!, queue: QUEUES[Math.floor(rnd() * QUEUES.length)]!, pools };
}

describe("OrderIndex: a cached order's places and running sums", () => {
  it("answers what a walk from the start finds, and each client's places, through 2,000 insertions and queries at random places", () => {
    for (const seed of [1, 2, 3]) {
      const rnd = mulberry32(seed);
      const items: OrderItem[] = Array.from({ length: 300 }, () => item(rnd));
      let readyCount = 250; // the rest: not ready yet (deferred), after the ready ones
      const index = new OrderIndex(items, readyCount);
      for (let step = 0; step < 2000; step++) {
        if (rnd() < 0.5) {
          // A ready request placed among the ready ones (as Ranking.splice does).
          const place = Math.floor(rnd() * (readyCount + 1));
          items.splice(place, 0, item(rnd));
          readyCount += 1;
          index.inserted(place);
        }
        const place = Math.floor(rnd() * (items.length + 1));
        const queue = QUEUES[Math.floor(rnd() * QUEUES.length)]!;
        const pool = POOLS[Math.floor(rnd() * POOLS.length)]!;
        expect(index.ahead(place, queue, pool)).toEqual(walk(items, place, queue, pool));
        if (step % 97 === 0) {
          for (const [client, span] of spans(items, readyCount)) expect(index.span(client)).toEqual(span);
        }
      }
      expect(index.span("nobody")).toBeUndefined();
    }
  });

  it("keeps a checkpoint near each region asked about: queries that alternate between far places walk a few items each, exactly", () => {
    // A shard's single enqueues as the queue benchmark makes them: each client's requests rotate through
    // fast, normal and batch, placed early, midway and late in the order, and each asks what is ahead of it.
    const rnd = mulberry32(7);
    const base: OrderItem[] = Array.from({ length: 3000 }, () => item(rnd));
    let reads = 0;
    const items = new Proxy(base, {
      get(target, key, receiver) {
        if (typeof key === "string" && /^\d+$/.test(key)) reads += 1;
        return Reflect.get(target, key, receiver);
      },
    });
    const index = new OrderIndex(items, items.length);
    const afterBuild = reads;
    const regions = [500, 1500, 2500];
    for (let step = 0; step < 300; step++) {
      const place = regions[step % 3]! + step;
      base.splice(place, 0, item(rnd));
      index.inserted(place);
      expect(index.ahead(place, "normal", "p1")).toEqual(walk(base, place, "normal", "p1"));
    }
    // One checkpoint moving between the regions read about 1,000-2,000 items a query (over 400,000 in all).
    expect(reads - afterBuild).toBeLessThan(300 * 40);
  });

  it("bounds a place among a client's own places as a walk of them does, for any cut of its own order", () => {
    for (const seed of [11, 12, 13, 14]) {
      const rnd = mulberry32(seed);
      // Clients interleaved unevenly (one sparse), some places not ready at the end.
      const items: OrderItem[] = Array.from({ length: 400 }, () => ({ ...item(rnd), clientId: rnd() < 0.03 ? "sparse" : CLIENTS[Math.floor(rnd() * CLIENTS.length)]! }));
      const readyCount = 380;
      const index = new OrderIndex(items, readyCount);
      for (const client of [...CLIENTS, "sparse"]) {
        const mine = items.slice(0, readyCount).flatMap((o, i) => (o.clientId === client ? [i] : []));
        for (let cut = 0; cut <= mine.length; cut++) {
          // The first `cut` of its own places go before the request being placed.
          const goesBefore = (place: number) => {
            expect(items[place]!.clientId).toBe(client);
            return mine.indexOf(place) < cut;
          };
          expect(index.boundAmong(client, goesBefore)).toEqual({ prev: cut > 0 ? mine[cut - 1]! : -1, next: cut < mine.length ? mine[cut]! : -1 });
        }
      }
      expect(index.boundAmong("nobody", () => true)).toEqual({ prev: -1, next: -1 });
    }
  });

  it("counts a request that names a pool twice once, with both amounts", () => {
    const items: OrderItem[] = [
      { clientId: "a", queue: "normal", pools: [{ pool: "p", units: 2 }, { pool: "p", units: 3 }] },
      { clientId: "b", queue: "normal", pools: [{ pool: "q", units: 7 }] },
      { clientId: "a", queue: "fast", pools: [] },
    ];
    const index = new OrderIndex(items, 3);
    expect(index.ahead(3, "normal", "p")).toEqual({ units: 5, inQueue: 1 });
    expect(index.ahead(3, "normal", "q")).toEqual({ units: 7, inQueue: 1 });
    expect(index.ahead(1, "normal", "q")).toEqual({ units: 0, inQueue: 0 });
    expect(index.span("a")).toEqual({ first: 0, last: 2, count: 2 });
    // Requests out of the order that still go first (being admitted) count ahead too, the same way.
    const admitting = [{ queue: "normal", pools: [{ pool: "p", units: 4 }, { pool: "p", units: 1 }] }, { queue: "fast", pools: [{ pool: "p", units: 6 }] }];
    expect(index.ahead(1, "normal", "p", admitting)).toEqual({ units: 5 + 5 + 6, inQueue: 2 });
  });
});
