import { describe, expect, it } from "vitest";
import { BUSY_FRESH_MS, BusyShards, paceLimitOf, passChunkOf } from "../../src/objects/scheduler/limits";

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

describe("BusyShards", () => {
  it("a shard whose pass launched all its ready work stops counting at once: the last one with work gets the whole budget", () => {
    const busy = new BusyShards<string>();
    const t = 1_000_000;
    for (const shard of ["a", "b", "c"]) busy.note(shard, true, t);
    expect(busy.count(t)).toBe(3);
    expect(paceLimitOf(4, busy.count(t))).toBe(170);
    // a's and b's passes launched the last of their backlogs: c is alone, 10 ms later, not BUSY_FRESH_MS later.
    busy.note("a", false, t + 5);
    busy.note("b", false, t + 6);
    expect(busy.count(t + 10)).toBe(1);
    expect(paceLimitOf(4, busy.count(t + 10))).toBe(512);
  });

  it("a shard noted busy and heard from no more counts until BUSY_FRESH_MS, then not (its object stopped or went)", () => {
    const busy = new BusyShards<string>();
    busy.note("a", true, 0);
    busy.note("b", true, 500);
    expect(busy.count(BUSY_FRESH_MS)).toBe(2);
    expect(busy.count(BUSY_FRESH_MS + 1)).toBe(1);
    expect(busy.count(500 + BUSY_FRESH_MS + 1)).toBe(0);
    // Noted busy again: counted again, from then.
    busy.note("a", true, 3000);
    expect(busy.count(3000)).toBe(1);
  });
});
