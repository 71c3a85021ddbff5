import { waitUntil } from "cloudflare:workers";

interface Entry<V> {
  value: Promise<V>;
  expiresAt: number;
  /** From then on (half its TTL), a hit also starts a load in the background: steady traffic never waits for one. */
  refreshAt: number;
  /** When the load that answered it began: an older load that settles later does not replace it. */
  loadedAt: number;
}

/** A load under way, and when it began (one older than JOIN_TIMEOUT_MS may never settle). */
interface Loading<V> {
  value: Promise<V>;
  startedAt: number;
}

/** Keeps answers that mean "no such thing" (an unknown API key) apart, in their own bound. */
export interface NegativeEntries<V> {
  isNegative: (value: V) => boolean;
  maxEntries: number;
}

/**
 * How long a miss waits on another request's load of the same key before loading for itself. A load
 * belongs to the request that started it: if that request ends first (it failed fast, say), the
 * runtime may cancel its I/O and the shared promise never settles, so a request must not wait on it
 * for ever. A D1 read takes milliseconds.
 */
export const JOIN_TIMEOUT_MS = 1000;

async function joinOrLoad<V>(pending: Promise<V>, load: () => Promise<V>): Promise<V> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<typeof TIMED_OUT>((resolve) => (timer = setTimeout(() => resolve(TIMED_OUT), JOIN_TIMEOUT_MS)));
  try {
    const first = await Promise.race([pending, timedOut]);
    return first === TIMED_OUT ? await load() : (first as V);
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}

const TIMED_OUT = Symbol("timed out");

/**
 * A background load outlives the request that started it (which answers from the cache at once): the
 * runtime cancels a request's I/O once it has answered, unless it was handed to waitUntil. Outside a
 * request (no context to extend) it runs as it can; one that never settles is replaced after JOIN_TIMEOUT_MS.
 */
function keepAlive(load: Promise<unknown>): void {
  const settled = load.catch(() => undefined);
  try {
    waitUntil(settled);
  } catch {
    // No request context here: nothing to extend.
  }
}

/**
 * A small per-isolate cache with a time to live: configuration and key lookups stay off D1 on the hot
 * path. Concurrent misses for one key share one load (for at most JOIN_TIMEOUT_MS). Bounded: when full, the oldest entry goes, one
 * at a time (never the whole cache). With `negative`, negative answers are kept in a FIFO of their
 * own, so that a flood of distinct bad keys pushes out only older bad keys, never a valid one.
 *
 * Refreshed ahead: a hit in the second half of an entry's TTL answers the cached value at once and
 * starts one load in the background, whose answer replaces it. An entry is still never answered past
 * its TTL; but a key read steadily is reloaded before it expires, so no request waits for D1. Before,
 * every key's expiry made the requests that found it expired wait for its load: under `wrangler dev`,
 * behind the local D1's queue of request-log writes, executes during a drain waited ~300 ms for it
 * (the thirty-fourth session, docs/benchmarks.md); in production, a remote D1's round trip every TTL.
 * A background load that fails leaves the entry as it was (its expiry then loads in the foreground).
 */
export class TtlCache<V> {
  private readonly entries = new Map<string, Entry<V>>();
  private readonly negatives = new Map<string, Entry<V>>();
  private readonly loading = new Map<string, Loading<V>>();
  /** Bumped by clear(): a load started before it must not store what may be stale by now. */
  private generation = 0;

  constructor(private readonly maxEntries = 10_000, private readonly negative?: NegativeEntries<V>) {}

  get(key: string, ttlMs: number, load: () => Promise<V>, now = Date.now()): Promise<V> {
    const hit = this.entries.get(key) ?? this.negatives.get(key);
    // A load older than JOIN_TIMEOUT_MS may never settle (a background one whose request ended): neither joined nor waited on.
    const pending = this.loading.get(key);
    const joinable = pending && now - pending.startedAt < JOIN_TIMEOUT_MS ? pending : undefined;
    if (hit && hit.expiresAt > now) {
      if (now >= hit.refreshAt && !joinable) keepAlive(this.start(key, ttlMs, load, now));
      return hit.value;
    }
    if (joinable) return joinOrLoad(joinable.value, load);
    return this.start(key, ttlMs, load, now);
  }

  private start(key: string, ttlMs: number, load: () => Promise<V>, now: number): Promise<V> {
    const generation = this.generation;
    const value = load();
    const loading = { value, startedAt: now };
    this.loading.set(key, loading);
    value.then(
      (v) => {
        if (generation !== this.generation) return;
        if (this.loading.get(key) === loading) this.loading.delete(key);
        const held = this.entries.get(key) ?? this.negatives.get(key);
        if (held && held.loadedAt > now) return;
        this.store(key, { value, expiresAt: now + ttlMs, refreshAt: now + ttlMs / 2, loadedAt: now }, this.negative?.isNegative(v) ?? false);
      },
      () => {
        if (generation === this.generation && this.loading.get(key) === loading) this.loading.delete(key);
      },
    );
    return value;
  }

  /** How many answers are held: positive (`entries`) and negative. */
  get size(): { entries: number; negatives: number } {
    return { entries: this.entries.size, negatives: this.negatives.size };
  }

  clear(): void {
    this.generation += 1;
    this.entries.clear();
    this.negatives.clear();
    this.loading.clear();
  }

  private store(key: string, entry: Entry<V>, negative: boolean): void {
    this.entries.delete(key);
    this.negatives.delete(key);
    const [map, max] = negative ? [this.negatives, this.negative!.maxEntries] : [this.entries, this.maxEntries];
    // Map iterates in insertion order: its first key is the oldest entry.
    while (map.size >= max) map.delete(map.keys().next().value!);
    map.set(key, entry);
  }
}
