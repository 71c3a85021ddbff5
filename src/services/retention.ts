import { cutoffOf, PRUNE_CHUNK_ROWS, RETENTION_KINDS, RETENTION_RULES, type RetentionKind } from "../domain/retention";
import { AppError } from "../errors";
import { log } from "../log";
import { listRetentionRows, pruneChunk, putRetentionRow, type PrunableKind } from "../storage/retention";
import { purgeFinished } from "./scheduler";

/** One kind's setting as operators see it. */
export interface RetentionSetting {
  kind: RetentionKind;
  days: number;
  default_days: number;
  min_days: number;
  description: string;
  /** When an operator (or migration 0004) last set it; null: no row, the default applies. */
  updated_at: number | null;
}

function settingOf(kind: RetentionKind, row: { days: number; updated_at: number } | undefined): RetentionSetting {
  const rule = RETENTION_RULES[kind];
  return {
    kind, days: row?.days ?? rule.defaultDays, default_days: rule.defaultDays, min_days: rule.minDays,
    description: rule.description, updated_at: row?.updated_at ?? null,
  };
}

export async function retentionSettings(env: Env): Promise<RetentionSetting[]> {
  const rows = new Map((await listRetentionRows(env.DB)).map((r) => [r.kind, r]));
  return RETENTION_KINDS.map((kind) => settingOf(kind, rows.get(kind)));
}

/** Set one kind's days (the route has checked 1..3650); below the kind's minimum is 400, nothing changed. */
export async function setRetention(env: Env, kind: RetentionKind, days: number, now: number): Promise<RetentionSetting> {
  const { minDays } = RETENTION_RULES[kind];
  if (days < minDays) {
    throw new AppError("validation_failed", `${kind} must be kept at least ${minDays} days`, {
      fields: [{ path: "days", message: `at least ${minDays} for ${kind}` }],
    });
  }
  return settingOf(kind, await putRetentionRow(env.DB, kind, days, now));
}

/** What one run deleted per kind; kinds that failed are listed apart (and retried next minute). */
export interface RetentionRun {
  pruned: Record<RetentionKind, number>;
  failed: RetentionKind[];
}

/**
 * One pruning run (the minute cron): per kind, delete at most PRUNE_CHUNK_ROWS rows older than its
 * retention, one statement at a time so other D1 work interleaves. A kind that fails is logged and
 * does not stop the others. Logs one line with what went. Never throws.
 */
export async function runRetention(env: Env, now: number, traceId: string): Promise<RetentionRun> {
  const pruned = Object.fromEntries(RETENTION_KINDS.map((k) => [k, 0])) as Record<RetentionKind, number>;
  const failed: RetentionKind[] = [];
  let settings: RetentionSetting[];
  try {
    settings = await retentionSettings(env);
  } catch (err) {
    log.error("retention_failed", { trace_id: traceId, error: String(err) });
    return { pruned, failed: [...RETENTION_KINDS] };
  }
  for (const { kind, days } of settings) {
    const cutoff = cutoffOf(now, days);
    try {
      pruned[kind] = kind === "requests"
        ? await purgeFinished(env, cutoff, PRUNE_CHUNK_ROWS)
        : await pruneChunk(env.DB, kind as PrunableKind, cutoff, PRUNE_CHUNK_ROWS);
    } catch (err) {
      failed.push(kind);
      log.error("retention_prune_failed", { trace_id: traceId, kind, error: String(err) });
    }
  }
  log.info("retention_run", { trace_id: traceId, chunk_rows: PRUNE_CHUNK_ROWS, pruned, failed });
  return { pruned, failed };
}

