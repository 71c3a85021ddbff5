import { describe, expect, it } from "vitest";
import { fairIds, fairIdsOf, STARVATION_MS, type QueueName } from "../../src/domain/priority";
import { ReadyIndex, type ReadyItem } from "../../src/domain/ready-index";
import type { Tier } from "../../src/domain/types";
import { headIds, mulberry32 as random } from "../support/helpers";

/**
 * The ready index keeps each client's requests in groups and merges their heads at each pass; the
 * order it gives must be exactly fairIds' over the requests ready at that moment (fair-rank.test.ts
 * proves fairIds against the plain formula), through enqueues, claims, cancels, retries with older
 * ready times, held-back requests whose time comes, and tier points changed in place.
 */
const NOW = 1_800_000_000_000;
const TIERS: Tier[] = ["enterprise", "premium", "standard", "basic"];
const QUEUE_NAMES: QueueName[] = ["immediate", "fast", "normal", "batch", "deferred"];

type Item = ReadyItem & { tierPoints: number };

function itemMaker(seed: number, clients: number) {
  const r = random(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
  const tierOf = new Map<string, Tier>();
  let n = 0;
  return (now: number): Item => {
    const clientId = `c${Math.floor(r() * clients)}`;
    // A client keeps its tier, mostly; a few requests carry another (a tier changed while work was queued).
    const tier = r() < 0.05 ? pick(TIERS) : (tierOf.get(clientId) ?? pick(TIERS));
    if (!tierOf.has(clientId)) tierOf.set(clientId, tier);
    // Coarse times, so that equal ready times and equal scores (the tie-breaks) occur often.
    const createdAt = now - Math.floor(r() * 14) * (STARVATION_MS / 10);
    const kind = r();
    // Held back (not_before ahead: ready then), a retry backing off (ready long before its not_before), or ready.
    const notBefore = kind < 0.15 ? now + Math.floor(1 + r() * 5) * 60_000 : kind < 0.25 ? now + Math.floor(r() * 3) * 60_000 : createdAt;
    const readyAt = kind < 0.15 ? notBefore : createdAt + (r() < 0.3 ? Math.floor(r() * 3) * 60_000 : 0);
    n += 1;
    return { id: `req_${String(Math.floor(r() * 1e6)).padStart(6, "0")}_${n}`, clientId, tier, tierPoints: tierPointsOf(tier), queue: pick(QUEUE_NAMES), createdAt, readyAt, notBefore };
  };
}

const POINTS: Record<Tier, number> = { enterprise: 40, premium: 30, standard: 20, basic: 10 };
const tierPointsOf = (tier: Tier) => POINTS[tier];


describe("ReadyIndex: a pass's fair order without scoring the backlog", () => {
  it("gives fairIds' order at every pass of 120 random histories (enqueues, claims, cancels, retries, held-back work, tier changes)", () => {
    for (let seed = 1; seed <= 120; seed++) {
      const r = random(seed * 104_729);
      const clients = 1 + Math.floor(r() * 10);
      const make = itemMaker(seed, clients);
      const weights = new Map(Array.from({ length: clients }, (_, i) => [`c${i}`, r() < 0.2 ? 0 : Math.ceil(r() * 5)]));
      const weightOf = (c: string) => weights.get(c) ?? 1;
      const index = new ReadyIndex<Item>();
      const queued = new Map<string, Item>();
      let now = NOW;
      const enqueue = (count: number) => {
        for (let i = 0; i < count; i++) {
          const item = make(now);
          queued.set(item.id, item);
          index.add(item, now);
        }
      };
      enqueue(Math.floor(r() * 400));
      for (let pass = 0; pass < 12; pass++) {
        const recent = new Map(Array.from({ length: clients }, (_, i) => [`c${i}`, Math.floor(r() * 100)]).filter(() => r() < 0.7) as Array<[string, number]>);
        const ready = [...queued.values()].filter((q) => q.notBefore <= now);
        expect(index.readyCount(now), `seed ${seed} pass ${pass}`).toBe(ready.length);
        const later = [...queued.values()].filter((q) => q.notBefore > now).map((q) => q.notBefore);
        expect(index.nextNotBefore(now), `seed ${seed} pass ${pass}`).toBe(later.length ? Math.min(...later) : null);
        const limit = 1 + Math.floor(r() * 200);
        const expected = headIds(fairIds(ready, now, recent, weightOf), limit);
        const actual = headIds(fairIdsOf(index.orders(now), recent, weightOf), limit);
        expect(actual, `seed ${seed} pass ${pass}`).toEqual(expected);
        // The pass claims most of what it read; some stay (their client was full, their pool short).
        for (const id of actual) {
          if (r() < 0.8) {
            queued.delete(id);
            index.remove(id);
          }
        }
        // Cancels anywhere in the queue.
        for (const id of [...queued.keys()]) {
          if (r() < 0.03) {
            queued.delete(id);
            index.remove(id);
          }
        }
        // Retries: a claimed request back in its queue, ready since long ago, held back for its backoff; or at once.
        for (let i = 0; i < 3; i++) {
          const id = actual[Math.floor(r() * actual.length)];
          if (!id || queued.has(id)) continue;
          const back: Item = { ...make(now), id, clientId: `c${Math.floor(r() * clients)}`, readyAt: now - Math.floor(r() * 20) * 60_000 };
          back.notBefore = r() < 0.5 ? now : now + 1000 * (1 + Math.floor(r() * 60));
          queued.set(id, back);
          index.add(back, now);
        }
        // An operator changes a tier's points: every queued request of that tier is updated in place (Ranking.refreshTiers).
        if (r() < 0.2) {
          const tier = TIERS[Math.floor(r() * TIERS.length)]!;
          POINTS[tier] = Math.floor(r() * 41);
          for (const q of queued.values()) if (q.tier === tier) q.tierPoints = POINTS[tier];
        }
        enqueue(Math.floor(r() * 60));
        now += Math.floor(r() * 4) * 60_000 + Math.floor(r() * 1000);
      }
      Object.assign(POINTS, { enterprise: 40, premium: 30, standard: 20, basic: 10 });
    }
  });

  it("an order being read skips a request removed meanwhile and leaves one indexed after it began to the next order", () => {
    const index = new ReadyIndex<Item>();
    const item = (id: string, createdAt: number): Item => ({ id, clientId: "a", tier: "basic", tierPoints: 10, queue: "normal", createdAt, readyAt: createdAt, notBefore: createdAt });
    for (let i = 0; i < 10; i++) index.add(item(`r${i}`, NOW + i), NOW + 100);
    const next = fairIdsOf(index.orders(NOW + 100), new Map(), () => 1);
    expect([next(), next()]).toEqual(["r0", "r1"]);
    index.remove("r2");
    index.remove("r5");
    index.add(item("r10", NOW + 50), NOW + 100);
    // Held back until NOW + 200 and ready since NOW + 5 (a retry): due once a later call moves it into its group,
    // it is still not in the order read as of NOW + 100.
    index.add({ ...item("r11", NOW + 5), notBefore: NOW + 200 }, NOW + 100);
    expect(index.readyCount(NOW + 300)).toBe(10);
    expect(headIds(next, 20)).toEqual(["r3", "r4", "r6", "r7", "r8", "r9"]);
    // A fresh pass sees what is queued now, in order.
    expect(headIds(fairIdsOf(index.orders(NOW + 300), new Map(), () => 1), 20)).toEqual(["r0", "r1", "r3", "r4", "r11", "r6", "r7", "r8", "r9", "r10"]);
  });

  it("counts exactly through mass removals (compaction) and held-back work coming due, and forgets clients with nothing queued", () => {
    const index = new ReadyIndex<Item>();
    const make = itemMaker(7, 5);
    const all: Item[] = Array.from({ length: 5000 }, () => make(NOW));
    for (const q of all) index.add(q, NOW);
    const alive = new Set(all.map((q) => q.id));
    const r = random(99);
    for (const q of all) {
      if (r() < 0.9) {
        index.remove(q.id);
        alive.delete(q.id);
      }
    }
    index.remove("req_unknown");
    const left = all.filter((q) => alive.has(q.id));
    expect(index.size).toBe(left.length);
    for (const at of [NOW, NOW + 60_000, NOW + 3 * 60_000, NOW + 10 * 60_000]) {
      expect(index.readyCount(at)).toBe(left.filter((q) => q.notBefore <= at).length);
      expect(headIds(fairIdsOf(index.orders(at), new Map(), () => 1), 10_000)).toEqual(headIds(fairIds(left.filter((q) => q.notBefore <= at), at, new Map(), () => 1), 10_000));
    }
    expect(new Set(index.clientIds())).toEqual(new Set(left.map((q) => q.clientId)));
    for (const q of left) index.remove(q.id);
    expect([...index.clientIds()]).toEqual([]);
    expect(index.readyCount(NOW + 10 * 60_000)).toBe(0);
    expect(index.nextNotBefore(NOW)).toBeNull();
  });
});

/** What a dispatch pass does between its chunks (found by review): each of these failed before the fix. */
const one = (id: string, clientId: string, readyAt: number, notBefore = readyAt): Item =>
  ({ id, clientId, tier: "standard", tierPoints: 20, queue: "normal", createdAt: readyAt, readyAt, notBefore });

describe("ReadyIndex while an order is read", () => {
  it("a request requeued at its old place while an order is read (admission: rate_limited / pool_inactive) makes no id come twice", () => {
    const index = new ReadyIndex<Item>();
    for (let i = 0; i < 5; i++) {
      index.add(one(`a${i}`, "a", NOW + i), NOW + 100);
      index.add(one(`b${i}`, "b", NOW + i), NOW + 100);
    }
    const next = fairIdsOf(index.orders(NOW + 100), new Map(), () => 1);
    // Dispatcher.pass: chunk 1 read and claimed.
    const chunk1 = headIds(next, 3);
    expect(chunk1).toEqual(["a0", "b0", "a1"]);
    for (const id of chunk1) index.remove(id);
    // Admission refuses b0 and QueueStore.requeue puts it back at its not_before (ready time kept): same place in its group.
    index.add(one("b0", "b", NOW), NOW + 100);
    // Chunk 2 of the same pass: b1 (b's cached head, shifted by the splice) comes twice, so claim() would get it twice.
    const chunk2 = headIds(next, 4);
    expect(chunk2).toEqual(["b1", "a2", "b2", "a3"]); // before the fix: ["b1", "b1", "a2", "b2"]
  });

  it("readyCount at a later time, mid-read, moving a retry (older ready time) into a group repeats no id", () => {
    const index = new ReadyIndex<Item>();
    for (let i = 0; i < 4; i++) index.add(one(`a${i}`, "a", NOW + i), NOW + 100);
    // A retry: ready since NOW - 1000, held back for its backoff until NOW + 200.
    index.add(one("retry", "a", NOW - 1000, NOW + 200), NOW + 100);
    const next = fairIdsOf(index.orders(NOW + 100), new Map(), () => 1);
    expect(next()).toBe("a0");
    expect(index.readyCount(NOW + 300)).toBe(5); // another pass / the end of this one (Dispatcher.pass: readyCount(Date.now()))
    const rest = headIds(next, 10);
    expect(rest).toEqual(["a1", "a2", "a3"]); // before the fix: a0 again first
  });

  it("an order being read skips a request removed meanwhile, also when it is its client's (cached) head", () => {
    const index = new ReadyIndex<Item>();
    index.add(one("a0", "a", NOW), NOW);
    index.add(one("a1", "a", NOW + 1), NOW + 1);
    const next = fairIdsOf(index.orders(NOW + 1), new Map(), () => 1);
    index.remove("a0"); // cancelled (or claimed by runNow) while the pass awaits
    expect(headIds(next, 10)).toEqual(["a1"]); // before the fix: ["a0", "a1"]
  });

  it("a group's array does not grow with the requests dispatched through it (steady backlog: each pass reads past the dead head)", () => {
    const index = new ReadyIndex<Item>();
    let t = NOW;
    let k = 0;
    for (; k < 10; k++) index.add(one(`x${k}`, "a", t), t++);
    for (let pass = 0; pass < 10_000; pass++) {
      const id = fairIdsOf(index.orders(t), new Map(), () => 1)()!;
      index.remove(id);
      index.add(one(`x${k++}`, "a", t), t++);
    }
    expect(index.size).toBe(10);
    const groups = [...(index as unknown as { owners: Map<string, { groups: Map<string, { entries: unknown[] }> }> }).owners.get("a")!.groups.values()];
    // Before the fix dead entries before `start` were never counted for compaction: 10,010 entries (each holding its Queued) for 10 live.
    expect(groups[0]!.entries.length).toBeLessThan(100);
  });
});
