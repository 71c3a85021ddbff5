import { budgetAlerts, mergeDecisions, monthOf, poolAlerts, queueAlerts, type AlertDecision, type BudgetSnapshot, type PoolLevel, type QueueSnapshot } from "../domain/alerts";
import { AppError } from "../errors";
import { log } from "../log";
import { applyAlerts, type AppliedAlerts } from "../storage/alert-apply";
import { ackAlert, getAlert, type Alert } from "../storage/alerts";
import { clientIds } from "../storage/clients";
import { budgetLimit, poolConfigs } from "../storage/config";
import { poolStub } from "../objects/pool/stub";
import { queueStatus } from "./scheduler";
import { clientStub } from "../objects/client/stub";

/**
 * The cron's re-check: read pool levels and queue depths from their owners and apply what they imply,
 * so an alert is raised even when no request path saw the condition, and resolved once it clears.
 * A pool or the scheduler that does not answer is left out: its alerts keep their state until the next pass.
 */
export async function checkAlerts(env: Env, now: number, traceId?: string): Promise<AppliedAlerts> {
  const configs = [...(await poolConfigs(env)).values()];
  const pools = configs.filter((p) => p.status !== "disabled");
  // A disabled pool takes no spending, so how full it is concerns no one.
  const disabled: AlertDecision = { raise: [], clear: configs.filter((p) => p.status === "disabled").map((p) => ({ kind: "pool_low", subject: p.id })) };
  const [levels, queues, budgets] = await Promise.all([
    Promise.allSettled(pools.map(async (cfg): Promise<PoolLevel> => {
      const a = await poolStub(env, cfg.id).availability(cfg, null);
      return { id: cfg.id, level: a.level, capacity: a.capacity, lowWaterPercent: cfg.lowWaterPercent };
    })),
    queueStatus(env).then(
      (s) => s.queues.map((q): QueueSnapshot => ({ queue: q.queue, depth: q.depth, oldestQueuedAt: q.depth > 0 ? now - q.oldest_wait_ms : null })),
      (err: unknown) => {
        log.warn("alert_check_scheduler_failed", { trace_id: traceId, error: String(err) });
        return null;
      },
    ),
    budgetSnapshots(env, now).catch((err: unknown) => {
      log.warn("alert_check_budgets_failed", { trace_id: traceId, error: String(err) });
      return [];
    }),
  ]);
  const answered = levels.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  if (answered.length < levels.length) log.warn("alert_check_pools_failed", { trace_id: traceId, failed: levels.length - answered.length });
  return applyAlerts(env, mergeDecisions(
    poolAlerts(answered), disabled, queues ? queueAlerts(queues, now) : { raise: [], clear: [] }, ...budgets.map(budgetAlerts),
  ), now, traceId);
}

/** Every active client's spend this month against its budget, from the clients' own objects. */
async function budgetSnapshots(env: Env, now: number): Promise<BudgetSnapshot[]> {
  const ids = await clientIds(env.DB, { active: true });
  const month = monthOf(now);
  const snapshots = await Promise.all(ids.map(async (id) => {
    const limit = await budgetLimit(env, id);
    if (!limit) return null;
    const view = await clientStub(env, id).budget(limit);
    return { clientId: id, spentNano: view.spent_nano, budgetNano: limit.limitNano, month };
  }));
  return snapshots.filter((s): s is BudgetSnapshot => s !== null);
}

export async function findAlert(env: Env, id: string): Promise<Alert> {
  const alert = await getAlert(env.DB, id);
  if (!alert) throw new AppError("alert_not_found", `no alert ${id}`, { alert_id: id });
  return alert;
}

/** Acknowledge: open becomes acknowledged; acknowledging again answers it as is; a resolved alert is 409. */
export async function acknowledgeAlert(env: Env, id: string, now: number): Promise<Alert> {
  const acked = await ackAlert(env.DB, id, now);
  if (acked) return acked;
  const alert = await findAlert(env, id);
  if (alert.state === "resolved") throw new AppError("alert_state", `alert ${id} is resolved`, { alert_id: id, state: alert.state });
  return alert;
}
