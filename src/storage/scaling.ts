import { decodeCursorText, encodeCursorText } from "../domain/base64url";
import { newId } from "../domain/ids";
import type { ScalingAction, ScalingBlock, ScalingPolicy, TriggerValues } from "../domain/scaling";

/** What started an evaluation: the minute cron, a dynamic pool that ran dry, or an operator. */
export type ScalingTrigger = "cron" | "pool_dry" | "manual";

/** A policy as stored, with when it was last set. */
export interface StoredPolicy extends ScalingPolicy {
  updatedAt: number;
}

interface PolicyRow {
  pool_id: string;
  target_utilization: number;
  scale_up_utilization: number;
  scale_down_utilization: number;
  window_ms: number;
  scale_up_queue_depth: number | null;
  scale_up_wait_ms: number | null;
  step: number;
  cooldown_ms: number;
  enabled: number;
  updated_at: number;
}

function toPolicy(row: PolicyRow): StoredPolicy {
  return {
    targetUtilization: row.target_utilization,
    scaleUpUtilization: row.scale_up_utilization,
    scaleDownUtilization: row.scale_down_utilization,
    windowMs: row.window_ms,
    scaleUpQueueDepth: row.scale_up_queue_depth,
    scaleUpWaitMs: row.scale_up_wait_ms,
    step: row.step,
    cooldownMs: row.cooldown_ms,
    enabled: row.enabled === 1,
    updatedAt: row.updated_at,
  };
}

export async function findPolicy(db: D1Database, poolId: string): Promise<StoredPolicy | null> {
  const row = await db.prepare("SELECT * FROM scaling_policies WHERE pool_id = ?1").bind(poolId).first<PolicyRow>();
  return row ? toPolicy(row) : null;
}

/** Policies of these pools, by pool id. */
export async function policiesOf(db: D1Database, poolIds: string[]): Promise<Map<string, StoredPolicy>> {
  const { results } = await db
    .prepare("SELECT * FROM scaling_policies WHERE pool_id IN (SELECT value FROM json_each(?1))")
    .bind(JSON.stringify(poolIds))
    .all<PolicyRow>();
  return new Map(results.map((r) => [r.pool_id, toPolicy(r)]));
}

export async function putPolicy(db: D1Database, poolId: string, p: ScalingPolicy, now: number): Promise<void> {
  await db
    .prepare(
      `INSERT INTO scaling_policies (pool_id, target_utilization, scale_up_utilization, scale_down_utilization, window_ms,
         scale_up_queue_depth, scale_up_wait_ms, step, cooldown_ms, enabled, updated_at)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
       ON CONFLICT (pool_id) DO UPDATE SET target_utilization = excluded.target_utilization,
         scale_up_utilization = excluded.scale_up_utilization, scale_down_utilization = excluded.scale_down_utilization,
         window_ms = excluded.window_ms, scale_up_queue_depth = excluded.scale_up_queue_depth, scale_up_wait_ms = excluded.scale_up_wait_ms,
         step = excluded.step, cooldown_ms = excluded.cooldown_ms, enabled = excluded.enabled, updated_at = excluded.updated_at`,
    )
    .bind(poolId, p.targetUtilization, p.scaleUpUtilization, p.scaleDownUtilization, p.windowMs, p.scaleUpQueueDepth, p.scaleUpWaitMs, p.step, p.cooldownMs, p.enabled ? 1 : 0, now)
    .run();
}

export async function deletePolicy(db: D1Database, poolId: string): Promise<boolean> {
  const r = await db.prepare("DELETE FROM scaling_policies WHERE pool_id = ?1").bind(poolId).run();
  return r.meta.changes === 1;
}

/** Deletes the pool's policy when the pool is now static; for the batch that changes its sizing. */
export function dropPolicyIfStatic(db: D1Database, poolId: string): D1PreparedStatement {
  return db
    .prepare("DELETE FROM scaling_policies WHERE pool_id = ?1 AND EXISTS (SELECT 1 FROM pool_settings WHERE pool_id = ?1 AND sizing = 'static')")
    .bind(poolId);
}

/** One evaluation's outcome, kept as the pool's last one. */
export interface Evaluation {
  at: number;
  trigger: ScalingTrigger;
  action: ScalingAction | "none";
  from_capacity: number;
  to_capacity: number;
  wanted_capacity: number;
  reason: string;
  blocked: ScalingBlock | "conflict" | null;
  trigger_values: TriggerValues;
}

export interface ScalingState {
  cooldownUntil: number | null;
  lastEvaluatedAt: number | null;
  lastEvaluation: Evaluation | null;
}

export async function findScalingState(db: D1Database, poolId: string): Promise<ScalingState> {
  const row = await db
    .prepare("SELECT cooldown_until, last_evaluated_at, last_evaluation FROM scaling_state WHERE pool_id = ?1")
    .bind(poolId)
    .first<{ cooldown_until: number | null; last_evaluated_at: number | null; last_evaluation: string | null }>();
  return {
    cooldownUntil: row?.cooldown_until ?? null,
    lastEvaluatedAt: row?.last_evaluated_at ?? null,
    lastEvaluation: row?.last_evaluation ? (JSON.parse(row.last_evaluation) as Evaluation) : null,
  };
}

/** Set (or clear, with null) a pool's cooldown by hand. */
export async function setCooldown(db: D1Database, poolId: string, until: number | null): Promise<void> {
  await db
    .prepare(
      `INSERT INTO scaling_state (pool_id, cooldown_until) VALUES (?1, ?2)
       ON CONFLICT (pool_id) DO UPDATE SET cooldown_until = excluded.cooldown_until`,
    )
    .bind(poolId, until)
    .run();
}

/** Keep an evaluation that changed nothing as the pool's last one (its cooldown is unchanged). */
export async function recordEvaluation(db: D1Database, poolId: string, evaluation: Evaluation): Promise<void> {
  await db
    .prepare(
      `INSERT INTO scaling_state (pool_id, last_evaluated_at, last_evaluation) VALUES (?1, ?2, ?3)
       ON CONFLICT (pool_id) DO UPDATE SET last_evaluated_at = excluded.last_evaluated_at, last_evaluation = excluded.last_evaluation`,
    )
    .bind(poolId, evaluation.at, JSON.stringify(evaluation))
    .run();
}

/** A capacity change made by a scaling policy, as recorded and as the API shows it. */
export interface ScalingEventRecord {
  id: string;
  pool: string;
  at: number;
  action: ScalingAction;
  from_capacity: number;
  to_capacity: number;
  reason: string;
  trigger: ScalingTrigger;
  trigger_values: Record<string, unknown>;
}

export function newScalingEventId(): string {
  return newId("scaling_event");
}

/**
 * For the batch that resizes the pool (storage/pools.ts writePool): record the event and start the
 * cooldown, each only when the statement before it changed its one row, so both land with the resize or
 * neither does.
 */
export function resizedStatements(db: D1Database, event: ScalingEventRecord, cooldownUntil: number, evaluation: Evaluation): D1PreparedStatement[] {
  return [
    db.prepare(
      `INSERT INTO scaling_events (id, pool_id, at, action, from_capacity, to_capacity, reason, trigger, trigger_values)
       SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE changes() = 1`,
    ).bind(event.id, event.pool, event.at, event.action, event.from_capacity, event.to_capacity, event.reason, event.trigger, JSON.stringify(event.trigger_values)),
    db.prepare(
      `INSERT INTO scaling_state (pool_id, cooldown_until, last_evaluated_at, last_evaluation)
       SELECT ?1, ?2, ?3, ?4 WHERE changes() = 1
       ON CONFLICT (pool_id) DO UPDATE SET cooldown_until = excluded.cooldown_until,
         last_evaluated_at = excluded.last_evaluated_at, last_evaluation = excluded.last_evaluation`,
    ).bind(event.pool, cooldownUntil, evaluation.at, JSON.stringify(evaluation)),
  ];
}

interface EventRow {
  id: string;
  pool_id: string;
  at: number;
  action: ScalingAction;
  from_capacity: number;
  to_capacity: number;
  reason: string;
  trigger: ScalingTrigger;
  trigger_values: string;
}

function toEvent(row: EventRow): ScalingEventRecord {
  return {
    id: row.id, pool: row.pool_id, at: row.at, action: row.action, from_capacity: row.from_capacity, to_capacity: row.to_capacity,
    reason: row.reason, trigger: row.trigger, trigger_values: JSON.parse(row.trigger_values) as Record<string, unknown>,
  };
}

const CURSOR = /^(\d{1,16}):(sce_[a-f0-9]{32})$/;

/** Opaque to callers: base64url of "at:id" of the last event of a page. */
export function encodeEventCursor(p: { at: number; id: string }): string {
  return encodeCursorText(`${p.at}:${p.id}`);
}

export function decodeEventCursor(cursor: string): { at: number; id: string } | null {
  const match = CURSOR.exec(decodeCursorText(cursor) ?? "");
  return match ? { at: Number(match[1]), id: match[2]! } : null;
}

export interface EventFilter {
  pool?: string;
  action?: ScalingAction;
  /** Events at or after this time (epoch ms). */
  from?: number;
  /** Events before this time (epoch ms). */
  to?: number;
  limit: number;
  cursor?: string;
}

/** Newest first; keyset pagination over (at, id), so events recorded meanwhile neither repeat nor shift pages. */
export async function listScalingEvents(db: D1Database, filter: EventFilter): Promise<{ events: ScalingEventRecord[]; nextCursor: string | null }> {
  const after = filter.cursor ? decodeEventCursor(filter.cursor) : null;
  const { results } = await db
    .prepare(
      `SELECT * FROM scaling_events
       WHERE (?1 IS NULL OR pool_id = ?1) AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR at >= ?3) AND (?4 IS NULL OR at < ?4)
         AND (?5 IS NULL OR at < ?5 OR (at = ?5 AND id < ?6))
       ORDER BY at DESC, id DESC
       LIMIT ?7`,
    )
    .bind(filter.pool ?? null, filter.action ?? null, filter.from ?? null, filter.to ?? null, after?.at ?? null, after?.id ?? null, filter.limit + 1)
    .all<EventRow>();
  const page = results.slice(0, filter.limit).map(toEvent);
  const last = page.at(-1);
  return { events: page, nextCursor: results.length > filter.limit && last ? encodeEventCursor(last) : null };
}

/**
 * A pool's readings in (from, to]: how many minute samples, and the sums of their utilization and of
 * their units in use (capacity - level), for means over the window.
 */
export async function sampleSums(db: D1Database, poolId: string, from: number, to: number): Promise<{ samples: number; utilization: number; used: number }> {
  const row = await db
    .prepare(
      `SELECT COUNT(*) AS samples, COALESCE(SUM(1.0 - level / capacity), 0) AS utilization, COALESCE(SUM(capacity - level), 0) AS used
       FROM pool_samples WHERE pool_id = ?1 AND at > ?2 AND at <= ?3`,
    )
    .bind(poolId, from, to)
    .first<{ samples: number; utilization: number; used: number }>();
  return row ?? { samples: 0, utilization: 0, used: 0 };
}
