import type { WaitClaim } from "./types";

/**
 * The scheduler shards' waiting reservations in one pool: how a pool short of units grants them to the
 * best waiting request of any shard (DESIGN.md: priority across shards is arbitrated by the pools).
 *
 * A shard's reserve carries its request's priority class (tier + urgency + whole wait points, plus
 * 100 when starved), its client's fair-share weight and the shard's name. When the pool cannot grant
 * it, the client is recorded as waiting. While a client of another shard waits and goes first, a
 * reserve is refused even though units are there, so that they are kept for the waiter:
 *   - a higher priority class goes first;
 *   - in the same class, the client with the least weighted service goes first (start-time fair
 *     queuing: each grant moves its client's virtual finish on by amount / weight).
 * When units come back (a release), every shard with a waiter is woken, so the first goes first.
 *
 * Bounds: a waiter is forgotten WAITER_TTL_MS after its last refusal (a shard that stopped asking
 * holds nothing back for longer); at most MAX_WAITERS clients are kept (the lowest class leaves
 * first); a client that was idle restarts at the current virtual time (idle time earns no credit).
 * Memory only: after a restart the pool grants first come, first served until shards wait again.
 * Reserves without a shard (direct reservations, not queued work) are neither held back nor recorded.
 */

interface Waiter extends WaitClaim {
  amount: number;
  until: number;
}

const WAITER_TTL_MS = 2000;
const MAX_WAITERS = 256;
/** How soon a request held back for another shard's waiter is asked to come again (a wake comes sooner). */
export const HELD_RETRY_MS = 100;

export class WaitBook {
  private waiters = new Map<string, Waiter>();
  /** Virtual finish time of each client's last grant (start-time fair queuing). */
  private finish = new Map<string, number>();
  /** The system's virtual time: the start tag of the latest grant. */
  private vnow = 0;

  /** The waiter of another shard that goes before this claim, if any (expired waiters are dropped). */
  aheadOf(claim: WaitClaim, now: number): Waiter | null {
    let best: Waiter | null = null;
    for (const [client, w] of this.waiters) {
      if (w.until <= now) {
        this.waiters.delete(client);
        continue;
      }
      if (w.shard === claim.shard || client === claim.clientId) continue;
      if (this.precedes(w, claim) && (best === null || this.precedes(w, best))) best = w;
    }
    return best;
  }

  /** A reserve of this claim was granted: its client is served (and no longer waits). */
  granted(claim: WaitClaim, amount: number): void {
    const start = Math.max(this.vnow, this.finish.get(claim.clientId) ?? this.vnow);
    this.finish.set(claim.clientId, start + amount / Math.max(claim.weight, 1e-6));
    this.vnow = start;
    this.waiters.delete(claim.clientId);
    if (this.finish.size > 4 * MAX_WAITERS) {
      // Clients at or behind the virtual time would restart there anyway: forget them.
      for (const [client, f] of this.finish) if (f <= this.vnow && !this.waiters.has(client)) this.finish.delete(client);
    }
  }

  /** A reserve of this claim was refused: its client waits (its best class and latest shard kept). */
  refused(claim: WaitClaim, amount: number, now: number): void {
    const prior = this.waiters.get(claim.clientId);
    this.waiters.set(claim.clientId, {
      ...claim, priority: Math.max(claim.priority, prior && prior.until > now ? prior.priority : -Infinity), amount, until: now + WAITER_TTL_MS,
    });
    if (this.waiters.size > MAX_WAITERS) {
      const lowest = [...this.waiters.values()].reduce((a, b) => (b.priority < a.priority ? b : a));
      this.waiters.delete(lowest.clientId);
    }
  }

  /** Shards with a live waiter: woken when units come back. */
  waitingShards(now: number): string[] {
    const shards = new Set<string>();
    for (const w of this.waiters.values()) if (w.until > now) shards.add(w.shard);
    return [...shards];
  }

  get size(): number {
    return this.waiters.size;
  }

  private startTag(clientId: string): number {
    return Math.max(this.vnow, this.finish.get(clientId) ?? this.vnow);
  }

  private precedes(a: WaitClaim, b: WaitClaim): boolean {
    if (a.priority !== b.priority) return a.priority > b.priority;
    return this.startTag(a.clientId) < this.startTag(b.clientId);
  }
}

/** The refusal of a reserve held back for another shard's waiter: rate_limited, as a shortage is. */
export function heldBack(pool: string, amount: number, available: number, ahead: WaitClaim, now: number) {
  return {
    ok: false as const,
    error: {
      code: "rate_limited" as const,
      message: `pool ${pool} keeps its units for a waiting request of higher priority or lower fair share`,
      details: { pool, requested: amount, available, retry_after_ms: HELD_RETRY_MS, available_at: now + HELD_RETRY_MS, held_for: { shard: ahead.shard, priority: ahead.priority } },
    },
  };
}
