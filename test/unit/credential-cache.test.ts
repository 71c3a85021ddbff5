import { describe, expect, it } from "vitest";
import { JOIN_TIMEOUT_MS, LOAD_PATIENCE_MS, STALE_GRACE_MS, TtlCache } from "../../src/storage/cache";
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

/** A load the test settles by hand, counting how often it was started. */
function manual<V>() {
  const settle: { resolve: (v: V) => void; reject: (e: Error) => void }[] = [];
  return {
    get started() {
      return settle.length;
    },
    load: () => new Promise<V>((resolve, reject) => settle.push({ resolve, reject })),
    resolve: (i: number, v: V) => settle[i]!.resolve(v),
    reject: (i: number, e: Error) => settle[i]!.reject(e),
  };
}

async function timed<V>(read: Promise<V>): Promise<{ value: V; ms: number }> {
  const started = Date.now();
  const value = await read;
  return { value, ms: Date.now() - started };
}

describe("the config cache while an entry reloads (stale while revalidating)", () => {
  const EXPIRED = NOW + TTL;

  async function primed(): Promise<TtlCache<string>> {
    const cache = new TtlCache<string>();
    await cache.get("k", TTL, () => Promise.resolve("v1"), NOW);
    return cache;
  }

  it("reads during a reload answer the previous value at once; the read that started it waits at most LOAD_PATIENCE_MS", async () => {
    const cache = await primed();
    const reload = manual<string>();
    const first = await timed(cache.get("k", TTL, reload.load, EXPIRED));
    expect(first.value).toBe("v1");
    // It answered although its load never settled (a wait for it would never end): after its patience, not at once.
    expect(first.ms).toBeGreaterThanOrEqual(LOAD_PATIENCE_MS - 5);
    const others = manual<string>();
    const second = await timed(cache.get("k", TTL, others.load, EXPIRED + STALE_GRACE_MS - 1));
    expect(second.value).toBe("v1");
    expect(others.started).toBe(0);
    expect(reload.started).toBe(1);

    reload.resolve(0, "v2");
    await Promise.resolve();
    expect(await cache.get("k", TTL, others.load, EXPIRED + 1)).toBe("v2");
    // The reload's answer lives its own TTL from when it began.
    expect(await cache.get("k", TTL, others.load, EXPIRED + TTL - 1)).toBe("v2");
    expect(others.started).toBe(0);
  });

  it("a reload that answers within LOAD_PATIENCE_MS is what the read that started it gets", async () => {
    const cache = await primed();
    expect(await cache.get("k", TTL, () => Promise.resolve("v2"), EXPIRED)).toBe("v2");
  });

  it("an entry expired STALE_GRACE_MS ago or more is never answered: reads wait for its load", async () => {
    const cache = await primed();
    const slow = () => new Promise<string>((resolve) => setTimeout(() => resolve("v2"), LOAD_PATIENCE_MS + 40));
    const late = EXPIRED + STALE_GRACE_MS;
    const [a, b] = await Promise.all([timed(cache.get("k", TTL, slow, late)), timed(cache.get("k", TTL, slow, late))]);
    expect([a.value, b.value]).toEqual(["v2", "v2"]);
    expect(Math.min(a.ms, b.ms)).toBeGreaterThanOrEqual(LOAD_PATIENCE_MS + 30);
  });

  it("a failed reload leaves the previous answer within its grace, and the next read loads again", async () => {
    const cache = await primed();
    expect(await cache.get("k", TTL, () => Promise.reject(new Error("D1 down")), EXPIRED)).toBe("v1");
    const again = manual<string>();
    const read = cache.get("k", TTL, again.load, EXPIRED + 5);
    expect(again.started).toBe(1);
    again.resolve(0, "v3");
    expect(await read).toBe("v3");
  });

  it("a reload that never settles is replaced after JOIN_TIMEOUT_MS, and its late answer never replaces a newer one", async () => {
    const cache = await primed();
    const dead = manual<string>();
    expect(await cache.get("k", TTL, dead.load, EXPIRED)).toBe("v1");
    // Past the grace and the join timeout: a new load, not a second's wait on the dead one.
    const fresh = await timed(cache.get("k", TTL, () => Promise.resolve("v3"), EXPIRED + Math.max(JOIN_TIMEOUT_MS, STALE_GRACE_MS)));
    expect(fresh.value).toBe("v3");
    expect(fresh.ms).toBeLessThan(JOIN_TIMEOUT_MS / 2);
    dead.resolve(0, "v2");
    await Promise.resolve();
    expect(await cache.get("k", TTL, () => Promise.resolve("unused"), EXPIRED + JOIN_TIMEOUT_MS + 2)).toBe("v3");
  });

  it("clear() drops an expired entry at once: the next read waits for the load, never the old value", async () => {
    const cache = await primed();
    cache.clear();
    const reload = manual<string>();
    const read = cache.get("k", TTL, reload.load, EXPIRED);
    setTimeout(() => reload.resolve(0, "v2"), LOAD_PATIENCE_MS + 20);
    expect(await read).toBe("v2");
  });
});
