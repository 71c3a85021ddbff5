import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { SchedulerObject } from "../../src/objects/scheduler";
import { ADMIN, call, KEYS, makePool, makeTemplate, mulberry32, shardOf, sleep } from "../support/helpers";

/**
 * Ranking.positionsOf answers a batched enqueue from one walk of the order (running sums per pool and
 * per queue and pool). Whatever the mix of clients, queues and pools, it must give exactly what
 * positionOf gives each request on its own walk.
 */

type PositionEstimate = { position: number | null; estimated_wait_ms: number | null };
type RankingLike = {
  positionOf(id: string, now: number, justEnqueued?: boolean): PositionEstimate;
  positionsOf(ids: string[], now: number, justEnqueued?: boolean): PositionEstimate[];
  refreshTiers(): Promise<void>;
  noteDispatch(row: Record<string, unknown>, now: number): void;
};

/** The ranking's cached order and its private estimate, for the single-enqueue check below. */
type Cached = { rankCache: { items: Array<{ id: string; queue: string; pools: Array<{ pool: string; units: number }> }>; placed?: { id: string; place: number } } | null };
type Estimating = { estimate(q: unknown, position: number, aheadInQueue: number, aheadUnits: number[], now: number): number | null; store: { queued: Map<string, { queue: string; pools: Array<{ pool: string; units: number }> }> } };

describe("the position of a single enqueue", () => {
  it("is what a walk of the order from its start gives the request at its place (running sums, Ranking.splice's index)", async () => {
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    try {
      const [p1, p2] = [await makePool({ capacity: 1000, refillPerSec: 5 }), await makePool({ capacity: 1000, refillPerSec: 2 })];
      const templates = [await makeTemplate([{ pool: p1.id, amount: 2 }]), await makeTemplate([{ pool: p2.id, amount: 1 }]), await makeTemplate([{ pool: p1.id, amount: 1 }, { pool: p2.id, amount: 3 }])];
      const single = [templates[0]!, templates[1]!];
      const rnd = mulberry32(31);
      const queues = ["fast", "normal", "batch"];
      const keys = [KEYS.acme, KEYS.globex, KEYS.initech, KEYS.hooli];
      // A backlog of every client first: a client needs two requests in the order to be placed by its spacing.
      for (const key of keys) {
        const requests = Array.from({ length: 30 }, () => ({ template: templates[Math.floor(rnd() * 3)], queue: queues[Math.floor(rnd() * 3)], params: {} }));
        expect((await call("POST", "/api/queue/enqueue", { token: key, json: { requests } })).status).toBe(200);
      }
      // The pools' refill rates and measured queue rates, so that the units and the requests ahead both count in an estimate.
      await runInDurableObject(shardOf("acme"), async (i: SchedulerObject) => {
        const ranking = (i as unknown as { ranking: RankingLike }).ranking;
        await ranking.refreshTiers();
        const now = Date.now();
        for (const queue of queues) {
          for (let k = 0; k < 6; k++) {
            ranking.noteDispatch({ client_id: "acme", queue, template: single[0], estimate_detail: JSON.stringify([{ pool: p1.id, units: 2, cost_nano: 0 }]), created_at: now - 3_600_000, ready_at: now - 3_600_000 }, now - 2500 + k * 500);
          }
        }
      });
      let fast = 0;
      for (let n = 0; n < 60; n++) {
        const res = await call("POST", "/api/queue/enqueue", { token: keys[n % 4], json: { template: single[Math.floor(rnd() * 2)], queue: queues[Math.floor(rnd() * 3)], params: {} } });
        expect(res.status).toBe(202);
        const id: string = res.body.request.id;
        const checked = await runInDurableObject(shardOf("acme"), (i: SchedulerObject) => {
          const ranking = (i as unknown as { ranking: RankingLike & Cached & Estimating }).ranking;
          const cache = ranking.rankCache;
          // Only while the order it was placed into is still the cached one (no pass, no re-rank since).
          if (!cache?.placed || cache.placed.id !== id) return null;
          const now = Date.now();
          const answered = ranking.positionOf(id, now, true);
          // The order aged out (250 ms) while this was asked: positionOf ranked afresh, not the order to compare with.
          if (ranking.rankCache !== cache) return null;
          const q = ranking.store.queued.get(id)!;
          const pool = q.pools[0]!.pool;
          let units = 0;
          let inQueue = 0;
          const place = cache.items.findIndex((o) => o.id === id);
          for (const o of cache.items.slice(0, place)) {
            const needs = o.pools.filter((p) => p.pool === pool);
            units += needs.reduce((sum, p) => sum + p.units, 0);
            if (needs.length && o.queue === q.queue) inQueue += 1;
          }
          return { answered, walked: { position: place + 1, estimated_wait_ms: ranking.estimate(q, place + 1, inQueue, [units], now) }, place };
        });
        if (!checked) continue;
        fast += 1;
        expect(checked.place).toBeGreaterThan(0);
        expect(checked.answered).toEqual(checked.walked);
      }
      // Many were answered from the index (a re-rank every 250 ms starts a fresh order, answered by a walk;
      // under load fewer calls fit in those 250 ms).
      expect(fast).toBeGreaterThanOrEqual(8);
    } finally {
      expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
    }
  });
});

/** The ranking's cached order, as the tests below read it. */
type Ranked = { rankCache: { at: number; order: string[]; spliced: boolean } | null; rankedOrder(now: number, allowSplice?: boolean): string[] };
const rankingOf = (i: SchedulerObject) => (i as unknown as { ranking: Ranked }).ranking;

/** With the scheduler stopped: a pool, a template needing one unit of it, and six of acme's requests queued. */
async function stoppedWithBacklog(run: (template: string) => Promise<void>): Promise<void> {
  expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
  try {
    const pool = await makePool({ capacity: 1000 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const requests = Array.from({ length: 6 }, () => ({ template, queue: "normal", params: {} }));
    expect((await call("POST", "/api/queue/enqueue", { token: KEYS.acme, json: { requests } })).status).toBe(200);
    await run(template);
  } finally {
    expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
  }
}

/**
 * Single enqueues of acme in a row until one is placed into the order the one before it was answered
 * from (each call takes a few ms; the order they meet is at most 250 ms old when the first is placed):
 * that order's rank time and ids.
 */
async function untilPlaced(template: string): Promise<{ at: number; order: string[] }> {
  let placed: { at: number; order: string[] } | null = null;
  for (let n = 0; n < 20 && !placed; n++) {
    expect((await call("POST", "/api/queue/enqueue", { token: KEYS.acme, json: { template, queue: "normal", params: {} } })).status).toBe(202);
    placed = await runInDurableObject(shardOf("acme"), (i: SchedulerObject) => {
      const cache = rankingOf(i).rankCache;
      return cache?.spliced ? { at: cache.at, order: cache.order } : null;
    });
  }
  expect(placed).not.toBeNull();
  return placed!;
}

describe("the order single enqueues are placed into", () => {
  it("answers them for up to a second once only they changed it; other answers, and older orders, are ranked afresh", async () => {
    await stoppedWithBacklog(async (template) => {
      const { at } = await untilPlaced(template);
      const seen = await runInDurableObject(shardOf("acme"), (i: SchedulerObject) => {
        const ranking = rankingOf(i);
        const same = (order: string[]) => order === ranking.rankCache!.order && ranking.rankCache!.at === at;
        return {
          // A single enqueue's answer 999 ms on: the same order, placed into; at 1,000 ms it is ranked afresh.
          single999: same(ranking.rankedOrder(at + 999, true)),
          single1000: same(ranking.rankedOrder(at + 1000, true)),
        };
      });
      expect(seen).toEqual({ single999: true, single1000: false });
      // Any other answer does not use an order placed into, however young: ranked afresh.
      const spliced = await untilPlaced(template);
      const other = await runInDurableObject(shardOf("acme"), (i: SchedulerObject) => {
        const ranking = rankingOf(i);
        const order = ranking.rankedOrder(spliced.at + 100, false);
        return order === spliced.order || ranking.rankCache!.at === spliced.at;
      });
      expect(other).toBe(false);
      const aged = await runInDurableObject(shardOf("acme"), (i: SchedulerObject) => {
        const ranking = rankingOf(i);
        // The fresh order ranked just now (not placed into) serves a single enqueue only for 250 ms; one a second old is ranked again.
        const fresh = ranking.rankCache!.at;
        const young = ranking.rankedOrder(fresh + 200, true) === ranking.rankCache!.order && ranking.rankCache!.at === fresh;
        ranking.rankedOrder(fresh + 300, true);
        return { young, rankedAgainAt: ranking.rankCache!.at - fresh };
      });
      expect(aged).toEqual({ young: true, rankedAgainAt: 300 });
    });
  });
});

describe("a single enqueue placed into a cached order", () => {
  it("counts a held-back request whose time came after the order was ranked: the order is not used past it", async () => {
    await stoppedWithBacklog(async (template) => {
      const notBefore = Date.now() + 300;
      const held = await call("POST", "/api/queue/enqueue", { token: KEYS.acme, json: { template, queue: "normal", params: {}, not_before: notBefore } });
      expect(held.status).toBe(202);
      await untilPlaced(template);
      // The held-back request may run now; the order placed into was ranked before that (it is still
      // young enough to answer a single enqueue, unless this machine took a second to get here).
      await sleep(Math.max(0, notBefore + 150 - Date.now()));
      const x = await call("POST", "/api/queue/enqueue", { token: KEYS.acme, json: { template, queue: "normal", params: {} } });
      expect(x.status).toBe(202);
      const exact = await call("GET", `/api/queue/position/${x.body.request.id}`, { token: KEYS.acme });
      expect(x.body.position).toBe(exact.body.position);
    });
  });

  it("after requests left the order (claimed, cancelled) is placed into what is left, not ranked again: the position a fresh ranking gives", async () => {
    await stoppedWithBacklog(async (template) => {
      let checked = 0;
      for (let attempt = 0; attempt < 5 && checked === 0; attempt++) {
        const { at } = await untilPlaced(template);
        // Three of acme's requests ahead in that order leave it: cancelled by their caller (a pass's claims take them out the same way).
        const ahead = await runInDurableObject(shardOf("acme"), (i: SchedulerObject) =>
          (i as unknown as { ranking: { rankCache: { items: Array<{ id: string; clientId: string }> } } }).ranking.rankCache.items.filter((o) => o.clientId === "acme").slice(0, 3).map((o) => o.id));
        expect(ahead).toHaveLength(3);
        for (const id of ahead) expect((await call("DELETE", `/api/queue/${id}`, { token: KEYS.acme })).status).toBe(200);
        const x = await call("POST", "/api/queue/enqueue", { token: KEYS.acme, json: { template, queue: "normal", params: {} } });
        expect(x.status).toBe(202);
        const seen = await runInDurableObject(shardOf("acme"), (i: SchedulerObject) => {
          const cache = rankingOf(i).rankCache as (Ranked["rankCache"] & { placed?: { id: string; place: number } }) | null;
          return cache && { at: cache.at, order: cache.order, placed: cache.placed ?? null };
        });
        // The order aged out (a second) before the enqueue came: ranked afresh, try again.
        if (!seen || seen.at !== at) continue;
        checked += 1;
        expect(seen.placed?.id).toBe(x.body.request.id);
        expect(seen.order.filter((id) => ahead.includes(id))).toEqual([]);
        expect(x.body.position).toBe(seen.placed!.place + 1);
        // What a fresh ranking of the shard's queued requests gives it (GET position ranks afresh).
        const exact = await call("GET", `/api/queue/position/${x.body.request.id}`, { token: KEYS.acme });
        expect(exact.status).toBe(200);
        expect(x.body.position).toBe(exact.body.position);
      }
      expect(checked).toBe(1);
    });
  });

  it("keeps its client's own order: none of its later requests before it, none of its earlier ones after it", async () => {
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    try {
      const pool = await makePool({ capacity: 1000 });
      const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
      // Fast requests rank ahead of normal ones, batch ones after: a normal one goes among its client's work.
      const queues = ["fast", "batch", "fast", "batch", "fast", "batch", "batch", "batch"];
      for (const key of [KEYS.acme, KEYS.globex]) {
        expect((await call("POST", "/api/queue/enqueue", { token: key, json: { requests: queues.map((queue) => ({ template, queue, params: {} })) } })).status).toBe(200);
      }
      let checked = 0;
      for (let n = 0; n < 30 && checked < 3; n++) {
        const res = await call("POST", "/api/queue/enqueue", { token: KEYS.acme, json: { template, queue: "normal", params: {} } });
        expect(res.status).toBe(202);
        const id: string = res.body.request.id;
        const misplaced = await runInDurableObject(shardOf("acme"), (i: SchedulerObject) => {
          const cache = (i as unknown as { ranking: { rankCache: { items: Array<{ id: string; clientId: string; queue: string }>; placed?: { id: string; place: number } } | null } }).ranking.rankCache;
          if (!cache?.placed || cache.placed.id !== id) return null;
          const place = cache.placed.place;
          const mine = cache.items.map((o, k) => ({ ...o, k })).filter((o) => o.clientId === "acme" && o.id !== id);
          return mine.filter((o) => (o.queue === "batch" && o.k < place) || (o.queue !== "batch" && o.k > place)).map((o) => `${o.queue}@${o.k}`);
        });
        if (misplaced === null) continue;
        checked += 1;
        expect(misplaced).toEqual([]);
      }
      expect(checked).toBeGreaterThan(0);
    } finally {
      expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
    }
  });
});

describe("positions of a batch", () => {
  it("are exactly each request's own position and estimate, over clients, queues and one, two or shared pools", async () => {
    expect((await call("POST", "/admin/scheduler/stop", { token: ADMIN })).status).toBe(200);
    try {
      // Pools that refill: their rate bounds each estimate by the units ahead (running sums per pool).
      const [p1, p2] = [await makePool({ capacity: 1000, refillPerSec: 5 }), await makePool({ capacity: 1000, refillPerSec: 2 })];
      const one = await makeTemplate([{ pool: p1.id, amount: 2 }]);
      const other = await makeTemplate([{ pool: p2.id, amount: 1 }]);
      const both = await makeTemplate([{ pool: p1.id, amount: 1 }, { pool: p2.id, amount: 3 }]);
      const twice = await makeTemplate([{ pool: p2.id, amount: 1 }, { pool: p2.id, amount: 2 }]); // one pool named twice
      const rnd = mulberry32(20);
      const queues = ["fast", "normal", "batch"];
      // Every shard's clients in turn (one shard in this project: all of them meet in one order).
      const ids: string[] = [];
      for (const key of [KEYS.acme, KEYS.globex, KEYS.initech, KEYS.hooli]) {
        const requests = Array.from({ length: 60 }, () => ({
          template: [one, other, both, twice][Math.floor(rnd() * 4)], queue: queues[Math.floor(rnd() * 3)], params: { tokens_used: 1 },
        }));
        const res = await call("POST", "/api/queue/enqueue", { token: key, json: { requests } });
        expect(res.status).toBe(200);
        expect(res.body.accepted).toBe(60);
        for (const r of res.body.results) ids.push(r.request.id);
      }
      const compared = await runInDurableObject(shardOf("acme"), async (i: SchedulerObject) => {
        const ranking = (i as unknown as { ranking: RankingLike }).ranking;
        await ranking.refreshTiers(); // the pools' refill rates
        const queued = [...ids.filter((_, k) => k % 3 !== 1), "req_not_queued"]; // a batch of some of them, in enqueue order
        const both = (now: number) => ({ batch: ranking.positionsOf(queued, now), alone: queued.map((id) => ranking.positionOf(id, now)) });
        // Estimates bound by the units ahead in each pool only; then with measured queue rates too (the
        // work ahead in the same queue that needs the same pool).
        const poolsOnly = both(Date.now());
        const now = Date.now();
        // Six dispatches per queue over 2.5 s of requests that had waited long (a backlog's: the rates count those).
        for (const queue of queues) {
          for (let k = 0; k < 6; k++) {
            ranking.noteDispatch({ client_id: "acme", queue, template: one, estimate_detail: JSON.stringify([{ pool: p1.id, units: 2, cost_nano: 0 }]), created_at: now - 3_600_000, ready_at: now - 3_600_000 }, now - 2500 + k * 500);
          }
        }
        return { poolsOnly, ...both(now + 1) };
      });
      expect(compared.poolsOnly.batch).toEqual(compared.poolsOnly.alone);
      expect(new Set(compared.poolsOnly.batch.map((p) => p.estimated_wait_ms)).size).toBeGreaterThan(20);
      expect(compared.batch).toHaveLength(161);
      expect(compared.batch).toEqual(compared.alone);
      // Positions differ (the walk did not hand one answer to all), and the id never queued has none.
      expect(new Set(compared.batch.slice(0, 160).map((p) => p.position)).size).toBe(160);
      expect(compared.batch.at(-1)).toEqual({ position: null, estimated_wait_ms: null });
    } finally {
      expect((await call("POST", "/admin/scheduler/start", { token: ADMIN })).status).toBe(200);
    }
  });
});
