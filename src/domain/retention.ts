import { DAY_MS } from "./calendar";

/**
 * Retention: how long each kind of record is kept. The minute cron deletes what is older, at most
 * PRUNE_CHUNK_ROWS rows per kind per run, so a backlog clears over several minutes and no run holds
 * D1 for long. Rollups (usage_daily) are never pruned: usage history and monthly totals read them.
 */
export const RETENTION_KINDS = [
  "usage_events", "request_log", "alerts", "optimizer_savings", "scaling_events", "pool_samples", "queue_samples", "burst_sessions", "requests",
] as const;
export type RetentionKind = (typeof RETENTION_KINDS)[number];

/** Rows deleted per kind per cron run at most. */
export const PRUNE_CHUNK_ROWS = 5000;
export const MAX_RETENTION_DAYS = 3650;

export interface RetentionRule {
  /** Used when the kind has no row in retention_settings (migration 0004 seeds these). */
  defaultDays: number;
  /** Below this, something that reads the records would silently lose data. */
  minDays: number;
  description: string;
}

export const RETENTION_RULES: Record<RetentionKind, RetentionRule> = {
  usage_events: { defaultDays: 90, minDays: 1, description: "Usage ledger rows (usage_events) by event time; each is already counted in its daily rollup, which stays" },
  request_log: { defaultDays: 90, minDays: 1, description: "Finished requests in D1 (request_log) by finish time: reports by template, recommendations" },
  alerts: { defaultDays: 90, minDays: 1, description: "Resolved alerts by resolution time; open and acknowledged alerts stay" },
  optimizer_savings: { defaultDays: 90, minDays: 1, description: "Optimizer savings records by time: optimizer stats" },
  scaling_events: { defaultDays: 90, minDays: 1, description: "Capacity changes made by scaling policies, by time" },
  // Utilization reports accept ranges up to 92 days.
  pool_samples: { defaultDays: 92, minDays: 1, description: "Pool levels sampled each minute, by time: utilization history" },
  // The dashboard's charts read the last hour; the rest is history for an operator's own queries.
  queue_samples: { defaultDays: 31, minDays: 1, description: "Queue depths and dispatches sampled each minute (migration 0005), by time: the dashboard's trends" },
  burst_sessions: { defaultDays: 90, minDays: 1, description: "Burst sessions that ended, expired or were denied, by request time" },
  // SLA summaries read finished requests from the scheduler over windows of up to 31 days.
  requests: {
    defaultDays: 35, minDays: 31,
    description: "Finished requests held by the scheduler (their view, idempotency key and service level), by finish time, once their request_log row is in D1",
  },
};

/** Records of a kind older than this time (epoch ms) are pruned. */
export function cutoffOf(now: number, days: number): number {
  return now - days * DAY_MS;
}

/**
 * Fixed horizons inside the objects (not operator settings: each bounds another's correctness).
 *
 * A pool keeps a settled reservation this long after its expiry, to answer a release made again (the
 * scheduler's settlement retried after it failed part-way) with the first release's answer and usage
 * event. Past it the reservation is forgotten, stored or not: a release is refused.
 */
export const SETTLED_RESERVATION_KEEP_MS = DAY_MS;

/**
 * A client object keeps the id of each spend event it counted (so a settlement made again counts it
 * once) this long, by the event's time. The only events counted by id are the scheduler's reservation
 * releases, and a pool answers one again only while it keeps the reservation: until a day after its
 * expiry, which is at most a lease (template timeout, at most 15 minutes, plus LEASE_MARGIN_MS, at most
 * an hour) after the event. Two days covers that with most of a day to spare. It was 40 days: one row per
 * settled request for 40 days (~40 million for a client settling a million a day).
 */
export const COUNTED_EVENT_KEEP_MS = 2 * DAY_MS;
