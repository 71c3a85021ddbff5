/**
 * Auto-scaling decisions for dynamic pools. Pure: the policy, the pool's bounds, the trigger values and
 * the clock come in; what to do comes out. Loading, applying and recording are services/scaling.ts.
 *
 * Scale up when any trigger fires (utilization over the window at or above scale_up_utilization, at
 * least scale_up_queue_depth requests waiting on the pool, or the oldest of them waiting at least
 * scale_up_wait_ms): by whole steps, as many as bring the demand (units in use plus units waiting) to
 * the target utilization, at least one. Scale down when utilization is at or below
 * scale_down_utilization and nothing waits: by one step at most, never so far that the units in use
 * would exceed the target utilization. Capacity stays within [min, max]; nothing changes while the
 * pool cools down from its last change.
 */
export interface ScalingPolicy {
  /** Utilization (0-1) a resize aims for. */
  targetUtilization: number;
  scaleUpUtilization: number;
  scaleDownUtilization: number;
  /** Utilization is averaged over this trailing window. */
  windowMs: number;
  /** Requests waiting on the pool that call for more capacity; null: not a trigger. */
  scaleUpQueueDepth: number | null;
  /** Oldest wait of those requests that calls for more capacity; null: not a trigger. */
  scaleUpWaitMs: number | null;
  /** Units per resize step. */
  step: number;
  /** No further change for this long after one. */
  cooldownMs: number;
  enabled: boolean;
}

export interface ScalingBounds {
  capacity: number;
  minCapacity: number;
  maxCapacity: number;
}

/** What the decision saw; recorded with it as JSON. */
export interface TriggerValues {
  /** Mean utilization (0-1) over the window's readings; null when there is none. */
  utilization: number | null;
  /** Mean units in use over the same readings; null when there is none. */
  used_units: number | null;
  /** How many readings the means cover. */
  samples: number;
  window_ms: number;
  queued_requests: number;
  queued_units: number;
  oldest_wait_ms: number;
}

export type ScalingAction = "scale_up" | "scale_down";

/** Why a change the triggers asked for was not made. */
export type ScalingBlock = "cooldown" | "max_capacity" | "min_capacity" | "disabled";

export interface ScalingDecision {
  action: ScalingAction | "none";
  from: number;
  /** The capacity to set (equals `from` when the action is none). */
  to: number;
  /** The capacity the triggers asked for, before bounds and cooldown. */
  wanted: number;
  reason: string;
  blocked: ScalingBlock | null;
  /** When applied: the pool cools down until then. */
  cooldownUntil: number | null;
}

const EPSILON = 1e-9;

function percent(u: number): string {
  return `${Math.round(u * 1000) / 10}%`;
}

function none(from: number, wanted: number, reason: string, blocked: ScalingBlock | null): ScalingDecision {
  return { action: "none", from, to: from, wanted, reason, blocked, cooldownUntil: null };
}

/** The up triggers that fire, as reasons; empty when none does. */
export function upReasons(policy: ScalingPolicy, t: TriggerValues): string[] {
  const reasons: string[] = [];
  if (t.utilization !== null && t.utilization + EPSILON >= policy.scaleUpUtilization) {
    reasons.push(`utilization ${percent(t.utilization)} >= ${percent(policy.scaleUpUtilization)} over ${t.window_ms} ms`);
  }
  if (policy.scaleUpQueueDepth !== null && t.queued_requests >= policy.scaleUpQueueDepth) {
    reasons.push(`${t.queued_requests} requests waiting >= ${policy.scaleUpQueueDepth}`);
  }
  if (policy.scaleUpWaitMs !== null && t.queued_requests > 0 && t.oldest_wait_ms >= policy.scaleUpWaitMs) {
    reasons.push(`oldest wait ${t.oldest_wait_ms} ms >= ${policy.scaleUpWaitMs} ms`);
  }
  return reasons;
}

/** Capacity at which `units` would be the target utilization, in whole units. */
function sizeFor(units: number, target: number): number {
  return Math.ceil(units / target - EPSILON);
}

/** Decide one evaluation of one pool at `now`. */
export function decideScaling(policy: ScalingPolicy, bounds: ScalingBounds, t: TriggerValues, cooldownUntil: number | null, now: number): ScalingDecision {
  const from = bounds.capacity;
  if (!policy.enabled) return none(from, from, "the policy is disabled", "disabled");
  let decision: ScalingDecision;
  const up = upReasons(policy, t);
  if (up.length > 0) {
    const needed = sizeFor((t.used_units ?? 0) + t.queued_units, policy.targetUtilization);
    const steps = Math.max(1, Math.ceil((needed - from) / policy.step));
    const wanted = from + steps * policy.step;
    const to = Math.min(wanted, bounds.maxCapacity);
    const reason = up.join("; ");
    if (to <= from) return none(from, wanted, `${reason}; already at max_capacity ${bounds.maxCapacity}`, "max_capacity");
    decision = { action: "scale_up", from, to, wanted, reason, blocked: null, cooldownUntil: null };
  } else if (t.utilization !== null && t.utilization <= policy.scaleDownUtilization + EPSILON && t.queued_requests === 0) {
    const floor = sizeFor(t.used_units ?? 0, policy.targetUtilization);
    const wanted = Math.max(from - policy.step, floor);
    const to = Math.max(wanted, bounds.minCapacity);
    const reason = `utilization ${percent(t.utilization)} <= ${percent(policy.scaleDownUtilization)} over ${t.window_ms} ms, nothing waiting`;
    if (to >= from) {
      return from <= bounds.minCapacity
        ? none(from, wanted, `${reason}; already at min_capacity ${bounds.minCapacity}`, "min_capacity")
        : none(from, wanted, `${reason}; a smaller pool would exceed the target ${percent(policy.targetUtilization)}`, null);
    }
    decision = { action: "scale_down", from, to, wanted, reason, blocked: null, cooldownUntil: null };
  } else {
    const u = t.utilization === null ? "no utilization readings" : `utilization ${percent(t.utilization)}`;
    return none(from, from, `${u}, ${t.queued_requests} requests waiting: no trigger`, null);
  }
  if (cooldownUntil !== null && now < cooldownUntil) {
    return none(from, decision.wanted, `${decision.reason}; cooling down until ${new Date(cooldownUntil).toISOString()}`, "cooldown");
  }
  return { ...decision, cooldownUntil: now + policy.cooldownMs };
}
