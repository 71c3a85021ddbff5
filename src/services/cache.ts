/**
 * A small per-isolate cache with a time to live: configuration and key lookups stay off D1 on the hot
 * path. Concurrent misses for one key share one load.
 */
export class TtlCache<V> {
  private entries = new Map<string, { value: Promise<V>; expiresAt: number }>();

  constructor(private readonly maxEntries = 10_000) {}

  get(key: string, ttlMs: number, load: () => Promise<V>, now = Date.now()): Promise<V> {
    const hit = this.entries.get(key);
    if (hit && hit.expiresAt > now) return hit.value;
    if (this.entries.size >= this.maxEntries) this.entries.clear();
    const value = load();
    this.entries.set(key, { value, expiresAt: now + ttlMs });
    value.catch(() => this.entries.delete(key));
    return value;
  }

  clear(): void {
    this.entries.clear();
  }
}
