import { decideScaling, type ScalingDecision, type ScalingPolicy, type TriggerValues } from "../domain/scaling";
import { AppError } from "../errors";
import { log } from "../log";
import { configOf, findPoolRecord, listPoolRecords, type PoolRecord } from "../storage/pools";
import {
  deletePolicy, findPolicy, findScalingState, listScalingEvents, newScalingEventId, policiesOf, putPolicy, recordEvaluation, resizedStatements,
  sampleSums, setCooldown, type Evaluation, type ScalingEventRecord, type ScalingState, type ScalingTrigger, type StoredPolicy,
} from "../storage/scaling";
import { changePool, findPool } from "./pool-admin";
import { poolStub } from "../objects/pool/stub";
import { waitingByPool } from "./scheduler";

/** A pool's capacity changed by the scaling policy (the dashboard's panel reads these fields). */
export type ScalingEvent = ScalingEventRecord;

/** The latest scaling events across pools, newest first. */
export async function recentScalingEvents(env: Env, limit: number): Promise<ScalingEvent[]> {
  return (await listScalingEvents(env.DB, { limit })).events;
}

/** What one evaluation of one pool decided and whether it was applied. */
export interface ScalingOutcome {
  pool: string;
  evaluation: Evaluation;
  /** The recorded event, when the capacity changed. */
  event: ScalingEvent | null;
  /** The pool's cooldown after this evaluation (null: none). */
  cooldown_until: number | null;
}

type Waiting = Record<string, { requests: number; units: number; oldest_wait_ms: number }>;

/** Work waiting on each pool, from the scheduler; nothing when it does not answer (queue triggers then stay quiet). */
async function waitingOnPools(env: Env): Promise<Waiting> {
  try {
    return await waitingByPool(env);
  } catch (err) {
    log.warn("scaling_queue_unavailable", { error: String(err) });
    return {};
  }
}

/**
 * Trigger values for one pool: utilization and units in use averaged over the policy's window, the
 * minute samples plus the pool's live reading (so a pool that just ran dry counts), and the work waiting on it.
 */
async function triggersFor(env: Env, record: PoolRecord, policy: StoredPolicy, waiting: Waiting[string] | undefined, now: number): Promise<TriggerValues> {
  const [sums, live] = await Promise.all([
    sampleSums(env.DB, record.id, now - policy.windowMs, now),
    poolStub(env, record.id).configure(configOf(record)),
  ]);
  const samples = sums.samples + 1;
  return {
    utilization: Math.round(((sums.utilization + live.utilization) / samples) * 1e6) / 1e6,
    used_units: Math.round(((sums.used + (live.capacity - live.level)) / samples) * 1000) / 1000,
    samples,
    window_ms: policy.windowMs,
    queued_requests: waiting?.requests ?? 0,
    queued_units: waiting?.units ?? 0,
    oldest_wait_ms: waiting?.oldest_wait_ms ?? 0,
  };
}

function evaluationOf(decision: ScalingDecision, trigger: ScalingTrigger, triggers: TriggerValues, now: number): Evaluation {
  return {
    at: now, trigger, action: decision.action, from_capacity: decision.from, to_capacity: decision.to,
    wanted_capacity: decision.wanted, reason: decision.reason, blocked: decision.blocked, trigger_values: triggers,
  };
}

/**
 * Evaluate one dynamic pool's policy and apply the decision: a resize goes through the admin change
 * path (version bump, cache cleared, pushed to the pool's object), in one D1 batch with its event and
 * the start of the cooldown, and only if the pool is still as the decision saw it.
 */
async function evaluateOne(env: Env, record: PoolRecord, policy: StoredPolicy, waiting: Waiting[string] | undefined, trigger: ScalingTrigger, now: number): Promise<ScalingOutcome> {
  const [state, triggers] = await Promise.all([findScalingState(env.DB, record.id), triggersFor(env, record, policy, waiting, now)]);
  const decision = decideScaling(policy, { capacity: record.capacity, minCapacity: record.minCapacity!, maxCapacity: record.maxCapacity! }, triggers, state.cooldownUntil, now);
  const evaluation = evaluationOf(decision, trigger, triggers, now);
  if (decision.action === "none") {
    await recordEvaluation(env.DB, record.id, evaluation);
    return { pool: record.id, evaluation, event: null, cooldown_until: state.cooldownUntil };
  }
  const event: ScalingEvent = {
    id: newScalingEventId(), pool: record.id, at: now, action: decision.action, from_capacity: decision.from, to_capacity: decision.to,
    reason: decision.reason, trigger, trigger_values: { ...triggers },
  };
  const applied = await changePool(env, record.id, (current) => ({ ...current, capacity: decision.to }), {
    now, expectedVersion: record.version, extra: () => resizedStatements(env.DB, event, decision.cooldownUntil!, evaluation),
  });
  if (!applied) {
    // Changed meanwhile (by an operator or a concurrent evaluation): the next evaluation decides on the new state.
    const conflict: Evaluation = { ...evaluation, action: "none", to_capacity: decision.from, blocked: "conflict", reason: `${decision.reason}; the pool changed meanwhile` };
    await recordEvaluation(env.DB, record.id, conflict);
    return { pool: record.id, evaluation: conflict, event: null, cooldown_until: state.cooldownUntil };
  }
  log.info("pool_scaled", { pool: record.id, action: event.action, from: event.from_capacity, to: event.to_capacity, reason: event.reason, trigger });
  return { pool: record.id, evaluation, event, cooldown_until: decision.cooldownUntil };
}

/** The cron's pass: evaluate every active dynamic pool that has a policy. A pool that fails is logged and left for the next pass. */
export async function evaluateScaling(env: Env, now: number, trigger: ScalingTrigger = "cron", traceId?: string): Promise<ScalingOutcome[]> {
  const records = await listPoolRecords(env.DB, { sizing: "dynamic", status: "active" });
  if (records.length === 0) return [];
  const policies = await policiesOf(env.DB, records.map((r) => r.id));
  const targets = records.filter((r) => policies.has(r.id));
  if (targets.length === 0) return [];
  const waiting = await waitingOnPools(env);
  const outcomes = await Promise.all(targets.map((r) => evaluateOne(env, r, policies.get(r.id)!, waiting[r.id], trigger, now).catch((err: unknown) => {
    log.error("scaling_evaluation_failed", { trace_id: traceId, pool: r.id, error: String(err) });
    return null;
  })));
  return outcomes.filter((o): o is ScalingOutcome => o !== null);
}

/**
 * Evaluate one pool now (a pool that ran dry, or an operator). Null when there is nothing to evaluate:
 * no such pool, not dynamic, not active, or no policy.
 */
export async function evaluatePoolScaling(env: Env, poolId: string, trigger: ScalingTrigger, now: number): Promise<ScalingOutcome | null> {
  const record = await findPoolRecord(env.DB, poolId);
  if (!record || record.sizing !== "dynamic" || record.status !== "active") return null;
  const policy = await findPolicy(env.DB, poolId);
  if (!policy) return null;
  return evaluateOne(env, record, policy, (await waitingOnPools(env))[poolId], trigger, now);
}

// --- operators ----------------------------------------------------------------------------------

/** A pool's scaling as an operator sees it: sizing, policy, cooldown, last decision and last evaluation. */
export interface ScalingStatus {
  record: PoolRecord;
  policy: StoredPolicy | null;
  state: ScalingState;
  lastDecision: ScalingEvent | null;
}

export async function scalingStatus(env: Env, poolId: string): Promise<ScalingStatus> {
  const record = await findPool(env, poolId);
  const [policy, state, latest] = await Promise.all([
    findPolicy(env.DB, poolId), findScalingState(env.DB, poolId), listScalingEvents(env.DB, { pool: poolId, limit: 1 }),
  ]);
  return { record, policy, state, lastDecision: latest.events[0] ?? null };
}

/** The pool, which must be dynamic: 404 pool_not_found, 409 pool_not_dynamic. */
async function dynamicPool(env: Env, poolId: string): Promise<PoolRecord> {
  const record = await findPool(env, poolId);
  if (record.sizing !== "dynamic") {
    throw new AppError("pool_not_dynamic", `pool ${poolId} is statically sized; make it dynamic (with min_capacity and max_capacity) first`, { pool: poolId, sizing: record.sizing });
  }
  return record;
}

export async function scalingPolicy(env: Env, poolId: string): Promise<{ record: PoolRecord; policy: StoredPolicy }> {
  const record = await findPool(env, poolId);
  const policy = await findPolicy(env.DB, poolId);
  if (!policy) throw new AppError("scaling_policy_not_found", `pool ${poolId} has no scaling policy`, { pool: poolId });
  return { record, policy };
}

/** Set a dynamic pool's policy (409 pool_not_dynamic for a static one). Its cooldown is unchanged. */
export async function setScalingPolicy(env: Env, poolId: string, policy: ScalingPolicy, now: number): Promise<{ record: PoolRecord; policy: StoredPolicy }> {
  const record = await dynamicPool(env, poolId);
  await putPolicy(env.DB, poolId, policy, now);
  return { record, policy: { ...policy, updatedAt: now } };
}

export async function removeScalingPolicy(env: Env, poolId: string): Promise<void> {
  await findPool(env, poolId);
  if (!(await deletePolicy(env.DB, poolId))) throw new AppError("scaling_policy_not_found", `pool ${poolId} has no scaling policy`, { pool: poolId });
}

/** Set a dynamic pool's cooldown to end at `until`, or clear it (null). */
export async function setScalingCooldown(env: Env, poolId: string, until: number | null): Promise<ScalingStatus> {
  await dynamicPool(env, poolId);
  await setCooldown(env.DB, poolId, until);
  return scalingStatus(env, poolId);
}

/** An operator's evaluation now: 409 for a static or inactive pool, 404 without a policy. */
export async function evaluateNow(env: Env, poolId: string, now: number): Promise<ScalingOutcome> {
  const record = await dynamicPool(env, poolId);
  if (record.status !== "active") throw new AppError("pool_inactive", `pool ${poolId} is ${record.status}: it is not scaled`, { pool: poolId, status: record.status });
  const policy = await findPolicy(env.DB, poolId);
  if (!policy) throw new AppError("scaling_policy_not_found", `pool ${poolId} has no scaling policy`, { pool: poolId });
  return evaluateOne(env, record, policy, (await waitingOnPools(env))[poolId], "manual", now);
}
