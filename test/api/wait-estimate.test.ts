import { describe, expect, it } from "vitest";
import { rank, type QueueName } from "../../src/domain/priority";
import type { Tier } from "../../src/domain/types";
import { DispatchRates, estimateWaitMs, type WaitRates } from "../../src/domain/wait-estimate";
import { enqueue, eventually, makePool, makeTemplate, requestOf, sleep } from "../support/helpers";

const rates = (over: Partial<WaitRates> = {}): WaitRates => ({ total: null, queue: null, pool: () => null, fallbackMs: () => 1234, ...over });

describe("dispatch rates", () => {
  it("are unknown until 5 dispatches over at least 1 s; then per second over the span since the first, not the window", () => {
    const r = new DispatchRates();
    const T = 1_000_000;
    for (let i = 0; i < 4; i++) r.note(T + i * 250, "normal", [{ pool: "p", units: 2 }], 5000);
    expect(r.total(T + 1000)).toBeNull();
    r.note(T + 1000, "normal", [{ pool: "p", units: 2 }], 5000);
    expect(r.total(T + 999)).toBeNull(); // 5, but within less than a second
    expect(r.total(T + 1000)).toBe(5);
    expect(r.total(T + 1250)).toBe(4); // 5 over 1.25 s
    expect(r.queue("normal", T + 1250)).toBe(4);
    expect(r.queue("fast", T + 1250)).toBeNull();
    expect(r.pool("p", T + 1250)).toBe(8); // units per second
    // 10 s of 2 per second: 2/s, where a fixed 30 s window would say a third of it
    const s = new DispatchRates();
    for (let t = 0; t < 10_000; t += 500) s.note(T + t, "batch", [], 1000);
    expect(s.total(T + 10_000)).toBe(2);
    // a pass that stops dispatching: the rate decays with time, and the window forgets
    expect(s.total(T + 20_000)).toBe(1);
    expect(s.total(T + 45_000)).toBeNull();
  });

  it("count only requests that waited in the overall and queue rates (a drained queue measures demand, not speed); pools count all", () => {
    const r = new DispatchRates();
    const T = 5_000_000;
    for (let t = 0; t <= 2000; t += 100) r.note(T + t, "fast", [{ pool: "p", units: 1 }], 10);
    expect(r.total(T + 2000)).toBeNull();
    expect(r.queue("fast", T + 2000)).toBeNull();
    expect(r.pool("p", T + 2000)).toBeCloseTo(10.5, 5);
  });
});

describe("estimateWaitMs", () => {
  it("a request needing no pool: its position over the overall rate, or its queue's competing work over the queue's rate, whichever is slower", () => {
    expect(estimateWaitMs({ position: 10, aheadInQueue: 3, pools: [], delayMs: 0 }, rates({ total: 5 }))).toBe(2000);
    expect(estimateWaitMs({ position: 10, aheadInQueue: 7, pools: [], delayMs: 0 }, rates({ total: 5, queue: 2 }))).toBe(4000);
  });

  it("a request needing pools: each pool's units ahead plus its own over the pool's grant rate; the queue bound over competing work; the overall rate not at all", () => {
    const pool = (p: string) => ({ a: 10, b: 100 })[p] ?? null;
    const input = { position: 500, aheadInQueue: 9, pools: [{ pool: "a", units: 2, aheadUnits: 48 }, { pool: "b", units: 1, aheadUnits: 99 }], delayMs: 0 };
    expect(estimateWaitMs(input, rates({ total: 1, pool }))).toBe(5000); // a: 50 units / 10 per s
    expect(estimateWaitMs(input, rates({ total: 1, pool, queue: 1 }))).toBe(10_000); // 10 in its queue / 1 per s
  });

  it("never before its not-before; the work ahead drains meanwhile; durations when nothing is measured", () => {
    expect(estimateWaitMs({ position: 10, aheadInQueue: 0, pools: [], delayMs: 60_000 }, rates({ total: 5 }))).toBe(60_000);
    expect(estimateWaitMs({ position: 1000, aheadInQueue: 0, pools: [], delayMs: 60_000 }, rates({ total: 5 }))).toBe(200_000);
    expect(estimateWaitMs({ position: 7, aheadInQueue: 0, pools: [], delayMs: 0 }, rates())).toBe(1234);
  });
});

/**
 * A steady synthetic workload, simulated in 10 ms steps with the real ranking (domain/priority.ts):
 * one pool refilling `refill` units a second (1 unit a request, 5 at most banked), arrivals per
 * (queue, tier) stream at fixed intervals with seeded jitter, dispatch in rank order while the pool
 * has units. Each request's estimate at arrival is compared with the wait it then had.
 */
type EstimateArgs = { queue: QueueName; position: number; aheadInQueue: number; now: number; measured: DispatchRates; log: number[]; refill: number };

function simulate(streams: Array<{ queue: QueueName; tier: Tier; perSec: number }>, refill: number, seconds: number, estimate: (args: EstimateArgs) => number) {
  type Item = { id: string; clientId: string; tier: Tier; queue: QueueName; createdAt: number; estimate: number; stream: number };
  const measured = new DispatchRates();
  const log: number[] = [];
  let tokens = 5;
  let seed = 42;
  const jitter = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5) * 0.2;
  const next = streams.map(() => 0);
  const queued: Item[] = [];
  const done: Array<{ estimate: number; actual: number; arrival: number; stream: number }> = [];
  let n = 0;
  for (let t = 0; t < seconds * 1000; t += 10) {
    tokens = Math.min(5, tokens + (refill * 10) / 1000);
    streams.forEach((s, i) => {
      while (next[i]! <= t) {
        const item: Item = { id: `r${String(n++).padStart(6, "0")}`, clientId: `c${i}`, tier: s.tier, queue: s.queue, createdAt: t, estimate: 0, stream: i };
        queued.push(item);
        const order = rank(queued.map((q) => ({ ...q, recentShare: 0 })), t);
        const position = order.findIndex((q) => q.id === item.id) + 1;
        const aheadInQueue = order.slice(0, position - 1).filter((q) => q.queue === item.queue).length;
        item.estimate = estimate({ queue: s.queue, position, aheadInQueue, now: t, measured, log, refill });
        next[i]! += (1000 / s.perSec) * (1 + jitter());
      }
    });
    if (tokens < 1) continue;
    for (const head of rank(queued.map((q) => ({ ...q, recentShare: 0 })), t)) {
      if (tokens < 1) break;
      tokens -= 1;
      queued.splice(queued.findIndex((q) => q.id === head.id), 1);
      measured.note(t, head.queue, [{ pool: "p", units: 1 }], t - head.createdAt);
      log.push(t);
      done.push({ estimate: head.estimate, actual: t - head.createdAt, arrival: head.createdAt, stream: head.stream });
    }
  }
  return done;
}

/** As Ranking.positionOf computes it: every request needs the one pool, so all work ahead competes. */
const honest = (a: EstimateArgs) => estimateWaitMs(
  { position: a.position, aheadInQueue: a.aheadInQueue, pools: [{ pool: "p", units: 1, aheadUnits: a.position - 1 }], delayMs: 0 },
  { total: a.measured.total(a.now), queue: a.measured.queue(a.queue, a.now), pool: () => Math.max(a.measured.pool("p", a.now) ?? 0, a.refill), fallbackMs: () => 5 },
);

/** The estimate it replaces: position / (dispatches in the last 60 s / 60 s), one rate for all queues. */
const globalRate = (a: EstimateArgs) => {
  const rate = a.log.filter((t) => t > a.now - 60_000).length / 60;
  return rate > 0 ? (a.position / rate) * 1000 : 1000;
};

function within(done: Array<{ estimate: number; actual: number }>, tolerance = 0.5): number {
  return done.filter((d) => Math.abs(d.estimate - d.actual) <= tolerance * d.actual).length / done.length;
}

describe("estimates on a steady synthetic workload", () => {
  // Two queues into one pool of 50 units/s: fast work (enterprise, 15/s) always ranks first, normal
  // work (standard, 40/s) gets what is left, and its backlog grows by 5 a second.
  const streams = [{ queue: "fast" as const, tier: "enterprise" as const, perSec: 15 }, { queue: "normal" as const, tier: "standard" as const, perSec: 40 }];

  it("are within ±50% of the actual wait for at least 90% of requests, where the old global estimate is not", () => {
    const done = simulate(streams, 50, 60, honest);
    expect(done.length).toBeGreaterThan(2500);
    // steady state: after the first 10 s; the normal stream's (fast work waits one step at most)
    const normal = done.filter((d) => d.stream === 1 && d.arrival >= 10_000);
    expect(normal.length).toBeGreaterThan(1500);
    expect(Math.min(...normal.map((d) => d.actual))).toBeGreaterThan(1000);
    expect(within(normal)).toBeGreaterThanOrEqual(0.9);
    const old = simulate(streams, 50, 60, globalRate).filter((d) => d.stream === 1 && d.arrival >= 10_000);
    expect(within(old)).toBeLessThan(0.9);
  });

  it("a pool as the bottleneck, one queue, a constant backlog: within ±50% for at least 90% from the start", () => {
    // 35/s into a pool of 30 units/s: the backlog grows by 5 a second.
    const done = simulate([{ queue: "batch", tier: "basic", perSec: 35 }], 30, 30, honest);
    expect(done.length).toBeGreaterThan(800);
    expect(within(done.filter((d) => d.actual >= 1000))).toBeGreaterThanOrEqual(0.9);
  });
});

describe("estimates through the real scheduler", () => {
  it("a steady stream into a pool of 5 units/s: the estimate given at enqueue is within ±50% of the actual wait for at least 90%", async () => {
    // The pool's refill is the bottleneck: a clock, not the machine's speed, sets the drain rate.
    const pool = await makePool({ capacity: 1, refillPerSec: 5 });
    const template = await makeTemplate([{ pool: pool.id, amount: 1 }]);
    const spec = { template, queue: "normal" };
    const sent: Array<{ id: string; estimate: number }> = [];
    // Warm-up, not scored: a backlog of 2 s, so that the pool has been seen and rates measured.
    const warmUp = await enqueue({ requests: Array.from({ length: 10 }, () => spec) });
    expect(warmUp.body.accepted).toBe(10);
    await sleep(1200);
    // Then 7 a second for 4 s, more than the pool grants: the backlog grows steadily.
    const t0 = Date.now();
    for (let i = 0; i < 28; i++) {
      await sleep(Math.max(0, t0 + Math.round(i * (1000 / 7)) - Date.now()));
      const r = await enqueue(spec);
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      sent.push({ id: r.body.request.id, estimate: r.body.estimated_wait_ms });
    }
    // Polled lightly: reading every request every few ms would take the CPU the scheduler runs on.
    await eventually(async () => (await requestOf(sent.at(-1)!.id)).status === "completed" && (await sleep(200), true), 15_000, "the stream to drain");
    const done = await Promise.all(sent.map((s) => requestOf(s.id)));
    expect(done.map((v) => v.status)).toEqual(sent.map(() => "completed"));
    const waits = done.map((v, i) => ({ estimate: sent[i]!.estimate, actual: v.started_at - v.created_at }));
    const off = waits.filter((w) => Math.abs(w.estimate - w.actual) > 0.5 * w.actual);
    expect((waits.length - off.length) / waits.length, JSON.stringify(waits)).toBeGreaterThanOrEqual(0.9);
    // The waits were real: the backlog grew to seconds.
    expect(Math.max(...waits.map((w) => w.actual)), JSON.stringify(waits)).toBeGreaterThan(2000);
  }, 40_000);
});
