import { describe, expect, it } from "vitest";
import { fairIds, fairOrder, fairRank, priorityOf, rank, STARVATION_MS, type FairItem, type Priority, type QueueName } from "../../src/domain/priority";
import type { Tier } from "../../src/domain/types";
import { headIds, mulberry32 as random } from "../support/helpers";

/**
 * The weighted fair order written plainly, as the formula reads (the way fairRank was written before it
 * computed scores from numbers, eleventh session): each client's requests ranked with priorityOf at
 * share 0, then pick by pick the client whose head scores highest with priorityOf at its share so far.
 * fairRank and fairIds (what a dispatch pass reads) must give exactly this order and these priorities.
 */
function plainFairRank<T extends FairItem>(items: T[], now: number, recent: ReadonlyMap<string, number>, weightOf: (c: string, t: Tier) => number, limit = Infinity, headOnly = false) {
  const byClient = new Map<string, T[]>();
  for (const item of items) byClient.set(item.clientId, [...(byClient.get(item.clientId) ?? []), item]);
  const clients = [...byClient].map(([clientId, list]) => ({
    ranked: rank(list.map((i) => ({ ...i, recentShare: 0 })), now), next: 0, weight: Math.max(1e-9, weightOf(clientId, list[0]!.tier)), count: recent.get(clientId) ?? 0,
  }));
  const totalWeight = clients.reduce((sum, c) => sum + c.weight, 0);
  let total = [...recent.values()].reduce((a, b) => a + b, 0);
  const out: Array<Record<string, unknown> & { id: string; priority: Priority }> = [];
  while (out.length < Math.min(limit, items.length)) {
    let best: (typeof clients)[number] | null = null;
    let bestP: Priority | null = null;
    for (const c of clients) {
      if (c.next >= c.ranked.length) continue;
      const head = c.ranked[c.next]!;
      const p = priorityOf({ ...head, recentShare: total > 0 ? c.count / total : 0, entitled: c.weight / totalWeight }, now);
      const bh = best?.ranked[best.next];
      const ready = (x: { createdAt: number; readyAt?: number }) => x.readyAt ?? x.createdAt;
      if (!bestP || Number(p.starved) > Number(bestP.starved) || (p.starved === bestP.starved && (p.score > bestP.score || (p.score === bestP.score && (ready(head) < ready(bh!) || (ready(head) === ready(bh!) && head.id < bh!.id)))))) {
        best = c;
        bestP = p;
      }
    }
    if (!best || !bestP) break;
    const { recentShare: _s, priority: _p, ...item } = best.ranked[best.next]!;
    out.push({ ...item, priority: bestP });
    best.next += 1;
    best.count += 1;
    total += 1;
  }
  if (out.length < items.length && !headOnly) {
    const rest = clients.flatMap((c) => c.ranked.slice(c.next)).map(({ recentShare: _s, priority: _p, ...i }) => i);
    out.push(...rank(rest.map((i) => ({ ...i, recentShare: total > 0 ? (recent.get(i.clientId) ?? 0) / total : 0 })), now).map(({ recentShare: _s, ...i }) => i));
  }
  return out;
}

const NOW = 1_800_000_000_000;
const TIERS: Tier[] = ["enterprise", "premium", "standard", "basic"];
const QUEUE_NAMES: QueueName[] = ["immediate", "fast", "normal", "batch", "deferred"];

/** A backlog of `n` requests over `clients` clients: mixed tiers (some with their row's own points), queues, ages (some starved), ready times, equal times. */
function backlogOf(seed: number, n: number, clients: number) {
  const r = random(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
  const tierOf = new Map<string, Tier>();
  return Array.from({ length: n }, (_, i) => {
    const clientId = `c${Math.floor(r() * clients)}`;
    const tier = tierOf.get(clientId) ?? pick(TIERS);
    tierOf.set(clientId, tier);
    // Coarse ages, so that equal scores and equal ready times (the tie-breaks) occur often.
    const createdAt = NOW - Math.floor(r() * 14) * (STARVATION_MS / 10);
    const item: FairItem & { tierPoints?: number; recentShare?: number } = { id: `req_${String(Math.floor(r() * 1e6)).padStart(6, "0")}_${i}`, clientId, tier, queue: pick(QUEUE_NAMES), createdAt };
    if (r() < 0.3) item.readyAt = createdAt + Math.floor(r() * 3) * 60_000;
    if (r() < 0.2) item.tierPoints = Math.floor(r() * 41);
    if (r() < 0.5) item.recentShare = r(); // as the scheduler's own items carry: fairRank must ignore it
    return item;
  });
}

describe("fairRank computes the plain formula's order, from numbers", () => {
  it("the same ids and priorities for 200 random backlogs: clients 1-12, weights, recent dispatches, limits, headOnly", () => {
    for (let seed = 1; seed <= 200; seed++) {
      const r = random(seed * 7919);
      const clients = 1 + Math.floor(r() * 12);
      const items = backlogOf(seed, 1 + Math.floor(r() * 300), clients);
      const weights = new Map(Array.from({ length: clients }, (_, i) => [`c${i}`, r() < 0.2 ? 0 : Math.ceil(r() * 5)]));
      const recent = new Map(Array.from({ length: clients }, (_, i) => [`c${i}`, Math.floor(r() * 200)]).filter(() => r() < 0.7) as Array<[string, number]>);
      const weightOf = (c: string) => weights.get(c) ?? 1;
      const limit = r() < 0.3 ? Infinity : 1 + Math.floor(r() * items.length);
      const headOnly = r() < 0.5;
      const expected = plainFairRank(items, NOW, recent, weightOf, limit, headOnly);
      const actual = fairRank(items, NOW, recent, weightOf, limit, headOnly);
      expect(actual.map((o) => o.id), `seed ${seed}`).toEqual(expected.map((o) => o.id));
      expect(actual, `seed ${seed}`).toEqual(expected);
      // The same order of the items themselves, uncopied (the scheduler's cache of positions); headOnly is fairRank's alone.
      if (!headOnly) {
        const order = fairOrder(items, NOW, recent, weightOf, limit);
        expect(order.map((o) => o.id), `seed ${seed}`).toEqual(expected.map((o) => o.id));
        expect(order.every((o) => items.includes(o)), `seed ${seed}`).toBe(true);
      }
      if (limit !== Infinity) expect(headIds(fairIds(items, NOW, recent, weightOf), limit), `seed ${seed}`).toEqual(expected.slice(0, limit).map((o) => o.id));
    }
  });

  it("drops the items' own recentShare and priority fields, keeps every other field, and never mutates its input", () => {
    const items = backlogOf(42, 50, 3).map((i) => ({ ...i, extra: "kept", priority: { score: -1 } }));
    const before = JSON.stringify(items);
    const out = fairRank(items, NOW, new Map([["c1", 5]]), () => 1);
    expect(JSON.stringify(items)).toBe(before);
    expect(out).toHaveLength(50);
    for (const o of out) {
      expect(o).not.toHaveProperty("recentShare");
      expect(o.extra).toBe("kept");
      expect(o.priority.score).toBeGreaterThanOrEqual(0);
    }
  });
});
