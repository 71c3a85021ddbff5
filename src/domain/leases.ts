import type { PoolConfig } from "./types";

/**
 * Leases: slices of a limit lent by its owner (a pool's object lends tokens, a client's object lends
 * budget headroom) to an isolate, which then decides spends locally. Pure arithmetic: the clock is a
 * parameter. What is lent is already taken from the owner, so a lease never lets anyone overspend; it
 * can only make a refusal elsewhere conservative, by at most what is out on leases, for at most a
 * lease's life.
 */

/** Whether a pool lends slices of its bucket at all (to isolates and to scheduler shards): active, shared, leases not off. */
export function poolLends(cfg: Pick<PoolConfig, "status" | "sharing" | "leases">): boolean {
  return cfg.leases !== "off" && cfg.status === "active" && cfg.sharing.mode === "shared";
}

/** Token leases (pool objects to isolates). */
export const TOKEN_LEASE = {
  /** A lease lives this long from its last exchange; its holder stops granting MARGIN_MS before. */
  TTL_MS: 2_000,
  MARGIN_MS: 300,
  /** The owner takes an expired lease's units back this long after its expiry (a late report still lands). */
  GRACE_MS: 2_000,
  /** A holder reports its grants at least this often (and tops its slice up at the same time). */
  REPORT_MS: 500,
  /** A slice aims at this much of the holder's own traffic (two report intervals: a top-up comes before it runs out). */
  WINDOW_MS: 1_000,
  /** A pool in `auto` mode is leased by an isolate once that isolate consumes from it at this rate. */
  AUTO_MIN_RATE: 4,
  /** After the pool could not serve a holder, its consumes go to the object this long (exact refusals). */
  DRY_BACKOFF_MS: 1_000,
} as const;

/**
 * Unit leases to scheduler shards (pool objects to shards; decision 007): a shard's requests take their
 * units from its slice instead of one reservation each. Lent only from plenty: the pool keeps at least
 * PLENTY times what is asked, and MIN_LEFT units, after lending (a pool short of units arbitrates between
 * shards request by request, decision 004). A slice lives TTL_MS from its last exchange, longer than
 * the lease of any request that takes from it, so a shard that dies holds its units that long and no
 * longer; a live shard exchanges at least every RENEW_MS while it holds any.
 */
export const SHARD_LEASE = {
  TTL_MS: 120_000,
  /** A request takes from a slice only if its own lease ends this long before the slice's. */
  MARGIN_MS: 5_000,
  RENEW_MS: 1_000,
  PLENTY: 4,
  MIN_LEFT: 256,
  /** A slice aims at this much of the shard's use of the pool. */
  WINDOW_MS: 1_000,
  /** A shard takes a slice of a pool once it admits this many requests a second there (below, one reservation each). */
  MIN_RATE: 200,
  /** After a pool stopped lending (another shard waits there), the shard asks again no sooner than this. */
  PAUSE_MS: 1_000,
} as const;

/**
 * Job slots lent to scheduler shards by client objects (decision 007, "Slots";
 * src/objects/scheduler/slot-leases.ts): one block of a client's concurrency limit, held as one job row
 * at the client's object, that the shard admits its requests against in memory. Lent only from plenty
 * (the client keeps PLENTY times the block, and MIN_LEFT slots, free for its other work: executes, other
 * shards, allocations) and only to clients with no daily cap per pool (a block holds no units). A block
 * lives TTL_MS from its last exchange and only requests whose lease ends MARGIN_MS before that take from
 * it, so a shard that dies holds its slots that long, and no longer.
 */
export const SLOT_LEASE = {
  TTL_MS: 60_000,
  /** A request takes a slot from a block only if its own lease ends this long before the block's. */
  MARGIN_MS: 5_000,
  RENEW_MS: 1_000,
  PLENTY: 4,
  MIN_LEFT: 256,
  /** A shard asks a client for a block once it admits this many of its requests a second (below, a job row each). */
  MIN_RATE: 200,
} as const;

/**
 * The most an owner lends a shard out of `available` from plenty: it keeps `rule.PLENTY - 1` times what it
 * lends, and `rule.MIN_LEFT`, after lending (a pool's units, SHARD_LEASE; a client's slots, SLOT_LEASE).
 */
export function lendable(available: number, rule: { PLENTY: number; MIN_LEFT: number }): number {
  return Math.max(0, Math.min(available - rule.MIN_LEFT, Math.floor(available / rule.PLENTY)));
}

/**
 * The size of the block a client's object lends a shard: what the shard wants, within what plenty
 * allows (`free`: the limit less every other job held), but never less than the shard's slots in use
 * (running requests keep theirs, as a burst's end lets work held run on). `lends`: the client may lend
 * at all (no daily caps per pool).
 */
export function blockSize(free: number, want: number, inUse: number, lends: boolean): number {
  return Math.max(inUse, Math.min(want, lends ? lendable(free, SLOT_LEASE) : 0));
}

/** Money leases (client objects to isolates). */
export const MONEY_LEASE = {
  TTL_MS: 5_000,
  MARGIN_MS: 500,
  /**
   * A lease that was not returned is held this long past its expiry before the money counts as free: its
   * holder's spends all sit in pool outboxes by then, and outboxes deliver within seconds.
   */
  GRACE_MS: 15_000,
  /** A returned lease's spend not yet delivered by its pool's outbox is held at most this long (a pool's storage that started over never delivers it). */
  PENDING_MAX_MS: 10 * 60_000,
  /** A slice aims at this much of the holder's spend for this client. */
  WINDOW_MS: 2_000,
} as const;

/**
 * Money leases (client objects to scheduler shards; decision 008, src/objects/scheduler/money-leases.ts):
 * a shard admits its clients' single enqueues against one hold per client, in memory.
 */
export const SHARD_MONEY = {
  /**
   * A hold the shard does not renew is dropped by the client this long after its last exchange. The
   * shard returns it (converting its requests) IDLE_MS after the client's last enqueue, and a restarted
   * shard at its first wake (the cron wakes every shard each minute): this is the backstop only.
   */
  HOLD_MS: 60 * 60_000,
  /** No single enqueue of the client for this long: the shard converts its requests and returns the hold. */
  IDLE_MS: 1_000,
  /** A hold aims at this much of the client's enqueued estimates (its rate over the window). */
  WINDOW_MS: 1_000,
  /** Requests converted per exchange call at most (a restart's backlog goes in several). */
  CONVERT_CHUNK: 2_000,
} as const;

/**
 * What one lease request may take from `available` when `holders` others hold leases: at most a fair
 * share, what is left split between them, this one and one more that may come (so no request, however
 * frequent, takes the last units from a slower holder), but always at least `need` when that much is
 * there (a spend that fits is never refused for fairness), and never more than `want`.
 */
export function grantFor(available: number, holders: number, want: number, need = 0): number {
  const left = Math.max(0, Math.floor(available + 1e-9));
  if (want <= 0 || left === 0) return 0;
  const share = Math.floor(left / (Math.max(0, holders) + 2));
  const floor = need <= left ? need : 0;
  return Math.min(left, Math.max(floor, Math.min(want, share)));
}

/** How much a holder asks for: its rate over the window, at least `need`, at most `max`. */
export function sliceWant(ratePerSec: number, windowMs: number, need: number, max: number): number {
  const byRate = Math.ceil((Math.max(0, ratePerSec) * windowMs) / 1000);
  return Math.max(need, Math.min(max, byRate));
}

/** A rate over a sliding window of whole seconds: the last full second and the running one, weighted. */
export interface RateMeter {
  /** Start of the running second. */
  second: number;
  current: number;
  previous: number;
}

export function newMeter(now: number): RateMeter {
  return { second: Math.floor(now / 1000) * 1000, current: 0, previous: 0 };
}

/** Count `amount` at `now` (mutates the meter). */
export function observe(m: RateMeter, now: number, amount = 1): void {
  roll(m, now);
  m.current += amount;
}

/** The rate per second at `now`: the previous second weighted by how much of it the window still covers. */
export function rateOf(m: RateMeter, now: number): number {
  roll(m, now);
  const into = (now - m.second) / 1000;
  return m.current + m.previous * (1 - into);
}

function roll(m: RateMeter, now: number): void {
  const second = Math.floor(now / 1000) * 1000;
  if (second === m.second) return;
  m.previous = second - m.second === 1000 ? m.current : 0;
  m.current = 0;
  m.second = second;
}
