// The optimizer's state that Durable Objects write too: template options (cached like configuration),
// the result cache and the savings ledger. Reads D1 only, so the scheduler stores results without
// reaching up into services/optimizer.ts.
import { compressText, decompressText } from "../domain/compression";
import { settings } from "../settings";
import { TtlCache } from "./cache";
import { findCached, insertSavings, listTemplateOptions, upsertCached, type SavingsRow, type TemplateOptionsRow } from "./optimizer";

/** A template's optimizer options. */
export interface TemplateOptions {
  cacheTtlMs: number;
  batchSize: number;
  compressThresholdBytes: number;
}

/** Options of a template without a template_options row. */
export const DEFAULT_TEMPLATE_OPTIONS: TemplateOptions = { cacheTtlMs: 3_600_000, batchSize: 10, compressThresholdBytes: 4096 };

const optionsCache = new TtlCache<Map<string, TemplateOptionsRow>>(1);

/** Forget the template options cached in this isolate (clearOptimizerCache calls it). */
export function clearTemplateOptionsCache(): void {
  optionsCache.clear();
}

/** A template's options: its template_options row, else the defaults. */
export async function templateOptions(env: Env, templateId: string): Promise<TemplateOptions> {
  const rows = await optionsCache.get("all", settings(env).CONFIG_TTL_MS, async () => new Map((await listTemplateOptions(env.DB)).map((r) => [r.template_id, r])));
  const row = rows.get(templateId);
  return row ? { cacheTtlMs: row.cache_ttl_ms, batchSize: row.batch_size, compressThresholdBytes: row.compress_threshold_bytes } : DEFAULT_TEMPLATE_OPTIONS;
}

/**
 * Record what strategies saved, in one set-based statement per 500 rows. Idempotent by (request id,
 * strategy). Returns how many rows were new.
 */
export function recordSavings(env: Env, rows: SavingsRow[]): Promise<number> {
  return insertSavings(env.DB, rows);
}

/** A cached result and what the execution that produced it cost; null on a miss or an expired entry. */
export async function cacheGet(env: Env, key: string, now: number): Promise<{ result: unknown; costNano: number } | null> {
  const row = await findCached(env.DB, key, now);
  if (!row) return null;
  return { result: JSON.parse(await decompressText(row.result)) as unknown, costNano: row.cost_nano };
}

/**
 * Cache `result` (any JSON value) under `key` for `ttlMs`, replacing an older entry; stored
 * compressed above the template's threshold. A TTL of 0 or less caches nothing.
 */
export async function cachePut(
  env: Env, key: string, template: string, result: unknown, costNano: number, ttlMs: number, now: number,
): Promise<{ stored: boolean; compressed: boolean; bytesSaved: number }> {
  if (!(ttlMs > 0)) return { stored: false, compressed: false, bytesSaved: 0 };
  const options = await templateOptions(env, template);
  const packed = await compressText(JSON.stringify(result ?? null), options.compressThresholdBytes);
  await upsertCached(env.DB, { key, template, result: packed.stored, cost_nano: costNano, created_at: now, expires_at: now + ttlMs });
  return { stored: true, compressed: packed.compressed, bytesSaved: packed.bytesSaved };
}
