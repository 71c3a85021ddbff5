import { accessFor } from "../domain/sharing";
import type { Caller, PoolAmount, PoolConfig } from "../domain/types";
import { AppError } from "../errors";
import { log, type Logger } from "../log";
import { poolConfigs, templateConfig, templateConfigs } from "../storage/config";

export interface EstimateLine {
  pool: string;
  amount: number;
  unit: string;
  cost_per_unit_nano: number;
  cost_nano: number;
}

/** What work would cost at today's prices, exactly, in integer nano-dollars. */
export interface CostEstimate {
  template: string | null;
  pools: EstimateLine[];
  total_cost_nano: number;
  /** The template's cheaper alternative (for a downgrade), when it has one this caller may use. */
  alternative: { template: string; total_cost_nano: number } | null;
}

/**
 * Price a template's declared requirements, or explicit pool amounts. With a caller, pools it may not
 * draw from are refused (403 pool_forbidden); without one (an operator's or a platform worker's
 * question about no client in particular) every pool is priced. Unknown template or pool: 404.
 */
export async function estimateCost(
  env: Env, input: { template?: string; requirements?: PoolAmount[] }, caller: Caller | null, logger: Logger = log,
): Promise<CostEstimate> {
  const pools = await poolConfigs(env);
  if (input.template === undefined) {
    return { template: null, ...price(input.requirements ?? [], pools, caller), alternative: null };
  }
  const template = await templateConfig(env, input.template);
  const priced = price(template.requirements, pools, caller, template.id);
  return { template: template.id, ...priced, alternative: await alternativeOf(env, template.id, template.alternativeId, priced.total_cost_nano, pools, caller, logger) };
}

function price(
  amounts: PoolAmount[], pools: Map<string, PoolConfig>, caller: Caller | null, template?: string,
): { pools: EstimateLine[]; total_cost_nano: number } {
  const lines = amounts.map((a, i): EstimateLine => {
    const cfg = pools.get(a.pool);
    if (!cfg) {
      throw new AppError("pool_not_found", template ? `template ${template} needs pool ${a.pool}, which does not exist` : `no pool named ${a.pool}`, { pool: a.pool });
    }
    if (caller && !accessFor(cfg, caller).allowed) {
      throw new AppError("pool_forbidden", `pool ${cfg.id} is dedicated to another client`, { pool: cfg.id });
    }
    return { pool: a.pool, amount: a.amount, unit: cfg.unit, cost_per_unit_nano: cfg.costPerUnitNano, cost_nano: exact(a.amount * cfg.costPerUnitNano, template ? "template" : `requirements.${i}.amount`) };
  });
  const total = lines.reduce((sum, l) => sum + l.cost_nano, 0);
  return { pools: lines, total_cost_nano: exact(total, template ? "template" : "requirements") };
}

/** Money stays exact only below 2^53 nano-dollars (about $9 million); past that the input is refused. */
function exact(nano: number, field: string): number {
  if (Number.isSafeInteger(nano)) return nano;
  throw new AppError("validation_failed", "the cost is too large to compute exactly", {
    fields: [{ path: field, message: "cost above 9,007,199,254,740,991 nano-dollars" }],
  });
}

/** The alternative's cost when it is cheaper; null when there is none, or it cannot serve this caller. */
async function alternativeOf(
  env: Env, templateId: string, alternativeId: string | null, total: number, pools: Map<string, PoolConfig>, caller: Caller | null, logger: Logger,
): Promise<CostEstimate["alternative"]> {
  if (alternativeId === null) return null;
  const alternative = (await templateConfigs(env)).get(alternativeId);
  try {
    if (!alternative) throw new AppError("template_not_found", `no template named ${alternativeId}`);
    const cost = price(alternative.requirements, pools, caller, alternative.id).total_cost_nano;
    return cost < total ? { template: alternative.id, total_cost_nano: cost } : null;
  } catch (err) {
    if (!(err instanceof AppError)) throw err;
    // A broken alternative must not stop the estimate of the template itself; operators see it in the logs.
    if (err.code !== "pool_forbidden") logger.warn("alternative_unpriced", { template: templateId, alternative: alternativeId, error: err.message });
    return null;
  }
}
