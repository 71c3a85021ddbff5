import { describe, expect, it } from "vitest";
import { blockSize, lendable, SHARD_LEASE, SLOT_LEASE } from "../../src/domain/leases";

describe("lending from plenty (pools' units and clients' slots to scheduler shards)", () => {
  it("lends at most a quarter of what is available and always leaves 256", () => {
    expect([1000, 400, 300, 257, 256, 0, -5].map((n) => lendable(n, SLOT_LEASE))).toEqual([250, 100, 44, 1, 0, 0, 0]);
    // A pool's level may be fractional: what is lent is whole and leaves 3 times as much and 256.
    expect(lendable(1003.9, SHARD_LEASE)).toBe(250);
    for (const level of [300, 1000, 4096.5, 100_000]) {
      const most = lendable(level, SHARD_LEASE);
      expect(level - most).toBeGreaterThanOrEqual(Math.max(SHARD_LEASE.MIN_LEFT, (SHARD_LEASE.PLENTY - 1) * most));
      expect(level - (most + 1)).toBeLessThan(Math.max(SHARD_LEASE.MIN_LEFT, (SHARD_LEASE.PLENTY - 1) * (most + 1)));
    }
  });

  it("a block is what is wanted within plenty, never below its use, nothing more where the client may not lend", () => {
    expect(blockSize(1000, 400, 0, true)).toBe(250);
    expect(blockSize(1000, 100, 0, true)).toBe(100);
    expect(blockSize(250, 500, 10, true)).toBe(10);
    expect(blockSize(1000, 100, 40, false)).toBe(40);
  });
});
