import type { BudgetView } from "../domain/budget";
import { dayKey, monthStart } from "../domain/calendar";
import type { QueueStats, SchedulerState } from "../objects/scheduler";
import { listAlerts, type Alert } from "../storage/alerts";
import { recentFailures, type FinishedRequest } from "../storage/request-log";
import { topSpenders } from "../storage/reports";
import { budgetLimit, poolConfigs } from "./config";
import { poolStub } from "./pools";
import { schedulerStub } from "./requests";
import { recentScalingEvents, type ScalingEvent } from "./scaling";

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

export interface BudgetPanel extends BudgetView {
  client_id: string;
  concurrency_in_use: number;
}

export interface DashboardState {
  at: number;
  scheduler: Panel<SchedulerState>;
  pools: Panel<PoolPanel[]>;
  queues: Panel<QueueStats[]>;
  budgets: Panel<BudgetPanel[]>;
  alerts: Panel<Alert[]>;
  failures: Panel<FinishedRequest[]>;
  scaling: Panel<ScalingEvent[]>;
}

export const TOP_SPENDERS = 10;
export const OPEN_ALERTS = 50;
export const RECENT_FAILURES = 20;
export const SCALING_EVENTS = 20;

async function panel<T>(read: () => Promise<T>): Promise<Panel<T>> {
  try {
    return { ok: true, value: await read() };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
}

async function pools(env: Env): Promise<PoolPanel[]> {
  const configs = [...(await poolConfigs(env)).values()].sort((a, b) => (a.id < b.id ? -1 : 1));
  return Promise.all(configs.map(async (cfg) => {
    const a = await poolStub(env, cfg.id).availability(cfg, null);
    return { id: cfg.id, name: cfg.name, unit: cfg.unit, status: cfg.status, level: a.level, capacity: a.capacity, utilization: a.utilization, reserved: a.reserved };
  }));
}

/** The month's top spenders by delivered usage, with the budget their own objects keep (the authority on spend). */
async function budgets(env: Env, now: number): Promise<BudgetPanel[]> {
  const top = await topSpenders(env.DB, { from: dayKey(monthStart(now)), to: dayKey(now) }, TOP_SPENDERS);
  const views = await Promise.all(top.map(async ({ client_id }) => {
    const limit = await budgetLimit(env, client_id);
    if (!limit) return null;
    return { client_id, ...(await env.CLIENT.get(env.CLIENT.idFromName(client_id)).budget(limit)) };
  }));
  return views.filter((v): v is BudgetPanel => v !== null);
}

/** Everything the operator's dashboard shows, read from the owners in parallel. */
export async function dashboardState(env: Env, now: number): Promise<DashboardState> {
  const queueStatus = panel(() => schedulerStub(env).queueStatus());
  const [status, poolPanel, budgetPanel, alerts, failures, scaling] = await Promise.all([
    queueStatus,
    panel(() => pools(env)),
    panel(() => budgets(env, now)),
    panel(async () => (await listAlerts(env.DB, { state: "open", limit: OPEN_ALERTS })).alerts),
    panel(() => recentFailures(env.DB, RECENT_FAILURES)),
    panel(() => recentScalingEvents(env, SCALING_EVENTS)),
  ]);
  return {
    at: now,
    scheduler: status.ok ? { ok: true, value: status.value.scheduler } : status,
    queues: status.ok ? { ok: true, value: status.value.queues } : status,
    pools: poolPanel,
    budgets: budgetPanel,
    alerts,
    failures,
    scaling,
  };
}
