/**
 * Service levels. A target per tier and queue: the longest a request may wait before it is
 * dispatched, the longest it may take from dispatch to its end, and the share of requests that must
 * meet both (the attainment target). Pure: the clock is a parameter.
 */
import type { QueueName } from "./priority";
import type { Tier } from "./types";

export interface SlaTarget {
  tier: Tier;
  queue: QueueName;
  /** From when the request could first run (its not-before at enqueue) to its first dispatch. */
  max_wait_ms: number;
  /** From its first dispatch to its end (retries included). */
  max_exec_ms: number;
  /** Percent of requests that must meet both, over a window. */
  target_percent: number;
}

/** What the SLA needs of one request. Times are epoch ms; null when it has not happened (yet). */
export interface SlaRecord {
  id: string;
  client_id: string;
  tier: Tier;
  queue: QueueName;
  status: string;
  ready_at: number;
  first_started_at: number | null;
  finished_at: number | null;
}

export type Verdict = "met" | "breached" | "pending";

export interface RequestSla {
  request_id: string;
  tier: Tier;
  queue: QueueName;
  target: SlaTarget;
  wait_ms: number;
  exec_ms: number | null;
  wait: Verdict;
  execution: Verdict;
  /** met: both met; breached: either breached (or the request failed or expired); pending: not decided yet; excluded: cancelled before a breach. */
  status: Verdict | "excluded";
  /** When the verdict became known (end, or the moment a limit was passed); null while pending or excluded. */
  decided_at: number | null;
}

/** Defaults: waits by queue, scaled by tier (enterprise x1, premium x2, standard x4, basic x8); execution 60 s; attainment 99/98/95/90%. */
const BASE_WAIT_MS: Record<QueueName, number> = { immediate: 1000, fast: 10_000, normal: 60_000, batch: 600_000, deferred: 86_400_000 };
const TIER_FACTOR: Record<Tier, number> = { enterprise: 1, premium: 2, standard: 4, basic: 8 };
const TIER_TARGET: Record<Tier, number> = { enterprise: 99, premium: 98, standard: 95, basic: 90 };

export function defaultTarget(tier: Tier, queue: QueueName): SlaTarget {
  return { tier, queue, max_wait_ms: BASE_WAIT_MS[queue] * TIER_FACTOR[tier], max_exec_ms: 60_000, target_percent: TIER_TARGET[tier] };
}

/** One request against its target at `now`. */
export function requestSla(r: SlaRecord, target: SlaTarget, now: number): RequestSla {
  const failed = r.status === "failed" || r.status === "expired";
  const cancelled = r.status === "cancelled";
  const waitEnd = r.first_started_at ?? (r.finished_at ?? now);
  const waitMs = Math.max(0, waitEnd - r.ready_at);
  const waitDeadline = r.ready_at + target.max_wait_ms;
  let wait: Verdict;
  if (r.first_started_at !== null) wait = waitMs <= target.max_wait_ms ? "met" : "breached";
  else if (waitEnd > waitDeadline) wait = "breached";
  else wait = cancelled || failed ? "met" : "pending";
  let execution: Verdict = "pending";
  let execMs: number | null = null;
  if (r.first_started_at !== null) {
    const end = r.finished_at ?? now;
    execMs = Math.max(0, end - r.first_started_at);
    if (execMs > target.max_exec_ms) execution = "breached";
    else if (r.finished_at !== null) execution = failed ? "breached" : "met";
  }
  let status: RequestSla["status"];
  let decidedAt: number | null = null;
  if (wait === "breached" || execution === "breached") {
    status = "breached";
    const waitBreachAt = wait === "breached" ? (r.first_started_at !== null ? r.first_started_at : waitDeadline + 1) : Infinity;
    const execBreachAt = execution === "breached" && r.first_started_at !== null
      ? (execMs! > target.max_exec_ms ? r.first_started_at + target.max_exec_ms + 1 : r.finished_at!)
      : Infinity;
    decidedAt = Math.min(waitBreachAt, execBreachAt);
  } else if (cancelled) {
    status = "excluded";
  } else if (failed && r.first_started_at === null) {
    status = "breached";
    decidedAt = r.finished_at;
  } else if (wait === "met" && execution === "met") {
    status = "met";
    decidedAt = r.finished_at;
  } else {
    status = "pending";
  }
  return { request_id: r.id, tier: r.tier, queue: r.queue, target, wait_ms: waitMs, exec_ms: execMs, wait, execution, status, decided_at: decidedAt };
}

export interface Attainment {
  total: number;
  met: number;
  breached: number;
  /** met / (met + breached) in percent, two decimals; null when nothing was decided. */
  attainment_percent: number | null;
  target_percent: number;
  meets_target: boolean | null;
}

/** Attainment over decided requests (met or breached); pending and excluded ones do not count. */
export function attainment(verdicts: Array<Pick<RequestSla, "status">>, targetPercent: number): Attainment {
  const met = verdicts.filter((v) => v.status === "met").length;
  const breached = verdicts.filter((v) => v.status === "breached").length;
  const decided = met + breached;
  const percent = decided === 0 ? null : Math.round((met * 10_000) / decided) / 100;
  return { total: decided, met, breached, attainment_percent: percent, target_percent: targetPercent, meets_target: percent === null ? null : percent >= targetPercent };
}
