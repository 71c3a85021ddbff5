/**
 * The cost optimizer's rules. Pure: the clock is a parameter, money is integer nano-dollars, nothing
 * here reads a binding. The services (src/services/optimizer.ts) gather the inputs and apply them.
 */
import { DAY_MS } from "./calendar";
import type { QueueName } from "./priority";
import type { PoolAmount } from "./types";

/** The five strategies; each is on by default and can be turned off per client. */
export const STRATEGIES = ["downgrade", "batching", "caching", "compression", "off_peak"] as const;
export type Strategy = (typeof STRATEGIES)[number];

/**
 * What a request asks of its template's model. `premium`: the original, never a downgrade.
 * `standard`: a cheaper alternative is welcome. Not given: no preference; a downgrade may still
 * happen for the queue (batch, deferred), the client's budget or exhausted capacity.
 */
export const QUALITIES = ["standard", "premium"] as const;
export type Quality = (typeof QUALITIES)[number];

// --- cache keys ----------------------------------------------------------------------------------

/**
 * Stable JSON: object keys sorted (by UTF-16 code units, as Array.prototype.sort does), recursively;
 * arrays in order. Like JSON.stringify otherwise: undefined members are left out of objects and
 * written as null in arrays, non-finite numbers become null. Throws on a bigint, as JSON.stringify does.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || value === undefined || typeof value === "function" || typeof value === "symbol") return "null";
  if (typeof value === "bigint") throw new TypeError("a bigint has no JSON form");
  if (typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v)).join(",")}]`;
  const toJSON = (value as { toJSON?: () => unknown }).toJSON;
  if (typeof toJSON === "function") return canonicalJson(toJSON.call(value));
  const record = value as Record<string, unknown>;
  const members = Object.keys(record)
    .sort()
    .filter((k) => record[k] !== undefined && typeof record[k] !== "function" && typeof record[k] !== "symbol")
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(record[k])}`);
  return `{${members.join(",")}}`;
}

/** The model a template runs on, for its cache key: the pools it draws from, sorted, joined by "+". */
export function modelOf(requirements: PoolAmount[]): string {
  return [...new Set(requirements.map((r) => r.pool))].sort().join("+");
}

/**
 * The result cache's key: hex SHA-256 of the canonical JSON of {template, model, params} and, when
 * given, the client it is scoped to (the service scopes every key to its client, so that no result is
 * ever served across tenants). Params that differ only in key order give the same key.
 */
export async function cacheKey(template: string, model: string, params: unknown, scope: string | null = null): Promise<string> {
  const material = canonicalJson(scope === null ? { template, model, params } : { template, model, params, scope });
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(material));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// --- off-peak ------------------------------------------------------------------------------------

const HOUR_MS = 3_600_000;

/** UTC hours [startHour, endHour): inside from the start hour, outside from the end hour. May wrap midnight (22 → 6). */
export interface OffPeakWindow {
  startHour: number;
  endHour: number;
}

/** "22-6" → {22, 6}. Hours are whole UTC hours 0-23 and differ. Null when the text is not such a window. */
export function parseOffPeakHours(text: string): OffPeakWindow | null {
  const m = /^\s*(\d{1,2})\s*-\s*(\d{1,2})\s*$/.exec(text);
  if (!m) return null;
  const [startHour, endHour] = [Number(m[1]), Number(m[2])];
  if (startHour > 23 || endHour > 23 || startHour === endHour) return null;
  return { startHour, endHour };
}

/** Whether a UTC hour (0-23) is inside the window. */
export function isOffPeakHour(hour: number, window: OffPeakWindow): boolean {
  const { startHour, endHour } = window;
  return startHour < endHour ? hour >= startHour && hour < endHour : hour >= startHour || hour < endHour;
}

/** Whether `now` is inside the window: at the start hour's first millisecond yes, at the end hour's no. */
export function isOffPeak(now: number, window: OffPeakWindow): boolean {
  return isOffPeakHour(Math.floor((now - Math.floor(now / DAY_MS) * DAY_MS) / HOUR_MS), window);
}

/** `now` when it is inside the window; otherwise the next start of the window (today's or tomorrow's). */
export function offPeakStart(now: number, window: OffPeakWindow): number {
  if (isOffPeak(now, window)) return now;
  const todayStart = Math.floor(now / DAY_MS) * DAY_MS + window.startHour * HOUR_MS;
  return todayStart > now ? todayStart : todayStart + DAY_MS;
}

/**
 * The not-before time of a `deferred` request: the next off-peak start (or `now` inside the window).
 * A deadline at or before that start comes first: the request may run at once, and `now` is returned
 * (work started at the deadline would finish after it). A deadline already past is the same: at once.
 */
export function deferUntil(now: number, window: OffPeakWindow, deadline: number | null): number {
  const start = offPeakStart(now, window);
  if (start === now) return now;
  return deadline !== null && deadline <= start ? now : start;
}

// --- downgrade -----------------------------------------------------------------------------------

/** How long a request of each queue may wait before exhausted capacity justifies a downgrade; null: no target. */
export const QUEUE_TARGET_WAIT_MS: Record<QueueName, number | null> = {
  immediate: 1_000,
  fast: 10_000,
  normal: 60_000,
  batch: 600_000,
  deferred: null,
};

/** Time until a pool refilling at `refillPerSec` has `amount` units when `available` are there now; Infinity if never. */
export function refillWaitMs(amount: number, available: number, refillPerSec: number): number {
  const missing = amount - available;
  if (missing <= 0) return 0;
  return refillPerSec > 0 ? Math.ceil((missing / refillPerSec) * 1000) : Infinity;
}

/** Whether waiting `waitMs` is longer than the queue's target (a queue without a target never is). */
export function waitExceedsTarget(queue: QueueName, waitMs: number): boolean {
  const target = QUEUE_TARGET_WAIT_MS[queue];
  return target !== null && waitMs > target;
}

/**
 * Share of a monthly budget in use (spent + in flight), in percent; null without a limit. A budget of
 * 0 counts as fully used.
 */
export function budgetUsedPercent(budgetNano: number | null, spentNano: number, inFlightNano: number): number | null {
  if (budgetNano === null) return null;
  if (budgetNano === 0) return 100;
  return ((spentNano + inFlightNano) * 100) / budgetNano;
}

export interface DowngradeInput {
  quality: Quality | undefined;
  queue: QueueName;
  /** Spent + in flight as a percent of the monthly budget; null: no limit (never a budget downgrade). */
  budgetUsedPercent: number | null;
  /** A downgrade is made when the use is strictly above this. */
  budgetThresholdPercent: number;
  /** A pool of the template has fewer units available than the template needs. */
  poolExhausted: boolean;
  /** Waiting for those units would take longer than the queue's target. */
  waitWouldExceedTarget: boolean;
  /** The template has a cheaper alternative this client may use. */
  hasAlternative: boolean;
  /** The request demands the original: `quality: "premium"` or `allow_downgrade: false`. */
  demandsOriginal: boolean;
}

/** Why a request runs as its cheaper alternative, in the order the rules are tried. */
export const DOWNGRADE_REASONS = ["quality", "queue", "budget", "capacity"] as const;
export type DowngradeReason = (typeof DOWNGRADE_REASONS)[number];
export interface DowngradeDecision {
  downgrade: boolean;
  reason: DowngradeReason | null;
}

/** Whether any rule could downgrade this request: it has an alternative and does not demand the original. */
export function mayDowngrade(input: Pick<DowngradeInput, "quality" | "hasAlternative" | "demandsOriginal">): boolean {
  return input.hasAlternative && !input.demandsOriginal && input.quality !== "premium";
}

/**
 * Use the cheaper alternative when the request allows it (`quality: "standard"`, or the `batch` or
 * `deferred` queue), when the client's budget use is above the threshold, or when the template's pool
 * is exhausted and the request would wait past its queue's target. Never without an alternative or
 * when the request demands the original. The first rule that holds is the reason, in that order.
 */
export function downgradeDecision(input: DowngradeInput): DowngradeDecision {
  const no: DowngradeDecision = { downgrade: false, reason: null };
  if (!mayDowngrade(input)) return no;
  if (input.quality === "standard") return { downgrade: true, reason: "quality" };
  if (input.queue === "batch" || input.queue === "deferred") return { downgrade: true, reason: "queue" };
  if (input.budgetUsedPercent !== null && input.budgetUsedPercent > input.budgetThresholdPercent) return { downgrade: true, reason: "budget" };
  if (input.poolExhausted && input.waitWouldExceedTarget) return { downgrade: true, reason: "capacity" };
  return no;
}

// --- compression ---------------------------------------------------------------------------------

/** Text is compressed only when its UTF-8 size is strictly above the threshold. */
export function shouldCompress(bytes: number, thresholdBytes: number): boolean {
  return bytes > thresholdBytes;
}

/** Bytes saved by storing `storedBytes` instead of `originalBytes`; 0 when the stored form is not smaller. */
export function savedBytes(originalBytes: number, storedBytes: number): number {
  return Math.max(0, originalBytes - storedBytes);
}

// --- batching ------------------------------------------------------------------------------------

export interface Batchable {
  template: string;
  batchable: boolean;
}

/**
 * Group requests for dispatch: batchable requests of the same template go together, up to `maxBatch`
 * per group, in their given order; a request that is not batchable is a group of its own. Groups are
 * ordered by their first request's position.
 */
export function batchGroups<T extends Batchable>(requests: T[], maxBatch: number): T[][] {
  if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new RangeError(`batch size must be a whole number >= 1: ${maxBatch}`);
  const groups: T[][] = [];
  const open = new Map<string, T[]>();
  for (const r of requests) {
    if (!r.batchable || maxBatch === 1) {
      groups.push([r]);
      continue;
    }
    let group = open.get(r.template);
    if (!group || group.length >= maxBatch) {
      group = [];
      groups.push(group);
      open.set(r.template, group);
    }
    group.push(r);
  }
  return groups;
}

/**
 * Split `total` into whole parts proportional to `weights` (non-negative integers), exactly: each part
 * is the floor of its quota, and what is left goes one by one to the largest remainders (ties: the
 * earlier part). The parts always add up to `total`. All-zero weights split equally.
 */
export function largestRemainder(total: number, weights: number[]): number[] {
  if (!Number.isSafeInteger(total) || total < 0) throw new RangeError(`total must be a whole number >= 0: ${total}`);
  if (weights.length === 0) {
    if (total !== 0) throw new RangeError("nothing to split into");
    return [];
  }
  for (const w of weights) if (!Number.isSafeInteger(w) || w < 0) throw new RangeError(`weights must be whole numbers >= 0: ${w}`);
  const ws = weights.every((w) => w === 0) ? weights.map(() => 1n) : weights.map(BigInt);
  const sum = ws.reduce((a, b) => a + b, 0n);
  const t = BigInt(total);
  const parts = ws.map((w) => (t * w) / sum);
  const remainders = ws.map((w, i) => ({ i, r: (t * w) % sum }));
  let left = Number(t - parts.reduce((a, b) => a + b, 0n));
  remainders.sort((a, b) => (a.r === b.r ? a.i - b.i : a.r > b.r ? -1 : 1));
  for (const { i } of remainders) {
    if (left === 0) break;
    parts[i]! += 1n;
    left -= 1;
  }
  return parts.map(Number);
}

/** Units and cost in one pool (as requests carry their estimate and actual use). */
export interface PoolCost {
  pool: string;
  units: number;
  cost_nano: number;
}

/** One request's part of a batch. */
export interface BatchShare {
  id: string;
  pools: PoolCost[];
  cost_nano: number;
}

/**
 * Attribute a batch invocation's use per pool (what the worker reported for the whole batch) to its
 * requests. In each pool, units are split in proportion to each request's own usage there (what it
 * reported, else its estimate), then the pool's cost in proportion to the units each was given; both
 * by largest remainder, so the requests' parts add up exactly to the batch's units and nano-dollars.
 * A pool no request names is split equally.
 */
export function splitBatchCost(total: PoolCost[], perRequestUsage: Array<{ id: string; units: Record<string, number> }>): BatchShare[] {
  const shares: BatchShare[] = perRequestUsage.map((r) => ({ id: r.id, pools: [], cost_nano: 0 }));
  for (const line of total) {
    const units = largestRemainder(line.units, perRequestUsage.map((r) => r.units[line.pool] ?? 0));
    const costs = largestRemainder(line.cost_nano, units.some((u) => u > 0) ? units : perRequestUsage.map((r) => r.units[line.pool] ?? 0));
    shares.forEach((s, i) => {
      s.pools.push({ pool: line.pool, units: units[i]!, cost_nano: costs[i]! });
      s.cost_nano += costs[i]!;
    });
  }
  return shares;
}

// --- recommendations -----------------------------------------------------------------------------

/** A month, for scaling a window's figures: 30 days. */
export const MONTH_DAYS = 30;

/**
 * Off-peak saves no money today: pools have one price at every hour. Moving work off-peak spreads load
 * and leaves capacity for urgent work; its saving is counted at this rate (0%) until pools carry an
 * off-peak price.
 */
export const OFF_PEAK_SAVING_PERCENT = 0;

/** A window's amount scaled to a 30-day month, rounded down: amount × 30 / days. */
export function monthly(amountNano: number, days: number): number {
  if (!Number.isInteger(days) || days < 1) throw new RangeError(`days must be a whole number >= 1: ${days}`);
  return Number((BigInt(amountNano) * BigInt(MONTH_DAYS)) / BigInt(days));
}

/**
 * What running `spentNano` of a template's work on its alternative would have saved: the spend minus
 * its alternative cost at today's price ratio, rounded up (so the saving is never overstated).
 */
export function downgradeSaving(spentNano: number, originalCostNano: number, alternativeCostNano: number): number {
  if (originalCostNano <= 0 || alternativeCostNano >= originalCostNano) return 0;
  const s = BigInt(spentNano);
  const alt = (s * BigInt(alternativeCostNano) + BigInt(originalCostNano) - 1n) / BigInt(originalCostNano);
  return Number(s - alt);
}

/** What caching would have saved of `spentNano` at an observed hit rate hits / (hits + executions), rounded down. */
export function cachingSaving(spentNano: number, hits: number, executions: number): number {
  if (hits <= 0) return 0;
  return Number((BigInt(spentNano) * BigInt(hits)) / BigInt(hits + executions));
}

/** One template's finished work in the window, and what is known of its alternative and its cache. */
export interface TemplateUsage {
  template: string;
  /** Completed requests of the client. */
  requests: number;
  /** What they cost (actual, else estimate). */
  costNano: number;
  cacheable: boolean;
  /** The template's cheaper alternative at today's prices, when it has one this client may use. */
  alternative: { template: string; costNano: number; originalCostNano: number } | null;
  /** Every client's cache hits and completed executions of this template in the window. */
  platformHits: number;
  platformExecutions: number;
}

/** Completed requests of the client by queue and UTC hour of creation. */
export interface HourUsage {
  queue: string;
  hour: number;
  requests: number;
  costNano: number;
}

export interface RecommendationInput {
  days: number;
  /** All the client's completed requests in the window. */
  totalRequests: number;
  templates: TemplateUsage[];
  hours: HourUsage[];
  window: OffPeakWindow;
  /** The client's caching switch. */
  cachingOn: boolean;
}

export interface Recommendation {
  kind: "downgrade" | "caching" | "off_peak";
  template: string | null;
  alternative: string | null;
  requests: number;
  share_percent: number;
  window_cost_nano: number;
  window_saving_nano: number;
  monthly_saving_nano: number;
  detail: string;
}

/** Queues whose work can wait for the off-peak window (`deferred` already does). */
const MOVABLE_QUEUES = new Set(["normal", "batch"]);

function sharePercent(part: number, whole: number): number {
  return whole === 0 ? 0 : Math.round((part * 10_000) / whole) / 100;
}

/**
 * Recommendations from a client's finished work in a window of `days`, each with its saving in the
 * window and scaled to a 30-day month:
 * - downgrade, per template with a cheaper alternative: its completed requests ran on the expensive
 *   model; running them on the alternative would have cost their spend × alternative / original price.
 * - caching, per cacheable template while the client's caching is off: its spend × the hit rate every
 *   client with caching got on that template in the window. Without observed hits, no item.
 * - off_peak: completed requests of the normal and batch queues created outside the off-peak window;
 *   saving at OFF_PEAK_SAVING_PERCENT (0 today: load moves, money does not).
 * Items with no requests are left out.
 */
export function recommendationsOf(input: RecommendationInput): Recommendation[] {
  const out: Recommendation[] = [];
  for (const t of input.templates) {
    if (t.requests === 0 || !t.alternative) continue;
    const saving = downgradeSaving(t.costNano, t.alternative.originalCostNano, t.alternative.costNano);
    out.push({
      kind: "downgrade", template: t.template, alternative: t.alternative.template, requests: t.requests,
      share_percent: sharePercent(t.requests, input.totalRequests), window_cost_nano: t.costNano,
      window_saving_nano: saving, monthly_saving_nano: monthly(saving, input.days),
      detail: `${t.requests} requests ran on ${t.template}; with quality "standard" (or in the batch/deferred queues) they would have run on ${t.alternative.template} at ${t.alternative.costNano} instead of ${t.alternative.originalCostNano} nano-dollars each`,
    });
  }
  if (!input.cachingOn) {
    for (const t of input.templates) {
      if (t.requests === 0 || !t.cacheable) continue;
      const saving = cachingSaving(t.costNano, t.platformHits, t.platformExecutions);
      if (saving === 0) continue;
      out.push({
        kind: "caching", template: t.template, alternative: null, requests: t.requests,
        share_percent: sharePercent(t.requests, input.totalRequests), window_cost_nano: t.costNano,
        window_saving_nano: saving, monthly_saving_nano: monthly(saving, input.days),
        detail: `caching is off for this client; with it on, identical requests are answered from the cache at no cost (${t.platformHits} of ${t.platformHits + t.platformExecutions} requests of ${t.template} were cache hits across clients in the window)`,
      });
    }
  }
  const movable = input.hours.filter((h) => MOVABLE_QUEUES.has(h.queue) && !isOffPeakHour(h.hour, input.window));
  const requests = movable.reduce((n, h) => n + h.requests, 0);
  if (requests > 0) {
    const cost = movable.reduce((n, h) => n + h.costNano, 0);
    const saving = Number((BigInt(cost) * BigInt(OFF_PEAK_SAVING_PERCENT)) / 100n);
    out.push({
      kind: "off_peak", template: null, alternative: null, requests,
      share_percent: sharePercent(requests, input.totalRequests), window_cost_nano: cost,
      window_saving_nano: saving, monthly_saving_nano: monthly(saving, input.days),
      detail: `${requests} requests of the normal and batch queues were created outside the off-peak window (${input.window.startHour}-${input.window.endHour} UTC); in the deferred queue they would wait for it. Prices do not vary by hour, so this moves load, not money`,
    });
  }
  return out;
}
