interface Entry<V> {
  value: Promise<V>;
  expiresAt: number;
  /** When the load that answered it began: an older load that settles later does not replace it. */
  loadedAt: number;
}

/** A load under way, and when it began: one older than JOIN_TIMEOUT_MS may never settle. */
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
 * How long past its TTL an entry may still be answered, and only while a fresh load of it is under
 * way (stale while revalidating). Executes during a drain found a config entry expired every few
 * seconds and all waited for its one load, ~300 ms under `wrangler dev` behind the local D1's
 * request-log writes (docs/benchmarks.md, the thirty-fourth and thirty-fifth sessions). Now the reads that arrive during
 * the load answer the previous value at once, and the read that started the load waits for it at most
 * LOAD_PATIENCE_MS before it answers the previous value too; the load still completes in its request.
 * Nothing is answered more than TTL + STALE_GRACE_MS after it was loaded, and clear() drops it at once.
 */
export const STALE_GRACE_MS = 1000;
/** How long the read that starts a reload waits for it before answering the entry it replaces. */
export const LOAD_PATIENCE_MS = 25;

async function patiently<V>(load: Promise<V>, previous: Promise<V>): Promise<V> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<typeof TIMED_OUT>((resolve) => (timer = setTimeout(() => resolve(TIMED_OUT), LOAD_PATIENCE_MS)));
  try {
    const first = await Promise.race([load, timedOut]);
    return first === TIMED_OUT ? await previous : (first as V);
  } catch {
    // The reload failed: the previous answer still stands, within its grace (the next read loads again).
    return previous;
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}

/**
 * A small per-isolate cache with a time to live: configuration and key lookups stay off D1 on the hot
 * path. Concurrent misses for one key share one load (for at most JOIN_TIMEOUT_MS). Bounded: when full, the oldest entry goes, one
 * at a time (never the whole cache). With `negative`, negative answers are kept in a FIFO of their
 * own, so that a flood of distinct bad keys pushes out only older bad keys, never a valid one.
 * Stale while revalidating, for at most STALE_GRACE_MS past the TTL: see there.
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
    if (hit && hit.expiresAt > now) return hit.value;
    const stale = hit && now < hit.expiresAt + STALE_GRACE_MS ? hit.value : undefined;
    // A load older than JOIN_TIMEOUT_MS may never settle (its request ended first): replaced, not joined.
    const pending = this.loading.get(key);
    if (pending && now - pending.startedAt < JOIN_TIMEOUT_MS) return stale ?? joinOrLoad(pending.value, load);
    const value = this.start(key, ttlMs, load, now);
    return stale ? patiently(value, stale) : value;
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
        this.store(key, { value, expiresAt: now + ttlMs, loadedAt: now }, this.negative?.isNegative(v) ?? false);
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
