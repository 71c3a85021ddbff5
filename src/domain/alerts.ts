import { STARVATION_MS } from "./priority";

/**
 * Which alerts a snapshot of live state implies. Pure: every function takes the numbers and the clock
 * and answers what to raise and what to clear; storage and delivery are the caller's business.
 */
export const ALERT_KINDS = [
  "pool_low", "budget_80", "budget_95", "budget_exhausted", "queue_backup", "starvation", "worker_failures", "worker_timeouts", "sla_breach",
] as const;
export type AlertKind = (typeof ALERT_KINDS)[number];

export const ALERT_SEVERITIES = ["info", "warning", "critical"] as const;
export type AlertSeverity = (typeof ALERT_SEVERITIES)[number];

export const ALERT_STATES = ["open", "acknowledged", "resolved"] as const;
export type AlertState = (typeof ALERT_STATES)[number];

/** A pool is low strictly below this share of its capacity. */
export const POOL_LOW_PERCENT = 10;
export const BUDGET_WARN_PERCENT = 80;
export const BUDGET_CRITICAL_PERCENT = 95;
/** More than this many requests queued across all queues is a backup. */
export const QUEUE_BACKUP_DEPTH = 1000;
/** A request queued for longer than this is starved (the same bound the priority's wait term uses). */
export const STARVATION_WAIT_MS = STARVATION_MS;
/** Worker outcomes are judged over this trailing window... */
export const WORKER_WINDOW_MS = 5 * 60 * 1000;
/** ...once a template has at least this many calls in it (fewer says nothing about a rate)... */
export const WORKER_MIN_CALLS = 10;
/** ...and alert when at least this share of them failed, or timed out. */
export const WORKER_FAILURE_PERCENT = 50;
export const WORKER_TIMEOUT_PERCENT = 50;

/** Severity per kind: fixed, so an alert's severity never depends on who raised it. */
export const ALERT_SEVERITY: Record<AlertKind, AlertSeverity> = {
  pool_low: "warning",
  budget_80: "info",
  budget_95: "warning",
  budget_exhausted: "critical",
  queue_backup: "warning",
  starvation: "warning",
  worker_failures: "critical",
  worker_timeouts: "warning",
  sla_breach: "warning",
};

/** Kinds that fire at most once per subject per calendar month (UTC), even after being resolved. */
export const MONTHLY_KINDS: ReadonlySet<AlertKind> = new Set(["budget_80", "budget_95"]);

export interface AlertInput {
  kind: AlertKind;
  subject: string;
  severity: AlertSeverity;
  message: string;
  details: Record<string, unknown>;
  /** At most one unresolved alert per key: `kind:subject`, plus `:YYYY-MM` for the monthly kinds. */
  dedupeKey: string;
  /** A monthly kind: never raised again under a key that was already resolved. */
  oncePerKey: boolean;
}

/**
 * The condition behind `kind` for `subject` has cleared: resolve its unresolved alerts, except the one
 * under `keep` (a monthly alert stays open for the rest of its month).
 */
export interface AlertClear {
  kind: AlertKind;
  subject: string;
  keep?: string;
}

export interface AlertDecision {
  raise: AlertInput[];
  clear: AlertClear[];
}

/** "YYYY-MM" of an epoch-ms time, UTC: the budget month. */
export function monthOf(now: number): string {
  return new Date(now).toISOString().slice(0, 7);
}

export function dedupeKeyOf(kind: AlertKind, subject: string, month?: string): string {
  return MONTHLY_KINDS.has(kind) ? `${kind}:${subject}:${month}` : `${kind}:${subject}`;
}

function alert(kind: AlertKind, subject: string, message: string, details: Record<string, unknown>, month?: string): AlertInput {
  return {
    kind, subject, severity: ALERT_SEVERITY[kind], message, details,
    dedupeKey: dedupeKeyOf(kind, subject, month), oncePerKey: MONTHLY_KINDS.has(kind),
  };
}

export function mergeDecisions(...decisions: AlertDecision[]): AlertDecision {
  return { raise: decisions.flatMap((d) => d.raise), clear: decisions.flatMap((d) => d.clear) };
}

/** One decimal of a percentage, for messages only. */
function percentText(part: number, whole: number): string {
  return whole > 0 ? `${Math.floor((part * 1000) / whole) / 10}%` : "n/a";
}

export interface PoolLevel {
  id: string;
  level: number;
  capacity: number;
  /** The pool's own low-water threshold; POOL_LOW_PERCENT when not given. */
  lowWaterPercent?: number;
}

/** A pool is low when its level is strictly below its low-water percent (default 10%) of its capacity. */
export function poolAlerts(pools: PoolLevel[]): AlertDecision {
  const decision: AlertDecision = { raise: [], clear: [] };
  for (const p of pools) {
    const threshold = p.lowWaterPercent ?? POOL_LOW_PERCENT;
    if (p.level * 100 < p.capacity * threshold) {
      decision.raise.push(alert("pool_low", p.id, `pool ${p.id} is at ${percentText(p.level, p.capacity)} of capacity (${p.level} of ${p.capacity})`, {
        pool: p.id, level: p.level, capacity: p.capacity, threshold_percent: threshold,
      }));
    } else {
      decision.clear.push({ kind: "pool_low", subject: p.id });
    }
  }
  return decision;
}

export interface BudgetSnapshot {
  clientId: string;
  /** Spent this month, integer nano-dollars. */
  spentNano: number;
  /** The client's monthly budget in nano-dollars; null means no limit. */
  budgetNano: number | null;
  /** The budget month, "YYYY-MM" (see monthOf). */
  month: string;
}

/**
 * spent >= percent% of budget, in exact integer arithmetic (nano-dollar products exceed 2^53). Nothing
 * spent reaches nothing, so a zero budget alerts only once something is spent against it.
 */
export function reached(spentNano: number, budgetNano: number, percent: number): boolean {
  return spentNano > 0 && BigInt(spentNano) * 100n >= BigInt(budgetNano) * BigInt(percent);
}

/**
 * A client's budget: 80% and 95% each fire once per month and stay open for the month (spending only
 * grows within it); exhausted (>= 100%) clears as soon as spending fits again (a raised budget, a new
 * month). Each threshold reached is raised, so a jump from 0 to 100% raises all three. Open alerts of
 * earlier months are cleared.
 */
export function budgetAlerts(s: BudgetSnapshot): AlertDecision {
  const decision: AlertDecision = { raise: [], clear: [] };
  const keepMonthly = (kind: AlertKind): AlertClear => ({ kind, subject: s.clientId, keep: dedupeKeyOf(kind, s.clientId, s.month) });
  decision.clear.push(keepMonthly("budget_80"), keepMonthly("budget_95"));
  if (s.budgetNano === null) {
    decision.clear.push({ kind: "budget_exhausted", subject: s.clientId });
    return decision;
  }
  const details = { client_id: s.clientId, spent_nano: s.spentNano, budget_nano: s.budgetNano, month: s.month };
  const spent = `${percentText(s.spentNano, s.budgetNano)} of its ${s.month} budget`;
  if (reached(s.spentNano, s.budgetNano, BUDGET_WARN_PERCENT)) {
    decision.raise.push(alert("budget_80", s.clientId, `client ${s.clientId} has spent ${spent}`, { ...details, threshold_percent: BUDGET_WARN_PERCENT }, s.month));
  }
  if (reached(s.spentNano, s.budgetNano, BUDGET_CRITICAL_PERCENT)) {
    decision.raise.push(alert("budget_95", s.clientId, `client ${s.clientId} has spent ${spent}`, { ...details, threshold_percent: BUDGET_CRITICAL_PERCENT }, s.month));
  }
  if (reached(s.spentNano, s.budgetNano, 100)) {
    decision.raise.push(alert("budget_exhausted", s.clientId, `client ${s.clientId} has exhausted its ${s.month} budget`, { ...details, threshold_percent: 100 }));
  } else {
    decision.clear.push({ kind: "budget_exhausted", subject: s.clientId });
  }
  return decision;
}

export interface QueueSnapshot {
  queue: string;
  depth: number;
  /**
   * When the longest-waiting request in this queue that may run became ready (its ready time: the
   * latest of creation, not-before and off-peak start); null when none may run. Held-back work is not waiting.
   */
  oldestQueuedAt: number | null;
}

/** Backup: more than 1,000 queued in all (subject "all"). Starvation: a request queued over 10 minutes. */
export function queueAlerts(queues: QueueSnapshot[], now: number): AlertDecision {
  const decision: AlertDecision = { raise: [], clear: [] };
  const total = queues.reduce((n, q) => n + q.depth, 0);
  if (total > QUEUE_BACKUP_DEPTH) {
    decision.raise.push(alert("queue_backup", "all", `${total} requests queued (more than ${QUEUE_BACKUP_DEPTH})`, {
      queued: total, threshold: QUEUE_BACKUP_DEPTH, by_queue: Object.fromEntries(queues.map((q) => [q.queue, q.depth])),
    }));
  } else {
    decision.clear.push({ kind: "queue_backup", subject: "all" });
  }
  for (const q of queues) {
    const waited = q.depth > 0 && q.oldestQueuedAt !== null ? now - q.oldestQueuedAt : 0;
    if (waited > STARVATION_WAIT_MS) {
      decision.raise.push(alert("starvation", q.queue, `a request in queue ${q.queue} has waited ${Math.floor(waited / 1000)} s (more than ${STARVATION_WAIT_MS / 60_000} min)`, {
        queue: q.queue, depth: q.depth, oldest_wait_ms: waited, threshold_ms: STARVATION_WAIT_MS,
      }));
    } else {
      decision.clear.push({ kind: "starvation", subject: q.queue });
    }
  }
  return decision;
}

export interface WorkerOutcome {
  template: string;
  ok: boolean;
  timedOut: boolean;
  /** When the call ended, epoch ms. */
  at: number;
}

/**
 * Failure and timeout rates per template over the window (now - windowMs, now]: at least 50% of at
 * least 10 calls. A timeout counts as a timeout, not also as a failure, so one cause raises one alert.
 * Templates absent from `outcomes` are left as they are.
 */
export function workerAlerts(outcomes: WorkerOutcome[], now: number, windowMs = WORKER_WINDOW_MS): AlertDecision {
  const decision: AlertDecision = { raise: [], clear: [] };
  const byTemplate = new Map<string, { calls: number; failed: number; timedOut: number }>();
  for (const o of outcomes) {
    const t = byTemplate.get(o.template) ?? { calls: 0, failed: 0, timedOut: 0 };
    byTemplate.set(o.template, t);
    if (o.at <= now - windowMs || o.at > now) continue;
    t.calls += 1;
    if (o.timedOut) t.timedOut += 1;
    else if (!o.ok) t.failed += 1;
  }
  const windowText = `${windowMs / 60_000} min`;
  for (const [template, t] of byTemplate) {
    const judged = t.calls >= WORKER_MIN_CALLS;
    const details = { template, calls: t.calls, failed: t.failed, timed_out: t.timedOut, window_ms: windowMs };
    if (judged && t.failed * 100 >= t.calls * WORKER_FAILURE_PERCENT) {
      decision.raise.push(alert("worker_failures", template, `template ${template}: ${t.failed} of ${t.calls} calls failed in the last ${windowText}`, {
        ...details, threshold_percent: WORKER_FAILURE_PERCENT,
      }));
    } else {
      decision.clear.push({ kind: "worker_failures", subject: template });
    }
    if (judged && t.timedOut * 100 >= t.calls * WORKER_TIMEOUT_PERCENT) {
      decision.raise.push(alert("worker_timeouts", template, `template ${template}: ${t.timedOut} of ${t.calls} calls timed out in the last ${windowText}`, {
        ...details, threshold_percent: WORKER_TIMEOUT_PERCENT,
      }));
    } else {
      decision.clear.push({ kind: "worker_timeouts", subject: template });
    }
  }
  return decision;
}

/** One tier and queue's attainment over the SLA alert window. */
export interface SlaSnapshot {
  tier: string;
  queue: string;
  met: number;
  breached: number;
  attainmentPercent: number | null;
  targetPercent: number;
  /** A few of the breached requests, for the operator. */
  examples: string[];
}

/** SLA: raised per tier and queue ("premium/fast") while attainment over the window is below its target. */
export function slaAlerts(groups: SlaSnapshot[], windowMs: number): AlertDecision {
  const decision: AlertDecision = { raise: [], clear: [] };
  for (const g of groups) {
    const subject = `${g.tier}/${g.queue}`;
    if (g.attainmentPercent !== null && g.attainmentPercent < g.targetPercent) {
      decision.raise.push(alert("sla_breach", subject, `SLA ${subject}: ${g.attainmentPercent}% met over the last ${Math.round(windowMs / 60_000)} min (target ${g.targetPercent}%), ${g.breached} breached`, {
        tier: g.tier, queue: g.queue, met: g.met, breached: g.breached, attainment_percent: g.attainmentPercent, target_percent: g.targetPercent,
        window_ms: windowMs, examples: g.examples,
      }));
    } else {
      decision.clear.push({ kind: "sla_breach", subject });
    }
  }
  return decision;
}
