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
    await cache.get("k", TTL, db.load("k"), NOW + TTL / 2 - 1);
    expect(db.calls("k")).toBe(1);
    // Read no more until it expired: the next read waits for a load.
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

describe("refreshing ahead", () => {
  /** A loader whose loads settle when the test says, counted. */
  function controlled() {
    const loads: Array<{ resolve: (v: string) => void; reject: (e: Error) => void }> = [];
    return {
      loads,
      load: () => new Promise<string>((resolve, reject) => loads.push({ resolve, reject })),
    };
  }

  /** A cache holding "k" = "v1", loaded at NOW (the loader's first load). */
  async function primed() {
    const cache = new TtlCache<string>();
    const db = controlled();
    const first = cache.get("k", TTL, db.load, NOW);
    db.loads[0]!.resolve("v1");
    expect(await first).toBe("v1");
    return { cache, db };
  }

  it("a read in the second half of the TTL answers the cached value at once and starts one load behind it, which replaces it", async () => {
    const { cache, db } = await primed();
    expect(await cache.get("k", TTL, db.load, NOW + TTL / 2 - 1)).toBe("v1");
    expect(db.loads).toHaveLength(1); // first half: no load
    // Second half: the cached value, without waiting for the load it started (which has not settled).
    expect(await cache.get("k", TTL, db.load, NOW + TTL / 2)).toBe("v1");
    expect(db.loads).toHaveLength(2);
    expect(await cache.get("k", TTL, db.load, NOW + TTL / 2 + 10)).toBe("v1");
    expect(db.loads).toHaveLength(2); // one load at a time
    db.loads[1]!.resolve("v2");
    await Promise.resolve();
    // The new value, with its own TTL from when its load began: past the first one's expiry it is answered at
    // once (an expired entry would wait for the load this read starts), and being in its own second half, refreshed.
    expect(await cache.get("k", TTL, db.load, NOW + TTL + 1)).toBe("v2");
    expect(db.loads).toHaveLength(3);
  });

  it("never answers a value past its TTL: a background load that failed leaves the entry until its expiry, then a read waits", async () => {
    const { cache, db } = await primed();
    expect(await cache.get("k", TTL, db.load, NOW + TTL - 1)).toBe("v1");
    db.loads[1]!.reject(new Error("D1 down"));
    await Promise.resolve();
    expect(await cache.get("k", TTL, db.load, NOW + TTL - 1)).toBe("v1"); // a new background load, the value as it was
    expect(db.loads).toHaveLength(3);
    db.loads[2]!.reject(new Error("D1 down"));
    await Promise.resolve();
    let answered: string | null = null;
    const expired = cache.get("k", TTL, db.load, NOW + TTL).then((v) => (answered = v));
    await Promise.resolve();
    expect(answered).toBeNull(); // expired: it waits for D1
    db.loads[3]!.resolve("v3");
    await expired;
    expect(answered).toBe("v3");
  });

  it("a background load that never settles (its request ended) does not stop the next one after JOIN_TIMEOUT_MS, and a late answer does not replace a newer one", async () => {
    const { cache, db } = await primed();
    const half = NOW + TTL / 2;
    await cache.get("k", TTL, db.load, half);
    await cache.get("k", TTL, db.load, half + JOIN_TIMEOUT_MS - 1);
    expect(db.loads).toHaveLength(2);
    await cache.get("k", TTL, db.load, half + JOIN_TIMEOUT_MS);
    expect(db.loads).toHaveLength(3);
    db.loads[2]!.resolve("new");
    await Promise.resolve();
    db.loads[1]!.resolve("old, late");
    await Promise.resolve();
    expect(await cache.get("k", TTL, db.load, half + JOIN_TIMEOUT_MS + 1)).toBe("new");
  });

  it("at expiry, a background load that never settled is not waited for: the read loads at once", async () => {
    const { cache, db } = await primed();
    await cache.get("k", TTL, db.load, NOW + TTL / 2); // a background load, never to settle (its request ended)
    const started = Date.now();
    const expired = cache.get("k", TTL, db.load, NOW + TTL);
    expect(db.loads).toHaveLength(3); // its own load, not a join of the dead one
    db.loads[2]!.resolve("v3");
    expect(await expired).toBe("v3");
    expect(Date.now() - started).toBeLessThan(JOIN_TIMEOUT_MS / 2);
  });

  it("a background load begun before clear() stores nothing", async () => {
    const { cache, db } = await primed();
    await cache.get("k", TTL, db.load, NOW + TTL / 2);
    cache.clear();
    db.loads[1]!.resolve("from before the clear");
    await Promise.resolve();
    expect(cache.size).toEqual({ entries: 0, negatives: 0 });
  });
});
