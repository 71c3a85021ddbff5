import { describe, expect, it } from "vitest";
import { fits, giveBack, msUntil, refill, take } from "../../src/domain/bucket";
import { costOf, formatUsd } from "../../src/domain/money";
import { accessFor } from "../../src/domain/sharing";
import type { Caller } from "../../src/domain/types";

const shape = { capacity: 100, refillPerSec: 10 };

describe("refill", () => {
  it.each([
    // level, updatedAt, now, expected level
    [0, 0, 0, 0],
    [0, 0, 100, 1],
    [0, 0, 1000, 10],
    [0, 0, 50, 0.5],
    [0, 0, 10_000, 100],
    [0, 0, 1_000_000, 100],
    [95, 0, 1000, 100],
    [99.5, 0, 10, 99.6],
    [40, 1000, 1500, 45],
  ])("level %d at %d refilled to %d ms gives %d", (level, updatedAt, now, expected) => {
    const r = refill({ level, updatedAt }, shape, now);
    expect(r.level).toBeCloseTo(expected, 9);
    expect(r.updatedAt).toBe(Math.max(updatedAt, now));
  });

  it("never exceeds capacity, however long the gap", () => {
    expect(refill({ level: 100, updatedAt: 0 }, shape, Number.MAX_SAFE_INTEGER).level).toBe(100);
  });

  it("a clock going backwards refills nothing and keeps the later mark", () => {
    const r = refill({ level: 10, updatedAt: 5000 }, shape, 4000);
    expect(r).toEqual({ level: 10, updatedAt: 5000 });
    // and time lost to the backwards jump is not counted twice when the clock catches up
    expect(refill(r, shape, 5100).level).toBeCloseTo(11, 9);
  });

  it("fractional refill accumulates exactly across many small steps", () => {
    let s = { level: 0, updatedAt: 0 };
    for (let t = 1; t <= 1000; t++) s = refill(s, { capacity: 1000, refillPerSec: 166 }, t);
    expect(s.level).toBeCloseTo(166, 6);
    expect(fits(s.level, 166)).toBe(true);
    expect(fits(s.level, 167)).toBe(false);
  });

  it("a pool with no refill stays where it is", () => {
    expect(refill({ level: 3, updatedAt: 0 }, { capacity: 10, refillPerSec: 0 }, 999_999).level).toBe(3);
  });

  it("a capacity lowered below the level clamps the level", () => {
    expect(refill({ level: 50, updatedAt: 0 }, { capacity: 20, refillPerSec: 1 }, 0).level).toBe(20);
  });
});

describe("msUntil", () => {
  it("is 0 when enough is there", () => expect(msUntil(10, 10, shape)).toBe(0));
  it("rounds up to the first whole millisecond", () => expect(msUntil(0, 1, shape)).toBe(100));
  it("counts the shortfall only", () => expect(msUntil(9.5, 10, shape)).toBe(50));
  it("is null above capacity", () => expect(msUntil(0, 101, shape)).toBeNull());
  it("is null with no refill", () => expect(msUntil(0, 1, { capacity: 10, refillPerSec: 0 })).toBeNull());
  it("waiting exactly msUntil makes the amount fit", () => {
    for (const [level, need, rate] of [[0.3, 7, 166], [12.25, 90, 3], [0, 1, 1666]] as const) {
      const s = { capacity: 100, refillPerSec: rate };
      const wait = msUntil(level, need, s)!;
      expect(fits(refill({ level, updatedAt: 0 }, s, wait).level, need)).toBe(true);
      expect(fits(refill({ level, updatedAt: 0 }, s, wait - 1).level, need)).toBe(false);
    }
  });
});

describe("take and giveBack", () => {
  it("take never goes negative", () => expect(take({ level: 2, updatedAt: 0 }, 5).level).toBe(0));
  it("giveBack never exceeds capacity", () => expect(giveBack({ level: 98, updatedAt: 0 }, 5, shape).level).toBe(100));
});

describe("money", () => {
  it("costs are exact integers", () => {
    expect(costOf(2000, 30_000)).toBe(60_000_000);
    expect(costOf(1, 7_500_000)).toBe(7_500_000);
    expect(costOf(0, 500)).toBe(0);
  });
  it("refuses a cost that would lose precision", () => {
    expect(() => costOf(Number.MAX_SAFE_INTEGER, 2)).toThrow(RangeError);
  });
  it("formats nano-dollars for people", () => {
    expect(formatUsd(60_000_000)).toBe("$0.06");
    expect(formatUsd(1_000_000_000_000)).toBe("$1000.00");
    expect(formatUsd(500)).toBe("$0.0000005");
  });
});

describe("sharing", () => {
  const acme: Caller = { clientId: "acme", tier: "enterprise", via: "test" };
  const hooli: Caller = { clientId: "hooli", tier: "basic", via: "test" };
  it("shared pools serve everyone with nothing kept back", () => {
    expect(accessFor({ capacity: 100, sharing: { mode: "shared" } }, hooli)).toEqual({ allowed: true, protectedUnits: 0 });
  });
  it("dedicated pools serve their one client only", () => {
    const pool = { capacity: 100, sharing: { mode: "dedicated" as const, clientId: "acme" } };
    expect(accessFor(pool, acme).allowed).toBe(true);
    expect(accessFor(pool, hooli).allowed).toBe(false);
  });
  it("reserved shares are kept from everyone they do not name", () => {
    const pool = {
      capacity: 1000,
      sharing: { mode: "reserved" as const, shares: [{ tier: "enterprise" as const, fraction: 0.3 }, { clientId: "globex", fraction: 0.1 }] },
    };
    expect(accessFor(pool, acme)).toEqual({ allowed: true, protectedUnits: 100 });
    expect(accessFor(pool, hooli)).toEqual({ allowed: true, protectedUnits: 400 });
    expect(accessFor(pool, { clientId: "globex", tier: "premium", via: "t" })).toEqual({ allowed: true, protectedUnits: 300 });
  });
});
