import type { Tier } from "./types";

/** The five queues, most urgent first. */
export const QUEUES = ["immediate", "fast", "normal", "batch", "deferred"] as const;
export type QueueName = (typeof QUEUES)[number];

export const TIER_POINTS: Record<Tier, number> = { enterprise: 40, premium: 30, standard: 20, basic: 10 };
export const QUEUE_POINTS: Record<QueueName, number> = { immediate: 30, fast: 22, normal: 15, batch: 8, deferred: 0 };

/** Waiting earns up to 20 points, linearly, full after this long; past it a request counts as starved. */
export const STARVATION_MS = 10 * 60 * 1000;
export const MAX_WAIT_POINTS = 20;
export const MAX_FAIRNESS_POINTS = 10;

export interface PriorityInput {
  tier: Tier;
  queue: QueueName;
  createdAt: number;
  /** This client's share (0..1) of the work dispatched recently. */
  recentShare: number;
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
 * Priority 0-100: tier (0-40) + queue urgency (0-30) + time waited (0-20, full after 10 minutes) +
 * fairness (0-10, falling as the client's recent share of dispatched work grows). Pure: `now` is given.
 */
export function priorityOf(input: PriorityInput, now: number): Priority {
  const waited = Math.max(0, now - input.createdAt);
  const wait = Math.min(MAX_WAIT_POINTS, (waited / STARVATION_MS) * MAX_WAIT_POINTS);
  const share = Math.min(1, Math.max(0, Number.isFinite(input.recentShare) ? input.recentShare : 0));
  const fairness = MAX_FAIRNESS_POINTS * (1 - share);
  const tier = TIER_POINTS[input.tier];
  const queue = QUEUE_POINTS[input.queue];
  return { score: round2(tier + queue + wait + fairness), tier, queue, wait: round2(wait), fairness: round2(fairness), starved: waited >= STARVATION_MS };
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
      a.createdAt - b.createdAt ||
      (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
    );
}

/** Retry backoff: 1 s, 2 s, 4 s ... capped at 60 s. */
export function backoffMs(attempt: number): number {
  return Math.min(60_000, 1000 * 2 ** Math.max(0, attempt - 1));
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
