import { describe, expect, it } from "vitest";
import { backoffMs, priorityOf, QUEUE_POINTS, QUEUES, rank, STARVATION_MS, DEFAULT_TIER_POINTS, type QueueName } from "../../src/domain/priority";
import { TIERS, type Tier } from "../../src/domain/types";

const NOW = 1_800_000_000_000;

describe("priority formula", () => {
  it("is tier + queue + waited + fairness, each in its range", () => {
    const p = priorityOf({ tier: "premium", queue: "normal", createdAt: NOW, recentShare: 0 }, NOW);
    expect(p).toEqual({ score: 30 + 15 + 0 + 10, tier: 30, queue: 15, wait: 0, fairness: 10, starved: false });
    expect(DEFAULT_TIER_POINTS).toEqual({ enterprise: 40, premium: 30, standard: 20, basic: 10 });
    expect(Math.max(...Object.values(QUEUE_POINTS))).toBe(30);
  });

  it.each([
    [0, 0], [60_000, 2], [150_000, 5], [300_000, 10], [594_000, 19.8], [600_000, 20], [3_600_000, 20],
  ])("after %d ms of waiting the wait term is %d points", (waited, points) => {
    const p = priorityOf({ tier: "basic", queue: "batch", createdAt: NOW - waited, recentShare: 0 }, NOW);
    expect(p.wait).toBeCloseTo(points, 2);
    expect(p.starved).toBe(waited >= STARVATION_MS);
  });

  it.each([[0, 10], [0.25, 7.5], [0.5, 5], [1, 0], [2, 0], [-1, 10], [Number.NaN, 10]])("a recent share of %d gives %d fairness points", (share, points) => {
    expect(priorityOf({ tier: "basic", queue: "batch", createdAt: NOW, recentShare: share }, NOW).fairness).toBe(points);
  });

  it("stays within 0..100 for every tier, queue, wait and share", () => {
    for (const tier of TIERS) for (const queue of QUEUES) for (const waited of [0, 1e5, 1e9]) for (const share of [0, 0.5, 1]) {
      const { score } = priorityOf({ tier, queue, createdAt: NOW - waited, recentShare: share }, NOW);
      expect(score).toBeGreaterThanOrEqual(0);
      expect(score).toBeLessThanOrEqual(100);
    }
  });

  it("a clock behind the request's creation time counts no waiting", () => {
    expect(priorityOf({ tier: "basic", queue: "batch", createdAt: NOW + 5000, recentShare: 0 }, NOW).wait).toBe(0);
  });

  it("retries back off 1 s, 2 s, 4 s ... up to 60 s", () => {
    expect([1, 2, 3, 4, 7, 20].map(backoffMs)).toEqual([1000, 2000, 4000, 8000, 60_000, 60_000]);
  });
});

describe("ranking", () => {
  // A deterministic spread of 1,000 requests over tiers, queues, ages and shares.
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const items = Array.from({ length: 1000 }, (_, i) => ({
    id: `req_${String(i).padStart(4, "0")}`,
    tier: TIERS[Math.floor(rnd() * 4)] as Tier,
    queue: QUEUES[Math.floor(rnd() * 5)] as QueueName,
    createdAt: NOW - Math.floor(rnd() * 900_000),
    recentShare: Math.floor(rnd() * 5) / 4,
  }));

  it("orders 1,000 requests starved first, then by score, then oldest", () => {
    const ranked = rank(items, NOW);
    expect(ranked).toHaveLength(1000);
    for (let i = 1; i < ranked.length; i++) {
      const a = ranked[i - 1]!;
      const b = ranked[i]!;
      if (a.priority.starved !== b.priority.starved) {
        expect(a.priority.starved).toBe(true);
        continue;
      }
      expect(a.priority.score).toBeGreaterThanOrEqual(b.priority.score);
      if (a.priority.score === b.priority.score) expect(a.createdAt).toBeLessThanOrEqual(b.createdAt);
    }
  });

  it("ties go to the oldest", () => {
    const base = { tier: "standard" as const, queue: "normal" as const, recentShare: 0 };
    const ranked = rank([{ ...base, id: "b", createdAt: NOW - 10 }, { ...base, id: "a", createdAt: NOW - 10 }, { ...base, id: "c", createdAt: NOW - 20 }], NOW);
    expect(ranked.map((r) => r.id)).toEqual(["c", "a", "b"]);
  });

  it("anti-starvation: a basic batch request that has waited 10 minutes goes before fresh enterprise fast work", () => {
    const fresh = Array.from({ length: 50 }, (_, i) => ({ id: `ent_${i}`, tier: "enterprise" as const, queue: "fast" as const, createdAt: NOW - i, recentShare: 0 }));
    const old = { id: "basic", tier: "basic" as const, queue: "batch" as const, createdAt: NOW - STARVATION_MS, recentShare: 1 };
    expect(rank([...fresh, old], NOW)[0]!.id).toBe("basic");
    // a minute earlier it was still behind them
    expect(rank([...fresh, { ...old, createdAt: NOW - STARVATION_MS + 60_000 }], NOW)[0]!.id).not.toBe("basic");
  });
});
