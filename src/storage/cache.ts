interface Entry<V> {
  value: Promise<V>;
  expiresAt: number;
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
 * A small per-isolate cache with a time to live: configuration and key lookups stay off D1 on the hot
 * path. Concurrent misses for one key share one load (for at most JOIN_TIMEOUT_MS). Bounded: when full, the oldest entry goes, one
 * at a time (never the whole cache). With `negative`, negative answers are kept in a FIFO of their
 * own, so that a flood of distinct bad keys pushes out only older bad keys, never a valid one.
 */
export class TtlCache<V> {
  private readonly entries = new Map<string, Entry<V>>();
  private readonly negatives = new Map<string, Entry<V>>();
  private readonly loading = new Map<string, Promise<V>>();
  /** Bumped by clear(): a load started before it must not store what may be stale by now. */
  private generation = 0;

  constructor(private readonly maxEntries = 10_000, private readonly negative?: NegativeEntries<V>) {}

  get(key: string, ttlMs: number, load: () => Promise<V>, now = Date.now()): Promise<V> {
    const hit = this.entries.get(key) ?? this.negatives.get(key);
    if (hit && hit.expiresAt > now) return hit.value;
    const pending = this.loading.get(key);
    if (pending) return joinOrLoad(pending, load);
    const generation = this.generation;
    const value = load();
    this.loading.set(key, value);
    value.then(
      (v) => {
        if (generation !== this.generation) return;
        this.loading.delete(key);
        this.store(key, { value, expiresAt: now + ttlMs }, this.negative?.isNegative(v) ?? false);
      },
      () => {
        if (generation === this.generation) this.loading.delete(key);
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
