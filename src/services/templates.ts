import type { PoolAmount, Tier } from "../domain/types";
import { AppError } from "../errors";
import { log } from "../log";
import {
  deleteTemplate, findTemplate, findTemplateOptions, insertTemplate, listTemplates, templatesFallingBackTo, updateTemplate,
  type Template, type TemplateOptionsRecord,
} from "../storage/templates";
import { updateTier, type TierChanges, type TierRow } from "../storage/tiers";
import { clearConfigCache, poolConfigs } from "../storage/config";
import { clearOptimizerCache } from "./optimizer";
import { DEFAULT_TEMPLATE_OPTIONS } from "../storage/optimizer-cache";

/**
 * Operators' changes to the reference data: tiers and templates. Each change is written to D1 and this
 * isolate's caches are cleared; other isolates (and the scheduler) see it when their configuration
 * cache expires (CONFIG_TTL_MS).
 */

/** A template as the admin API shows and takes it: the record and its optimizer options. */
export interface TemplateDefinition extends Template {
  options: { cache_ttl_ms: number; batch_size: number; compress_threshold_bytes: number };
}

export async function changeTier(env: Env, id: Tier, changes: TierChanges): Promise<TierRow> {
  const row = await updateTier(env.DB, id, changes);
  if (!row) throw new AppError("not_found", `no tier ${id}`, { tier: id });
  clearConfigCache();
  log.info("tier_changed", { tier: id, fields: Object.keys(changes) });
  return row;
}

function withDefaults(options: TemplateOptionsRecord): TemplateDefinition["options"] {
  return {
    cache_ttl_ms: options.cache_ttl_ms ?? DEFAULT_TEMPLATE_OPTIONS.cacheTtlMs,
    batch_size: options.batch_size ?? DEFAULT_TEMPLATE_OPTIONS.batchSize,
    compress_threshold_bytes: options.compress_threshold_bytes ?? DEFAULT_TEMPLATE_OPTIONS.compressThresholdBytes,
  };
}

export async function templateDefinition(env: Env, id: string): Promise<TemplateDefinition> {
  const [template, options] = await Promise.all([findTemplate(env.DB, id), findTemplateOptions(env.DB, id)]);
  if (!template) throw new AppError("template_not_found", `no template named ${id}`, { template: id });
  return { ...template, options: withDefaults(options) };
}

export async function templateDefinitions(env: Env): Promise<TemplateDefinition[]> {
  const templates = await listTemplates(env.DB);
  return Promise.all(templates.map(async (t) => ({ ...t, options: withDefaults(await findTemplateOptions(env.DB, t.id)) })));
}

/** Whether this worker has a service binding (or other fetcher) of that name to call the template's worker. */
function hasBinding(env: Env, name: string): boolean {
  const binding = (env as unknown as Record<string, unknown>)[name];
  return typeof binding === "object" && binding !== null && typeof (binding as { fetch?: unknown }).fetch === "function";
}

/**
 * 400 when the template cannot run as defined: a binding this worker does not have, a pool named twice,
 * or an alternative that is itself or leads back to it; 404 for an unknown pool or alternative.
 */
async function validate(env: Env, t: Template): Promise<void> {
  const fields: Array<{ path: string; message: string }> = [];
  if (!hasBinding(env, t.binding)) fields.push({ path: "binding", message: `this worker has no service binding named ${t.binding}` });
  const seen = new Set<string>();
  t.requirements.forEach((r: PoolAmount, i) => {
    if (seen.has(r.pool)) fields.push({ path: `requirements.${i}.pool`, message: `pool ${r.pool} is named twice` });
    seen.add(r.pool);
  });
  if (t.alternativeId === t.id) fields.push({ path: "alternative_id", message: "a template cannot be its own alternative" });
  if (fields.length) throw new AppError("validation_failed", "invalid template", { fields });
  const pools = await poolConfigs(env);
  for (const r of t.requirements) {
    if (!pools.has(r.pool)) throw new AppError("pool_not_found", `requirements name pool ${r.pool}, which does not exist`, { pool: r.pool, field: "requirements" });
  }
  // The alternative must exist, and following alternatives from it must never come back to this template.
  let next = t.alternativeId;
  for (let hops = 0; next !== null; hops += 1) {
    const alt = await findTemplate(env.DB, next);
    if (!alt) throw new AppError("template_not_found", `alternative_id names template ${next}, which does not exist`, { template: next, field: "alternative_id" });
    if (alt.alternativeId === t.id || hops > 20) {
      throw new AppError("validation_failed", "invalid template", { fields: [{ path: "alternative_id", message: `the alternatives of ${t.alternativeId} lead back to ${t.id}` }] });
    }
    next = alt.alternativeId;
  }
}

function changed(): void {
  clearConfigCache();
  clearOptimizerCache();
}

export async function createTemplate(env: Env, def: TemplateDefinition): Promise<TemplateDefinition> {
  await validate(env, def);
  if (!(await insertTemplate(env.DB, def, def.options, Date.now()))) {
    throw new AppError("template_exists", `a template named ${def.id} already exists`, { template: def.id });
  }
  changed();
  log.info("template_created", { template: def.id, binding: def.binding });
  return templateDefinition(env, def.id);
}

/** Apply `changes` to the template as it is now; the result is validated as a whole. */
export async function changeTemplate(env: Env, id: string, changes: Partial<Omit<TemplateDefinition, "id" | "options">> & { options?: Partial<TemplateDefinition["options"]> }) {
  const current = await templateDefinition(env, id);
  const next: TemplateDefinition = { ...current, ...changes, id, options: { ...current.options, ...changes.options } };
  await validate(env, next);
  if (!(await updateTemplate(env.DB, next, next.options, Date.now()))) throw new AppError("template_not_found", `no template named ${id}`, { template: id });
  changed();
  log.info("template_changed", { template: id, fields: Object.keys(changes) });
  return templateDefinition(env, id);
}

/**
 * Delete a template. Refused while another template names it as its cheaper alternative. Requests of it
 * still queued fail when the scheduler reaches them ("template ... no longer exists").
 */
export async function removeTemplate(env: Env, id: string): Promise<void> {
  const dependants = await templatesFallingBackTo(env.DB, id);
  if (dependants.length) {
    throw new AppError("template_in_use", `templates ${dependants.join(", ")} name ${id} as their alternative; change them first`, { template: id, used_by: dependants });
  }
  if (!(await deleteTemplate(env.DB, id))) throw new AppError("template_not_found", `no template named ${id}`, { template: id });
  changed();
  log.info("template_deleted", { template: id });
}
