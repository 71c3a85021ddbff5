import { describe, expect, it } from "vitest";
import {
  batchGroups, budgetUsedPercent, cacheKey, cachingSaving, canonicalJson, deferUntil, downgradeDecision, downgradeSaving, isOffPeak,
  largestRemainder, modelOf, monthly, offPeakStart, parseOffPeakHours, QUEUE_TARGET_WAIT_MS, recommendationsOf, refillWaitMs,
  savedBytes, shouldCompress, splitBatchCost, waitExceedsTarget, type DowngradeInput, type Quality,
} from "../../src/domain/optimizer";
import { QUEUES } from "../../src/domain/priority";
import { mulberry32 } from "../support/helpers";

const H = 3_600_000;
const DAY = 24 * H;
/** 2026-11-23 00:00 UTC. */
const D = Date.UTC(2026, 10, 23);
const NIGHT = { startHour: 22, endHour: 6 };
const OFFICE = { startHour: 9, endHour: 17 };

describe("canonical JSON and cache keys", () => {
  it("sorts object keys recursively and keeps arrays in order", () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: null } })).toBe('{"a":{"c":null,"d":[3,{"y":2,"z":1}]},"b":1}');
    expect(canonicalJson([2, 1])).not.toBe(canonicalJson([1, 2]));
  });

  it("writes what JSON.stringify writes for scalars, undefined, non-finite numbers and toJSON", () => {
    expect(canonicalJson({ a: undefined, b: [undefined, NaN, Infinity, -0], c: "é\u2028\"\\", d: true })).toBe('{"b":[null,null,null,0],"c":"é\u2028\\"\\\\","d":true}');
    expect(canonicalJson(new Date(Date.UTC(2026, 0, 1)))).toBe('"2026-01-01T00:00:00.000Z"');
    expect(canonicalJson(null)).toBe("null");
    expect(canonicalJson("\ud800")).toBe('"\\ud800"');
    expect(() => canonicalJson({ n: 1n })).toThrow(TypeError);
  });

  it("gives one text for any key order, and parses back to the same value (500 random values)", () => {
    const rand = mulberry32(5);
    const value = (depth: number): unknown => {
      const r = rand();
      if (depth > 3 || r < 0.3) return [1, "x", null, true, 2.5, "ü😀"][Math.floor(rand() * 6)];
      if (r < 0.6) return Array.from({ length: Math.floor(rand() * 4) }, () => value(depth + 1));
      return Object.fromEntries(Array.from({ length: Math.floor(rand() * 5) }, (_, i) => [`k${Math.floor(rand() * 50)}_${i}`, value(depth + 1)]));
    };
    const shuffled = (v: unknown): unknown => {
      if (Array.isArray(v)) return v.map(shuffled);
      if (v === null || typeof v !== "object") return v;
      const entries = Object.entries(v).map(([k, x]) => [k, shuffled(x)] as const);
      for (let i = entries.length - 1; i > 0; i -= 1) {
        const j = Math.floor(rand() * (i + 1));
        [entries[i], entries[j]] = [entries[j]!, entries[i]!];
      }
      return Object.fromEntries(entries);
    };
    for (let i = 0; i < 500; i += 1) {
      const v = value(0);
      const text = canonicalJson(v);
      expect(canonicalJson(shuffled(v))).toBe(text);
      expect(JSON.parse(text)).toEqual(v);
    }
  });

  it("hashes {template, model, params} (and the scope, when given) with SHA-256", async () => {
    // sha256('{"model":"openai-gpt4","params":{"a":1,"b":[2,3]},"template":"t"}'), computed apart (Python hashlib).
    const expected = "50e2ad4e006c5478d94cf65505b9693859de56336b61094e0a19efef417d9082";
    expect(await cacheKey("t", "openai-gpt4", { b: [2, 3], a: 1 })).toBe(expected);
    // sha256('{"model":"m","params":null,"scope":"acme","template":"t"}').
    const scoped = "9e065a0d01c0bee5b3ffc26535904188ce886e754ed8148d4207d9c73e4c8dbd";
    expect(await cacheKey("t", "m", null, "acme")).toBe(scoped);
    const keys = await Promise.all([
      cacheKey("t", "m", { a: 1 }), cacheKey("u", "m", { a: 1 }), cacheKey("t", "n", { a: 1 }), cacheKey("t", "m", { a: 2 }),
      cacheKey("t", "m", { a: 1 }, "acme"), cacheKey("t", "m", { a: 1 }, "globex"), cacheKey("t", "m", [{ a: 1 }]),
    ]);
    expect(new Set(keys).size).toBe(keys.length);
    for (const k of keys) expect(k).toMatch(/^[0-9a-f]{64}$/);
  });

  it("names a template's model by its pools, sorted", () => {
    expect(modelOf([{ pool: "openai-gpt4", amount: 1 }])).toBe("openai-gpt4");
    expect(modelOf([{ pool: "kv", amount: 1 }, { pool: "d1", amount: 2 }, { pool: "kv", amount: 3 }])).toBe("d1+kv");
  });
});

describe("off-peak window", () => {
  it.each([
    ["22-6", NIGHT], ["9-17", OFFICE], [" 0 - 23 ", { startHour: 0, endHour: 23 }], ["23-0", { startHour: 23, endHour: 0 }],
    ["22-22", null], ["24-6", null], ["22-24", null], ["-1-6", null], ["22", null], ["a-b", null], ["", null], ["1.5-6", null],
  ])("parses %j", (text, window) => {
    expect(parseOffPeakHours(text)).toEqual(window);
  });

  it.each([
    // [time of day, window, next start relative to D]
    [21 * H + 59 * 60_000 + 59_999, NIGHT, 22 * H],
    [22 * H, NIGHT, "now"],
    [23 * H + 30 * 60_000, NIGHT, "now"],
    [DAY, NIGHT, "now"],
    [DAY + 6 * H - 1, NIGHT, "now"],
    [DAY + 6 * H, NIGHT, DAY + 22 * H],
    [12 * H, NIGHT, 22 * H],
    [0, NIGHT, "now"],
    [9 * H - 1, OFFICE, 9 * H],
    [9 * H, OFFICE, "now"],
    [17 * H - 1, OFFICE, "now"],
    [17 * H, OFFICE, DAY + 9 * H],
    [23 * H, OFFICE, DAY + 9 * H],
    [23 * H, { startHour: 23, endHour: 0 }, "now"],
    [DAY, { startHour: 23, endHour: 0 }, DAY + 23 * H],
  ] as const)("at D+%d ms the window %j starts %s", (at, window, start) => {
    const now = D + at;
    expect(offPeakStart(now, window)).toBe(start === "now" ? now : D + start);
    expect(isOffPeak(now, window)).toBe(start === "now");
  });

  it("never returns a time outside the window or in the past, and no later than 24 h ahead (every minute of two days)", () => {
    for (const window of [NIGHT, OFFICE, { startHour: 0, endHour: 1 }, { startHour: 23, endHour: 22 }]) {
      for (let now = D; now < D + 2 * DAY; now += 60_000) {
        const start = offPeakStart(now, window);
        expect(start).toBeGreaterThanOrEqual(now);
        expect(start - now).toBeLessThan(DAY);
        expect(isOffPeak(start, window)).toBe(true);
        if (start > now) expect(isOffPeak(start - 1, window)).toBe(false);
      }
    }
  });

  it("defers to the next window start unless the deadline comes at or before it", () => {
    const noon = D + 12 * H;
    const start = D + 22 * H;
    expect(deferUntil(noon, NIGHT, null)).toBe(start);
    expect(deferUntil(noon, NIGHT, start + 1)).toBe(start);
    expect(deferUntil(noon, NIGHT, start)).toBe(noon);
    expect(deferUntil(noon, NIGHT, start - 1)).toBe(noon);
    expect(deferUntil(noon, NIGHT, noon - 5000)).toBe(noon);
    expect(deferUntil(start, NIGHT, null)).toBe(start);
    expect(deferUntil(D + 23 * H, NIGHT, D + 23 * H)).toBe(D + 23 * H);
    expect(deferUntil(D + 30 * H - 1, NIGHT, null)).toBe(D + 30 * H - 1);
    expect(deferUntil(D + 30 * H, NIGHT, null)).toBe(D + 46 * H);
  });
});

describe("downgrade rules", () => {
  const base: DowngradeInput = {
    quality: undefined, queue: "normal", budgetUsedPercent: 10, budgetThresholdPercent: 80, poolExhausted: false,
    waitWouldExceedTarget: false, hasAlternative: true, demandsOriginal: false,
  };

  it.each([
    [{ quality: "standard" }, "quality"],
    [{ queue: "batch" }, "queue"],
    [{ queue: "deferred" }, "queue"],
    [{ budgetUsedPercent: 80.0001 }, "budget"],
    [{ budgetUsedPercent: 250 }, "budget"],
    [{ poolExhausted: true, waitWouldExceedTarget: true }, "capacity"],
    [{ quality: "standard", queue: "batch", budgetUsedPercent: 99 }, "quality"],
    [{ queue: "deferred", budgetUsedPercent: 99, poolExhausted: true, waitWouldExceedTarget: true }, "queue"],
    [{ budgetUsedPercent: 99, poolExhausted: true, waitWouldExceedTarget: true }, "budget"],
  ] as const)("downgrades for %j, reason %s", (change, reason) => {
    expect(downgradeDecision({ ...base, ...change })).toEqual({ downgrade: true, reason });
  });

  it.each([
    [{}],
    [{ budgetUsedPercent: 80 }],
    [{ budgetUsedPercent: null }],
    [{ poolExhausted: true }],
    [{ waitWouldExceedTarget: true }],
    [{ queue: "immediate" }],
    [{ queue: "fast" }],
  ] as const)("does not downgrade for %j", (change) => {
    expect(downgradeDecision({ ...base, ...change })).toEqual({ downgrade: false, reason: null });
  });

  it("downgrades exactly when a rule holds, and never without an alternative or when the original is demanded (every combination)", () => {
    const qualities: Array<Quality | undefined> = [undefined, "standard", "premium"];
    let checked = 0;
    for (const quality of qualities) for (const queue of QUEUES) for (const used of [null, 0, 80, 81]) for (const exhausted of [false, true])
      for (const wait of [false, true]) for (const hasAlternative of [false, true]) for (const demandsOriginal of [false, true]) {
        const input: DowngradeInput = { quality, queue, budgetUsedPercent: used, budgetThresholdPercent: 80, poolExhausted: exhausted, waitWouldExceedTarget: wait, hasAlternative, demandsOriginal };
        const rule = quality === "standard" || queue === "batch" || queue === "deferred" || (used !== null && used > 80) || (exhausted && wait);
        const allowed = hasAlternative && !demandsOriginal && quality !== "premium";
        const d = downgradeDecision(input);
        expect(d.downgrade, JSON.stringify(input)).toBe(allowed && rule);
        expect(d.reason === null).toBe(!d.downgrade);
        checked += 1;
      }
    expect(checked).toBe(3 * 5 * 4 * 2 * 2 * 2 * 2);
  });

  it("measures budget use as (spent + in flight) / budget in percent", () => {
    expect(budgetUsedPercent(1_000_000, 600_000, 200_000)).toBe(80);
    expect(budgetUsedPercent(1_000_000, 800_001, 0)).toBeGreaterThan(80);
    expect(budgetUsedPercent(null, 5, 5)).toBeNull();
    expect(budgetUsedPercent(0, 0, 0)).toBe(100);
    expect(budgetUsedPercent(100, 250, 0)).toBe(250);
  });

  it("estimates the refill wait and compares it with the queue's target", () => {
    expect(refillWaitMs(500, 0, 100)).toBe(5000);
    expect(refillWaitMs(500, 500, 0)).toBe(0);
    expect(refillWaitMs(10, 3, 3)).toBe(2334);
    expect(refillWaitMs(10, 3, 0)).toBe(Infinity);
    expect(QUEUE_TARGET_WAIT_MS).toEqual({ immediate: 1000, fast: 10_000, normal: 60_000, batch: 600_000, deferred: null });
    expect([waitExceedsTarget("immediate", 1000), waitExceedsTarget("immediate", 1001)]).toEqual([false, true]);
    expect([waitExceedsTarget("normal", 60_000), waitExceedsTarget("normal", 60_001)]).toEqual([false, true]);
    expect(waitExceedsTarget("deferred", Infinity)).toBe(false);
    expect(waitExceedsTarget("batch", Infinity)).toBe(true);
  });
});

describe("compression arithmetic", () => {
  it("compresses only strictly above the threshold and never counts a loss as a saving", () => {
    expect([shouldCompress(4096, 4096), shouldCompress(4097, 4096), shouldCompress(0, 0), shouldCompress(1, 0)]).toEqual([false, true, false, true]);
    expect([savedBytes(10_000, 1_200), savedBytes(100, 100), savedBytes(100, 140)]).toEqual([8_800, 0, 0]);
  });
});

describe("batching", () => {
  const r = (id: string, template: string, batchable = true) => ({ id, template, batchable });

  it("groups batchable requests of one template up to the batch size, in order; others go alone", () => {
    const reqs = [r("a1", "A"), r("b1", "B"), r("a2", "A"), r("n1", "N", false), r("a3", "A"), r("a4", "A"), r("n2", "N", false)];
    expect(batchGroups(reqs, 3).map((g) => g.map((x) => x.id))).toEqual([["a1", "a2", "a3"], ["b1"], ["n1"], ["a4"], ["n2"]]);
    expect(batchGroups(reqs, 1).map((g) => g.map((x) => x.id))).toEqual(reqs.map((x) => [x.id]));
    expect(batchGroups([], 5)).toEqual([]);
    expect(() => batchGroups(reqs, 0)).toThrow(RangeError);
    expect(() => batchGroups(reqs, 2.5)).toThrow(RangeError);
  });

  it("places every request exactly once, in groups of one template within the size (1,000 random requests)", () => {
    const rand = mulberry32(11);
    const reqs = Array.from({ length: 1000 }, (_, i) => r(`r${i}`, `T${Math.floor(rand() * 7)}`, rand() < 0.8));
    for (const size of [2, 7, 10, 1000]) {
      const groups = batchGroups(reqs, size);
      expect(groups.flat().map((x) => x.id).sort()).toEqual(reqs.map((x) => x.id).sort());
      for (const g of groups) {
        expect(g.length).toBeGreaterThan(0);
        expect(g.length).toBeLessThanOrEqual(size);
        expect(new Set(g.map((x) => x.template)).size).toBe(1);
        if (g.length > 1) expect(g.every((x) => x.batchable)).toBe(true);
        const positions = g.map((x) => Number(x.id.slice(1)));
        expect(positions).toEqual([...positions].sort((a, b) => a - b));
      }
      const firsts = groups.map((g) => Number(g[0]!.id.slice(1)));
      expect(firsts).toEqual([...firsts].sort((a, b) => a - b));
    }
  });

  it("splits by largest remainder: parts add up to the whole and each is within 1 of its exact share", () => {
    expect(largestRemainder(10, [1, 1, 1])).toEqual([4, 3, 3]);
    expect(largestRemainder(100, [1, 2, 3])).toEqual([17, 33, 50]);
    expect(largestRemainder(7, [0, 0])).toEqual([4, 3]);
    expect(largestRemainder(0, [5, 1])).toEqual([0, 0]);
    expect(largestRemainder(5, [0, 3])).toEqual([0, 5]);
    expect(largestRemainder(9_007_199_254_740_991, [1, 1, 1])).toEqual([3_002_399_751_580_331, 3_002_399_751_580_330, 3_002_399_751_580_330]);
    expect(() => largestRemainder(-1, [1])).toThrow(RangeError);
    expect(() => largestRemainder(1, [1.5])).toThrow(RangeError);
    expect(() => largestRemainder(1, [])).toThrow(RangeError);
    const rand = mulberry32(3);
    for (let i = 0; i < 300; i += 1) {
      const total = Math.floor(rand() * 1e12);
      const weights = Array.from({ length: 1 + Math.floor(rand() * 12) }, () => Math.floor(rand() * 1e6));
      const parts = largestRemainder(total, weights);
      expect(parts.reduce((a, b) => a + b, 0)).toBe(total);
      const sum = weights.reduce((a, b) => a + b, 0);
      parts.forEach((p, k) => expect(Math.abs(p - (sum === 0 ? total / weights.length : (total * weights[k]!) / sum))).toBeLessThan(1.000001));
    }
  });

  it("attributes a batch's units and cost per request, exactly", () => {
    const total = [{ pool: "openai-gpt35", units: 6000, cost_nano: 9_000_000 }, { pool: "kv", units: 7, cost_nano: 3500 }];
    const shares = splitBatchCost(total, [
      { id: "r1", units: { "openai-gpt35": 1000, kv: 1 } },
      { id: "r2", units: { "openai-gpt35": 2000, kv: 1 } },
      { id: "r3", units: { "openai-gpt35": 3000, kv: 1 } },
    ]);
    expect(shares).toEqual([
      { id: "r1", pools: [{ pool: "openai-gpt35", units: 1000, cost_nano: 1_500_000 }, { pool: "kv", units: 3, cost_nano: 1500 }], cost_nano: 1_501_500 },
      { id: "r2", pools: [{ pool: "openai-gpt35", units: 2000, cost_nano: 3_000_000 }, { pool: "kv", units: 2, cost_nano: 1000 }], cost_nano: 3_001_000 },
      { id: "r3", pools: [{ pool: "openai-gpt35", units: 3000, cost_nano: 4_500_000 }, { pool: "kv", units: 2, cost_nano: 1000 }], cost_nano: 4_501_000 },
    ]);
    // A pool no request names is split equally; a cost with no units follows the requests' usage.
    expect(splitBatchCost([{ pool: "x", units: 5, cost_nano: 10 }], [{ id: "a", units: {} }, { id: "b", units: {} }]).map((s) => s.pools[0]))
      .toEqual([{ pool: "x", units: 3, cost_nano: 6 }, { pool: "x", units: 2, cost_nano: 4 }]);
    expect(splitBatchCost([{ pool: "x", units: 0, cost_nano: 9 }], [{ id: "a", units: { x: 2 } }, { id: "b", units: { x: 1 } }]).map((s) => s.cost_nano)).toEqual([6, 3]);
    const rand = mulberry32(8);
    for (let i = 0; i < 200; i += 1) {
      const pools = ["p1", "p2", "p3"].map((pool) => ({ pool, units: Math.floor(rand() * 1e6), cost_nano: Math.floor(rand() * 1e12) }));
      const usage = Array.from({ length: 1 + Math.floor(rand() * 10) }, (_, k) => ({ id: `r${k}`, units: { p1: Math.floor(rand() * 1000), p2: Math.floor(rand() * 3), p3: 0 } }));
      const split = splitBatchCost(pools, usage);
      for (const [j, line] of pools.entries()) {
        expect(split.reduce((n, s) => n + s.pools[j]!.units, 0)).toBe(line.units);
        expect(split.reduce((n, s) => n + s.pools[j]!.cost_nano, 0)).toBe(line.cost_nano);
      }
      expect(split.reduce((n, s) => n + s.cost_nano, 0)).toBe(pools.reduce((n, p) => n + p.cost_nano, 0));
    }
  });
});

describe("recommendations", () => {
  it("scales to a 30-day month and rounds savings in the client's disfavour", () => {
    expect([monthly(100, 7), monthly(100, 30), monthly(0, 1), monthly(7, 90)]).toEqual([428, 100, 0, 2]);
    expect(() => monthly(1, 0)).toThrow(RangeError);
    // 12,000 spent at 3,000 each; the alternative costs 200: ceil(12,000 × 200 / 3,000) = 800.
    expect(downgradeSaving(12_000, 3000, 200)).toBe(11_200);
    // ceil(1,000 × 1 / 3) = 334.
    expect(downgradeSaving(1000, 3, 1)).toBe(666);
    expect(downgradeSaving(1000, 3, 3)).toBe(0);
    expect(downgradeSaving(1000, 0, 0)).toBe(0);
    expect([cachingSaving(8_000_000, 1, 3), cachingSaving(10, 1, 2), cachingSaving(10, 0, 5), cachingSaving(10, 3, 0)]).toEqual([2_000_000, 3, 0, 10]);
  });

  it("builds downgrade, caching and off-peak items from usage, hand-computed", () => {
    const input = {
      days: 7,
      totalRequests: 12,
      cachingOn: false,
      window: NIGHT,
      templates: [
        { template: "full", requests: 4, costNano: 12_000, cacheable: true, alternative: { template: "lite", costNano: 200, originalCostNano: 3000 }, platformHits: 2, platformExecutions: 6 },
        { template: "other", requests: 8, costNano: 4000, cacheable: false, alternative: null, platformHits: 0, platformExecutions: 0 },
        { template: "never", requests: 0, costNano: 0, cacheable: true, alternative: { template: "lite", costNano: 1, originalCostNano: 2 }, platformHits: 5, platformExecutions: 0 },
      ],
      hours: [
        { queue: "normal", hour: 12, requests: 3, costNano: 1500 },
        { queue: "batch", hour: 6, requests: 1, costNano: 500 },
        { queue: "batch", hour: 5, requests: 2, costNano: 1000 },
        { queue: "normal", hour: 22, requests: 2, costNano: 1000 },
        { queue: "fast", hour: 12, requests: 4, costNano: 12_000 },
      ],
    };
    const items = recommendationsOf(input);
    expect(items.map((i) => [i.kind, i.template, i.requests, i.share_percent, i.window_cost_nano, i.window_saving_nano, i.monthly_saving_nano])).toEqual([
      ["downgrade", "full", 4, 33.33, 12_000, 11_200, 48_000],
      // 12,000 × 2 / (2 + 6) = 3,000; × 30 / 7 = 12,857.
      ["caching", "full", 4, 33.33, 12_000, 3000, 12_857],
      // Outside 22-6: normal at 12 and batch at 6 (the end hour is outside); fast is urgent; 5 and 22 are inside.
      ["off_peak", null, 4, 33.33, 2000, 0, 0],
    ]);
    expect(recommendationsOf({ ...input, cachingOn: true }).map((i) => i.kind)).toEqual(["downgrade", "off_peak"]);
    expect(recommendationsOf({ ...input, templates: [], hours: [], totalRequests: 0 })).toEqual([]);
  });
});
