import { describe, expect, it } from "vitest";
import {
  ALLOCATION_STATES, applyConfigUpdate, canTransition, capacityView, checkCapacity, checkDepth, criticalReserve, decodeListCursor,
  DEFAULT_ALLOCATION_CONFIG, DEFAULT_DEPTH_QUOTAS, demandOf, depthFor, depthLimit, depthUsage, encodeListCursor, HOLDING_STATES, isHolding,
  MAX_DEPTH, PRIORITIES, priorityRank, retryAfterSec, TERMINAL_STATES, usableBy, type AllocationState, type Compute,
} from "../../src/domain/allocations";

const NOW = 1_800_000_000_000;

describe("allocation state machine", () => {
  const allowed: Array<[AllocationState, AllocationState]> = [
    ["pending", "active"], ["pending", "failed"], ["pending", "releasing"], ["pending", "expired"],
    ["active", "releasing"], ["active", "expired"], ["releasing", "released"],
  ];

  it("allows exactly the documented transitions", () => {
    for (const from of ALLOCATION_STATES) for (const to of ALLOCATION_STATES) {
      const expected = allowed.some(([f, t]) => f === from && t === to);
      expect(canTransition(from, to), `${from} → ${to}`).toBe(expected);
    }
  });

  it("never leaves a terminal state, and every non-terminal state can reach one", () => {
    for (const s of TERMINAL_STATES) for (const to of ALLOCATION_STATES) expect(canTransition(s, to)).toBe(false);
    const reachesEnd = (s: AllocationState, seen = new Set<AllocationState>()): boolean =>
      TERMINAL_STATES.includes(s) || ALLOCATION_STATES.some((t) => canTransition(s, t) && !seen.has(t) && reachesEnd(t, new Set([...seen, s])));
    for (const s of ALLOCATION_STATES) expect(reachesEnd(s), s).toBe(true);
  });

  it("counts pending, active and releasing as holding, nothing else", () => {
    expect([...HOLDING_STATES].sort()).toEqual(["active", "pending", "releasing"]);
    expect(ALLOCATION_STATES.filter(isHolding)).toEqual(["pending", "active", "releasing"]);
  });
});

describe("priority order", () => {
  it("lists critical first and low last", () => {
    expect([...PRIORITIES].sort((a, b) => priorityRank(a) - priorityRank(b))).toEqual(["critical", "high", "normal", "low"]);
    expect(PRIORITIES.map(priorityRank)).toEqual([3, 2, 1, 0]);
  });
});

describe("depth quotas", () => {
  it("defaults: depth 0 → 10, depth 1 → 30, every deeper depth → 50", () => {
    expect([0, 1, 2, 3, 17, MAX_DEPTH].map((d) => depthLimit(DEFAULT_DEPTH_QUOTAS, d))).toEqual([10, 30, 50, 50, 50, 50]);
  });

  it("uses a listed depth's own limit, including 0, and the deeper limit for the rest", () => {
    const q = { levels: { 0: 5, 2: 0, 4: 7 }, deeper: 3 };
    expect([0, 1, 2, 3, 4, 5].map((d) => depthLimit(q, d))).toEqual([5, 3, 0, 3, 7, 3]);
  });

  it.each([
    [0, 10, true], [9, 1, true], [10, 1, false], [9, 2, false], [0, 11, false], [5, 5, true], [5, 6, false],
  ])("with %d held at depth 0 (limit 10), %d more fit: %s", (inUse, workers, fits) => {
    const r = checkDepth(DEFAULT_DEPTH_QUOTAS, 0, inUse, workers);
    expect(r.ok).toBe(fits);
    if (!r.ok) expect(r.refusal).toEqual({ depth: 0, limit: 10, in_use: inUse, requested: workers });
  });

  it("derives depth from the parent and refuses a given depth that does not match", () => {
    expect(depthFor(null, undefined)).toBe(0);
    expect(depthFor(null, 0)).toBe(0);
    expect(depthFor(null, 1)).toBeNull();
    expect(depthFor(0, undefined)).toBe(1);
    expect(depthFor(3, 4)).toBe(4);
    expect(depthFor(3, 3)).toBeNull();
    expect(depthFor(3, 5)).toBeNull();
    expect(depthFor(MAX_DEPTH - 1, undefined)).toBe(MAX_DEPTH);
    expect(depthFor(MAX_DEPTH, undefined)).toBeNull();
  });

  it("usage lists every configured depth and every depth in use, with available never below 0", () => {
    const used = new Map([[1, { workers: 12, allocations: 3 }], [4, { workers: 60, allocations: 2 }]]);
    expect(depthUsage(DEFAULT_DEPTH_QUOTAS, used)).toEqual([
      { depth: 0, limit: 10, allocated: 0, available: 10, allocations: 0 },
      { depth: 1, limit: 30, allocated: 12, available: 18, allocations: 3 },
      { depth: 4, limit: 50, allocated: 60, available: 0, allocations: 2 },
    ]);
  });
});

describe("capacity arithmetic", () => {
  const total: Compute = { cpuMillicores: 10_000, memoryMb: 8_192, workers: 20 };
  const none: Compute = { cpuMillicores: 0, memoryMb: 0, workers: 0 };

  it("an allocation holds workers × per-worker CPU and memory", () => {
    expect(demandOf(3, 1000, 512)).toEqual({ cpuMillicores: 3000, memoryMb: 1536, workers: 3 });
  });

  it("keeps the last 10% (rounded down) for critical allocations", () => {
    expect([0, 9, 10, 19, 20, 200, 64_000].map(criticalReserve)).toEqual([0, 0, 1, 1, 2, 20, 6_400]);
    expect(usableBy(20, "normal")).toBe(18);
    expect(usableBy(20, "high")).toBe(18);
    expect(usableBy(20, "low")).toBe(18);
    expect(usableBy(20, "critical")).toBe(20);
  });

  it("fits exactly up to the usable total, and names the first resource it overruns", () => {
    expect(checkCapacity(total, none, demandOf(18, 500, 400), "normal").ok).toBe(true);
    const workers = checkCapacity(total, none, demandOf(19, 1, 1), "normal");
    expect(workers).toEqual({ ok: false, refusal: { resource: "workers", total: 20, usable: 18, in_use: 0, requested: 19 } });
    expect(checkCapacity(total, none, demandOf(19, 1, 1), "critical").ok).toBe(true);
    expect(checkCapacity(total, { ...none, workers: 20 }, demandOf(1, 1, 1), "critical").ok).toBe(false);
    const cpu = checkCapacity(total, { cpuMillicores: 8_000, memoryMb: 0, workers: 2 }, demandOf(2, 600, 1), "normal");
    expect(cpu).toEqual({ ok: false, refusal: { resource: "cpu_millicores", total: 10_000, usable: 9_000, in_use: 8_000, requested: 1_200 } });
    const mem = checkCapacity(total, none, demandOf(2, 1, 4_000), "high");
    expect(mem).toEqual({ ok: false, refusal: { resource: "memory_mb", total: 8_192, usable: 7_373, in_use: 0, requested: 8_000 } });
  });

  it("the view is total, allocated, available (never below 0) and the reserve", () => {
    expect(capacityView(total, { cpuMillicores: 2_500, memoryMb: 9_000, workers: 5 })).toEqual({
      cpu_millicores: { total: 10_000, allocated: 2_500, available: 7_500, critical_reserve: 1_000 },
      memory_mb: { total: 8_192, allocated: 9_000, available: 0, critical_reserve: 819 },
      workers: { total: 20, allocated: 5, available: 15, critical_reserve: 2 },
    });
  });
});

describe("configuration updates", () => {
  it("replace only the parts given; the depth list is replaced whole", () => {
    const a = applyConfigUpdate(DEFAULT_ALLOCATION_CONFIG, { levels: { 0: 3 } });
    expect(a).toEqual({ depths: { levels: { 0: 3 }, deeper: 50 }, capacity: DEFAULT_ALLOCATION_CONFIG.capacity });
    const b = applyConfigUpdate(a, { deeper: 7, capacity: { workers: 40, memoryMb: undefined } });
    expect(b).toEqual({ depths: { levels: { 0: 3 }, deeper: 7 }, capacity: { ...DEFAULT_ALLOCATION_CONFIG.capacity, workers: 40 } });
    expect(DEFAULT_ALLOCATION_CONFIG.depths.levels).toEqual({ 0: 10, 1: 30 });
  });
});

describe("list cursors and Retry-After", () => {
  it("round-trip a position and refuse anything else", () => {
    const p = { rank: 3, createdAt: NOW, id: `alc_${"a1".repeat(16)}` };
    expect(decodeListCursor(encodeListCursor(p))).toEqual(p);
    for (const bad of ["", "x", "%%%", btoa("3:1:alc_zz"), btoa(`12:${NOW}:${p.id}`), btoa(`3:${NOW}:req_1`)]) expect(decodeListCursor(bad), bad).toBeNull();
  });

  it("waits until the earliest expiry (at least 1 s), or the fallback when nothing will expire", () => {
    expect(retryAfterSec(NOW + 4_001, NOW)).toBe(5);
    expect(retryAfterSec(NOW + 10, NOW)).toBe(1);
    expect(retryAfterSec(NOW - 5_000, NOW)).toBe(1);
    expect(retryAfterSec(null, NOW)).toBe(60);
    expect(retryAfterSec(null, NOW, 7)).toBe(7);
  });
});
