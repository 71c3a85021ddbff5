import { LazyOrder } from "./lazy-order";
import type { Tier } from "./types";

/** The five queues, most urgent first. */
export const QUEUES = ["immediate", "fast", "normal", "batch", "deferred"] as const;
export type QueueName = (typeof QUEUES)[number];

/**
 * The tiers' points as migrations/0002 creates them. The scheduler ranks with each tier row's own
 * (operators change them with PATCH /admin/tiers/{tier}); pure callers without a row use these.
 */
export const DEFAULT_TIER_POINTS: Record<Tier, number> = { enterprise: 40, premium: 30, standard: 20, basic: 10 };
export const QUEUE_POINTS: Record<QueueName, number> = { immediate: 30, fast: 22, normal: 15, batch: 8, deferred: 0 };

/** Waiting earns up to 20 points, linearly, full after this long; past it a request counts as starved. */
export const STARVATION_MS = 10 * 60 * 1000;
export const MAX_WAIT_POINTS = 20;
export const MAX_FAIRNESS_POINTS = 10;

export interface PriorityInput {
  tier: Tier;
  /** The tier row's priority points (0-40); absent: DEFAULT_TIER_POINTS. */
  tierPoints?: number;
  queue: QueueName;
  createdAt: number;
  /**
   * When the request could first run: the latest of its creation, its not-before and the start of its
   * off-peak window. Waiting (points, starvation, ties) counts from here; absent: from `createdAt`.
   */
  readyAt?: number;
  /** This client's share (0..1) of the work dispatched recently. */
  recentShare: number;
  /**
   * The share this client is entitled to (0..1]: its weight over the weights of every client with
   * work waiting. Default 1, i.e. fairness falls with the share itself.
   */
  entitled?: number;
}

export interface Priority {
  score: number;
  tier: number;
  queue: number;
  wait: number;
  fairness: number;
  starved: boolean;
}

/**
 * Priority 0-100: tier (0-40) + queue urgency (0-30) + time waited since ready (0-20, full after 10 minutes) +
 * fairness (0-10, falling as the client's recent share of dispatched work grows). Pure: `now` is given.
 */
export function priorityOf(input: PriorityInput, now: number): Priority {
  const waited = Math.max(0, now - readyOf(input));
  const wait = waitPoints(waited);
  const fairness = fairnessPoints(input.recentShare, input.entitled);
  const tier = input.tierPoints ?? DEFAULT_TIER_POINTS[input.tier];
  const queue = QUEUE_POINTS[input.queue];
  return { score: round2(tier + queue + wait + fairness), tier, queue, wait: round2(wait), fairness: round2(fairness), starved: waited >= STARVATION_MS };
}

/** Points for waiting `waited` ms since ready (0-20). */
function waitPoints(waited: number): number {
  return Math.min(MAX_WAIT_POINTS, (waited / STARVATION_MS) * MAX_WAIT_POINTS);
}

/** Fairness points (0-10) for a recent share against an entitlement (absent: 1). */
function fairnessPoints(recentShare: number, entitledShare: number | undefined): number {
  const share = Math.min(1, Math.max(0, Number.isFinite(recentShare) ? recentShare : 0));
  const entitled = entitledShare !== undefined && entitledShare > 0 ? Math.min(1, entitledShare) : 1;
  return MAX_FAIRNESS_POINTS * (1 - Math.min(1, share / entitled));
}

export interface Rankable extends PriorityInput {
  id: string;
}

/**
 * Dispatch order: starved requests first (so that no stream of higher-tier work can hold a request
 * back past the starvation limit), then by score, then the oldest, then by id for a total order.
 */
export function rank<T extends Rankable>(items: T[], now: number): Array<T & { priority: Priority }> {
  return items
    .map((item) => ({ ...item, priority: priorityOf(item, now) }))
    .sort((a, b) =>
      Number(b.priority.starved) - Number(a.priority.starved) ||
      b.priority.score - a.priority.score ||
      readyOf(a) - readyOf(b) ||
      (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
    );
}

/**
 * Fair-share weight by tier as migrations/0002 creates them (the tier row's `weight` is the one used);
 * an operator may set a client's own.
 */
export const DEFAULT_TIER_WEIGHTS: Record<Tier, number> = { enterprise: 4, premium: 3, standard: 2, basic: 1 };

export interface FairItem {
  id: string;
  clientId: string;
  tier: Tier;
  queue: QueueName;
  createdAt: number;
  readyAt?: number;
}

/**
 * Weighted fair dispatch order. Each client's requests are taken in their own priority order; across
 * clients, the next pick is the client whose next request scores highest, where the fairness term
 * compares the client's share of dispatches (recent ones plus the picks made so far in this order)
 * with its entitlement: its weight over the weights of all clients with work waiting. So requests the
 * rest of the formula leaves equal are dispatched in proportion to the clients' weights, and a burst
 * of dispatches in one pass is interleaved by weight too. Starved requests still come first.
 * `limit` bounds the interleaved part; the rest follows in plain priority order, unless `headOnly`
 * (a dispatch pass looks at no more than `limit`): then only the interleaved part is returned.
 */
export function fairRank<T extends FairItem>(
  items: T[], now: number, recent: ReadonlyMap<string, number>, weightOf: (clientId: string, tier: Tier) => number, limit = Infinity,
  headOnly = false,
): Array<T & { priority: Priority }> {
  const { picks, clients, total } = fairPicks(items, now, recent, weightOf, limit);
  const out: Array<T & { priority: Priority }> = picks.map(({ item, priority }) => {
    const { recentShare: _share, priority: _own, ...rest } = item as T & { recentShare?: number; priority?: Priority };
    return { ...(rest as unknown as T), priority };
  });
  if (out.length < items.length && !headOnly) {
    for (const { e, score, fairness } of fairTail(clients, recent, total)) {
      const { recentShare: _s, priority: _p, ...item } = e.item as T & { recentShare?: number; priority?: Priority };
      out.push({ ...(item as unknown as T), priority: { score, tier: e.tier, queue: e.queue, wait: round2(e.wait), fairness: round2(fairness), starved: e.starved } });
    }
  }
  return out;
}

/**
 * fairRank's order of the items themselves, with no copy of each and no priority attached: what the
 * scheduler's cache of positions keeps. The two copies per request were most of a ranking's time and
 * garbage (fairRank ~27 ms at 10,000 queued; docs/benchmarks.md).
 */
export function fairOrder<T extends FairItem>(
  items: T[], now: number, recent: ReadonlyMap<string, number>, weightOf: (clientId: string, tier: Tier) => number, limit = Infinity,
): T[] {
  const { picks, clients, total } = fairPicks(items, now, recent, weightOf, limit);
  const out = picks.map((p) => p.item);
  if (out.length < items.length) for (const t of fairTail(clients, recent, total)) out.push(t.e.item);
  return out;
}

/**
 * What follows the interleaved part: every client's requests left, in plain priority order, each
 * client's fairness from its recent share, scored from the numbers already computed.
 */
function fairTail<T extends FairItem>(
  clients: Array<{ clientId: string; ranked: LazyOrder<Scored<T>> }>, recent: ReadonlyMap<string, number>, total: number,
): Array<{ e: Scored<T>; score: number; fairness: number }> {
  const tail: Array<{ e: Scored<T>; score: number; fairness: number }> = [];
  for (const c of clients) {
    const share = total > 0 ? (recent.get(c.clientId) ?? 0) / total : 0;
    for (const e of c.ranked.rest()) {
      const fairness = fairnessPoints(share, (e.item as FairItem & { entitled?: number }).entitled);
      tail.push({ e, score: round2(e.base + fairness), fairness });
    }
  }
  tail.sort((a, b) => Number(b.e.starved) - Number(a.e.starved) || b.score - a.score || readyThenId(a.e, b.e));
  return tail;
}

/**
 * fairRank's order, lazily: each call gives the next id (undefined at the end). A dispatch pass takes
 * only as many as it can launch: picking the head of a 10,000-request backlog up to the scan limit at
 * every pass, for the hundred or so a paced pass launches, was a tenth of a drain's CPU.
 */
export function fairIds<T extends FairItem>(
  items: T[], now: number, recent: ReadonlyMap<string, number>, weightOf: (clientId: string, tier: Tier) => number,
): () => string | undefined {
  const state = fairState(items, now, recent, weightOf);
  return () => nextPick(state)?.head.item.id;
}

/**
 * fairIds' order from each client's own order given (a client with none left is skipped): what a
 * dispatch pass reads from the scheduler's ready index (./ready-index.ts), which keeps every client's
 * requests in their own order as they are queued, so a pass no longer scores the whole backlog.
 */
export function fairIdsOf<T extends FairItem>(
  owners: Array<{ clientId: string; order: OwnOrder<T> }>, recent: ReadonlyMap<string, number>, weightOf: (clientId: string, tier: Tier) => number,
): () => string | undefined {
  const clients: FairState<T>["clients"] = [];
  for (const { clientId, order } of owners) {
    const head = order.peek();
    if (head) clients.push({ clientId, ranked: order, weight: Math.max(1e-9, weightOf(clientId, head.item.tier)), count: recent.get(clientId) ?? 0 });
  }
  let total = 0;
  for (const n of recent.values()) total += n;
  const state: FairState<T> = { clients, totalWeight: clients.reduce((sum, c) => sum + c.weight, 0), total };
  return () => nextPick(state)?.head.item.id;
}

/** A client's requests in their own order (ownOrder), taken one by one: what the interleaving picks from. */
export interface OwnOrder<T> {
  peek(): Scored<T> | undefined;
  shift(): Scored<T> | undefined;
}

/** A request with the parts of its score that do not depend on its client's share (priorityOf's arithmetic). */
export interface Scored<T> {
  item: T;
  /** Tier points + queue points + wait points, summed in priorityOf's order. */
  base: number;
  tier: number;
  queue: number;
  wait: number;
  ready: number;
  starved: boolean;
  /** The score with no recent share (fairness 10): each client's own order. */
  own: number;
}

/** Each client's requests in their own order (taken lazily), with what the interleaving tracks: picks so far, shares. */
interface FairState<T, R extends OwnOrder<T> = OwnOrder<T>> {
  clients: Array<{ clientId: string; ranked: R; weight: number; count: number }>;
  totalWeight: number;
  /** Dispatches counted so far: the recent ones plus the picks made. */
  total: number;
}

/**
 * fairRank's interleaving: each client's requests in their own order, the next pick the client whose
 * head scores highest with its share so far. Scores are priorityOf's, computed from numbers (no object
 * per request and client per pick: this runs at every dispatch pass over the whole ready backlog).
 */
function fairPicks<T extends FairItem>(
  items: T[], now: number, recent: ReadonlyMap<string, number>, weightOf: (clientId: string, tier: Tier) => number, limit: number,
) {
  const state = fairState(items, now, recent, weightOf);
  const picks: Array<{ item: T; priority: Priority }> = [];
  const want = Math.min(limit, items.length);
  while (picks.length < want) {
    const pick = nextPick(state);
    if (!pick) break;
    const { head, score, fairness } = pick;
    picks.push({ item: head.item, priority: { score, tier: head.tier, queue: head.queue, wait: round2(head.wait), fairness: round2(fairness), starved: head.starved } });
  }
  return { picks, clients: state.clients, total: state.total };
}

function fairState<T extends FairItem>(
  items: T[], now: number, recent: ReadonlyMap<string, number>, weightOf: (clientId: string, tier: Tier) => number,
): FairState<T, LazyOrder<Scored<T>>> {
  const byClient = new Map<string, Array<Scored<T>>>();
  for (const item of items) {
    const scored = scoredAt(item, now);
    const list = byClient.get(item.clientId);
    if (list) list.push(scored);
    else byClient.set(item.clientId, [scored]);
  }
  const clients = [...byClient].map(([clientId, list]) => {
    const ranked = new LazyOrder(list, ownOrder);
    return { clientId, ranked, weight: Math.max(1e-9, weightOf(clientId, ranked.peek()!.item.tier)), count: recent.get(clientId) ?? 0 };
  });
  let total = 0;
  for (const n of recent.values()) total += n;
  return { clients, totalWeight: clients.reduce((sum, c) => sum + c.weight, 0), total };
}

/** The full fairness term: a client's own order is ranked with it (the share is the same for all its requests). */
const FULL_FAIRNESS = fairnessPoints(0, undefined);

/** A request's score parts at `now`, without its client's share (priorityOf's arithmetic, in its order). */
export function scoredAt<T extends FairItem>(item: T, now: number): Scored<T> {
  const ready = readyOf(item);
  const waited = Math.max(0, now - ready);
  const wait = waitPoints(waited);
  const tier = (item as FairItem & { tierPoints?: number }).tierPoints ?? DEFAULT_TIER_POINTS[item.tier];
  const queue = QUEUE_POINTS[item.queue];
  const base = tier + queue + wait;
  return { item, base, tier, queue, wait, ready, starved: waited >= STARVATION_MS, own: round2(base + FULL_FAIRNESS) };
}

/** The next pick of the interleaving (null when every client's list is taken), counted into its client's share. */
function nextPick<T extends FairItem>(state: FairState<T>): { head: Scored<T>; score: number; fairness: number } | null {
  let best: FairState<T>["clients"][number] | null = null;
  let bestHead: Scored<T> | null = null;
  let bestScore = 0;
  let bestFairness = 0;
  for (const c of state.clients) {
    const head = c.ranked.peek();
    if (!head) continue;
    const fairness = fairnessPoints(state.total > 0 ? c.count / state.total : 0, c.weight / state.totalWeight);
    const score = round2(head.base + fairness);
    if (!bestHead || Number(head.starved) > Number(bestHead.starved) || (head.starved === bestHead.starved && (score > bestScore || (score === bestScore && readyThenId(head, bestHead) < 0)))) {
      best = c;
      bestHead = head;
      bestScore = score;
      bestFairness = fairness;
    }
  }
  if (!best || !bestHead) return null;
  best.ranked.shift();
  best.count += 1;
  state.total += 1;
  return { head: bestHead, score: bestScore, fairness: bestFairness };
}

/** A client's own order: starved first, then by score without the share, the one ready longest, the id (a total order). */
export function ownOrder(a: Scored<FairItem>, b: Scored<FairItem>): number {
  return Number(b.starved) - Number(a.starved) || b.own - a.own || readyThenId(a, b);
}

/** Equal scores: the one ready longest first, then by id (a total order). */
function readyThenId(a: Scored<FairItem>, b: Scored<FairItem>): number {
  return a.ready - b.ready || (a.item.id < b.item.id ? -1 : a.item.id > b.item.id ? 1 : 0);
}

/** When a request could first run (its ready time), for waits: `createdAt` when no ready time is known. */
export function readyOf(item: { createdAt: number; readyAt?: number }): number {
  return item.readyAt ?? item.createdAt;
}

/** Retry backoff: 1 s, 2 s, 4 s ... capped at 60 s. */
export function backoffMs(attempt: number): number {
  return Math.min(60_000, 1000 * 2 ** Math.max(0, attempt - 1));
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
