/**
 * The client object's contract: what the service layer, the scheduler and the pool objects hand a
 * client's Durable Object and get back. Wire types only, so that callers depend on this file and never
 * on the class or its collaborators.
 */
import type { BudgetView } from "../../domain/budget";
import type { BurstSession } from "../../domain/burst";
import type { JobClaim, QuotaShortfall, QuotaUse, ResolvedQuota } from "../../domain/quota";
import type { ErrorBody } from "../../errors";

/** One line of spend: a usage event's cost, at the time it happened. */
export interface SpendEvent {
  eventId: string;
  costNano: number;
  at: number;
  /** The pool and units spent, counted against the client's daily caps per pool. */
  pool?: string;
  units?: number;
}

/** One event of a pool outbox's delivery: its seq in the outbox, cost, time and units. */
export type PoolSpend = [seq: number, costNano: number, at: number, units: number];

/** A client's quota as it stands: the configured limits, what applies now (with a burst), and the use. */
export interface QuotaState {
  quota: ResolvedQuota;
  effective: ResolvedQuota;
  burst: BurstSession | null;
  /** `requests`: slots of running requests held one each; `leased`: slots in blocks lent to scheduler shards. */
  use: QuotaUse & { requests: number; allocations: number; leased: number };
}

/**
 * A scheduler shard's ask for its block of a client's job slots (ClientObject.leaseSlots): the size it
 * wants, the slots of it running requests use (the least it may be), and when the block ends unless
 * renewed (past the lease of any request on it).
 */
export interface SlotAsk {
  /** The shard's life that holds the block (one block per holder). */
  holder: string;
  want: number;
  inUse: number;
  until: number;
}

export type BurstResult = { ok: true; value: BurstSession } | { ok: false; error: ErrorBody };

export interface BudgetItem {
  requestId: string;
  estimateNano: number;
  /** Units per pool the request will spend, checked against the client's daily caps (with a quota). */
  pools?: Record<string, number>;
}

export type BudgetDecision = { ok: true } | { ok: false; budget: BudgetView } | { ok: false; quota: QuotaShortfall };

/** Job slots taken with an admission (ClientObject.admit): an execute's, by the scheduler shard that will run it. */
export interface RunSlots {
  claims: JobClaim[];
  shard: string;
}

/** An admission's answer; `slot`: whether the job slot asked for with it (RunSlots) is held now. */
export type AdmitDecision = ({ ok: true; slot?: boolean }) | Exclude<BudgetDecision, { ok: true }>;

export interface Settlement {
  requestId: string;
  /** What the request really spent (empty when it failed or was cancelled before spending). */
  events: SpendEvent[];
  /** The request goes on (a retry): free its slot but keep its estimate in flight. */
  keepInFlight?: boolean;
}

/**
 * Spend decided under a money lease or a reservation, as its holder hands it back: the pool outbox it
 * went to (source), the seq of its last event there, and its cost. Until that outbox has delivered the
 * seq to this client, the cost stays in flight; after, it is in the month's spend. Never both missing.
 */
export type SpendMark = [source: string, seq: number, nano: number];

export interface MoneyRequest {
  /** The lease the holder gives back, with the spend decided under it (per outbox). */
  returning: { id: string; marks: SpendMark[] } | null;
  /** Spends decided under the returned lease whose outcome the holder does not know yet: held again in the new one. */
  carry: number;
  /** The spend waiting for this lease: granted with it, or refused (402) with the budget as it stands. */
  need: number;
  /** What the holder would like (its rate over the window). */
  want: number;
}

/** A scheduler shard's money exchange (decision 008; ClientObject.lendShard). */
export interface ShardMoneyAsk {
  /** The shard's name: its hold is `shard:<holder>`, replaced by each exchange. */
  holder: string;
  /** Requests admitted under the hold so far, with their estimates: in flight as rows from now on. */
  convert: Array<[requestId: string, estimateNano: number]>;
  /** What the shard would like held for the enqueues to come, and what the one waiting needs (else refused). */
  want: number;
  need: number;
  /** Convert only, leaving the hold as it is (a restart's backlog, converted in pieces before the last replaces the hold). */
  keepHold?: boolean;
}

export interface ShardMoneyAnswer {
  /** The new hold's size (0: none). */
  lent: number;
  /** Set when `need` did not fit: the budget as it stands, the converted requests in flight (the 402's explanation). */
  refused: BudgetView | null;
}

export interface MoneyAnswer {
  lease: { id: string; nano: number; ttlMs: number } | null;
  /** Set when `need` does not fit: the budget as it stands (the 402's explanation). */
  refused: BudgetView | null;
}
