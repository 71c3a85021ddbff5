import { describe, expect, it } from "vitest";
import { JOIN_TIMEOUT_MS, TtlCache } from "../../src/storage/cache";
import { KEY_MISSES_MAX, newKeyCache } from "../../src/storage/config";
import type { KeyOwner } from "../../src/storage/clients";

const TTL = 60_000;
const NOW = 1_767_225_600_000;
const OWNER = { keyId: "key_valid", clientId: "acme" } as unknown as KeyOwner;

/** A loader that counts its calls per key. */
function counting<V>(answer: (key: string) => V) {
  const calls = new Map<string, number>();
  return {
    calls: (key: string) => calls.get(key) ?? 0,
    load: (key: string) => () => {
      calls.set(key, (calls.get(key) ?? 0) + 1);
      return Promise.resolve(answer(key));
    },
  };
}

describe("the failed-credential cache", () => {
  it("evicts the oldest misses one at a time, keeping the rest", async () => {
    const cache = new TtlCache<string | null>(10, { isNegative: (v) => v === null, maxEntries: 3 });
    const db = counting<string | null>(() => null);
    for (const key of ["a", "b", "c"]) await cache.get(key, TTL, db.load(key), NOW);
    expect(cache.size).toEqual({ entries: 0, negatives: 3 });

    await cache.get("d", TTL, db.load("d"), NOW); // full: "a", the oldest, goes; nothing else
    for (const key of ["b", "c", "d"]) await cache.get(key, TTL, db.load(key), NOW);
    expect(["a", "b", "c", "d"].map(db.calls)).toEqual([1, 1, 1, 1]);

    await cache.get("e", TTL, db.load("e"), NOW); // then "b"
    for (const key of ["c", "d", "e"]) await cache.get(key, TTL, db.load(key), NOW);
    expect(["b", "c", "d", "e"].map(db.calls)).toEqual([1, 1, 1, 1]);
    await cache.get("a", TTL, db.load("a"), NOW); // "a" was evicted: loaded again (and "c" makes room)
    expect(db.calls("a")).toBe(2);
    expect(cache.size).toEqual({ entries: 0, negatives: 3 });
  });

  it("keeps a cached valid key through 20,000 distinct bad keys (the API-key cache as configured)", async () => {
    const keys = newKeyCache();
    const db = counting<KeyOwner | null>((hash) => (hash === "valid" ? OWNER : null));
    expect(await keys.get("valid", TTL, db.load("valid"), NOW)).toBe(OWNER);
    for (let i = 0; i < 20_000; i += 1) expect(await keys.get(`bad-${i}`, TTL, db.load(`bad-${i}`), NOW)).toBeNull();

    expect(await keys.get("valid", TTL, db.load("valid"), NOW)).toBe(OWNER);
    expect(db.calls("valid")).toBe(1);
    expect(keys.size).toEqual({ entries: 1, negatives: KEY_MISSES_MAX });
    // The newest misses are still cached, the oldest were evicted.
    await keys.get("bad-19999", TTL, db.load("bad-19999"), NOW);
    await keys.get(`bad-${20_000 - KEY_MISSES_MAX}`, TTL, db.load(`bad-${20_000 - KEY_MISSES_MAX}`), NOW);
    expect(db.calls("bad-19999")).toBe(1);
    expect(db.calls(`bad-${20_000 - KEY_MISSES_MAX}`)).toBe(1);
    await keys.get("bad-0", TTL, db.load("bad-0"), NOW);
    expect(db.calls("bad-0")).toBe(2);
  });

  it("bounds valid entries too, oldest first, never all at once", async () => {
    const cache = new TtlCache<string>(2);
    const db = counting((key) => `v-${key}`);
    for (const key of ["a", "b", "c"]) await cache.get(key, TTL, db.load(key), NOW);
    expect(cache.size).toEqual({ entries: 2, negatives: 0 });
    for (const key of ["b", "c"]) await cache.get(key, TTL, db.load(key), NOW);
    expect(["a", "b", "c"].map(db.calls)).toEqual([1, 1, 1]);
  });

  it("expires entries after their TTL, shares one load between concurrent misses, and does not cache failures", async () => {
    const cache = new TtlCache<string | null>(10, { isNegative: (v) => v === null, maxEntries: 10 });
    const db = counting<string | null>(() => null);
    await Promise.all([cache.get("k", TTL, db.load("k"), NOW), cache.get("k", TTL, db.load("k"), NOW)]);
    expect(db.calls("k")).toBe(1);
    await cache.get("k", TTL, db.load("k"), NOW + TTL - 1);
    expect(db.calls("k")).toBe(1);
    await cache.get("k", TTL, db.load("k"), NOW + TTL);
    expect(db.calls("k")).toBe(2);
    expect(cache.size.negatives).toBe(1);

    await expect(cache.get("x", TTL, () => Promise.reject(new Error("D1 down")), NOW)).rejects.toThrow("D1 down");
    expect(await cache.get("x", TTL, () => Promise.resolve("back"), NOW)).toBe("back");
  });

  it("a load in flight when the cache is cleared does not store its (possibly stale) answer", async () => {
    const cache = new TtlCache<string>();
    let resolve!: (v: string) => void;
    const pending = cache.get("k", TTL, () => new Promise<string>((r) => (resolve = r)), NOW);
    cache.clear();
    resolve("stale");
    expect(await pending).toBe("stale");
    expect(cache.size).toEqual({ entries: 0, negatives: 0 });
    expect(await cache.get("k", TTL, () => Promise.resolve("fresh"), NOW)).toBe("fresh");
  });

  it("a miss that joins another request's load which never settles loads for itself after JOIN_TIMEOUT_MS", async () => {
    const cache = new TtlCache<string>();
    // The first request's load never settles (its request ended and the runtime dropped its I/O).
    void cache.get("k", TTL, () => new Promise<string>(() => {}), NOW);
    const started = Date.now();
    expect(await cache.get("k", TTL, () => Promise.resolve("own"), NOW)).toBe("own");
    expect(Date.now() - started).toBeGreaterThanOrEqual(JOIN_TIMEOUT_MS - 50);
    // A join whose load settles in time shares it, as before.
    let resolve!: (v: string) => void;
    const first = cache.get("j", TTL, () => new Promise<string>((r) => (resolve = r)), NOW);
    const second = cache.get("j", TTL, () => Promise.resolve("not used"), NOW);
    resolve("shared");
    expect(await Promise.all([first, second])).toEqual(["shared", "shared"]);
  });
});
