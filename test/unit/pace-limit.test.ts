import { describe, expect, it } from "vitest";
import { paceLimitOf, passChunkOf } from "../../src/objects/scheduler/limits";

/**
 * A shard's pacing limit (src/objects/scheduler/limits.ts): the calls started in the last 250 ms it may
 * keep. Its own part of 512, or 512 over the shards of its isolate that have work; and the chunk a pass
 * admits at once.
 */
describe("paceLimitOf", () => {
  it("one shard keeps the whole budget, with or without work seen", () => {
    expect(paceLimitOf(1, 0)).toBe(512);
    expect(paceLimitOf(1, 1)).toBe(512);
  });

  it("four shards: 128 each while all have work, the idle ones' part shared by the rest, all of it for one alone", () => {
    expect([4, 3, 2, 1, 0].map((busy) => paceLimitOf(4, busy))).toEqual([128, 170, 256, 512, 512]);
  });

  it("chunks of 512 with one shard, 256 with several (the whole budget of a shard alone goes in two)", () => {
    expect([1, 2, 4, 64].map(passChunkOf)).toEqual([512, 256, 256, 256]);
  });

  it("never below a chunk's quarter, however many shards", () => {
    expect(paceLimitOf(8, 8)).toBe(128);
    expect(paceLimitOf(64, 64)).toBe(128);
    expect(paceLimitOf(64, 3)).toBe(170);
  });
});
