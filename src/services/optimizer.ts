/**
 * The cost optimizer: per-client switches, per-template options, the plan a request follows (model
 * downgrade, off-peak deferral, cache key, batching, compression threshold), the cache sweep, and the
 * stats and recommendations read from the savings ledger. The rules are in domain/optimizer.ts; the
 * result cache, the savings ledger and template options, which the scheduler writes too, are in
 * storage/optimizer-cache.ts.
 */
import { DAY_MS, dayKey, dayStart } from "../domain/calendar";
import {
  budgetUsedPercent, cacheKey, deferUntil, downgradeDecision, mayDowngrade, modelOf, parseOffPeakHours,
  QUEUE_TARGET_WAIT_MS, recommendationsOf, refillWaitMs, STRATEGIES, waitExceedsTarget,
  type DowngradeInput, type DowngradeReason, type OffPeakWindow, type Quality, type Recommendation, type Strategy,
} from "../domain/optimizer";
import type { QueueName } from "../domain/priority";
import type { Caller } from "../domain/types";
import { AppError } from "../errors";
import { log, type Logger } from "../log";
import {
  cacheHitsByTemplate, completedByQueueHour, completedByTemplate, countExecutions, deleteExpired, executionsByTemplate,
  listStrategySettings, savingsByPeriod, setStrategySettings, spendInDays, type SavingsSum,
} from "../storage/optimizer";
import { clearTemplateOptionsCache, templateOptions } from "../storage/optimizer-cache";
import { clientBudget } from "./budget";
import { TtlCache } from "../storage/cache";
import { poolConfigs, templateConfig, templateConfigs } from "../storage/config";
import { estimateCost, type CostEstimate } from "./estimate";
import { poolStub } from "../objects/pool/stub";
import { settings } from "../settings";

export type { SavingsRow } from "../storage/optimizer";

// --- configuration -------------------------------------------------------------------------------

/** A client's switches: every strategy, on unless the client turned it off. */
export type StrategySwitches = Record<Strategy, boolean>;

const DEFAULT_OFF_PEAK: OffPeakWindow = { startHour: 22, endHour: 6 };
const DEFAULT_BUDGET_PERCENT = 80;

const switchesCache = new TtlCache<{ switches: StrategySwitches; updatedAt: number | null }>();

function ttl(env: Env): number {
  return settings(env).CONFIG_TTL_MS;
}

/** Forget the switches and options cached in this isolate (after an admin change, and in tests). */
export function clearOptimizerCache(): void {
  switchesCache.clear();
  clearTemplateOptionsCache();
}

/** A client's switches and when they last changed (null: never set), cached like configuration. */
export function optimizerSettings(env: Env, clientId: string): Promise<{ switches: StrategySwitches; updatedAt: number | null }> {
  return switchesCache.get(clientId, ttl(env), async () => {
    const rows = await listStrategySettings(env.DB, clientId);
    const switches = Object.fromEntries(STRATEGIES.map((s) => [s, true])) as StrategySwitches;
    for (const r of rows) switches[r.strategy] = r.enabled;
    return { switches, updatedAt: rows.length ? Math.max(...rows.map((r) => r.updated_at)) : null };
  });
}

/** Turn some of a client's strategies on or off. The caller checks that the client exists. */
export async function setOptimizerSettings(env: Env, clientId: string, changes: Partial<StrategySwitches>, now: number) {
  await setStrategySettings(env.DB, clientId, changes, now);
  clearOptimizerCache();
  return optimizerSettings(env, clientId);
}

export interface OptimizerConfig {
  offPeak: OffPeakWindow;
  downgradeBudgetPercent: number;
}

/** Parsed once per isolate and value, so that a bad value is warned about once, not on every request. */
const parsedConfig = new Map<string, OptimizerConfig>();

/**
 * The off-peak window (OFF_PEAK_HOURS, "22-6") and the budget threshold of a downgrade
 * (DOWNGRADE_BUDGET_PERCENT, "80"). A value that does not parse is replaced by its default, with a warning.
 */
export function optimizerConfig(env: Env, logger: Logger = log): OptimizerConfig {
  const raw = `${env.OFF_PEAK_HOURS}|${env.DOWNGRADE_BUDGET_PERCENT}`;
  let config = parsedConfig.get(raw);
  if (config) return config;
  let offPeak = parseOffPeakHours(env.OFF_PEAK_HOURS ?? "");
  if (!offPeak) {
    logger.warn("config_invalid", { var: "OFF_PEAK_HOURS", value: env.OFF_PEAK_HOURS, using: "22-6" });
    offPeak = DEFAULT_OFF_PEAK;
  }
  let percent = Number(env.DOWNGRADE_BUDGET_PERCENT);
  if (env.DOWNGRADE_BUDGET_PERCENT === undefined || env.DOWNGRADE_BUDGET_PERCENT.trim() === "" || !Number.isFinite(percent) || percent < 0) {
    logger.warn("config_invalid", { var: "DOWNGRADE_BUDGET_PERCENT", value: env.DOWNGRADE_BUDGET_PERCENT, using: DEFAULT_BUDGET_PERCENT });
    percent = DEFAULT_BUDGET_PERCENT;
  }
  config = { offPeak, downgradeBudgetPercent: percent };
  parsedConfig.set(raw, config);
  return config;
}

// --- the plan of a request -----------------------------------------------------------------------

export interface PlanInput {
  caller: Caller;
  template: string;
  params: unknown;
  queue: QueueName;
  quality?: Quality;
  /** false: never the cheaper alternative, whatever the rule (as `quality: "premium"`); absent: true. */
  allowDowngrade?: boolean;
  /** Epoch ms by which the request must have run; a deferred request does not wait for off-peak past it. */
  deadline?: number | null;
  now: number;
}

/** A strategy the plan applied, and what it saved (nano-dollars). */
export interface PlanStrategy {
  strategy: Strategy;
  saved_nano: number;
  detail: string;
}

/**
 * What the request flow does with a request. `strategies` lists what the plan itself applied: a
 * `downgrade` (saved: original estimate − alternative estimate) and an `off_peak` deferral (saved: 0;
 * prices do not vary by hour). Cache hits, batching and compression happen later, in the request flow,
 * which records them with recordSavings() when they do.
 */
export interface RequestPlan {
  /** The template to run: the requested one, or its cheaper alternative. */
  template: string;
  /** The requested template when it was downgraded; null otherwise. */
  downgraded_from: string | null;
  downgrade_reason: DowngradeReason | null;
  /** The estimate of `template` (the one to run), priced for this caller. */
  estimate: CostEstimate;
  strategies: PlanStrategy[];
  /** For a deferred request with off-peak on: when it may start (`now` inside the window or when its deadline comes first). Null otherwise. */
  not_before: number | null;
  /** Result cache key when `template` is cacheable and the client's caching is on; null otherwise. */
  cache_key: string | null;
  cache_ttl_ms: number;
  /** `template` is batchable, the client's batching is on, and the queue is `batch`. */
  batchable: boolean;
  batch_size: number;
  /** Store params and results compressed above this many bytes; null when the client's compression is off. */
  compress_threshold_bytes: number | null;
}

/**
 * Whether the template's pools lack the units it needs now, and how long refilling them would take
 * (the longest of its pools; Infinity for a pool that does not refill or is not active). Queued
 * demand is not counted: the wait is a lower bound, so a capacity downgrade is never premature.
 */
async function capacityFor(env: Env, requirements: Array<{ pool: string; amount: number }>, caller: Caller): Promise<{ exhausted: boolean; waitMs: number }> {
  const pools = await poolConfigs(env);
  const waits = await Promise.all(requirements.map(async (r) => {
    const cfg = pools.get(r.pool);
    if (!cfg) return { exhausted: true, waitMs: Infinity };
    let a: { available: number };
    try {
      a = await poolStub(env, cfg.id).availability(cfg, caller);
    } catch (err) {
      // A level that cannot be read is not pressing: no downgrade on its account (the admission asks the pool again).
      log.warn("plan_input_unavailable", { input: "pool_level", pool: cfg.id, client_id: caller.clientId, error: String(err) });
      return { exhausted: false, waitMs: 0 };
    }
    if (a.available >= r.amount) return { exhausted: false, waitMs: 0 };
    return { exhausted: true, waitMs: cfg.status === "active" ? refillWaitMs(r.amount, a.available, cfg.refillPerSec) : Infinity };
  }));
  return { exhausted: waits.some((w) => w.exhausted), waitMs: Math.max(0, ...waits.map((w) => w.waitMs)) };
}

/**
 * 400 for `allow_downgrade: false` with `quality: "standard"`, which asks for the downgrade. Callers
 * check before starting any load: a shared cache load begun by a request that then fails at once
 * would be left to a finished request (see storage/cache.ts).
 */
export function checkDowngradeChoice(input: Pick<PlanInput, "quality" | "allowDowngrade">): void {
  if (input.allowDowngrade === false && input.quality === "standard") {
    throw new AppError("validation_failed", "invalid request body", {
      fields: [{ path: "allow_downgrade", message: "false contradicts quality \"standard\" (which asks for the cheaper alternative)" }],
    });
  }
}

/**
 * Decide how a request runs. Reads only what a rule needs: the client's budget only when neither its
 * quality nor its queue already decided, pool levels only when the budget did not either. Throws the
 * estimate's errors (404 template_not_found / pool_not_found, 403 pool_forbidden).
 */
export async function planRequest(env: Env, input: PlanInput, logger: Logger = log): Promise<RequestPlan> {
  const { caller, queue, now } = input;
  checkDowngradeChoice(input);
  const [{ switches }, original, requested] = await Promise.all([
    optimizerSettings(env, caller.clientId),
    estimateCost(env, { template: input.template }, caller, logger),
    templateConfig(env, input.template),
  ]);
  const config = optimizerConfig(env, logger);
  const strategies: PlanStrategy[] = [];

  const alternative = switches.downgrade ? original.alternative : null;
  const base: DowngradeInput = {
    quality: input.quality, queue, budgetUsedPercent: null, budgetThresholdPercent: config.downgradeBudgetPercent,
    poolExhausted: false, waitWouldExceedTarget: false, hasAlternative: alternative !== null, demandsOriginal: input.quality === "premium" || input.allowDowngrade === false,
  };
  let decision = downgradeDecision(base);
  if (!decision.downgrade && mayDowngrade(base)) {
    const b = await clientBudget(env, caller.clientId, "count").catch((err: unknown) => {
      if (err instanceof AppError) throw err;
      // A budget that cannot be read is not pressing: no downgrade on its account (the admission asks the client object again).
      logger.warn("plan_input_unavailable", { input: "budget", client_id: caller.clientId, error: String(err) });
      return null;
    });
    if (b) {
      base.budgetUsedPercent = budgetUsedPercent(b.budget_nano, b.spent_nano, b.in_flight_nano);
      decision = downgradeDecision(base);
    }
  }
  if (!decision.downgrade && mayDowngrade(base) && QUEUE_TARGET_WAIT_MS[queue] !== null) {
    const capacity = await capacityFor(env, requested.requirements, caller);
    decision = downgradeDecision({ ...base, poolExhausted: capacity.exhausted, waitWouldExceedTarget: waitExceedsTarget(queue, capacity.waitMs) });
  }

  let estimate = original;
  if (decision.downgrade && alternative) {
    estimate = await estimateCost(env, { template: alternative.template }, caller, logger);
    strategies.push({
      strategy: "downgrade", saved_nano: original.total_cost_nano - estimate.total_cost_nano,
      detail: `${decision.reason}: ${input.template} → ${alternative.template}`,
    });
  }
  const chosen = decision.downgrade && alternative ? await templateConfig(env, alternative.template) : requested;
  const options = await templateOptions(env, chosen.id);

  let notBefore: number | null = null;
  if (queue === "deferred" && switches.off_peak) {
    notBefore = deferUntil(now, config.offPeak, input.deadline ?? null);
    if (notBefore > now) strategies.push({ strategy: "off_peak", saved_nano: 0, detail: `waits for the off-peak window (${config.offPeak.startHour}-${config.offPeak.endHour} UTC) until ${new Date(notBefore).toISOString()}` });
  }

  return {
    template: chosen.id,
    downgraded_from: decision.downgrade ? input.template : null,
    downgrade_reason: decision.reason,
    estimate,
    strategies,
    not_before: notBefore,
    cache_key: chosen.cacheable && switches.caching ? await cacheKey(chosen.id, modelOf(chosen.requirements), input.params ?? null, caller.clientId) : null,
    cache_ttl_ms: options.cacheTtlMs,
    batchable: chosen.batchable && switches.batching && queue === "batch",
    batch_size: options.batchSize,
    compress_threshold_bytes: switches.compression ? options.compressThresholdBytes : null,
  };
}

// --- the result cache's sweep --------------------------------------------------------------------

/** Rows one sweep deletes at most; the minute cron comes back for the rest. */
export const SWEEP_LIMIT = 5000;

/** Delete expired cache entries (at most SWEEP_LIMIT per call). Returns how many. For the cron. */
export function sweepCache(env: Env, now: number): Promise<number> {
  return deleteExpired(env.DB, now, SWEEP_LIMIT);
}

// --- stats ---------------------------------------------------------------------------------------

export interface StrategyTotals {
  strategy: Strategy;
  requests: number;
  saved_nano: number;
  bytes_saved: number;
}

export interface OptimizerStats {
  periods: Array<{ period: string; saved_nano: number; bytes_saved: number; strategies: StrategyTotals[] }>;
  totals: { saved_nano: number; bytes_saved: number; strategies: StrategyTotals[] };
  requests: { downgraded: number; batched: number; deferred: number; cache_hits: number; compressed: number };
  cache: { hits: number; executions: number; hit_rate: number | null };
}

function exactSum(values: number[]): number {
  const total = values.reduce((a, b) => a + b, 0);
  if (!Number.isSafeInteger(total)) throw new RangeError(`savings sum not exact: ${total}`);
  return total;
}

/**
 * A client's savings over UTC days `fromDay`..`toDay` (both included): per period and strategy, in
 * total, the requests each strategy touched, and the cache hit rate (hits / (hits + completed
 * executions of its cacheable templates)); null when there was neither.
 */
export async function optimizerStats(env: Env, clientId: string, fromDay: string, toDay: string, granularity: "day" | "month"): Promise<OptimizerStats> {
  const from = Date.parse(`${fromDay}T00:00:00Z`);
  const to = Date.parse(`${toDay}T00:00:00Z`) + DAY_MS;
  const cacheable = [...(await templateConfigs(env)).values()].filter((t) => t.cacheable).map((t) => t.id);
  const [rows, executions] = await Promise.all([
    savingsByPeriod(env.DB, clientId, from, to, granularity === "day" ? 10 : 7),
    countExecutions(env.DB, clientId, cacheable, from, to),
  ]);
  const periods: OptimizerStats["periods"] = [];
  for (const r of rows) {
    if (periods.at(-1)?.period !== r.period) periods.push({ period: r.period, saved_nano: 0, bytes_saved: 0, strategies: [] });
    const p = periods.at(-1)!;
    p.strategies.push({ strategy: r.strategy, requests: r.requests, saved_nano: r.saved_nano, bytes_saved: r.bytes_saved });
    p.saved_nano = exactSum([p.saved_nano, r.saved_nano]);
    p.bytes_saved = exactSum([p.bytes_saved, r.bytes_saved]);
  }
  const totals = STRATEGIES.map((strategy): StrategyTotals => {
    const mine = rows.filter((r: SavingsSum) => r.strategy === strategy);
    return {
      strategy,
      requests: exactSum(mine.map((r) => r.requests)),
      saved_nano: exactSum(mine.map((r) => r.saved_nano)),
      bytes_saved: exactSum(mine.map((r) => r.bytes_saved)),
    };
  });
  const count = (s: Strategy) => totals.find((t) => t.strategy === s)!.requests;
  const hits = count("caching");
  return {
    periods,
    totals: { saved_nano: exactSum(totals.map((t) => t.saved_nano)), bytes_saved: exactSum(totals.map((t) => t.bytes_saved)), strategies: totals },
    requests: { downgraded: count("downgrade"), batched: count("batching"), deferred: count("off_peak"), cache_hits: hits, compressed: count("compression") },
    cache: { hits, executions, hit_rate: hits + executions === 0 ? null : Math.round((hits / (hits + executions)) * 10_000) / 10_000 },
  };
}

// --- recommendations -----------------------------------------------------------------------------

export interface Recommendations {
  days: number;
  /** The window: `days` whole UTC days ending with today (today counts as a whole day). */
  from_day: string;
  to_day: string;
  /** The client's spend in the window, from the daily usage rollups. */
  window_spend_nano: number;
  completed_requests: number;
  recommendations: Recommendation[];
  total_monthly_saving_nano: number;
}

/**
 * Recommendations from a client's completed requests (request_log) in the last `days` UTC days,
 * today included, with each saving scaled to a 30-day month (see recommendationsOf for the rules).
 * Alternatives and cacheability are today's configuration; prices are today's prices.
 */
export async function optimizerRecommendations(env: Env, caller: Caller, now: number, days: number, logger: Logger = log): Promise<Recommendations> {
  const fromMs = dayStart(now) - (days - 1) * DAY_MS;
  const toMs = dayStart(now) + DAY_MS;
  const [byTemplate, byHour, spend, { switches }, templates] = await Promise.all([
    completedByTemplate(env.DB, caller.clientId, fromMs, toMs),
    completedByQueueHour(env.DB, caller.clientId, fromMs, toMs),
    spendInDays(env.DB, caller.clientId, dayKey(fromMs), dayKey(toMs - 1)),
    optimizerSettings(env, caller.clientId),
    templateConfigs(env),
  ]);
  const cacheable = byTemplate.filter((t) => templates.get(t.template)?.cacheable).map((t) => t.template);
  const [hits, executions] = cacheable.length && !switches.caching
    ? await Promise.all([cacheHitsByTemplate(env.DB, cacheable, fromMs, toMs), executionsByTemplate(env.DB, cacheable, fromMs, toMs)])
    : [new Map<string, number>(), new Map<string, number>()];
  const usage = await Promise.all(byTemplate.map(async (t) => {
    let alternative = null;
    if (templates.get(t.template)?.alternativeId) {
      try {
        const e = await estimateCost(env, { template: t.template }, caller, logger);
        if (e.alternative) alternative = { template: e.alternative.template, costNano: e.alternative.total_cost_nano, originalCostNano: e.total_cost_nano };
      } catch {
        // A template that can no longer be priced for this client (its pool is gone or dedicated elsewhere) has no recommendation.
      }
    }
    return {
      template: t.template, requests: t.requests, costNano: t.cost_nano, cacheable: templates.get(t.template)?.cacheable ?? false,
      alternative, platformHits: hits.get(t.template) ?? 0, platformExecutions: executions.get(t.template) ?? 0,
    };
  }));
  const list = recommendationsOf({
    days,
    totalRequests: byTemplate.reduce((n, t) => n + t.requests, 0),
    templates: usage,
    hours: byHour.map((h) => ({ queue: h.queue, hour: h.hour, requests: h.requests, costNano: h.cost_nano })),
    window: optimizerConfig(env, logger).offPeak,
    cachingOn: switches.caching,
  });
  return {
    days,
    from_day: dayKey(fromMs),
    to_day: dayKey(toMs - 1),
    window_spend_nano: spend,
    completed_requests: byTemplate.reduce((n, t) => n + t.requests, 0),
    recommendations: list,
    total_monthly_saving_nano: exactSum(list.map((r) => r.monthly_saving_nano)),
  };
}
