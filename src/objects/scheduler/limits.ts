/** The dispatch limits that ranking, the pass and the state view share. */

/**
 * Requests in worker calls at once, per shard: 10,000 held jobs fit in one shard (issue 20; docs/architecture.md: the
 * worker protocol, `runMany` accepting jobs). A pass still launches at most SCAN_LIMIT, so a backlog of
 * quick jobs drains in the same waves as with 2,048 (docs/benchmarks.md).
 */
export const MAX_IN_FLIGHT = 10_240;
/** Room above MAX_IN_FLIGHT kept for `immediate` work run at once by execute (the immediate lane), so a backlog cannot hold it up. */
export const IMMEDIATE_HEADROOM = 32;
/**
 * Requests claimed and admitted together: one client-object call per client and one pool-object call
 * per pool for the whole chunk, and one write for its start.
 */
export const CHUNK = 512;
/**
 * Pacing: calls started within YOUNG_MS and still running, at most, per shard (paceLimitOf: YOUNG_TOTAL
 * over the shard count, or over the shards of the isolate that have work). Quick calls leave this set as they end and long ones as they age, so held jobs still
 * reach MAX_IN_FLIGHT; what it bounds is the burst of answers and settlements a pass queues in front of
 * other work (under `wrangler dev` every object shares one thread: an execute waited behind it).
 * 512 rather than 1,024: on a quiet machine executes during a drain went from p95 202-255 / p99
 * 1,008-1,075 ms to p95 145-230 / p99 517-862 ms, for 10-15% of the drain's rate (docs/benchmarks.md).
 */
export const YOUNG_MS = 250;
export const YOUNG_TOTAL = 512;

/**
 * A shard's pacing limit: its own part of YOUNG_TOTAL (at least CHUNK / 4), or YOUNG_TOTAL over the
 * shards of its isolate that have work (`busy`) when that is more. A shard alone with work takes the
 * whole budget: a backlog's last client drained alone at half the rate of the rest (the thirty-second
 * session, docs/benchmarks.md). Its chunks stay short all the same (passChunkOf).
 */
export function paceLimitOf(shards: number, busy: number): number {
  return Math.max(CHUNK / 4, Math.floor(YOUNG_TOTAL / shards), Math.floor(YOUNG_TOTAL / Math.max(1, busy)));
}

/**
 * Requests one pass admits together at most: CHUNK with one shard, half of it with several, whose
 * passes share the isolate's thread. A chunk's admission and launch is one task that every other
 * request waits behind: one of four shards taking chunks of 512 made executes wait 255-263 ms at p95.
 */
export function passChunkOf(shards: number): number {
  return shards > 1 ? CHUNK / 2 : CHUNK;
}
/**
 * The shards of an isolate whose last pass found ready work, and when (paceLimitOf's `busy`). A shard is
 * noted busy by a pass that finds ready work, and idle by one that finds none or launches all it found:
 * then the shard left alone with work takes the whole budget at its next pass. A backlog's last shard
 * used to drain at a third of it for up to BUSY_FRESH_MS after the others had launched their last
 * requests, as their shards' passes ended with nothing left and no pass came to say so (the
 * thirty-fourth session, docs/benchmarks.md).
 */
export class BusyShards<K> {
  private readonly since = new Map<K, number>();

  note(shard: K, busy: boolean, now: number): void {
    if (busy) this.since.set(shard, now);
    else this.since.delete(shard);
  }

  /** Shards noted busy within BUSY_FRESH_MS (one older stopped, or its object went). */
  count(now: number): number {
    let n = 0;
    for (const [shard, at] of this.since) {
      if (now - at > BUSY_FRESH_MS) this.since.delete(shard);
      else n += 1;
    }
    return n;
  }
}

/** A shard noted busy longer ago than this counts as idle. */
export const BUSY_FRESH_MS = 1000;

/** Ready requests one pass looks at, at most (the head of the fair order). */
export const SCAN_LIMIT = 2048;
