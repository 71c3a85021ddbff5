/**
 * The pool object's contract: what the service layer, the scheduler and the isolates' lease holders
 * hand a pool's Durable Object and get back. Wire types only, so that callers depend on this file and
 * never on the class or its collaborators.
 */
import type { Caller, PoolConfig } from "../../domain/types";
import type { ErrorBody } from "../../errors";

export type Failure = { ok: false; error: ErrorBody };
export type Result<T> = { ok: true; value: T } | Failure;
/**
 * A granted consume as spend() answers it: the event id, its cost in nano-dollars, the whole units left,
 * and where its usage event sits: its outbox seq (0 for an idempotent replay, which spent nothing new)
 * and that outbox's source name (clients' objects count delivered spend by both).
 */
export type Spent = [eventId: string, costNano: number, remaining: number, seq: number, source: string];
/** One consume as spend() takes it: who, for how much, and the optional request id and idempotency key. */
export type SpendItem = [clientId: string, tier: Caller["tier"], via: string, amount: number, requestId: string | null, idempotencyKey: string | null];

export interface Availability {
  pool: string;
  level: number;
  capacity: number;
  refillPerSec: number;
  /** Whole units this caller could take now from the bucket (after shares kept for others; not counting units leased out). */
  available: number;
  utilization: number;
  reserved: number;
  /** Units lent to isolates on token leases (already taken from the bucket; their holders grant them). */
  leased: number;
  outbox: number;
  /** Spending refused for lack of units (rate_limited) since the object was created. */
  denials: number;
}

export interface CheckResult {
  pool: string;
  allowed: boolean;
  /** Whole units in the bucket for this caller; units leased out to isolates are not in it. */
  available: number;
  leased: number;
  retryAfterMs: number | null;
}

export interface ConsumeResult {
  pool: string;
  eventId: string;
  units: number;
  costNano: number;
  remaining: number;
}

export interface ReserveResult {
  pool: string;
  reservationId: string;
  amount: number;
  expiresAt: number;
  remaining: number;
}

export interface ReleaseResult {
  pool: string;
  reservationId: string;
  consumed: number;
  refunded: number;
  costNano: number;
  eventId: string | null;
  /** When the usage was recorded (its month is the month it is spent in). */
  at: number;
  /** Where its usage event sits (release() only): the outbox seq and source; the client's object holds the spend in flight until delivered. */
  seq?: number;
  source?: string;
}

/** A pool's live state as its object holds it (the admin API's view, and the answer to a pushed configuration). */
export interface PoolState {
  pool: string;
  /** The configuration version this object has adopted. */
  version: number;
  status: PoolConfig["status"];
  level: number;
  capacity: number;
  utilization: number;
  /** Units held by active reservations. */
  reservedUnits: number;
  /** Reservations held and not yet expired. */
  activeReservations: number;
  outbox: number;
  denials: number;
  /** Units lent to isolates on token leases, and the open leases. */
  leasedUnits: number;
  leaseHolders: number;
  /** Of those, units lent to scheduler shards (their requests run on them: the pool is busy while any are out). */
  shardLeasedUnits: number;
}

export interface BatchReserveItem {
  caller: Caller;
  amount: number;
  ttlMs: number;
  requestId: string | null;
  /** A reservation id chosen by the caller (reserve() only). */
  id?: string;
  /** A scheduler shard's queued request: its class, weight and shard, for priority across shards (./waiters.ts). */
  wait?: WaitClaim;
}

export interface BatchReleaseItem {
  caller: Caller;
  reservationId: string;
  actualUsed: number;
  /**
   * The scheduler's settlement of `requestId`: a repeat of a release already made for that request is
   * answered as the first one was (units, cost, usage event), not `reservation_closed`, so a settlement
   * that failed part-way can be made again without losing or counting twice what was spent. A release of
   * that request's reservation after it expired (its settlement owed past the lease) is counted then:
   * its use and cost recorded, the units not taken again (they went back at expiry).
   */
  replay?: boolean;
  requestId?: string;
}

export interface SpendOptions {
  amount: number;
  requestId?: string;
  idempotencyKey?: string;
}

export interface ReserveOptions extends SpendOptions {
  ttlMs: number;
  /** The id to give the reservation (the client's object holds its slot and price under it); made here when absent. */
  reservationId?: string;
}

/** What a scheduler shard's reserve says about its request. */
export interface WaitClaim {
  clientId: string;
  shard: string;
  /** Priority class: tier + urgency + whole wait points (+100 when starved); fairness is the pool's. */
  priority: number;
  weight: number;
}

/**
 * A consume an isolate granted from its lease, as it reports it: the event id it answered with, who,
 * how much, for what cost (the one it answered with), when.
 */
export type LeaseGrant = [eventId: string, clientId: string, tier: Caller["tier"], via: string, amount: number, requestId: string | null, costNano: number, at: number];

/** One exchange between a holder (an isolate) and the pool's object. */
export interface LeaseExchange {
  /** The holder's id (one per isolate and pool). */
  holder: string;
  /** Grows with every exchange of this holder: an exchange seen before is answered again, not applied twice. */
  report: number;
  /** Consumes granted from the lease since the last exchange. */
  grants: LeaseGrant[];
  /** Units the holder gives back now (it stopped holding them before the call). */
  returned: number;
  /** Units it would like to get in addition. */
  want: number;
  /** If > 0: give at least this many, or none. */
  need: number;
  /** The holder is done: what it still holds comes back. */
  close: boolean;
  /**
   * Set by a scheduler shard (its name): lent only from plenty and while no other shard waits here
   * (SHARD_LEASE), for `ttlMs`; its grants' usage events are of kind "reservation".
   */
  shard?: string;
  ttlMs?: number;
}

export interface LeaseAnswer {
  /** Units added to the holder's slice. */
  added: number;
  /** The lease lasts this long from now (the holder counts from when it got the answer). */
  ttlMs: number;
  /** Whole units left in the bucket (not counting leases). */
  level: number;
  /** The outbox these grants went to, and the seq of the last: their spend reaches clients by it. */
  source: string;
  seq: number;
  /** The pool no longer lends (not active, not shared, or leases off): drop the lease. */
  stop: boolean;
}
