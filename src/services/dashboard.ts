import type { SeverityCounts } from "../storage/dashboard";
import { budgetView, resolveBudget } from "../domain/budget";
import { rankByRisk, type BudgetRisk } from "../domain/budget-risk";
import { dayKey, monthKey, monthStart, nextMonthStart } from "../domain/calendar";
import { QUEUES, type QueueName } from "../domain/priority";
import type { QueueStats, SchedulerState } from "../objects/scheduler/types";
import type { Alert } from "../storage/alerts";
import { clientMonthSpend, openAlertCounts, openAlertsBySeverity, poolSamplesBetween, spendSteps } from "../storage/dashboard";
import { queueSamplesBetween } from "../storage/queue-samples";
import { recentFailures, type FinishedRequest } from "../storage/request-log";
import { poolConfigs } from "../storage/config";
import { poolStub } from "../objects/pool/stub";
import { queueStatus, schedulerState } from "./scheduler";
import { recentScalingEvents, type ScalingEvent } from "./scaling";
import { clientStub } from "../objects/client/stub";

/** One panel's data, or why it could not be read: a panel that fails does not take the page down. */
export type Panel<T> = { ok: true; value: T } | { ok: false; error: string };

export interface PoolPanel {
  id: string;
  name: string;
  unit: string;
  status: string;
  level: number;
  capacity: number;
  utilization: number;
  reserved: number;
}

/** A client near its budget: the ranking (from the usage ledger) plus what its own object holds in flight. */
export interface BudgetRow extends BudgetRisk {
  in_flight_nano: number;
  /** budget - spent - in flight, never below 0. */
  remaining_nano: number;
}

export interface BudgetsPanel {
  month: string;
  /** When the month's spend resets (epoch ms). */
  resets_at: number;
  clients_with_budget: number;
  clients_without_limit: number;
  /** The BUDGET_ROWS clients closest to their budget, closest first. */
  rows: BudgetRow[];
}

export interface PoolTrend {
  pool: string;
  capacity: number;
  samples: Array<{ at: number; level: number; utilization: number }>;
}

export interface QueueTrend {
  queue: QueueName;
  samples: Array<{ at: number; depth: number; ready: number; dispatched: number }>;
}

export interface SpendTrend {
  step_ms: number;
  /** Every step of the window, oldest first, with what the usage ledger recorded in it. */
  steps: Array<{ from: number; cost_nano: number }>;
  total_nano: number;
}

/** The last TREND_WINDOW_MS: [from, to]. */
export interface Trends {
  from: number;
  to: number;
  pools: PoolTrend[];
  queues: QueueTrend[];
  spend: SpendTrend;
}

export interface DashboardState {
  at: number;
  alert_counts: Panel<SeverityCounts>;
  scheduler: Panel<SchedulerState>;
  pools: Panel<PoolPanel[]>;
  queues: Panel<QueueStats[]>;
  budgets: Panel<BudgetsPanel>;
  alerts: Panel<Alert[]>;
  failures: Panel<FinishedRequest[]>;
  scaling: Panel<ScalingEvent[]>;
  trends: Panel<Trends>;
}

export const BUDGET_ROWS = 20;
export const OPEN_ALERTS = 50;
export const RECENT_FAILURES = 20;
export const SCALING_EVENTS = 20;
export const TREND_WINDOW_MS = 60 * 60_000;
export const SPEND_STEP_MS = 5 * 60_000;

async function panel<T>(read: () => Promise<T>): Promise<Panel<T>> {
  try {
    return { ok: true, value: await read() };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
}

/** Every pool's level from its object, the emptiest (relative to its capacity) first. */
async function pools(env: Env): Promise<PoolPanel[]> {
  const configs = [...(await poolConfigs(env)).values()];
  const out = await Promise.all(configs.map(async (cfg) => {
    const a = await poolStub(env, cfg.id).availability(cfg, null);
    return { id: cfg.id, name: cfg.name, unit: cfg.unit, status: cfg.status, level: a.level, capacity: a.capacity, utilization: a.utilization, reserved: a.reserved };
  }));
  return out.sort((a, b) => b.utilization - a.utilization || (a.id < b.id ? -1 : 1));
}

/**
 * Every active client ranked by budget use from the usage ledger (one D1 query), then, for the
 * BUDGET_ROWS closest to their limit only, the money their own objects hold in flight.
 */
export async function budgetsByRisk(env: Env, now: number): Promise<BudgetsPanel> {
  const clients = await clientMonthSpend(env.DB, dayKey(monthStart(now)));
  const limits = new Map(clients.map((c) => [c.client_id, resolveBudget(c.settings)]));
  const ranking = rankByRisk(clients.map((c) => ({ client_id: c.client_id, budget_nano: limits.get(c.client_id)!.limitNano, spent_nano: c.spent_nano })), now, BUDGET_ROWS);
  const rows = await Promise.all(ranking.top.map(async (risk): Promise<BudgetRow> => {
    const limit = limits.get(risk.client_id)!;
    const held = await clientStub(env, risk.client_id).budget(limit);
    const view = budgetView(limit, risk.spent_nano, held.in_flight_nano, now);
    return { ...risk, in_flight_nano: view.in_flight_nano, remaining_nano: view.remaining_nano ?? 0 };
  }));
  return {
    month: monthKey(now), resets_at: nextMonthStart(now),
    clients_with_budget: ranking.with_budget, clients_without_limit: ranking.without_limit, rows,
  };
}

/** The last hour of pool samples, queue samples and ledger spend, each as the service keeps it. */
export async function trends(env: Env, now: number): Promise<Trends> {
  const from = now - TREND_WINDOW_MS;
  const [poolRows, queueRows, spendRows] = await Promise.all([
    poolSamplesBetween(env.DB, from, now),
    queueSamplesBetween(env.DB, from, now),
    spendSteps(env.DB, from, now, SPEND_STEP_MS),
  ]);
  const byPool = new Map<string, PoolTrend>();
  for (const r of poolRows) {
    const t = byPool.get(r.pool_id) ?? { pool: r.pool_id, capacity: r.capacity, samples: [] };
    t.capacity = r.capacity;
    t.samples.push({ at: r.at, level: r.level, utilization: 1 - r.level / r.capacity });
    byPool.set(r.pool_id, t);
  }
  const queues: QueueTrend[] = QUEUES.map((queue) => ({
    queue, samples: queueRows.filter((r) => r.queue === queue).map(({ at, depth, ready, dispatched }) => ({ at, depth, ready, dispatched })),
  }));
  const spent = new Map(spendRows.map((r) => [r.step, r.cost_nano]));
  const steps = Array.from({ length: TREND_WINDOW_MS / SPEND_STEP_MS }, (_, i) => ({ from: from + i * SPEND_STEP_MS, cost_nano: spent.get(i) ?? 0 }));
  return {
    from, to: now, pools: [...byPool.values()], queues,
    spend: { step_ms: SPEND_STEP_MS, steps, total_nano: steps.reduce((n, s) => n + s.cost_nano, 0) },
  };
}

/** Everything the operator's dashboard shows, read from the owners in parallel. */
export async function dashboardState(env: Env, now: number): Promise<DashboardState> {
  const [status, counts, poolPanel, budgetPanel, alerts, failures, scaling, trendPanel] = await Promise.all([
    panel(() => queueStatus(env)),
    panel(() => openAlertCounts(env.DB)),
    panel(() => pools(env)),
    panel(() => budgetsByRisk(env, now)),
    panel(() => openAlertsBySeverity(env.DB, OPEN_ALERTS)),
    panel(() => recentFailures(env.DB, RECENT_FAILURES)),
    panel(() => recentScalingEvents(env, SCALING_EVENTS)),
    panel(() => trends(env, now)),
  ]);
  return {
    at: now,
    alert_counts: counts,
    scheduler: status.ok ? { ok: true, value: status.value.scheduler } : status,
    queues: status.ok ? { ok: true, value: status.value.queues } : status,
    pools: poolPanel,
    budgets: budgetPanel,
    alerts,
    failures,
    scaling,
    trends: trendPanel,
  };
}

/** The figures behind the header, the budgets panel and the charts, for GET /admin/dashboard/data. */
export interface DashboardData {
  at: number;
  open_alerts: SeverityCounts;
  scheduler_running: boolean;
  budgets: BudgetsPanel;
  trends: Trends;
}

/** As dashboardState, but a part that cannot be read fails the whole answer (a script wants all or an error). */
export async function dashboardData(env: Env, now: number): Promise<DashboardData> {
  const [counts, running, budgets, trendData] = await Promise.all([
    openAlertCounts(env.DB),
    schedulerState(env).then((s) => s.running),
    budgetsByRisk(env, now),
    trends(env, now),
  ]);
  return { at: now, open_alerts: counts, scheduler_running: running, budgets, trends: trendData };
}
